#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]
//! Integration tests for consulta-media: a real Chromium against the echo server, and two `rtc`
//! peers talking to each other in simulated time.

mod browser;
mod livekit;
mod loopback;
mod router;

/// Chromium tests take one browser (or three pages) each and the machine may have two cores: run
/// them one at a time, or Chromium's CPU adaptation drops simulcast layers and frame rates.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
