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
mod router;
mod rtx;
mod srtp;

/// Tests that load the cores (Chromium with its pages, the benchmark's SFU and load generator)
/// run one at a time: on two cores, Chromium's CPU adaptation drops simulcast layers otherwise.
static CPU_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
