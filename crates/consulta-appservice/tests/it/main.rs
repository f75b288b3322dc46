//! Integration tests of the appservice: HTTP routes through `app(state)` with `oneshot`, and the whole
//! path from a real Matrix client through a real Synapse to Consulta's transaction handler.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod admin_api;
mod appointments;
mod bot;
mod calendar;
mod desk;
mod notices;
mod offline;
mod openapi;
mod policy;
mod read_state;
mod rest_support;
mod with_synapse;

use std::sync::Arc;

use consulta_appservice::config::{Config, EXAMPLE, generate_missing_secrets};
use consulta_appservice::{AppState, SystemClock};
use consulta_store::Store;

/// State over a fresh SQLite store, with no homeserver behind it.
pub async fn offline_state() -> (AppState, tempfile::TempDir) {
    offline_state_with_clock(Arc::new(SystemClock)).await
}

/// [`offline_state`] with the given clock.
pub async fn offline_state_with_clock(
    clock: Arc<dyn consulta_core::Clock>,
) -> (AppState, tempfile::TempDir) {
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
    (AppState::new(config, store, clock).unwrap(), dir)
}

/// A person with an account on the stack's Synapse, a role in Consulta, and a logged-in matrix-sdk client.
#[derive(Debug)]
pub struct Person {
    pub client: matrix_sdk::Client,
    pub user: consulta_testkit::RegisteredUser,
}

impl Person {
    pub fn id(&self) -> ruma::OwnedUserId {
        ruma::UserId::parse(self.user.user_id.as_str()).unwrap()
    }
}

pub async fn person(
    stack: &consulta_testkit::Stack,
    localpart: &str,
    role: Option<consulta_core::Role>,
) -> Person {
    let user = stack
        .synapse
        .register_user(localpart, "correct horse battery", false)
        .await
        .unwrap();
    if role.is_some() {
        stack.set_role(localpart, role).await.unwrap();
    }
    let client = matrix_sdk::Client::builder()
        .homeserver_url(stack.synapse.base_url())
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username(&user.user_id, &user.password)
        .send()
        .await
        .unwrap();
    Person { client, user }
}
