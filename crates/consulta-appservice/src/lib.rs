//! Consulta's Matrix application service.
//!
//! Receives the homeserver's transactions (events and read receipts of the clinic's people), answers the
//! pre-event gate, and runs the clinic assistant (an end-to-end encrypted bot), read state, appointments
//! and — through the issues that follow — the MatrixRTC authorization service. Decisions come from `consulta-core`; this crate gathers facts, applies
//! decisions and does the I/O.

// matrix-sdk's futures nest deeply; spawning the assistant's sync loop needs a deeper trait search.
#![recursion_limit = "256"]

pub mod api;
pub mod appointments;
pub mod audit;
pub mod bot;
pub mod calendar;
pub mod config;
pub mod consultations;
pub mod error;
pub mod homeserver;
pub mod notices;
pub mod policy;
pub mod processor;
pub mod read_state;
pub mod registration;
pub mod roles;
pub mod secret;
pub mod server;
pub mod state;

pub use api::app;
pub use config::Config;
pub use error::MatrixError;
pub use homeserver::HomeserverClient;
pub use processor::{EventSource, ProcessedEvent, Processor};
pub use registration::Registration;
pub use secret::Secret;
pub use server::{bind, build_state, ping_homeserver_until_reachable, serve, spawn_processor};
pub use state::AppState;

/// The system clock: the one place outside tests where Consulta reads the time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl consulta_core::Clock for SystemClock {
    fn now(&self) -> consulta_core::Timestamp {
        chrono::Utc::now()
    }
}
