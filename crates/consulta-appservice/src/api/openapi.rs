//! `GET /_consulta/v1/openapi.json`: the OpenAPI 3.1 description of the REST API, so that hospital
//! systems can generate clients. The document is `docs/openapi.json`, compiled in; a test keeps it and
//! the router in step (`tests/it/openapi.rs`).

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The checked-in OpenAPI document.
pub const OPENAPI_JSON: &str = include_str!("../../../../docs/openapi.json");

/// `GET /_consulta/v1/openapi.json`.
pub async fn get_openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
