//! Consulta's client for the homeserver's APIs, authenticated with the as_token.
//!
//! Thin: each method is one request. Requests may act as a local user through the appservice's
//! `?user_id=` assertion (specs/matrix-appservice.md §1.5).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::secret::Secret;

/// Why a request to the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    /// No HTTP answer at all (refused, timed out, DNS).
    #[error("homeserver unreachable at {url}: {reason}")]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// The transport error, without any token.
        reason: String,
    },
    /// The homeserver answered with a Matrix error.
    #[error("homeserver refused: {status} {errcode}: {error}")]
    Matrix {
        /// HTTP status.
        status: u16,
        /// Matrix error code.
        errcode: String,
        /// Message.
        error: String,
    },
    /// The homeserver answered something that is not the expected JSON.
    #[error("unexpected answer from the homeserver: {0}")]
    BadResponse(String),
}

/// HTTP client for the homeserver.
#[derive(Debug, Clone)]
pub struct HomeserverClient {
    http: reqwest::Client,
    base: String,
    as_token: Secret,
    appservice_id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
}

impl HomeserverClient {
    /// A client for the homeserver at `base` (e.g. `http://127.0.0.1:8008`).
    pub fn new(base: &str, as_token: Secret, appservice_id: &str) -> Result<Self, HomeserverError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| HomeserverError::BadResponse(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            as_token,
            appservice_id: appservice_id.to_owned(),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, HomeserverError> {
        let response = request
            .bearer_auth(self.as_token.expose())
            .send()
            .await
            .map_err(|e| HomeserverError::Unreachable {
                url: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| HomeserverError::BadResponse(e.without_url().to_string()))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| HomeserverError::BadResponse(e.to_string()))
        } else {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
                errcode: "M_UNKNOWN".into(),
                error: String::new(),
            });
            Err(HomeserverError::Matrix {
                status: status.as_u16(),
                errcode: body.errcode,
                error: body.error,
            })
        }
    }

    /// Asks the homeserver to ping us back (`POST /_matrix/client/v1/appservice/{id}/ping`) and returns
    /// the round-trip time it measured. Success proves both tokens and both directions work.
    pub async fn ping(&self, transaction_id: &str) -> Result<Duration, HomeserverError> {
        let url = format!(
            "{}/_matrix/client/v1/appservice/{}/ping",
            self.base, self.appservice_id
        );
        let body = self
            .send(
                self.http
                    .post(url)
                    .json(&json!({ "transaction_id": transaction_id })),
            )
            .await?;
        let ms = body
            .get("duration_ms")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| HomeserverError::BadResponse("ping answer has no duration_ms".into()))?;
        Ok(Duration::from_millis(ms))
    }
}
