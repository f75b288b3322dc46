//! The clinic assistant: the appservice's bot user as an end-to-end encrypted Matrix client.
//!
//! It is a matrix-sdk `Client` with its own encrypted SQLite store (session state, Olm/Megolm keys,
//! sync position) in `appservice.bot.store_path`. At every start the appservice logs the bot in with
//! `m.login.application_service` as the configured device (specs/matrix-appservice.md §1.5, §6 option
//! A): Synapse keeps the device and its keys and only replaces the access token, so no token is ever
//! written to disk.
//!
//! Two loops run once it is up:
//! - **sync**: decrypts what people send in their Care desk room and answers commands (`commands`).
//!   A command is carried out once: its event id is claimed in the store first, so a restart that
//!   replays a sync cannot repeat a booking. Commands older than [`COMMAND_MAX_AGE`] (a fresh store's
//!   first sync sees history) are not carried out.
//! - **delivery**: sends the outbox's notices (`crate::notices`, unread reminders) encrypted to each
//!   person's Care desk room. The transaction id is the outbox row's id, so a notice sent just before a
//!   crash and sent again after it is one event on the homeserver (Synapse deduplicates per device).

pub mod commands;

use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::{
    MilliSecondsSinceUnixEpoch, MxcUri, OwnedDeviceId, OwnedTransactionId, UserId,
};
use matrix_sdk::{Client, SessionMeta, SessionTokens};
use tokio::task::JoinHandle;

use crate::state::AppState;

/// Commands older than this when first seen are not carried out.
pub const COMMAND_MAX_AGE: Duration = Duration::from_secs(3600);

/// How often the outbox is looked at when nothing wakes the delivery loop.
const DELIVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Notices whose delivery failed this often are left in the outbox for an operator (see docs/OPERATIONS.md).
pub const MAX_DELIVERY_ATTEMPTS: i64 = 50;

/// Why the assistant could not start.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// Its store directory could not be made.
    #[error("cannot create the assistant's store at {path}: {source}")]
    StoreDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// matrix-sdk failed (store, login, sync).
    #[error(transparent)]
    Sdk(#[from] matrix_sdk::Error),
    /// The client could not be built.
    #[error(transparent)]
    Build(#[from] matrix_sdk::ClientBuildError),
    /// The homeserver refused the appservice login.
    #[error(transparent)]
    Homeserver(#[from] crate::homeserver::HomeserverError),
}

/// The running assistant.
#[derive(Debug, Clone)]
pub struct Bot {
    client: Client,
    state: AppState,
}

/// Starts the assistant (if enabled), retrying its login until the homeserver answers. The handle runs
/// until aborted.
pub fn spawn_bot(state: &AppState) -> Option<JoinHandle<()>> {
    if !state.config().appservice.bot.enabled {
        tracing::info!("clinic assistant disabled: notices wait in the outbox");
        return None;
    }
    let state = state.clone();
    Some(tokio::spawn(async move {
        let mut attempt: u32 = 0;
        let bot = loop {
            attempt += 1;
            match Bot::connect(state.clone()).await {
                Ok(bot) => break bot,
                Err(e) => {
                    let retry = Duration::from_secs(u64::from(attempt.min(12)) * 5);
                    tracing::error!(error = %e, retry_in_s = retry.as_secs(), "clinic assistant cannot start");
                    tokio::time::sleep(retry).await;
                }
            }
        };
        bot.run().await;
    }))
}

impl Bot {
    /// Opens the store, logs in as the configured device and sets the profile.
    pub async fn connect(state: AppState) -> Result<Self, BotError> {
        let config = &state.config().appservice.bot;
        let path = &config.store_path;
        std::fs::create_dir_all(path).map_err(|source| BotError::StoreDir {
            path: path.display().to_string(),
            source,
        })?;
        restrict_permissions(path);
        let passphrase = state.config().bot_store_passphrase();
        let client = Client::builder()
            .homeserver_url(state.homeserver().base_url())
            .sqlite_store(path, Some(passphrase.expose()))
            .build()
            .await?;
        let device_id: OwnedDeviceId = config.device_id.as_str().into();
        state
            .homeserver()
            .ensure_registered(&config.username)
            .await?;
        let token = state
            .homeserver()
            .login_appservice(state.bot(), device_id.as_str(), &config.displayname)
            .await?;
        client
            .restore_session(MatrixSession {
                meta: SessionMeta {
                    user_id: state.bot().clone(),
                    device_id,
                },
                tokens: SessionTokens {
                    access_token: token.expose().to_owned(),
                    refresh_token: None,
                },
            })
            .await?;
        let account = client.account();
        if account.get_display_name().await?.as_deref() != Some(config.displayname.as_str()) {
            account.set_display_name(Some(&config.displayname)).await?;
        }
        let avatar = <&MxcUri>::from(config.avatar.as_str());
        if avatar.is_valid() && account.get_avatar_url().await?.as_deref() != Some(avatar) {
            account.set_avatar_url(Some(avatar)).await?;
        }
        tracing::info!(device_id = %config.device_id, "clinic assistant logged in");
        Ok(Self { client, state })
    }

    /// Runs the sync and delivery loops until the task is aborted.
    pub async fn run(self) {
        let handler_state = self.state.clone();
        self.client
            .add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: Room| {
                let state = handler_state.clone();
                async move { on_message(&state, room, event).await }
            });
        // Care desks missing the calendar (or showing an old URL) get it beside the sync, so that a
        // clinic with many desks does not wait for them before the assistant answers.
        let pin_state = self.state.clone();
        let _pin = AbortOnDrop(tokio::spawn(async move {
            match pin_state.pin_calendar_in_care_desks().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rooms = n, "calendar pinned in Care desks"),
                Err(e) => tracing::warn!(error = %e, "cannot list Care desks to pin the calendar"),
            }
        }));
        let sync_client = self.client.clone();
        // Aborted with this task (a stopped appservice must not leave its old client syncing).
        let sync = AbortOnDrop(tokio::spawn(async move {
            let mut attempt: u32 = 0;
            loop {
                let settings = SyncSettings::default().timeout(Duration::from_secs(30));
                if let Err(e) = sync_client.sync(settings).await {
                    attempt += 1;
                    let retry = Duration::from_secs(u64::from(attempt.min(12)) * 5);
                    tracing::error!(error = %e, retry_in_s = retry.as_secs(), "clinic assistant sync failed");
                    tokio::time::sleep(retry).await;
                }
            }
        }));
        let delivery = Arc::new(self);
        loop {
            if let Err(e) = delivery.deliver_pending().await {
                tracing::error!(error = %e, "cannot read the notice outbox");
            }
            tokio::select! {
                () = delivery.state.outbox_ready().notified() => {}
                () = tokio::time::sleep(DELIVERY_INTERVAL) => {}
            }
            if sync.0.is_finished() {
                break;
            }
        }
    }

    /// Sends every undelivered notice; returns how many were sent.
    pub async fn deliver_pending(&self) -> Result<usize, consulta_store::StoreError> {
        let mut sent = 0;
        for notice in self
            .state
            .store()
            .pending_notices(100, MAX_DELIVERY_ATTEMPTS)
            .await?
        {
            match self
                .send_to_desk(&notice.recipient, notice.id, &notice.body)
                .await
            {
                Ok(event_id) => {
                    self.state
                        .store()
                        .mark_notice_sent(notice.id, &event_id, self.state.clock().now())
                        .await?;
                    sent += 1;
                }
                Err(code) => {
                    tracing::warn!(notice = notice.id, recipient = %notice.recipient, code, "notice not delivered; will retry");
                    self.state
                        .store()
                        .mark_notice_failed(notice.id, code)
                        .await?;
                }
            }
        }
        Ok(sent)
    }

    /// Sends one notice to `recipient`'s Care desk room (opened if needed), encrypted; returns the event id.
    async fn send_to_desk(
        &self,
        recipient: &UserId,
        outbox_id: i64,
        body: &str,
    ) -> Result<String, &'static str> {
        let desk = self
            .state
            .care_desk_room(recipient)
            .await
            .map_err(|_| "care_desk")?;
        let room = match self.client.get_room(&desk) {
            Some(room) => room,
            None => self
                .client
                .join_room_by_id(&desk)
                .await
                .map_err(|_| "join")?,
        };
        if !room
            .latest_encryption_state()
            .await
            .map_err(|_| "encryption_state")?
            .is_encrypted()
        {
            // A desk opened before the assistant encrypted: turn encryption on before anything else.
            room.enable_encryption()
                .await
                .map_err(|_| "enable_encryption")?;
        }
        let txn: OwnedTransactionId = format!("consulta-notice-{outbox_id}").into();
        let sent = room
            .send(RoomMessageEventContent::notice_plain(body))
            .with_transaction_id(txn)
            .await
            .map_err(|_| "send")?;
        Ok(sent.response.event_id.to_string())
    }
}

/// Answers a command sent by the owner of a Care desk room, once.
async fn on_message(state: &AppState, room: Room, event: OriginalSyncRoomMessageEvent) {
    if &event.sender == state.bot() {
        return;
    }
    let MessageType::Text(text) = &event.content.msgtype else {
        return;
    };
    match state.store().care_desk_owner(room.room_id()).await {
        Ok(Some(owner)) if owner == event.sender => {}
        Ok(_) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot look up a Care desk");
            return;
        }
    }
    let age_ms = u64::from(MilliSecondsSinceUnixEpoch::now().get())
        .saturating_sub(u64::from(event.origin_server_ts.get()));
    if Duration::from_millis(age_ms) > COMMAND_MAX_AGE {
        return;
    }
    match state
        .store()
        .claim_command(event.event_id.as_str(), state.clock().now())
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot claim a command");
            return;
        }
    }
    let reply = commands::answer(state, &event.sender, &text.body).await;
    if let Err(e) = room
        .send_single_receipt(
            ReceiptType::Read,
            ReceiptThread::Unthreaded,
            event.event_id.clone(),
        )
        .await
    {
        tracing::debug!(error = %e, "cannot mark a command read");
    }
    if let Err(e) = room
        .send(RoomMessageEventContent::notice_plain(reply))
        .await
    {
        tracing::error!(error = %e, room_id = %room.room_id(), "cannot answer a command");
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The store holds keys: only this user may read it.
fn restrict_permissions(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(error = %e, "cannot restrict the assistant's store directory");
        }
    }
}
