//! `POST /_consulta/antispam/{callback}`: the pre-event gate called by Synapse's `synapse-http-antispam`
//! module before a room or an invite exists (specs/matrix-appservice.md §2(b)).
//!
//! Any 2xx allows the action; any other status refuses it and the JSON body's `error` reaches the client.
//! The module fails closed when Consulta is unreachable, and so does this route: unknown callbacks,
//! malformed bodies and facts that cannot be gathered are all refusals. Every refusal is audited.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use consulta_core::{Decision, UserId};
use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use crate::error::MatrixError;
use crate::policy::InviteOrigin;
use crate::state::AppState;

const CANNOT_DECIDE: &str = "Consulta cannot decide this action right now, so it is refused.";

#[derive(Debug, Deserialize)]
struct InviteBody {
    inviter: OwnedUserId,
    invitee: OwnedUserId,
    room_id: OwnedRoomId,
}

#[derive(Debug, Deserialize)]
struct CreateRoomBody {
    user_id: OwnedUserId,
}

#[derive(Debug, Deserialize)]
struct FederatedInviteBody {
    event: FederatedInviteEvent,
}

#[derive(Debug, Deserialize)]
struct FederatedInviteEvent {
    sender: OwnedUserId,
    state_key: OwnedUserId,
    room_id: OwnedRoomId,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, MatrixError> {
    serde_json::from_slice(body).map_err(|_| MatrixError::forbidden(CANNOT_DECIDE))
}

/// Answers one gate callback.
pub async fn post_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    callback: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, MatrixError> {
    require_token(&state, &headers, state.antispam_secret(), "antispam").await?;
    let Path(callback) = callback.map_err(|e| MatrixError::invalid_param(e.body_text()))?;
    let body = body.map_err(|e| MatrixError::bad_json(e.body_text()))?;
    let (actor, target, decision) = match callback.as_str() {
        "user_may_create_room" => {
            let CreateRoomBody { user_id } = parse(&body)?;
            let decision = state.decide_create_room(&user_id).await;
            (user_id, None, decision)
        }
        "user_may_invite" => {
            let InviteBody {
                inviter,
                invitee,
                room_id,
            } = parse(&body)?;
            let origin = if state.is_local(&inviter) {
                InviteOrigin::Local
            } else {
                InviteOrigin::Federated
            };
            let decision = state
                .decide_invite(&inviter, &invitee, &room_id, origin)
                .await;
            (inviter, Some(invitee.to_string()), decision)
        }
        "federated_user_may_invite" => {
            let FederatedInviteBody { event } = parse(&body)?;
            let decision = state
                .decide_invite(
                    &event.sender,
                    &event.state_key,
                    &event.room_id,
                    InviteOrigin::Federated,
                )
                .await;
            (event.sender, Some(event.state_key.to_string()), decision)
        }
        _ => {
            tracing::warn!(%callback, "gate callback Consulta does not decide; refused");
            return Err(MatrixError::forbidden(CANNOT_DECIDE));
        }
    };
    answer(&state, &callback, &actor, target, decision).await
}

async fn answer(
    state: &AppState,
    callback: &str,
    actor: &UserId,
    target: Option<String>,
    decision: Result<Decision, crate::policy::PolicyError>,
) -> Result<Json<Value>, MatrixError> {
    match decision {
        Ok(Decision::Allow) => {
            tracing::debug!(%callback, %actor, target = ?target, "gate: allowed");
            Ok(Json(json!({})))
        }
        Ok(Decision::Refuse(refusal)) => {
            tracing::info!(%callback, %actor, target = ?target, reason = refusal.code(), "gate: refused");
            state
                .audit_refusal(actor, target, callback, refusal.code())
                .await;
            Err(MatrixError::forbidden(refusal.message()))
        }
        Err(e) => {
            tracing::error!(%callback, %actor, error = %e, "gate: cannot decide; refused (fail closed)");
            state
                .audit_refusal(actor, target, callback, "cannot_decide")
                .await;
            Err(MatrixError::forbidden(CANNOT_DECIDE))
        }
    }
}
