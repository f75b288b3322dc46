//! Starting and stopping the appservice: the store, the processing loop, the HTTP listener, and the
//! start-up ping of the homeserver.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use consulta_core::Clock;
use consulta_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::app;
use crate::config::Config;
use crate::homeserver::HomeserverError;
use crate::state::{AppState, StateError};

/// Why the appservice could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration or client assembly failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store named in the config and assembles the state.
pub async fn build_state(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    config.check_ready_to_run().map_err(StateError::from)?;
    let store =
        Store::connect(config.database.uri.expose(), config.database.max_open_conns).await?;
    Ok(AppState::new(config, store, clock)?)
}

/// Binds the configured listen address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    let addr = std::net::SocketAddr::new(config.appservice.hostname, config.appservice.port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Starts the transaction processing loop.
pub fn spawn_processor(state: &AppState) -> JoinHandle<()> {
    tokio::spawn(state.processor().clone().run(state.clone()))
}

/// How often due unread reminders are looked for.
const REMINDER_INTERVAL: Duration = Duration::from_secs(60);

/// Starts the loop that queues due unread reminders and appointment notices for the assistant.
pub fn spawn_reminders(state: &AppState) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REMINDER_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.send_due_reminders().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(queued = n, "unread reminders queued"),
                Err(e) => tracing::error!(error = %e, "cannot look for due unread reminders"),
            }
            match state.plan_notices().await {
                Ok(p) if p.total() == 0 => {}
                Ok(p) => tracing::info!(
                    changes = p.changes,
                    reminders = p.reminders,
                    day_of = p.day_of,
                    "appointment notices queued"
                ),
                Err(e) => tracing::error!(error = %e, "cannot plan appointment notices"),
            }
        }
    })
}

/// How often the SQLite write-ahead log is folded into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(15);

/// How often delivered notices past their retention are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Starts the store's maintenance loop: SQLite checkpoints, and the hourly purge of delivered notices.
pub fn spawn_maintenance(state: &AppState) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut checkpoint = tokio::time::interval(CHECKPOINT_INTERVAL);
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tokio::select! {
                _ = checkpoint.tick() => {
                    if let Err(e) = state.store().checkpoint().await {
                        tracing::warn!(error = %e, "store checkpoint failed");
                    }
                }
                _ = purge.tick() => {
                    let before = state.clock().now() - crate::notices::OUTBOX_RETENTION;
                    if let Err(e) = state.store().purge_sent_notices(before).await {
                        tracing::warn!(error = %e, "cannot purge delivered notices");
                    }
                    // Expired links and sessions, and revoked feeds, are of no use a day on.
                    let day_ago = state.clock().now() - chrono::Duration::days(1);
                    if let Err(e) = state.store().purge_calendar_tokens(day_ago).await {
                        tracing::warn!(error = %e, "cannot purge calendar credentials");
                    }
                }
            }
        }
    })
}

/// Serves HTTP on `listener` until `shutdown` completes, with the processing loop running alongside.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let processor = spawn_processor(&state);
    let reminders = spawn_reminders(&state);
    let maintenance = spawn_maintenance(&state);
    let bot = crate::bot::spawn_bot(&state);
    let store = state.store().clone();
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    processor.abort();
    reminders.abort();
    maintenance.abort();
    if let Some(bot) = bot {
        bot.abort();
        let _ = bot.await;
    }
    if let Err(e) = store.checkpoint().await {
        tracing::warn!(error = %e, "final store checkpoint failed");
    }
    result
}

/// Pings the homeserver until it answers, logging clearly while it does not. Returns the round trip.
///
/// A failed ping is not fatal: the homeserver may still be starting, and it will queue transactions for
/// us meanwhile. A successful ping also makes Synapse flush those queued transactions at once.
pub async fn ping_homeserver_until_reachable(state: AppState) -> Duration {
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let txn = format!("consulta-start-{attempt}");
        match state.homeserver().ping(&txn).await {
            Ok(rtt) => {
                tracing::info!(
                    homeserver = state.homeserver().base_url(),
                    round_trip_ms = rtt.as_millis() as u64,
                    "homeserver reached us back: registration and tokens work"
                );
                return rtt;
            }
            Err(e) => {
                let hint = match &e {
                    HomeserverError::Unreachable { .. } => {
                        "is the homeserver running at homeserver.address?"
                    }
                    HomeserverError::Matrix { errcode, .. }
                        if errcode == "M_UNKNOWN_TOKEN" || errcode == "M_FORBIDDEN" =>
                    {
                        "the homeserver does not know our as_token: is the registration in app_service_config_files, and was the homeserver restarted?"
                    }
                    HomeserverError::Matrix { errcode, .. } if errcode.starts_with("M_AS_PING") => {
                        "the homeserver cannot reach us: check appservice.address in the registration"
                    }
                    _ => "unexpected answer; see the error",
                };
                let retry = Duration::from_secs(u64::from(attempt.min(6)) * 5);
                tracing::error!(error = %e, hint, retry_in_s = retry.as_secs(), "cannot ping the homeserver");
                tokio::time::sleep(retry).await;
            }
        }
    }
}
