//! Identifier newtypes: room names, participant and track sids, connection handles.
//!
//! Sids follow LiveKit's prefixes (`RM_`, `PA_`, `TR_`), which livekit-client checks when it
//! unpacks stream ids (spec `matrixrtc-livekit.md` §2.8, §5 item 5).

use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Shared, not copied: the SFU names tracks and participants in several maps and with
        /// every media packet it forwards.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A LiveKit room name (for MatrixRTC, the alias from the RTC auth service). Never empty.
    RoomName
);
string_id!(
    /// A participant sid, `PA_…`.
    ParticipantSid
);
string_id!(
    /// A track sid, `TR_…`.
    TrackSid
);

impl RoomName {
    /// `None` for an empty name.
    pub fn parse(name: &str) -> Option<Self> {
        (!name.is_empty()).then(|| Self(name.into()))
    }
}

impl ParticipantSid {
    /// Accepts only `PA_…`.
    pub fn parse(sid: &str) -> Option<Self> {
        sid.starts_with("PA_").then(|| Self(sid.into()))
    }
}

impl TrackSid {
    /// Accepts only `TR_…`.
    pub fn parse(sid: &str) -> Option<Self> {
        sid.starts_with("TR_").then(|| Self(sid.into()))
    }
}

/// One signalling connection (one WebSocket), allocated by the core on join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn{}", self.0)
    }
}

/// Deterministic sid generator (splitmix64 over a seed the shell draws at start), so that the
/// core needs no randomness source and tests are reproducible.
#[derive(Debug, Clone)]
pub(crate) struct SidGen {
    state: u64,
}

impl SidGen {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn room(&mut self) -> String {
        format!("RM_{:012x}", self.next() >> 16)
    }

    pub(crate) fn participant(&mut self) -> ParticipantSid {
        ParticipantSid(format!("PA_{:012x}", self.next() >> 16).into())
    }

    pub(crate) fn track(&mut self) -> TrackSid {
        TrackSid(format!("TR_{:012x}", self.next() >> 16).into())
    }
}
