//! Synapse plus Consulta's appservice, wired together on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use consulta_appservice::config::{Config, EXAMPLE, generate_missing_secrets};
use consulta_appservice::{AppState, Registration, SystemClock};
use consulta_core::Clock;
use consulta_store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::synapse::{Synapse, SynapseOptions};

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where config, registration, databases and logs go; `None` uses a temporary directory removed on drop.
    pub dir: Option<PathBuf>,
    /// The homeserver's server name.
    pub server_name: String,
    /// Synapse's port; `None` picks a free one.
    pub synapse_port: Option<u16>,
    /// The appservice's port; `None` picks a free one.
    pub appservice_port: Option<u16>,
    /// Extra `CONSULTA_…` overrides applied to the generated config (as from the environment).
    pub config_overrides: Vec<(String, String)>,
    /// Where the appservice gets `now` from.
    pub clock: Arc<dyn Clock>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            dir: None,
            server_name: "clinic.test".to_owned(),
            synapse_port: None,
            appservice_port: None,
            config_overrides: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A running Synapse with Consulta's appservice serving beside it.
#[derive(Debug)]
pub struct Stack {
    /// The homeserver. Declared first so it stops before the directory is removed.
    pub synapse: Synapse,
    /// The appservice's state (store, processor, homeserver client).
    pub appservice: AppState,
    /// Base URL of the appservice.
    pub appservice_url: String,
    /// The configuration the appservice runs with.
    pub config: Config,
    /// Path of the registration file given to Synapse.
    pub registration_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    clock: Arc<dyn Clock>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Stack {
    /// Starts a stack with default options.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts a stack.
    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let (tempdir, dir) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (None, dir.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("consulta-stack-")
                    .tempdir()?;
                let path = t.path().to_owned();
                (Some(t), path)
            }
        };
        let listener = TcpListener::bind(("127.0.0.1", options.appservice_port.unwrap_or(0)))
            .await
            .context("cannot bind the appservice's port")?;
        let as_port = listener.local_addr()?.port();
        let hs_port = match options.synapse_port {
            Some(p) => p,
            None => crate::free_port()?,
        };

        let config = write_config(&dir, &options, hs_port, as_port, None)?;
        let registration_path = dir.join("consulta-registration.yaml");
        std::fs::write(
            &registration_path,
            Registration::from_config(&config).to_yaml()?,
        )?;

        // Synapse first: it does not call the appservice while starting, and the appservice needs a
        // server admin's token (for account creation and purges) that only a running Synapse can give.
        let synapse_dir = dir.join("synapse");
        std::fs::create_dir_all(&synapse_dir)?;
        let synapse = Synapse::start(
            &synapse_dir,
            SynapseOptions {
                server_name: options.server_name.clone(),
                port: Some(hs_port),
                registration: Some(registration_path.clone()),
                gate: Some((
                    format!("http://127.0.0.1:{as_port}/_consulta/antispam"),
                    config.antispam.secret.expose().to_owned(),
                )),
                relaxed_rate_limits: true,
            },
        )
        .await?;
        // A kept data directory already has its admin (Synapse keeps the token across restarts).
        let token_file = dir.join("synapse-admin-token");
        let admin_token = if token_file.exists() {
            std::fs::read_to_string(&token_file)?.trim().to_owned()
        } else {
            let password = consulta_appservice::Secret::generate();
            let admin = synapse
                .register_user("consulta-admin", password.expose(), true)
                .await?;
            std::fs::write(&token_file, &admin.access_token)?;
            admin.access_token
        };
        let config = write_config(&dir, &options, hs_port, as_port, Some(&admin_token))?;

        let store =
            Store::connect(config.database.uri.expose(), config.database.max_open_conns).await?;
        let state = AppState::new(config.clone(), store, options.clock.clone())?;
        let (shutdown_tx, server) = serve_in_background(listener, &state);

        Ok(Self {
            synapse,
            appservice: state,
            appservice_url: format!("http://127.0.0.1:{as_port}"),
            config,
            registration_path,
            shutdown: Some(shutdown_tx),
            server: Some(server),
            clock: options.clock.clone(),
            _tempdir: tempdir,
        })
    }

    /// The directory holding the config, registration, databases and logs.
    pub fn config_dir(&self) -> &Path {
        self.registration_path.parent().unwrap_or(Path::new("."))
    }

    /// The Matrix ID of `localpart` on this homeserver.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.synapse.server_name())
    }

    /// Stops only the appservice (Synapse keeps running), to test what happens while Consulta is down.
    pub async fn stop_appservice(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await??;
        }
        Ok(())
    }

    /// Starts the appservice again after [`Stack::stop_appservice`], on the same port, config, store and
    /// clock, as a restart of the process would: `appservice` is replaced by the new state.
    pub async fn restart_appservice(&mut self) -> anyhow::Result<()> {
        self.stop_appservice().await?;
        self.appservice.store().close().await;
        let port = self
            .appservice_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .context("appservice URL has no port")?;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .context("cannot bind the appservice's port again")?;
        let store = Store::connect(
            self.config.database.uri.expose(),
            self.config.database.max_open_conns,
        )
        .await?;
        let state = AppState::new(self.config.clone(), store, self.clock.clone())?;
        let (shutdown_tx, server) = serve_in_background(listener, &state);
        self.server = Some(server);
        self.shutdown = Some(shutdown_tx);
        self.appservice = state;
        Ok(())
    }

    /// Gives `localpart` a role in Consulta's store, as an admin would.
    pub async fn set_role(
        &self,
        localpart: &str,
        role: Option<consulta_core::Role>,
    ) -> anyhow::Result<()> {
        let user = consulta_core::UserId::parse(self.user_id(localpart))?;
        self.appservice
            .store()
            .set_role(&user, role, self.appservice.clock().now())
            .await?;
        Ok(())
    }

    /// Stops the appservice and Synapse.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.synapse.stop();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await??;
        }
        self.appservice.store().close().await;
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Serves the appservice on `listener` in a task, until the returned sender fires (or is dropped).
fn serve_in_background(
    listener: TcpListener,
    state: &AppState,
) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let server = tokio::spawn(consulta_appservice::serve(listener, state.clone(), async {
        let _ = shutdown_rx.await;
    }));
    (shutdown_tx, server)
}

/// Writes `config.yaml` for the stack (the example with fresh secrets and loopback addresses) and loads it.
fn write_config(
    dir: &Path,
    options: &StackOptions,
    hs_port: u16,
    as_port: u16,
    admin_token: Option<&str>,
) -> anyhow::Result<Config> {
    let path = dir.join("config.yaml");
    let text = if path.exists() {
        std::fs::read_to_string(&path)?
    } else {
        EXAMPLE.to_owned()
    };
    let (text, _) = generate_missing_secrets(&text);
    std::fs::write(&path, &text)?;
    let db = dir.join("consulta.db");
    let mut overrides = vec![
        (
            "CONSULTA_HOMESERVER__ADDRESS".to_owned(),
            format!("http://127.0.0.1:{hs_port}"),
        ),
        (
            "CONSULTA_HOMESERVER__DOMAIN".to_owned(),
            options.server_name.clone(),
        ),
        (
            "CONSULTA_APPSERVICE__ADDRESS".to_owned(),
            format!("http://127.0.0.1:{as_port}"),
        ),
        ("CONSULTA_APPSERVICE__PORT".to_owned(), as_port.to_string()),
        (
            "CONSULTA_DATABASE__URI".to_owned(),
            format!("sqlite://{}", db.display()),
        ),
        (
            "CONSULTA_APPSERVICE__BOT__STORE_PATH".to_owned(),
            dir.join("bot-store").display().to_string(),
        ),
    ];
    if let Some(token) = admin_token {
        overrides.push((
            "CONSULTA_HOMESERVER__ADMIN_TOKEN".to_owned(),
            token.to_owned(),
        ));
    }
    overrides.extend(options.config_overrides.iter().cloned());
    Ok(Config::from_yaml_with_env(&text, overrides)?)
}
