//! The calendar page (`/_consulta/calendar/`), its sign-in (`/_consulta/v1/calendar/…`) and the
//! private iCal feed (`/_consulta/ical/{token}.ics`).
//!
//! The page is static: HTML, CSS and script compiled into the binary, with the `matrix-widget-api`
//! bundle from npm (vendored under `web/vendor`, pinned in `tests/browser/package.json` and checked
//! byte for byte by the browser test). It signs in with a link's token or, inside Element, a widget
//! OpenID token, and then calls the appointments API with `Authorization: Session <token>`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Duration;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{Caller, caller};
use crate::appointments::Via;
use crate::error::ApiError;
use crate::state::AppState;

const PAGE: &str = include_str!("../../web/calendar.html");
const SCRIPT: &str = include_str!("../../web/calendar.js");
const STYLE: &str = include_str!("../../web/calendar.css");
/// `matrix-widget-api` 1.19.0's browser bundle (`dist/api.min.js`), Apache-2.0.
pub const WIDGET_API: &str = include_str!("../../web/vendor/matrix-widget-api-1.19.0.min.js");

/// How far back the feed reaches, so that a phone keeps recent history.
const FEED_PAST_DAYS: i64 = 30;
/// How far ahead it reaches (the listing's limit is one year in total).
const FEED_AHEAD_DAYS: i64 = 335;

/// The page's own content security policy: nothing from elsewhere, no inline script, and framing
/// allowed because Element shows the page as a widget.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors *";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

/// `GET /_consulta/calendar`: to the page, whose relative links need the slash.
pub async fn get_calendar_root() -> Redirect {
    Redirect::permanent("/_consulta/calendar/")
}

/// `GET /_consulta/calendar/`: the page.
pub async fn get_calendar_page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /_consulta/calendar/{file}`: its script, style and the widget API bundle.
pub async fn get_calendar_asset(file: Result<Path<String>, PathRejection>) -> Response {
    match file.as_ref().map(|Path(f)| f.as_str()) {
        Ok("calendar.js") => asset("text/javascript; charset=utf-8", SCRIPT),
        Ok("calendar.css") => asset("text/css; charset=utf-8", STYLE),
        Ok("matrix-widget-api.min.js") => asset("text/javascript; charset=utf-8", WIDGET_API),
        _ => ApiError::not_found("no_such_file", "No such file").into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    link: String,
}

fn context(state: &AppState, caller: &Caller) -> Value {
    let tz = state.appointments().time_zone();
    let now = state.clock().now();
    json!({
        "user_id": caller.user,
        "role": caller.role,
        "time_zone": tz.name(),
        "now": now,
        "today": tz.local(now).date().to_string(),
    })
}

/// `POST /_consulta/v1/calendar/session`: opens a page session, either with `{"link": token}` from a
/// sign-in link or with the caller's credential (a widget's `Authorization: OpenID` token).
pub async fn post_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (session, role) = if body.is_empty() {
        let caller = caller(&state, &headers).await?;
        (
            state.open_calendar_session(&caller.user).await?,
            caller.role,
        )
    } else {
        let request: SessionRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
        match state.redeem_calendar_link(request.link.trim()).await? {
            Some(session) => {
                let role = state.role_of(&session.user).await?;
                (session, role)
            }
            None => {
                state
                    .audit(
                        None,
                        consulta_core::AuditAction::AuthenticationFailed,
                        Some("calendar sign-in link".to_owned()),
                        "unknown, used or expired sign-in link",
                    )
                    .await;
                return Err(ApiError::unauthenticated(
                    "This sign-in link has expired or was used already: send !calendar to the clinic assistant for a new one",
                ));
            }
        }
    };
    let caller = Caller {
        user: session.user.clone(),
        role,
        via: Via::Calendar,
    };
    let mut answer = context(&state, &caller);
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("session".to_owned(), json!(session.token.expose()));
        fields.insert("expires_at".to_owned(), json!(session.expires_at));
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /_consulta/v1/calendar/session`: who the session is, the clinic's zone and today's date there.
pub async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    Ok(Json(context(&state, &caller)))
}

/// `DELETE /_consulta/v1/calendar/session`: signs the caller's calendar out everywhere.
pub async fn delete_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let ended = state.end_calendar_sessions(&caller.user).await?;
    Ok(Json(json!({ "ended": ended })))
}

/// `POST /_consulta/v1/calendar/link`: a sign-in link for the caller (what `!calendar` sends).
pub async fn post_link(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    let url = state.calendar_sign_in_link(&caller.user).await?;
    let minutes = state.config().appointments.sign_in_link_minutes;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "url": url, "expires_in_minutes": minutes })),
    ))
}

/// `POST /_consulta/v1/calendar/feed`: a new private iCal feed URL (an earlier one stops working).
pub async fn post_feed(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    let url = state.new_calendar_feed(&caller.user).await?;
    Ok((StatusCode::CREATED, Json(json!({ "url": url }))))
}

/// `DELETE /_consulta/v1/calendar/feed`: revokes the caller's feed URL.
pub async fn delete_feed(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let revoked = state.revoke_calendar_feed(&caller.user).await?;
    Ok(Json(json!({ "revoked": revoked })))
}

/// `GET /_consulta/ical/{token}.ics`: the feed. An unknown or revoked token gets 404, like a URL
/// that never existed.
pub async fn get_feed(
    State(state): State<AppState>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("no_such_feed", "No such calendar feed");
    let Ok(Path(file)) = file else {
        return Err(not_found());
    };
    let token = file.strip_suffix(".ics").unwrap_or(&file);
    let Some(user) = state.calendar_feed_user(token).await? else {
        return Err(not_found());
    };
    let now = state.clock().now();
    let list = state
        .appointments()
        .list(
            &user,
            Via::Feed,
            None,
            now - Duration::days(FEED_PAST_DAYS),
            now + Duration::days(FEED_AHEAD_DAYS),
        )
        .await?;
    let body = consulta_core::ical::feed(
        &list,
        &state.config().homeserver.domain,
        &state.calendar_page_url(),
        now,
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}
