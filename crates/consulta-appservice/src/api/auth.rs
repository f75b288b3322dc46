//! Bearer-token checks shared by the homeserver-facing routes.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use consulta_core::AuditAction;

use crate::error::MatrixError;
use crate::secret::TokenDigest;
use crate::state::AppState;

/// The token of an `Authorization: Bearer …` header, if there is one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the caller's bearer token against `expected`: 401 when absent, 403 (audited) when wrong.
pub async fn require_token(
    state: &AppState,
    headers: &HeaderMap,
    expected: &TokenDigest,
    route: &'static str,
) -> Result<(), MatrixError> {
    let Some(token) = bearer(headers) else {
        return Err(MatrixError::unauthorized("Missing access token"));
    };
    if expected.matches(token) {
        Ok(())
    } else {
        tracing::warn!(route, "request with a wrong token refused");
        state
            .audit(
                None,
                AuditAction::AuthenticationFailed,
                Some(route.to_owned()),
                "wrong bearer token",
            )
            .await;
        Err(MatrixError::forbidden("Invalid token"))
    }
}
