//! A throwaway PostgreSQL cluster on loopback, for the store's PostgreSQL backend.
//!
//! [`Postgres::start`] finds the server binaries, runs `initdb` into a fresh temporary directory and
//! starts `postgres` on a free port. The cluster listens on 127.0.0.1 only and keeps its Unix socket
//! inside the temporary directory (mode 0700); both demand the superuser's random password (SCRAM), so no
//! other local account can log in. Durability is switched off (`fsync`, full-page writes, synchronous
//! commit): the cluster is thrown away after the test. [`Postgres::create_database`] hands each test a
//! database of its own.
//!
//! The binaries are looked up as `tests/run` does, which installs PostgreSQL when it finds none:
//! `pg_config --bindir`, then `/usr/lib/postgresql/15/bin`, then the newest
//! `/usr/lib/postgresql/<version>/bin`, then `PATH`.
//!
//! PostgreSQL refuses to run as root. When the tests do, `initdb` and the server run as the `postgres`
//! system user that Debian's package creates (or `nobody` if there is none), and the temporary directory
//! is handed to that user.
//!
//! The server is started directly rather than through `pg_ctl start`, which would detach it: as our own
//! child it is stopped when the [`Postgres`] value is dropped — also while a failing test unwinds — and
//! dies with its parent otherwise. Stopping sends SIGINT (PostgreSQL's "fast" shutdown, which disconnects
//! clients still holding connections instead of waiting for them like SIGTERM's "smart" shutdown), then
//! SIGKILL. The directory is deleted afterwards.

use std::fs;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;

/// The cluster's superuser, who owns every database created here.
const SUPERUSER: &str = "consulta";
/// The database created at start, which [`Postgres::url`] points to.
const DEFAULT_DATABASE: &str = "consulta";
/// PostgreSQL's own maintenance database, used to create the others.
const ADMIN_DATABASE: &str = "postgres";

/// A running throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    // Dropped after `Drop::drop` has stopped the server.
    dir: TempDir,
    port: u16,
    password: String,
}

/// The unprivileged account that runs the cluster when we are root.
#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

impl Postgres {
    /// Creates and starts a cluster with one empty database (see [`Postgres::url`]), returning once it
    /// accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = find_bindir().context(
            "PostgreSQL's server binaries (initdb, postgres) were not found; run tests/run, \
             or install them with `apt-get install postgresql-15`",
        )?;
        let account = unprivileged_account()?;
        let mut builder = tempfile::Builder::new();
        builder
            .prefix("consulta-pg-")
            .permissions(fs::Permissions::from_mode(0o700));
        let dir = match account {
            // Under /tmp, whatever TMPDIR says, so that the unprivileged account can reach it.
            Some(_) => builder.tempdir_in("/tmp")?,
            None => builder.tempdir()?,
        };
        if let Some(account) = account {
            chown(dir.path(), Some(account.uid), Some(account.gid)).with_context(|| {
                format!("cannot hand {} to the postgres user", dir.path().display())
            })?;
        }

        let password = crate::synapse::random_token(24);
        init_cluster(&bin, dir.path(), &password, account).await?;

        let port = crate::free_port()?;
        let log = fs::File::create(dir.path().join("postgres.log"))?;
        let postgres = bin.join("postgres");
        let mut command = Command::new(&postgres);
        command
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(account) = account {
            command.uid(account.uid).gid(account.gid);
        }
        crate::die_with_parent(&mut command, libc::SIGINT);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", postgres.display()))?;
        let mut server = Self {
            child: Some(child),
            dir,
            port,
            password,
        };
        server.wait_until_ready(Duration::from_secs(60)).await?;
        server.create_database(DEFAULT_DATABASE).await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "PostgreSQL exited during start-up ({status}).\n{}",
                    self.log_tail(40)
                );
            }
            match self.admin_connection().await {
                Ok(connection) => {
                    let _ = connection.close().await;
                    return Ok(());
                }
                Err(error) if started.elapsed() > limit => {
                    bail!(
                        "PostgreSQL did not accept connections within {limit:?} (last error: {error}).\n{}",
                        self.log_tail(40)
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn connect_options(&self, database: &str) -> PgConnectOptions {
        // Without environment defaults (PGHOST, PGSSLMODE, ~/.pgpass…): everything is set here.
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.password)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    async fn admin_connection(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.connect_options(ADMIN_DATABASE)).await
    }

    /// Creates an empty database and returns its URL. `name` is a lowercase SQL identifier
    /// (`[a-z_][a-z0-9_]*`, at most 63 bytes), distinct from those created before.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let valid = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!("{name:?} is not a plain lowercase database name");
        }
        let mut connection = self.admin_connection().await?;
        // The name was checked above, so quoting it cannot inject anything.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        connection.close().await?;
        Ok(self.url_of(name))
    }

    /// URL of the database created at start, e.g. `postgres://consulta:…@127.0.0.1:41234/consulta`.
    pub fn url(&self) -> String {
        self.url_of(DEFAULT_DATABASE)
    }

    fn url_of(&self, database: &str) -> String {
        // The password is hex, so it needs no escaping.
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}?sslmode=disable",
            self.password, self.port
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster (`data/`), its Unix socket and its log (`postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the server's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all
            .get(all.len().saturating_sub(lines)..)
            .unwrap_or_default()
            .join("\n");
        format!("--- postgres.log (last {lines} lines) ---\n{tail}")
    }

    /// Stops the server: SIGINT (fast shutdown), then SIGKILL if it has not exited after ten seconds.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, libc::SIGINT, Duration::from_secs(10));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `initdb` into `dir/data`, with `password` for the superuser.
async fn init_cluster(
    bin: &Path,
    dir: &Path,
    password: &str,
    account: Option<Account>,
) -> anyhow::Result<()> {
    let pwfile = dir.join("pwfile");
    fs::write(&pwfile, password)?;
    if let Some(account) = account {
        chown(&pwfile, Some(account.uid), Some(account.gid))?;
    }
    let initdb = bin.join("initdb");
    let mut command = tokio::process::Command::new(&initdb);
    command
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", SUPERUSER, "--pwfile"])
        .arg(&pwfile)
        .args([
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
    }
    let output = command
        .output()
        .await
        .with_context(|| format!("cannot run {}", initdb.display()));
    let _ = fs::remove_file(&pwfile);
    let output = output?;
    if !output.status.success() {
        bail!(
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The directory holding `initdb` and `postgres`, searched in the same order as `tests/run`.
fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| has_server(dir)) {
        return Some(dir);
    }
    let debian = Path::new("/usr/lib/postgresql");
    if has_server(&debian.join("15/bin")) {
        return Some(debian.join("15/bin"));
    }
    let newest = fs::read_dir(debian)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .max_by_key(|(version, _)| *version);
    if let Some((_, dir)) = newest {
        return Some(dir);
    }
    // On PATH, possibly as symlinks: use the directory of the real file, next to its `postgres`.
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| initdb.is_file())
        .filter_map(|initdb| fs::canonicalize(initdb).ok()?.parent().map(Path::to_owned))
        .find(|dir| has_server(dir))
}

/// `None` when we may run PostgreSQL ourselves; otherwise (we are root, which PostgreSQL refuses) the
/// account to run it as: `postgres`, or `nobody` if there is no such user.
fn unprivileged_account() -> anyhow::Result<Option<Account>> {
    #[allow(unsafe_code, reason = "reading our effective user id")]
    // SAFETY: geteuid(2) takes no arguments, always succeeds and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id_of(name, "-u"), id_of(name, "-g")) {
            return Ok(Some(Account { uid, gid }));
        }
    }
    bail!(
        "running as root, which PostgreSQL refuses, and neither a `postgres` nor a `nobody` user exists to run it as"
    )
}

/// `id <flag> <user>`: a user's uid (`-u`) or primary gid (`-g`), through the system's user database.
fn id_of(user: &str, flag: &str) -> Option<u32> {
    let output = Command::new("id")
        .args([flag, user])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}
