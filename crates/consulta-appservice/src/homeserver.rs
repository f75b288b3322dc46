//! Consulta's client for the homeserver's APIs, authenticated with the as_token.
//!
//! Thin: each method is one request. Requests may act as a local user through the appservice's
//! `?user_id=` assertion (specs/matrix-appservice.md §1.5).

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

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
    admin_token: Secret,
    appservice_id: String,
    bot: Option<OwnedUserId>,
}

/// Percent-encodes one path segment (room ids carry `!` and `:`).
fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Whose credentials a request carries.
#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    /// The as_token, acting as the bot or, with `Some`, as a local user (`?user_id=`).
    Appservice(Option<&'a UserId>),
    /// The as_token, as the appservice itself (`sender_localpart`): ping, registration, login.
    Service,
    /// A user's own access token.
    User(&'a str),
    /// The configured server admin's token.
    Admin,
}

/// A room member and their membership (`join`, `invite`, `leave`, `ban`, `knock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Who.
    pub user_id: OwnedUserId,
    /// Their membership.
    pub membership: String,
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
            admin_token: Secret::new(""),
            appservice_id: appservice_id.to_owned(),
            bot: None,
        })
    }

    /// Acts as `bot` (with `?user_id=`) wherever a call names no user, registering its account on first
    /// use. The bot cannot be the registration's `sender_localpart`: Synapse refuses `/sync` to that
    /// user, and the assistant must sync to read its encrypted commands.
    pub fn with_bot(mut self, bot: OwnedUserId) -> Self {
        self.bot = Some(bot);
        self
    }

    /// Adds a server admin's token for the admin APIs (account creation, deactivation, room purge).
    pub fn with_admin_token(mut self, admin_token: Secret) -> Self {
        self.admin_token = admin_token;
        self
    }

    /// Whether admin APIs are available.
    pub fn has_admin_token(&self) -> bool {
        !self.admin_token.expose().is_empty()
    }

    /// Sends a request; acting as the bot for the first time registers its account first.
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<Value, HomeserverError> {
        let first = self.call_once(method.clone(), path, auth, body).await;
        match (&first, auth, &self.bot) {
            (
                Err(HomeserverError::Matrix {
                    status: 403, error, ..
                }),
                Auth::Appservice(None),
                Some(bot),
            ) if error.contains("not registered") => {
                self.ensure_registered(bot.localpart()).await?;
                self.call_once(method, path, auth, body).await
            }
            _ => first,
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<Value, HomeserverError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        request = match auth {
            Auth::Service => request.bearer_auth(self.as_token.expose()),
            Auth::Appservice(user) => {
                let r = request.bearer_auth(self.as_token.expose());
                match user.or(self.bot.as_deref()) {
                    Some(user) => r.query(&[("user_id", user.as_str())]),
                    None => r,
                }
            }
            Auth::User(token) => request.bearer_auth(token),
            Auth::Admin => {
                if !self.has_admin_token() {
                    return Err(HomeserverError::Matrix {
                        status: 0,
                        errcode: "CONSULTA_NO_ADMIN_TOKEN".into(),
                        error: "homeserver.admin_token is not configured".into(),
                    });
                }
                request.bearer_auth(self.admin_token.expose())
            }
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        self.finish(request).await
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn finish(&self, request: reqwest::RequestBuilder) -> Result<Value, HomeserverError> {
        let response = request
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
        let path = format!(
            "/_matrix/client/v1/appservice/{}/ping",
            seg(&self.appservice_id)
        );
        let body = json!({ "transaction_id": transaction_id });
        let body = self
            .call(Method::POST, &path, Auth::Service, Some(&body))
            .await?;
        let ms = body
            .get("duration_ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| HomeserverError::BadResponse("ping answer has no duration_ms".into()))?;
        Ok(Duration::from_millis(ms))
    }

    /// Who owns a user access token (`GET /account/whoami`). Used to authenticate REST API callers.
    pub async fn whoami(&self, access_token: &str) -> Result<OwnedUserId, HomeserverError> {
        let body = self
            .call(
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                Auth::User(access_token),
                None,
            )
            .await?;
        body.get("user_id")
            .and_then(Value::as_str)
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| {
                HomeserverError::BadResponse("whoami answer has no valid user_id".into())
            })
    }

    /// Who a Matrix OpenID token identifies (`GET /_matrix/federation/v1/openid/userinfo`). Used to
    /// authenticate REST API callers that hold an OpenID token rather than an access token (widgets).
    /// Synapse serves this on a listener with the `openid` (or `federation`) resource.
    pub async fn openid_userinfo(&self, token: &str) -> Result<OwnedUserId, HomeserverError> {
        let request = self
            .http
            .get(format!(
                "{}/_matrix/federation/v1/openid/userinfo",
                self.base
            ))
            .query(&[("access_token", token)]);
        let body = self.finish(request).await?;
        body.get("sub")
            .and_then(Value::as_str)
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| HomeserverError::BadResponse("userinfo answer has no valid sub".into()))
    }

    /// Joined and invited (and other) members of a room, read as `as_user`.
    pub async fn members(
        &self,
        room: &RoomId,
        as_user: &UserId,
    ) -> Result<Vec<Member>, HomeserverError> {
        let path = format!("/_matrix/client/v3/rooms/{}/members", seg(room.as_str()));
        let body = self
            .call(Method::GET, &path, Auth::Appservice(Some(as_user)), None)
            .await?;
        let chunk = body
            .get("chunk")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(chunk
            .iter()
            .filter_map(|event| {
                let user_id = UserId::parse(event.get("state_key")?.as_str()?).ok()?;
                let membership = event
                    .get("content")?
                    .get("membership")?
                    .as_str()?
                    .to_owned();
                Some(Member {
                    user_id,
                    membership,
                })
            })
            .collect())
    }

    /// The contents of every state event with an empty state key, by event type (one request).
    pub async fn room_state(
        &self,
        room: &RoomId,
        as_user: &UserId,
    ) -> Result<std::collections::HashMap<String, Value>, HomeserverError> {
        let path = format!("/_matrix/client/v3/rooms/{}/state", seg(room.as_str()));
        let events = self
            .call(Method::GET, &path, Auth::Appservice(Some(as_user)), None)
            .await?;
        Ok(events
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e.get("state_key").and_then(Value::as_str) == Some(""))
                    .filter_map(|e| {
                        Some((
                            e.get("type")?.as_str()?.to_owned(),
                            e.get("content")?.clone(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A state event's content, or `None` if the room has no such state.
    pub async fn state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        as_user: &UserId,
    ) -> Result<Option<Value>, HomeserverError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{}/{}",
            seg(room.as_str()),
            seg(event_type),
            seg(state_key)
        );
        match self
            .call(Method::GET, &path, Auth::Appservice(Some(as_user)), None)
            .await
        {
            Ok(content) => Ok(Some(content)),
            Err(HomeserverError::Matrix { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a state event as `as_user`.
    pub async fn put_state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &Value,
        as_user: &UserId,
    ) -> Result<(), HomeserverError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{}/{}",
            seg(room.as_str()),
            seg(event_type),
            seg(state_key)
        );
        self.call(
            Method::PUT,
            &path,
            Auth::Appservice(Some(as_user)),
            Some(content),
        )
        .await
        .map(drop)
    }

    /// Creates a room as `as_user` (`None`: the bot) with a `createRoom` body; returns its id.
    pub async fn create_room(
        &self,
        body: &Value,
        as_user: Option<&UserId>,
    ) -> Result<OwnedRoomId, HomeserverError> {
        let answer = self
            .call(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Auth::Appservice(as_user),
                Some(body),
            )
            .await?;
        answer
            .get("room_id")
            .and_then(Value::as_str)
            .and_then(|r| RoomId::parse(r).ok())
            .ok_or_else(|| {
                HomeserverError::BadResponse("createRoom answer has no valid room_id".into())
            })
    }

    /// Invites `user` as `as_user` (`None`: the bot).
    pub async fn invite(
        &self,
        room: &RoomId,
        user: &UserId,
        as_user: Option<&UserId>,
    ) -> Result<(), HomeserverError> {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", seg(room.as_str()));
        self.call(
            Method::POST,
            &path,
            Auth::Appservice(as_user),
            Some(&json!({ "user_id": user })),
        )
        .await
        .map(drop)
    }

    /// Removes `user` from a room as `as_user` (kick; also withdraws a pending invite).
    pub async fn kick(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: &str,
        as_user: &UserId,
    ) -> Result<(), HomeserverError> {
        let path = format!("/_matrix/client/v3/rooms/{}/kick", seg(room.as_str()));
        let body = json!({ "user_id": user, "reason": reason });
        self.call(
            Method::POST,
            &path,
            Auth::Appservice(Some(as_user)),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Leaves a room (or rejects an invite) on `as_user`'s behalf.
    pub async fn leave(&self, room: &RoomId, as_user: &UserId) -> Result<(), HomeserverError> {
        let path = format!("/_matrix/client/v3/rooms/{}/leave", seg(room.as_str()));
        self.call(
            Method::POST,
            &path,
            Auth::Appservice(Some(as_user)),
            Some(&json!({})),
        )
        .await
        .map(drop)
    }

    /// Joins a room as `as_user` (`None`: the bot).
    pub async fn join(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
    ) -> Result<(), HomeserverError> {
        let path = format!("/_matrix/client/v3/join/{}", seg(room.as_str()));
        self.call(
            Method::POST,
            &path,
            Auth::Appservice(as_user),
            Some(&json!({})),
        )
        .await
        .map(drop)
    }

    /// Makes sure one of our namespaced users has an account (`POST /register` with
    /// `m.login.application_service`); an existing account is fine. Synapse does not create an account
    /// row for the appservice's `sender_localpart`, and access tokens of a user without one are refused,
    /// so the assistant registers itself before it logs in.
    pub async fn ensure_registered(&self, localpart: &str) -> Result<(), HomeserverError> {
        let body = json!({
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": true,
        });
        match self
            .call_once(
                Method::POST,
                "/_matrix/client/v3/register",
                Auth::Service,
                Some(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(HomeserverError::Matrix { errcode, .. }) if errcode == "M_USER_IN_USE" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Logs `user` (one of ours) in as the device `device_id` with `m.login.application_service`, and
    /// returns the new access token. Used for the assistant's end-to-end encryption device: logging in
    /// again with the same device ID keeps the device (and its keys) and replaces only the token.
    pub async fn login_appservice(
        &self,
        user: &UserId,
        device_id: &str,
        display_name: &str,
    ) -> Result<Secret, HomeserverError> {
        let body = json!({
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": user.as_str()},
            "device_id": device_id,
            "initial_device_display_name": display_name,
        });
        let answer = self
            .call(
                Method::POST,
                "/_matrix/client/v3/login",
                Auth::Service,
                Some(&body),
            )
            .await?;
        answer
            .get("access_token")
            .and_then(Value::as_str)
            .map(Secret::new)
            .ok_or_else(|| HomeserverError::BadResponse("login answer has no access_token".into()))
    }

    /// Sends a message event as `as_user` (`None`: the bot) with a caller-chosen transaction id.
    pub async fn send_message(
        &self,
        room: &RoomId,
        txn_id: &str,
        content: &Value,
        as_user: Option<&UserId>,
    ) -> Result<String, HomeserverError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            seg(room.as_str()),
            seg(txn_id)
        );
        let answer = self
            .call(Method::PUT, &path, Auth::Appservice(as_user), Some(content))
            .await?;
        answer
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| HomeserverError::BadResponse("send answer has no event_id".into()))
    }

    /// Creates a local account through Synapse's admin API (needs the admin token).
    pub async fn admin_create_user(
        &self,
        user: &UserId,
        password: &Secret,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let path = format!("/_synapse/admin/v2/users/{}", seg(user.as_str()));
        let mut body =
            json!({ "password": password.expose(), "admin": false, "deactivated": false });
        if let (Some(name), Some(fields)) = (display_name, body.as_object_mut()) {
            fields.insert("displayname".to_owned(), json!(name));
        }
        self.call(Method::PUT, &path, Auth::Admin, Some(&body))
            .await
            .map(drop)
    }

    /// Whether a local account exists (admin API).
    pub async fn admin_user_exists(&self, user: &UserId) -> Result<bool, HomeserverError> {
        let path = format!("/_synapse/admin/v2/users/{}", seg(user.as_str()));
        match self.call(Method::GET, &path, Auth::Admin, None).await {
            Ok(_) => Ok(true),
            Err(HomeserverError::Matrix { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deactivates a local account (admin API); it can no longer log in.
    pub async fn admin_deactivate(&self, user: &UserId) -> Result<(), HomeserverError> {
        let path = format!("/_synapse/admin/v1/deactivate/{}", seg(user.as_str()));
        self.call(
            Method::POST,
            &path,
            Auth::Admin,
            Some(&json!({ "erase": false })),
        )
        .await
        .map(drop)
    }

    /// Deletes a room from the homeserver and purges its history (admin API).
    pub async fn admin_purge_room(&self, room: &RoomId) -> Result<(), HomeserverError> {
        let path = format!("/_synapse/admin/v1/rooms/{}", seg(room.as_str()));
        let body = json!({ "block": true, "purge": true, "force_purge": true });
        self.call(Method::DELETE, &path, Auth::Admin, Some(&body))
            .await
            .map(drop)
    }
}
