//! Consulta's SFU media engine, built on webrtc-rs's sans-IO `rtc` crate.
//!
//! - [`peer`] owns one server-side peer connection as a sans-IO state machine: SDP in and out,
//!   datagrams in with `now`, datagrams/timeouts/events out. It never reads the clock.
//! - [`shell`] is the thin tokio loop that drives a [`peer::MediaPeer`] with a UDP socket.
//! - [`echo`] is the browser test's echo server: every video packet a browser sends comes back to it
//!   on the server's own track in the same peer connection.
//!
//! See `docs/SFU-MEDIA.md` for what was proven with Chromium and the measured numbers.

mod batch;
mod belt;
pub mod config;
pub mod echo;
pub mod engine;
mod feedback;
mod handshake;
pub mod heap;
pub mod keytap;
pub mod mux;
pub mod node;
pub mod peer;
mod read;
mod receive;
mod resend;
mod send;
mod send_log;
pub mod shell;
pub mod srtp;

pub use feedback::{RTCP_DELIVERY_SLOT, rtcp_delivery};
pub use peer::{
    DataChannel, Error, IncomingRtp, IncomingTrack, Keep, LocalTrack, MediaConfig, MediaDirection,
    MediaEvent, MediaKind, MediaPeer, Mid, PeerState, Rid, RtcpDelivery, SrtpProfiles, StreamTag,
    Transmit,
};
pub use rtc::{rtcp, rtp};

/// The maps a forwarded packet is looked up in (its publisher, track and incoming stream, each
/// subscriber and connection, the own read path's streams): foldhash, seeded per map, where
/// SipHash was 3–4 % of the node's time in 1:1 rooms. The keys are the SFU's own ids, SSRCs in
/// maps bounded per connection or track, and room names from tokens the SFU's keys signed.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
