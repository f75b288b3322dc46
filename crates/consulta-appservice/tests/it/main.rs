//! Integration tests of the appservice: HTTP routes through `app(state)` with `oneshot`, and the whole
//! path from a real Matrix client through a real Synapse to Consulta's transaction handler.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod offline;
mod with_synapse;

use std::sync::Arc;

use consulta_appservice::config::{Config, EXAMPLE, generate_missing_secrets};
use consulta_appservice::{AppState, SystemClock};
use consulta_store::Store;

/// State over a fresh SQLite store, with no homeserver behind it.
pub async fn offline_state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let overrides = vec![(
        "CONSULTA_DATABASE__URI".to_owned(),
        format!("sqlite://{}", dir.path().join("consulta.db").display()),
    )];
    let config =
        Config::from_yaml_with_env(&generate_missing_secrets(EXAMPLE).0, overrides).unwrap();
    let store = Store::connect(config.database.uri.expose(), 4)
        .await
        .unwrap();
    (
        AppState::new(config, store, Arc::new(SystemClock)).unwrap(),
        dir,
    )
}
