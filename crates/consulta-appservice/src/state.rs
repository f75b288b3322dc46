//! Shared state of the appservice's handlers.

use std::sync::{Arc, Mutex};

use consulta_core::{AuditAction, AuditRecord, Clock, OwnedUserId};
use consulta_store::Store;

use crate::audit::AuditWriter;
use crate::config::{Config, ConfigError};
use crate::homeserver::{HomeserverClient, HomeserverError};
use crate::processor::Processor;
use crate::secret::TokenDigest;

/// Why the appservice could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The homeserver client could not be built.
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
}

/// Everything a handler may need; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    store: Store,
    clock: Arc<dyn Clock>,
    processor: Processor,
    homeserver: HomeserverClient,
    bot: OwnedUserId,
    hs_token: TokenDigest,
    antispam_secret: TokenDigest,
    last_ping: Mutex<Option<String>>,
    audit: AuditWriter,
    outbox_ready: tokio::sync::Notify,
}

impl AppState {
    /// Assembles the state from a config that passed [`Config::check_ready_to_run`].
    pub fn new(config: Config, store: Store, clock: Arc<dyn Clock>) -> Result<Self, StateError> {
        config.check_ready_to_run()?;
        let homeserver = HomeserverClient::new(
            &config.homeserver.address,
            config.appservice.as_token.clone(),
            &config.appservice.id,
        )?
        .with_admin_token(config.homeserver.admin_token.clone())
        .with_bot(config.bot_user_id()?);
        Ok(Self {
            inner: Arc::new(Inner {
                bot: config.bot_user_id()?,
                hs_token: TokenDigest::of(&config.appservice.hs_token),
                antispam_secret: TokenDigest::of(&config.antispam.secret),
                audit: AuditWriter::start(store.clone()),
                config,
                store,
                clock,
                processor: Processor::new(),
                homeserver,
                last_ping: Mutex::new(None),
                outbox_ready: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The transaction processor.
    pub fn processor(&self) -> &Processor {
        &self.inner.processor
    }

    /// The homeserver client.
    pub fn homeserver(&self) -> &HomeserverClient {
        &self.inner.homeserver
    }

    /// The bot's user ID.
    pub fn bot(&self) -> &OwnedUserId {
        &self.inner.bot
    }

    /// Woken when a notice is added to the outbox, so that the assistant delivers it at once.
    pub fn outbox_ready(&self) -> &tokio::sync::Notify {
        &self.inner.outbox_ready
    }

    pub(crate) fn hs_token(&self) -> &TokenDigest {
        &self.inner.hs_token
    }

    pub(crate) fn antispam_secret(&self) -> &TokenDigest {
        &self.inner.antispam_secret
    }

    /// The `transaction_id` of the last ping the homeserver sent us.
    pub fn last_ping(&self) -> Option<String> {
        self.inner
            .last_ping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn record_ping(&self, transaction_id: Option<String>) {
        *self
            .inner
            .last_ping
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = transaction_id;
    }

    /// Appends to the audit log; a failure to audit is logged, never hidden.
    pub async fn audit(
        &self,
        actor: Option<OwnedUserId>,
        action: AuditAction,
        target: Option<String>,
        detail: &str,
    ) {
        let record = AuditRecord {
            at: self.inner.clock.now(),
            actor,
            action,
            target,
            detail: detail.to_owned(),
        };
        if let Err(e) = self.inner.audit.append(record).await {
            tracing::error!(error = %e, action = %action, "cannot write audit record");
        }
    }
}
