#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]
//! Integration tests for consulta-media: a real Chromium against the echo server, and two `rtc`
//! peers talking to each other in simulated time.

mod bench;
mod browser;
mod livekit;
mod loopback;

/// Browser tests share the cores among themselves as before (read); the benchmark smoke test, which
/// keeps both cores busy with an SFU and its load generator, runs alone (write): Chromium drops its
/// top simulcast layer when starved of CPU.
static CPU_HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
