//! Consulta's REST API, `/_consulta/v1`: accounts and roles for admins, consultations and read state for
//! doctors and patients.
//!
//! Callers authenticate with their Matrix access token (`Authorization: Bearer`), which the homeserver
//! vouches for (`/account/whoami`), or with a Matrix OpenID token (`Authorization: OpenID`), which it
//! vouches for at `/_matrix/federation/v1/openid/userinfo`. Handlers check the caller's role and delegate to the services.
//! Errors are problem JSON with a machine-readable `code`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use consulta_core::{Role, UserId};
use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Credential;
use crate::appointments::Via;
use crate::consultations::{DeleteError, StartError};
use crate::error::ApiError;
use crate::homeserver::HomeserverError;
use crate::roles::{Actor, RoleError};
use crate::state::AppState;

/// The authenticated caller, their role, and how they authenticated.
pub(super) struct Caller {
    pub(super) user: OwnedUserId,
    pub(super) role: Option<Role>,
    pub(super) via: Via,
}

/// Authenticates a REST API caller: a Matrix access token (`Authorization: Bearer`) checked with the
/// homeserver's `whoami`, or a Matrix OpenID token (`Authorization: OpenID`) checked with its
/// `openid/userinfo`. Either way only accounts of this homeserver get in.
pub(super) async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let credential = super::auth::credential(headers).ok_or_else(|| {
        ApiError::unauthenticated(
            "Send your Matrix access token as `Authorization: Bearer <token>`, a Matrix OpenID token as `Authorization: OpenID <token>`, or a calendar session as `Authorization: Session <token>`",
        )
    })?;
    let (answer, via) = match credential {
        Credential::AccessToken(token) => (state.homeserver().whoami(token).await, Via::Api),
        Credential::OpenId(token) => (state.homeserver().openid_userinfo(token).await, Via::OpenId),
        Credential::Session(token) => {
            let user = state
                .calendar_session_user(token)
                .await
                .map_err(|e| ApiError::internal(&e))?
                .ok_or_else(|| {
                    ApiError::unauthenticated(
                        "This calendar session has ended: open the calendar again from Element, or ask the assistant for a new link with !calendar",
                    )
                })?;
            (Ok(user), Via::Calendar)
        }
    };
    let user = match answer {
        Ok(user) => user,
        Err(HomeserverError::Matrix {
            status: 401 | 403, ..
        }) => {
            return Err(ApiError::unauthenticated(
                "The homeserver does not recognise this token",
            ));
        }
        Err(e) => return Err(ApiError::internal(&e)),
    };
    if !state.is_local(&user) {
        return Err(ApiError::forbidden(
            "not_local",
            "Only accounts of this homeserver use this API",
        ));
    }
    let role = state.role_of(&user).await?;
    Ok(Caller { user, role, via })
}

fn require(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if caller.role == Some(role) {
        Ok(())
    } else {
        let code = match role {
            Role::Admin => "not_an_admin",
            Role::Doctor => "not_a_doctor",
            Role::Patient => "not_a_patient",
        };
        Err(ApiError::forbidden(
            code,
            format!("This needs the {role} role"),
        ))
    }
}

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request("bad_body", e.body_text()))
}

fn path_user(path: Result<Path<String>, PathRejection>) -> Result<OwnedUserId, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    UserId::parse(raw.as_str())
        .map_err(|e| ApiError::bad_request("bad_user_id", format!("Invalid user ID: {e}")))
}

fn role_error(e: RoleError) -> ApiError {
    match e {
        RoleError::NotLocal(_) => ApiError::bad_request("not_local", e.to_string()),
        RoleError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        RoleError::NotPending(..) => {
            ApiError::new(StatusCode::CONFLICT, "not_pending", e.to_string())
        }
        RoleError::InvalidLocalpart(..) => ApiError::bad_request("bad_username", e.to_string()),
        RoleError::Homeserver(HomeserverError::Matrix { ref errcode, .. })
            if errcode == "CONSULTA_NO_ADMIN_TOKEN" =>
        {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_admin_token",
                "homeserver.admin_token is not configured",
            )
        }
        other => ApiError::internal(&other),
    }
}

/// `GET /_consulta/v1/me`: who Consulta thinks the caller is.
pub async fn get_me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    Ok(Json(json!({ "user_id": caller.user, "role": caller.role })))
}

#[derive(Debug, Deserialize)]
pub struct CreateUser {
    username: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
}

/// `POST /_consulta/v1/users` (admin): creates an account; the initial password is returned once.
pub async fn post_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Admin)?;
    let body = json_body(body)?;
    let account = state
        .create_account(
            Actor::User(&caller.user),
            &body.username,
            body.display_name.as_deref(),
            body.role,
        )
        .await
        .map_err(role_error)?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "user_id": account.user_id, "role": body.role, "initial_password": account.password.expose() }),
        ),
    ))
}

#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    role: Role,
}

/// `GET /_consulta/v1/users?role=doctor` (admin): users with a role.
pub async fn get_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Admin)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let users: Vec<Value> = state
        .store()
        .users_with_role(query.role)
        .await?
        .into_iter()
        .map(|u| json!({ "user_id": u.user_id, "role": u.role, "since": u.updated_at }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

#[derive(Debug, Deserialize)]
pub struct SetRole {
    role: Option<Role>,
}

/// `PUT /_consulta/v1/users/{userId}/role` (admin): `{"role": "doctor"}` or `{"role": null}` to revoke.
pub async fn put_user_role(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
    body: Result<Json<SetRole>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Admin)?;
    let user = path_user(user)?;
    let body = json_body(body)?;
    state
        .change_role(Actor::User(&caller.user), &user, body.role)
        .await
        .map_err(role_error)?;
    Ok(Json(json!({ "user_id": user, "role": body.role })))
}

/// `POST /_consulta/v1/users/{userId}/deactivate` (admin).
pub async fn post_user_deactivate(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Admin)?;
    let user = path_user(user)?;
    state
        .deactivate_account(Actor::User(&caller.user), &user)
        .await
        .map_err(role_error)?;
    Ok(Json(json!({ "user_id": user, "deactivated": true })))
}

/// `POST /_consulta/v1/patients/{userId}/validate` (doctor): a pending user becomes a patient.
pub async fn post_validate_patient(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Doctor)?;
    let user = path_user(user)?;
    state
        .validate_patient(&caller.user, &user)
        .await
        .map_err(role_error)?;
    Ok(Json(json!({ "user_id": user, "role": Role::Patient })))
}

/// `GET /_consulta/v1/consultations`: the caller's open consultations with their read state (a doctor
/// sees, per patient, what is unread and since when, and how far the patient has read).
pub async fn get_consultations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let read_state = state.read_state_of(&caller.user).await?;
    Ok(Json(json!({ "consultations": read_state })))
}

/// `GET /_consulta/v1/unread`: the caller's unread summary (the notice on the main page).
pub async fn get_unread(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let read_state = state.read_state_of(&caller.user).await?;
    let total: u64 = read_state.iter().map(|c| c.unread).sum();
    let rooms: Vec<Value> = read_state
        .iter()
        .filter(|c| c.unread > 0)
        .map(|c| json!({ "room_id": c.room_id, "with": c.with, "unread": c.unread, "since": c.unread_since }))
        .collect();
    Ok(Json(json!({ "total": total, "rooms": rooms })))
}

#[derive(Debug, Deserialize)]
pub struct StartConsultation {
    patient: OwnedUserId,
}

/// `POST /_consulta/v1/consultations` (doctor): starts (or returns) the consultation with a patient.
pub async fn post_consultation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<StartConsultation>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Doctor)?;
    let body = json_body(body)?;
    match state.start_consultation(&caller.user, &body.patient).await {
        Ok((room, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                Json(json!({ "room_id": room, "patient": body.patient, "created": created })),
            ))
        }
        Err(StartError::Homeserver(HomeserverError::Matrix {
            status: 403, error, ..
        })) => Err(ApiError::forbidden("refused", error)),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

/// `DELETE /_consulta/v1/consultations/{roomId}` (its doctor): archives or purges it.
pub async fn delete_consultation(
    State(state): State<AppState>,
    headers: HeaderMap,
    room: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers).await?;
    require(&caller, Role::Doctor)?;
    let Path(raw) = room.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    let room = OwnedRoomId::try_from(raw.as_str())
        .map_err(|e| ApiError::bad_request("bad_room_id", format!("Invalid room ID: {e}")))?;
    match state.delete_consultation(&caller.user, &room).await {
        Ok(status) => Ok(Json(json!({ "room_id": room, "status": status }))),
        Err(DeleteError::NotFound) => Err(ApiError::not_found(
            "no_consultation",
            "No open consultation in that room",
        )),
        Err(DeleteError::NotItsDoctor) => Err(ApiError::forbidden(
            "not_its_doctor",
            "Only the consultation's doctor can delete it",
        )),
        Err(e) => Err(ApiError::internal(&e)),
    }
}
