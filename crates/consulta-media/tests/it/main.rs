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
