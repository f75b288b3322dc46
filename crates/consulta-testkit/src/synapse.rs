//! One Synapse process on loopback, configured for Consulta.
//!
//! The generated `homeserver.yaml` uses SQLite, listens on 127.0.0.1 only with the `client` and `openid`
//! resources, trusts no key servers, loads Consulta's registration and the `synapse-http-antispam` gate,
//! and carries the privacy settings of specs/matrix-appservice.md §2(c). The process is stopped when the
//! [`Synapse`] value is dropped — also while a failing test unwinds — and dies with its parent otherwise.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;

use crate::install::ensure_synapse;

/// How Synapse should be set up.
#[derive(Debug, Clone)]
pub struct SynapseOptions {
    /// The server name (`@user:<server_name>`).
    pub server_name: String,
    /// Port for the client listener; `None` picks a free one.
    pub port: Option<u16>,
    /// Consulta's registration file, if the appservice should be loaded.
    pub registration: Option<PathBuf>,
    /// Base URL and bearer secret of Consulta's gate, if the antispam module should be loaded.
    pub gate: Option<(String, String)>,
    /// Loosen rate limits so tests and demos can create users and rooms in bursts.
    pub relaxed_rate_limits: bool,
}

impl Default for SynapseOptions {
    fn default() -> Self {
        Self {
            server_name: "clinic.test".to_owned(),
            port: None,
            registration: None,
            gate: None,
            relaxed_rate_limits: true,
        }
    }
}

/// A running Synapse.
#[derive(Debug)]
pub struct Synapse {
    child: Option<Child>,
    dir: PathBuf,
    base_url: String,
    server_name: String,
    shared_secret: String,
    http: reqwest::Client,
}

/// A user created through the shared-secret admin API, logged in once.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredUser {
    /// Full Matrix ID.
    pub user_id: String,
    /// Access token of the login made at registration.
    pub access_token: String,
    /// Device of that login.
    pub device_id: String,
    /// The password, so that clients can log in again.
    #[serde(skip)]
    pub password: String,
}

pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter()
        .fold(String::with_capacity(bytes * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn yaml_str(s: &str) -> String {
    // JSON strings are valid YAML flow scalars, with every escape handled.
    serde_json::Value::String(s.to_owned()).to_string()
}

impl Synapse {
    /// Installs Synapse if needed, writes its config into `dir` (which must exist) and starts it,
    /// returning once it answers health checks.
    pub async fn start(dir: &Path, options: SynapseOptions) -> anyhow::Result<Self> {
        let python = tokio::task::spawn_blocking(ensure_synapse).await??;
        let port = match options.port {
            Some(port) => port,
            None => crate::free_port()?,
        };
        let shared_secret = random_token(32);
        write_config(dir, port, &shared_secret, &options)?;

        let log = fs::File::create(dir.join("stdout.log"))?;
        let mut command = Command::new(&python);
        command
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(dir.join("homeserver.yaml"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        crate::die_with_parent(&mut command, libc::SIGTERM);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", python.display()))?;
        let mut synapse = Self {
            child: Some(child),
            dir: dir.to_owned(),
            base_url: format!("http://127.0.0.1:{port}"),
            server_name: options.server_name.clone(),
            shared_secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        synapse.wait_until_ready(Duration::from_secs(90)).await?;
        Ok(synapse)
    }

    async fn wait_until_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let url = format!("{}/health", self.base_url);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "Synapse exited during start-up ({status}).\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "Synapse did not become ready within {limit:?}.\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of Synapse's own log and of its standard output, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        ["stdout.log", "homeserver.log"]
            .iter()
            .map(|name| {
                let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                let tail = all
                    .get(all.len().saturating_sub(lines)..)
                    .unwrap_or_default()
                    .join("\n");
                format!("--- {name} (last {lines} lines) ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Base URL of the client API, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The server name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The directory holding its config, database and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a user through the shared-secret registration API and returns its first login.
    pub async fn register_user(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> anyhow::Result<RegisteredUser> {
        let url = format!("{}/_synapse/admin/v1/register", self.base_url);
        #[derive(Deserialize)]
        struct Nonce {
            nonce: String,
        }
        let nonce = self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json::<Nonce>()
            .await?
            .nonce;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.shared_secret.as_bytes())?;
        for part in [
            nonce.as_bytes(),
            b"\0",
            localpart.as_bytes(),
            b"\0",
            password.as_bytes(),
            b"\0",
        ] {
            mac.update(part);
        }
        mac.update(if admin { b"admin" } else { b"notadmin" });
        let mac = mac
            .finalize()
            .into_bytes()
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
        let body = json!({ "nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac });
        let response = self.http.post(&url).json(&body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!(
                "registering @{localpart}:{} failed: {status} {text}",
                self.server_name
            );
        }
        let mut user: RegisteredUser = serde_json::from_str(&text)?;
        user.password = password.to_owned();
        Ok(user)
    }

    /// Stops Synapse: SIGTERM, then SIGKILL if it has not exited after ten seconds.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, libc::SIGTERM, Duration::from_secs(10));
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_config(
    dir: &Path,
    port: u16,
    shared_secret: &str,
    options: &SynapseOptions,
) -> anyhow::Result<()> {
    let d = |name: &str| yaml_str(&dir.join(name).display().to_string());
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    fs::write(
        dir.join("signing.key"),
        format!("ed25519 a_test {}\n", STANDARD_NO_PAD.encode(seed)),
    )?;
    fs::write(
        dir.join("log.config"),
        format!(
            "version: 1\n\
             formatters:\n  precise:\n    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'\n\
             filters:\n  context:\n    (): synapse.logging.context.LoggingContextFilter\n    request: \"\"\n\
             handlers:\n  file:\n    class: logging.FileHandler\n    formatter: precise\n    filename: {}\n    filters: [context]\n\
             root:\n  level: INFO\n  handlers: [file]\n\
             disable_existing_loggers: false\n",
            d("homeserver.log")
        ),
    )?;

    let mut yaml = format!(
        "# Written by consulta-testkit for a loopback Synapse; not for production.\n\
         server_name: {server_name}\n\
         public_baseurl: http://127.0.0.1:{port}/\n\
         pid_file: {pid}\n\
         listeners:\n\
         \x20 - port: {port}\n\
         \x20   bind_addresses: ['127.0.0.1']\n\
         \x20   type: http\n\
         \x20   tls: false\n\
         \x20   x_forwarded: false\n\
         \x20   resources:\n\
         \x20     - names: [client, openid]\n\
         \x20       compress: false\n\
         database:\n  name: sqlite3\n  args:\n    database: {db}\n\
         log_config: {log_config}\n\
         media_store_path: {media}\n\
         signing_key_path: {signing_key}\n\
         registration_shared_secret: {shared_secret}\n\
         macaroon_secret_key: {macaroon}\n\
         form_secret: {form}\n\
         report_stats: false\n\
         enable_registration: false\n\
         # No federation and no key servers: this homeserver talks to nobody but its local clients.\n\
         trusted_key_servers: []\n\
         suppress_key_server_warning: true\n\
         federation_domain_whitelist: []\n\
         # Privacy (specs/matrix-appservice.md 2c): nobody discovers people they share no room with.\n\
         limit_profile_requests_to_users_who_share_rooms: true\n\
         require_auth_for_profile_requests: true\n\
         user_directory:\n  enabled: true\n  search_all_users: false\n\
         allow_public_rooms_without_auth: false\n\
         allow_public_rooms_over_federation: false\n",
        server_name = yaml_str(&options.server_name),
        pid = d("homeserver.pid"),
        db = d("homeserver.db"),
        log_config = d("log.config"),
        media = d("media_store"),
        signing_key = d("signing.key"),
        shared_secret = yaml_str(shared_secret),
        macaroon = yaml_str(&random_token(32)),
        form = yaml_str(&random_token(32)),
    );
    if let Some(registration) = &options.registration {
        writeln!(
            yaml,
            "app_service_config_files:\n  - {}",
            yaml_str(&registration.display().to_string())
        )?;
    }
    if let Some((base_url, secret)) = &options.gate {
        write!(
            yaml,
            "modules:\n\
             \x20 - module: synapse_http_antispam.HTTPAntispam\n\
             \x20   config:\n\
             \x20     base_url: {}\n\
             \x20     authorization: {}\n\
             \x20     enabled_callbacks: [user_may_create_room, user_may_invite, federated_user_may_invite]\n",
            yaml_str(base_url),
            yaml_str(secret)
        )?;
    }
    if options.relaxed_rate_limits {
        let burst = "{per_second: 1000, burst_count: 1000}";
        write!(
            yaml,
            "# Bursts of users, logins and rooms from tests and demos.\n\
             rc_message: {burst}\n\
             rc_registration: {burst}\n\
             rc_login:\n  address: {burst}\n  account: {burst}\n  failed_attempts: {burst}\n\
             rc_joins:\n  local: {burst}\n  remote: {burst}\n\
             rc_invites:\n  per_room: {burst}\n  per_user: {burst}\n  per_issuer: {burst}\n\
             rc_room_creation: {burst}\n\
             rc_admin_redaction: {burst}\n"
        )?;
    }
    fs::write(dir.join("homeserver.yaml"), yaml)?;
    Ok(())
}
