//! The application service API the homeserver calls.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/>. Every route requires the hs_token
//! (`Authorization: Bearer`), compared in constant time.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use consulta_core::AuditAction;
use consulta_store::Recorded;
use ruma::{RoomAliasId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use crate::error::MatrixError;
use crate::processor::TransactionBody;
use crate::state::AppState;

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, MatrixError> {
    body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(e) if e.body_text().contains("length limit") => {
            MatrixError::too_large("Request body too large")
        }
        other => MatrixError::bad_json(other.body_text()),
    })
}

/// `PUT /_matrix/app/v1/transactions/{txnId}`: events and ephemeral data pushed by the homeserver.
///
/// The transaction is recorded in the store before it is acknowledged and processed afterwards, so an
/// acknowledged transaction is never lost; a txnId seen before is acknowledged without processing it again.
pub async fn put_transaction(
    State(state): State<AppState>,
    headers: HeaderMap,
    txn_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, MatrixError> {
    require_token(&state, &headers, state.hs_token(), "transactions").await?;
    let Path(txn_id) = txn_id.map_err(|e| MatrixError::invalid_param(e.body_text()))?;
    if txn_id.is_empty() || txn_id.len() > 255 {
        return Err(MatrixError::invalid_param(
            "txnId must be 1 to 255 characters",
        ));
    }
    let body = body_or_error(body)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| MatrixError::not_json(format!("Body is not JSON: {e}")))?;
    let parsed = TransactionBody::deserialize(&value).map_err(|e| {
        MatrixError::bad_json(format!("Body is not an appservice transaction: {e}"))
    })?;
    let count = parsed.events.len() + parsed.ephemeral.len();
    // The body parsed as JSON, so it is UTF-8.
    let text =
        std::str::from_utf8(&body).map_err(|_| MatrixError::not_json("Body is not UTF-8"))?;
    match state
        .store()
        .record_transaction(&txn_id, text, count, state.clock().now())
        .await
    {
        Ok(Recorded::New) => {
            tracing::debug!(%txn_id, events = count, "transaction recorded");
            state.processor().wake();
        }
        Ok(Recorded::Duplicate) => {
            tracing::debug!(%txn_id, "transaction replayed; already recorded")
        }
        Err(e) => {
            state
                .audit(
                    None,
                    AuditAction::TransactionRejected,
                    Some(txn_id.clone()),
                    "store unavailable",
                )
                .await;
            // A non-2xx answer makes the homeserver retry later: nothing is lost.
            return Err(MatrixError::internal(&e));
        }
    }
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct PingBody {
    #[serde(default)]
    transaction_id: Option<String>,
}

/// `POST /_matrix/app/v1/ping`: the homeserver checks that it can reach us.
pub async fn post_ping(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, MatrixError> {
    require_token(&state, &headers, state.hs_token(), "ping").await?;
    let body = body_or_error(body)?;
    let ping: PingBody = if body.is_empty() {
        PingBody {
            transaction_id: None,
        }
    } else {
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| MatrixError::not_json(e.to_string()))?;
        PingBody::deserialize(&value).map_err(|e| MatrixError::bad_json(e.to_string()))?
    };
    tracing::info!(transaction_id = ?ping.transaction_id, "pinged by the homeserver");
    state.record_ping(ping.transaction_id);
    Ok(Json(json!({})))
}

/// `GET /_matrix/app/v1/users/{userId}`: does this user exist in our namespace?
///
/// Consulta creates no users on demand: its bot exists (it is the registration's sender), and local people
/// register through the homeserver. Anything else is 404, so the homeserver treats it as nonexistent.
pub async fn get_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, MatrixError> {
    require_token(&state, &headers, state.hs_token(), "users").await?;
    let Path(user_id) = user_id.map_err(|e| MatrixError::invalid_param(e.body_text()))?;
    let user = UserId::parse(user_id.as_str())
        .map_err(|e| MatrixError::invalid_param(format!("Invalid user ID: {e}")))?;
    if &user == state.bot() {
        Ok(Json(json!({})))
    } else {
        Err(MatrixError::not_found(
            "No such user in Consulta's namespace",
        ))
    }
}

/// `GET /_matrix/app/v1/rooms/{roomAlias}`: Consulta provisions no rooms by alias.
pub async fn get_room_alias(
    State(state): State<AppState>,
    headers: HeaderMap,
    alias: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, MatrixError> {
    require_token(&state, &headers, state.hs_token(), "rooms").await?;
    let Path(alias) = alias.map_err(|e| MatrixError::invalid_param(e.body_text()))?;
    RoomAliasId::parse(alias.as_str())
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room alias: {e}")))?;
    Err(MatrixError::not_found(
        "No such room alias in Consulta's namespace",
    ))
}
