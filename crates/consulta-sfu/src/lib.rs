//! Consulta's LiveKit-compatible SFU: the signalling side.
//!
//! Element Call (livekit-client 2.x) connects here with a LiveKit access token minted by
//! Consulta's RTC authorization service, speaks LiveKit's protobuf signalling over a WebSocket
//! (v0, two PeerConnections) and expects rooms, participants and tracks to behave as on a LiveKit
//! server. Spec: `/work/shared/specs/matrixrtc-livekit.md` §2, §5, §6; architecture in
//! `docs/SFU.md`.
//!
//! - [`auth`]: verify (and, for tests and the auth service, mint) HS256 access tokens.
//! - [`core`]: the sans-IO session state machine (`handle_*` in, `poll_*` out).
//! - [`media`]: the seam to the media engine ([`MediaEngine`], [`MediaEvent`]).
//! - [`forward`]: per-subscriber RTP forwarding decisions (layers, key frames, rewriting).
//! - [`bandwidth`]: which layers fit each subscriber's estimated downlink.
//! - [`speakers`]: active speaker detection from RTP audio levels.
//! - [`data`]: relaying `DataPacket`s between participants.
//! - [`permission`]: who may receive a publisher's tracks (`subscription_permission`).
//! - [`signal`]: protobuf framing, size and rate limits.
//! - [`shell`]: axum routes, WebSockets and timers feeding the core.

pub mod auth;
pub mod bandwidth;
pub mod core;
pub mod data;
pub mod dynacast;
pub mod forward;
pub mod ids;
pub mod media;
pub mod permission;
pub mod shell;
pub mod signal;
pub mod speakers;

pub use auth::{ApiKeys, ApiSecret, AuthError, JoinGrant};
pub use core::{JoinError, JoinOptions, Output, Sfu, SfuConfig};
pub use ids::{ConnId, ParticipantSid, RoomName, TrackSid};
pub use media::{MediaEngine, MediaEvent, SignallingOnly, TrackSettings};

pub use shell::{SfuServer, ShellConfig};
pub use signal::{SignalError, decode_request};
