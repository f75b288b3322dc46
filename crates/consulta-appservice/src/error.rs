//! The one place where errors become HTTP responses.
//!
//! Matrix-facing routes answer `{"errcode": "M_…", "error": "…"}`. Internal failures are logged with
//! their cause and answered with a generic message, so that no internals leak to a caller.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered in the Matrix format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    /// HTTP status.
    pub status: StatusCode,
    /// Matrix error code, e.g. `M_FORBIDDEN`.
    pub errcode: &'static str,
    /// Human-readable explanation, safe to show to the caller.
    pub error: String,
}

#[derive(Serialize)]
struct Body<'a> {
    errcode: &'a str,
    error: &'a str,
}

impl MatrixError {
    fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            error: error.into(),
        }
    }

    /// 401: no credentials were presented.
    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", error)
    }

    /// 403: credentials or permission refused.
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", error)
    }

    /// 400: the body is not JSON.
    pub fn not_json(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", error)
    }

    /// 400: the body is JSON of the wrong shape.
    pub fn bad_json(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error)
    }

    /// 400: a parameter is malformed.
    pub fn invalid_param(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", error)
    }

    /// 404: nothing here.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", error)
    }

    /// 404 for unknown endpoints, as the spec asks.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// 413: the body is larger than this route accepts.
    pub fn too_large(error: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", error)
    }

    /// 500: something inside failed. `cause` is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error while serving a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal error; see the appservice log",
        )
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(Body {
                errcode: self.errcode,
                error: &self.error,
            }),
        )
            .into_response()
    }
}

impl From<consulta_store::StoreError> for MatrixError {
    fn from(e: consulta_store::StoreError) -> Self {
        Self::internal(&e)
    }
}
