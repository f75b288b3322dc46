//! `/_consulta/v1/appointments` and `/_consulta/v1/appointment-requests`: the appointments REST API
//! (documented in `docs/API.md` and `docs/openapi.json`).
//!
//! Handlers authenticate the caller (access token or OpenID token), read the input — times as RFC 3339
//! or as wall-clock time in the clinic's zone — and delegate to the [`Appointments`] service, which
//! decides and audits. Answers carry every time twice: in UTC (`start`) and in the clinic's zone with
//! its offset (`start_local`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Duration;
use consulta_core::{
    Appointment, AppointmentId, AppointmentKind, AppointmentRequest, AppointmentStatus,
    BookingRefusal, ClinicTimeZone, OwnedRoomId, OwnedUserId, RequestId, RequestStatus, Slot,
    Timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{Caller, caller, json_body};
use crate::appointments::{
    Acceptance, AppointmentError, AppointmentUpdate, Appointments, NewAppointment, NewRequest,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Default span of a listing without `to`, in days.
const DEFAULT_RANGE_DAYS: i64 = 31;

/// Default length of a listing of upcoming appointments.
const DEFAULT_NEXT: u32 = 20;

/// Default length of an appointment or request without `end` or `duration_minutes`.
const DEFAULT_DURATION_MINUTES: i64 = 30;

fn status_of(refusal: &BookingRefusal) -> StatusCode {
    match refusal {
        BookingRefusal::NotAllowed
        | BookingRefusal::NotYourCalendar
        | BookingRefusal::NotAPatient
        | BookingRefusal::NotYourDoctor => StatusCode::FORBIDDEN,
        BookingRefusal::Busy(_)
        | BookingRefusal::NotScheduled(_)
        | BookingRefusal::NotStarted
        | BookingRefusal::RequestNotPending => StatusCode::CONFLICT,
        BookingRefusal::NotVisible => StatusCode::NOT_FOUND,
        BookingRefusal::UnknownDoctor
        | BookingRefusal::UnknownPatient
        | BookingRefusal::SamePerson
        | BookingRefusal::EndBeforeStart
        | BookingRefusal::BadDuration { .. }
        | BookingRefusal::InThePast
        | BookingRefusal::TooFarAhead
        | BookingRefusal::BadStatusChange
        | BookingRefusal::MissingStart => StatusCode::BAD_REQUEST,
    }
}

impl From<AppointmentError> for ApiError {
    fn from(e: AppointmentError) -> Self {
        match &e {
            AppointmentError::Refused(r) => ApiError::new(status_of(r), r.code(), r.to_string()),
            AppointmentError::NotFound => {
                ApiError::not_found(e.code(), "No such appointment or request")
            }
            AppointmentError::BadRange | AppointmentError::Time(_) => {
                ApiError::bad_request(e.code(), e.to_string())
            }
            AppointmentError::Store(cause) => ApiError::internal(cause),
        }
    }
}

/// Reads an optional time field; a bad one is audited and answered with 400.
async fn read_time(
    service: &Appointments<'_>,
    caller: &Caller,
    op: &str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, ApiError> {
    match text {
        None => Ok(None),
        Some(text) => match service.time_zone().parse(text) {
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(service
                .refused_input(&caller.user, caller.via, op, e.into())
                .await
                .into()),
        },
    }
}

/// The length given either as `end` (after `start`) or as `duration_minutes`, never both.
async fn read_duration(
    service: &Appointments<'_>,
    caller: &Caller,
    op: &str,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    duration_minutes: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    match (start, end, duration_minutes) {
        (_, Some(_), Some(_)) => Err(ApiError::bad_request(
            "bad_body",
            "Give either `end` or `duration_minutes`, not both",
        )),
        (None, Some(_), None) => Err(ApiError::bad_request(
            "bad_body",
            "`end` needs `start` beside it",
        )),
        (Some(start), Some(end), None) => match Slot::between(start, end) {
            Ok(slot) => Ok(Some(slot.duration_minutes())),
            Err(refusal) => Err(service
                .refused_input(&caller.user, caller.via, op, refusal.into())
                .await
                .into()),
        },
        (_, None, minutes) => Ok(minutes),
    }
}

async fn read_slot(
    service: &Appointments<'_>,
    caller: &Caller,
    op: &str,
    start: Timestamp,
    minutes: i64,
) -> Result<Slot, ApiError> {
    match Slot::new(start, minutes) {
        Ok(slot) => Ok(slot),
        Err(refusal) => Err(service
            .refused_input(&caller.user, caller.via, op, refusal.into())
            .await
            .into()),
    }
}

fn appointment_json(tz: ClinicTimeZone, a: &Appointment) -> Value {
    json!({
        "id": a.id,
        "doctor": a.doctor,
        "patient": a.patient,
        "start": a.start,
        "end": a.end(),
        "start_local": tz.present(a.start),
        "end_local": tz.present(a.end()),
        "time_zone": tz.name(),
        "duration_minutes": a.duration_minutes,
        "kind": a.kind,
        "status": a.status,
        "reason": a.reason,
        "room_id": a.room_id,
        "created_by": a.created_by,
        "created_at": a.created_at,
        "updated_by": a.updated_by,
        "updated_at": a.updated_at,
    })
}

fn request_json(tz: ClinicTimeZone, r: &AppointmentRequest) -> Value {
    json!({
        "id": r.id,
        "patient": r.patient,
        "doctor": r.doctor,
        "preferred_start": r.preferred_start,
        "preferred_start_local": r.preferred_start.map(|t| tz.present(t)),
        "time_zone": tz.name(),
        "duration_minutes": r.duration_minutes,
        "kind": r.kind,
        "reason": r.reason,
        "status": r.status,
        "created_at": r.created_at,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at,
        "appointment_id": r.appointment,
    })
}

fn path_id<T: std::str::FromStr>(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    raw.parse()
        .map_err(|_| ApiError::bad_request("bad_id", format!("Invalid {what} id")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    from: Option<String>,
    to: Option<String>,
    user: Option<OwnedUserId>,
}

/// `GET /_consulta/v1/appointments?from=&to=&user=`: appointments sharing time with `[from, to)`.
pub async fn get_appointments(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let service = state.appointments_for(&caller.user, caller.role);
    let from = read_time(&service, &caller, "list", query.from.as_deref())
        .await?
        .unwrap_or_else(|| state.clock().now());
    let to = read_time(&service, &caller, "list", query.to.as_deref())
        .await?
        .unwrap_or(from + Duration::days(DEFAULT_RANGE_DAYS));
    let list = service
        .list(&caller.user, caller.via, query.user.as_deref(), from, to)
        .await?;
    let tz = service.time_zone();
    Ok(Json(json!({
        "from": from,
        "to": to,
        "time_zone": tz.name(),
        "appointments": list.iter().map(|a| appointment_json(tz, a)).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    limit: Option<u32>,
}

/// `GET /_consulta/v1/appointments/next?limit=20`: the caller's next scheduled appointments.
pub async fn get_next_appointments(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let service = state.appointments_for(&caller.user, caller.role);
    let list = service
        .next(
            &caller.user,
            caller.via,
            query.limit.unwrap_or(DEFAULT_NEXT),
        )
        .await?;
    let tz = service.time_zone();
    Ok(Json(json!({
        "time_zone": tz.name(),
        "appointments": list.iter().map(|a| appointment_json(tz, a)).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAppointment {
    #[serde(default)]
    doctor: Option<OwnedUserId>,
    patient: OwnedUserId,
    start: String,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    kind: Option<AppointmentKind>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
}

/// `POST /_consulta/v1/appointments` (doctors, admins): books an appointment.
pub async fn post_appointment(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateAppointment>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    let body = json_body(body)?;
    let service = state.appointments_for(&caller.user, caller.role);
    let op = "book";
    let start = read_time(&service, &caller, op, Some(&body.start)).await?;
    let end = read_time(&service, &caller, op, body.end.as_deref()).await?;
    let minutes = read_duration(&service, &caller, op, start, end, body.duration_minutes)
        .await?
        .unwrap_or(DEFAULT_DURATION_MINUTES);
    let Some(start) = start else {
        return Err(ApiError::bad_request("bad_body", "`start` is required"));
    };
    let slot = read_slot(&service, &caller, op, start, minutes).await?;
    let appointment = service
        .book(
            &caller.user,
            caller.via,
            NewAppointment {
                doctor: body.doctor,
                patient: body.patient,
                slot,
                kind: body.kind.unwrap_or(AppointmentKind::Video),
                reason: body.reason,
                room_id: body.room_id,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(appointment_json(service.time_zone(), &appointment)),
    ))
}

/// `GET /_consulta/v1/appointments/{id}`.
pub async fn get_appointment(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: AppointmentId = path_id(id, "appointment")?;
    let service = state.appointments_for(&caller.user, caller.role);
    let appointment = service.get(&caller.user, caller.via, id).await?;
    Ok(Json(appointment_json(service.time_zone(), &appointment)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchAppointment {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    kind: Option<AppointmentKind>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
    #[serde(default)]
    status: Option<AppointmentStatus>,
}

/// `PATCH /_consulta/v1/appointments/{id}` (its doctor, admins): reschedules it, changes its details,
/// or sets its status (`cancelled`, `completed`, `no_show`) — a status change comes alone.
pub async fn patch_appointment(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<PatchAppointment>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: AppointmentId = path_id(id, "appointment")?;
    let body = json_body(body)?;
    let service = state.appointments_for(&caller.user, caller.role);
    let tz = service.time_zone();
    if let Some(status) = body.status {
        let alone = body.start.is_none()
            && body.end.is_none()
            && body.duration_minutes.is_none()
            && body.kind.is_none()
            && body.reason.is_none()
            && body.room_id.is_none();
        if !alone {
            return Err(ApiError::bad_request(
                "bad_body",
                "A status change comes alone: send `status` without other fields",
            ));
        }
        let appointment = service
            .set_status(&caller.user, caller.via, id, status)
            .await?;
        return Ok(Json(appointment_json(tz, &appointment)));
    }
    let op = "reschedule";
    let start = read_time(&service, &caller, op, body.start.as_deref()).await?;
    let end = read_time(&service, &caller, op, body.end.as_deref()).await?;
    let duration_minutes =
        read_duration(&service, &caller, op, start, end, body.duration_minutes).await?;
    let appointment = service
        .update(
            &caller.user,
            caller.via,
            id,
            AppointmentUpdate {
                start,
                duration_minutes,
                kind: body.kind,
                reason: body.reason,
                room_id: body.room_id.map(Some),
            },
        )
        .await?;
    Ok(Json(appointment_json(tz, &appointment)))
}

/// `POST /_consulta/v1/appointments/{id}/cancel` (its doctor, admins).
pub async fn post_appointment_cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: AppointmentId = path_id(id, "appointment")?;
    let service = state.appointments_for(&caller.user, caller.role);
    let appointment = service.cancel(&caller.user, caller.via, id).await?;
    Ok(Json(appointment_json(service.time_zone(), &appointment)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    status: Option<RequestStatus>,
}

/// `GET /_consulta/v1/appointment-requests?status=pending`: requests the caller made or received.
pub async fn get_requests(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let service = state.appointments_for(&caller.user, caller.role);
    let list = service
        .requests(&caller.user, caller.via, query.status)
        .await?;
    let tz = service.time_zone();
    Ok(Json(json!({
        "requests": list.iter().map(|r| request_json(tz, r)).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    doctor: OwnedUserId,
    #[serde(default)]
    preferred_start: Option<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    kind: Option<AppointmentKind>,
    #[serde(default)]
    reason: String,
}

/// `POST /_consulta/v1/appointment-requests` (patients): asks one of their doctors for an appointment.
pub async fn post_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    let body = json_body(body)?;
    let service = state.appointments_for(&caller.user, caller.role);
    let preferred_start = read_time(
        &service,
        &caller,
        "request",
        body.preferred_start.as_deref(),
    )
    .await?;
    let request = service
        .request(
            &caller.user,
            caller.via,
            NewRequest {
                doctor: body.doctor,
                preferred_start,
                duration_minutes: body.duration_minutes.unwrap_or(DEFAULT_DURATION_MINUTES),
                kind: body.kind.unwrap_or(AppointmentKind::Video),
                reason: body.reason,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(request_json(service.time_zone(), &request)),
    ))
}

/// `GET /_consulta/v1/appointment-requests/{id}`.
pub async fn get_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: RequestId = path_id(id, "request")?;
    let service = state.appointments_for(&caller.user, caller.role);
    let request = service.get_request(&caller.user, caller.via, id).await?;
    Ok(Json(request_json(service.time_zone(), &request)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    kind: Option<AppointmentKind>,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
}

/// `POST /_consulta/v1/appointment-requests/{id}/accept` (its doctor, admins): books the appointment.
pub async fn post_request_accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: RequestId = path_id(id, "request")?;
    // The body is optional: an empty one accepts the request as the patient asked.
    let body: AcceptRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AcceptRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?
    };
    let service = state.appointments_for(&caller.user, caller.role);
    let op = "accept";
    let start = read_time(&service, &caller, op, body.start.as_deref()).await?;
    let slot = match start {
        Some(start) => Some(
            read_slot(
                &service,
                &caller,
                op,
                start,
                body.duration_minutes.unwrap_or(DEFAULT_DURATION_MINUTES),
            )
            .await?,
        ),
        None => None,
    };
    let (request, appointment) = service
        .accept_request(
            &caller.user,
            caller.via,
            id,
            Acceptance {
                slot,
                kind: body.kind,
                room_id: body.room_id,
            },
        )
        .await?;
    let tz = service.time_zone();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "request": request_json(tz, &request),
            "appointment": appointment_json(tz, &appointment),
        })),
    ))
}

/// `POST /_consulta/v1/appointment-requests/{id}/decline` (its doctor, admins).
pub async fn post_request_decline(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: RequestId = path_id(id, "request")?;
    let service = state.appointments_for(&caller.user, caller.role);
    let request = service
        .decline_request(&caller.user, caller.via, id)
        .await?;
    Ok(Json(request_json(service.time_zone(), &request)))
}

/// `POST /_consulta/v1/appointment-requests/{id}/withdraw` (its patient).
pub async fn post_request_withdraw(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let id: RequestId = path_id(id, "request")?;
    let service = state.appointments_for(&caller.user, caller.role);
    let request = service
        .withdraw_request(&caller.user, caller.via, id)
        .await?;
    Ok(Json(request_json(service.time_zone(), &request)))
}
