//! Consulta's relational store.
//!
//! One query layer over sqlx's `Any` driver serves both backends: a SQLite file (the embedded default)
//! and PostgreSQL (for clinics that outgrow one machine or need high availability). Queries are written
//! once in the SQL both dialects share (`$N` placeholders, `ON CONFLICT`); only the schema migrations
//! differ, under `migrations/sqlite` and `migrations/postgres`. Callers never see which backend runs.
//!
//! Times are stored as Unix milliseconds (UTC) so that both backends compare them the same way.

mod appointments;
mod audit;
mod bot;
mod calendar;
mod consultations;
mod error;
mod members;
mod read_state;
mod transactions;
mod users;

use std::str::FromStr;
use std::sync::{Arc, Once};

use chrono::DateTime;
use consulta_core::{OwnedRoomId, OwnedUserId, Timestamp};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions};

pub use crate::appointments::Booked;
pub use crate::bot::{FeedCursor, OutboxNotice};
pub use crate::calendar::CalendarTokenKind;
pub use crate::error::StoreError;
pub use crate::read_state::{Receipt, ReminderCandidate};
pub use crate::transactions::{PendingTransaction, Recorded};
pub use crate::users::UserRecord;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (or memory, for tests).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Handle to Consulta's database; cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time; writers that collide wait in SQLite's busy handler, which
    /// sleeps in steps of milliseconds. Queuing them here instead keeps write latency flat.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Connects to `url` (`sqlite://path/to/file.db` or `postgres://…`), creating a SQLite file if it
    /// does not exist, and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let url = match backend {
            // Create the file on first start; sqlx's default mode would refuse a missing file.
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(StoreError::Connect)?
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; NORMAL sync is durable in WAL mode
                        // across application crashes, which is what a single-node clinic server needs.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            sqlite_writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Held around every write: serializes writers on SQLite, free on PostgreSQL.
    pub(crate) async fn write_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.sqlite_writer.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Copies the SQLite write-ahead log into the database file without blocking readers or writers
    /// (call it periodically; automatic checkpoints are off). A no-op on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

pub(crate) fn to_millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<Timestamp, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or(StoreError::Corrupt {
        what: "timestamp",
        value: ms.to_string(),
    })
}

pub(crate) fn parse_user(value: String) -> Result<OwnedUserId, StoreError> {
    OwnedUserId::try_from(value.as_str()).map_err(|_| StoreError::Corrupt {
        what: "user id",
        value,
    })
}

pub(crate) fn parse_room(value: String) -> Result<OwnedRoomId, StoreError> {
    OwnedRoomId::try_from(value.as_str()).map_err(|_| StoreError::Corrupt {
        what: "room id",
        value,
    })
}
