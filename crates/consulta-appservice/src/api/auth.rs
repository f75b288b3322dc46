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

/// The credential a REST API caller presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Credential<'a> {
    /// `Authorization: Bearer <Matrix access token>`, checked with the homeserver's `whoami`.
    AccessToken(&'a str),
    /// `Authorization: OpenID <Matrix OpenID token>` (from `/user/{userId}/openid/request_token` or a
    /// widget's `get_openid`), checked with the homeserver's `/_matrix/federation/v1/openid/userinfo`.
    OpenId(&'a str),
    /// `Authorization: Session <token>`: a calendar page session (from a sign-in link or an OpenID
    /// token exchanged at `/_consulta/v1/calendar/session`), checked with the store.
    Session(&'a str),
}

/// The credential of the `Authorization` header: the `Bearer`, `OpenID` or `Session` scheme (any case).
pub(super) fn credential(headers: &HeaderMap) -> Option<Credential<'_>> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        None
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Credential::AccessToken(token))
    } else if scheme.eq_ignore_ascii_case("openid") {
        Some(Credential::OpenId(token))
    } else if scheme.eq_ignore_ascii_case("session") {
        Some(Credential::Session(token))
    } else {
        None
    }
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn credentials_are_told_apart_by_scheme() {
        assert_eq!(
            credential(&headers("Bearer syt_abc")),
            Some(Credential::AccessToken("syt_abc"))
        );
        assert_eq!(
            credential(&headers("bearer  syt_abc ")),
            Some(Credential::AccessToken("syt_abc"))
        );
        assert_eq!(
            credential(&headers("OpenID xyz")),
            Some(Credential::OpenId("xyz"))
        );
        assert_eq!(
            credential(&headers("openid xyz")),
            Some(Credential::OpenId("xyz"))
        );
        assert_eq!(
            credential(&headers("Session abc")),
            Some(Credential::Session("abc"))
        );
        assert_eq!(credential(&headers("Basic dXNlcjpwYXNz")), None);
        assert_eq!(credential(&headers("Bearer ")), None);
        assert_eq!(credential(&headers("OpenID")), None);
        assert_eq!(credential(&HeaderMap::new()), None);
    }
}
