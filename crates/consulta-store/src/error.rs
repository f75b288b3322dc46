//! The store's one error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names no backend Consulta supports.
    #[error("unsupported database URL: use sqlite://<file> or postgres://<server>/<db>")]
    UnsupportedUrl,
    /// The database could not be reached or opened.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A schema migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value does not parse: the database was edited by hand or by a newer version.
    #[error("stored {what} is not valid: {value:?}")]
    Corrupt { what: &'static str, value: String },
}
