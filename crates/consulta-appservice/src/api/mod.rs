//! HTTP routes: `fn app(state) -> Router` and one module per area.

mod antispam;
mod appointments;
mod auth;
mod calendar;
pub use calendar::WIDGET_API;
mod health;
mod matrix_as;
pub mod openapi;
mod rest;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

use crate::error::MatrixError;
use crate::state::AppState;

/// Largest transaction body accepted. Synapse sends at most 100 PDUs (≤ 64 KiB each) plus ephemeral
/// events, so 16 MiB leaves ample room while bounding memory per request.
pub const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;

/// Largest body of any other route.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route the appservice serves.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(matrix_as::put_transaction).layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES)),
        )
        .route("/_matrix/app/v1/ping", post(matrix_as::post_ping))
        .route("/_matrix/app/v1/users/{user_id}", get(matrix_as::get_user))
        .route(
            "/_matrix/app/v1/rooms/{room_alias}",
            get(matrix_as::get_room_alias),
        )
        .route(
            "/_consulta/antispam/{callback}",
            post(antispam::post_callback),
        )
        .route("/_consulta/v1/me", get(rest::get_me))
        .route(
            "/_consulta/v1/users",
            post(rest::post_user).get(rest::get_users),
        )
        .route(
            "/_consulta/v1/users/{user_id}/role",
            put(rest::put_user_role),
        )
        .route(
            "/_consulta/v1/users/{user_id}/deactivate",
            post(rest::post_user_deactivate),
        )
        .route(
            "/_consulta/v1/patients/{user_id}/validate",
            post(rest::post_validate_patient),
        )
        .route(
            "/_consulta/v1/consultations",
            get(rest::get_consultations).post(rest::post_consultation),
        )
        .route(
            "/_consulta/v1/consultations/{room_id}",
            delete(rest::delete_consultation),
        )
        .route("/_consulta/v1/unread", get(rest::get_unread))
        .route(
            "/_consulta/v1/appointments",
            get(appointments::get_appointments).post(appointments::post_appointment),
        )
        .route(
            "/_consulta/v1/appointments/next",
            get(appointments::get_next_appointments),
        )
        .route(
            "/_consulta/v1/appointments/{id}",
            get(appointments::get_appointment).patch(appointments::patch_appointment),
        )
        .route(
            "/_consulta/v1/appointments/{id}/cancel",
            post(appointments::post_appointment_cancel),
        )
        .route(
            "/_consulta/v1/appointment-requests",
            get(appointments::get_requests).post(appointments::post_request),
        )
        .route(
            "/_consulta/v1/appointment-requests/{id}",
            get(appointments::get_request),
        )
        .route(
            "/_consulta/v1/appointment-requests/{id}/accept",
            post(appointments::post_request_accept),
        )
        .route(
            "/_consulta/v1/appointment-requests/{id}/decline",
            post(appointments::post_request_decline),
        )
        .route(
            "/_consulta/v1/appointment-requests/{id}/withdraw",
            post(appointments::post_request_withdraw),
        )
        .route("/_consulta/calendar", get(calendar::get_calendar_root))
        .route("/_consulta/calendar/", get(calendar::get_calendar_page))
        .route(
            "/_consulta/calendar/{file}",
            get(calendar::get_calendar_asset),
        )
        .route(
            "/_consulta/v1/calendar/session",
            post(calendar::post_session)
                .get(calendar::get_session)
                .delete(calendar::delete_session),
        )
        .route("/_consulta/v1/calendar/link", post(calendar::post_link))
        .route(
            "/_consulta/v1/calendar/feed",
            post(calendar::post_feed).delete(calendar::delete_feed),
        )
        .route("/_consulta/ical/{file}", get(calendar::get_feed))
        .route("/_consulta/v1/openapi.json", get(openapi::get_openapi))
        .route("/health", get(health::get_health))
        .fallback(|| async { MatrixError::unrecognized() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
