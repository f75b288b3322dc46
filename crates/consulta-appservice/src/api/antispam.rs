//! `POST /_consulta/antispam/{callback}`: the pre-event gate called by Synapse's `synapse-http-antispam`
//! module before a room or an invite exists (specs/matrix-appservice.md §2(b)).
//!
//! Any 2xx allows the action; any other status refuses it and the JSON body reaches the client. The
//! module fails closed, and so does this route: unknown callbacks and malformed bodies are refused.
//! The clinical rules (who may create rooms and invite whom) arrive with the policy issue; until then
//! every well-formed request of a known callback is allowed, and the wiring, authentication and
//! fail-closed behaviour are what this route provides.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use crate::error::MatrixError;
use crate::state::AppState;

/// The callbacks Consulta decides. Anything else the module might be configured to send is refused.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GateRequest {
    Invite {
        inviter: String,
        invitee: String,
        room_id: String,
    },
    CreateRoom {
        user_id: String,
    },
    FederatedInvite {
        event: Value,
    },
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
    let request: GateRequest = serde_json::from_slice(&body).map_err(|_| {
        MatrixError::forbidden("Consulta could not read this request, so it is refused")
    })?;
    let known = matches!(
        (callback.as_str(), &request),
        ("user_may_create_room", GateRequest::CreateRoom { .. })
            | ("user_may_invite", GateRequest::Invite { .. })
            | (
                "federated_user_may_invite",
                GateRequest::FederatedInvite { .. }
            )
    );
    if !known {
        tracing::warn!(%callback, "gate callback Consulta does not decide; refused");
        return Err(MatrixError::forbidden(
            "Consulta cannot decide this action, so it is refused",
        ));
    }
    match &request {
        GateRequest::Invite {
            inviter,
            invitee,
            room_id,
        } => {
            tracing::debug!(%callback, %inviter, %invitee, %room_id, "gate: invite allowed");
        }
        GateRequest::CreateRoom { user_id } => {
            tracing::debug!(%callback, %user_id, "gate: room creation allowed")
        }
        GateRequest::FederatedInvite { event } => {
            tracing::debug!(%callback, event_id = ?event.get("event_id"), "gate: federated invite allowed");
        }
    }
    Ok(Json(json!({})))
}
