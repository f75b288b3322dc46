//! What the router forwards of one track to one subscriber.
//!
//! Interim policy until simulcast layer selection lands: lock onto the first incoming stream
//! (SSRC) of the track and forward it as it comes, so sequence numbers and timestamps stay the
//! publisher's own and continuous; ask for a keyframe when starting and when the subscriber asks.

use std::time::Instant;

use consulta_sfu::media::TrackSettings;

/// The rewritten header fields of a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Outgoing sequence number.
    pub sequence_number: u16,
    /// Outgoing RTP timestamp.
    pub timestamp: u32,
}

/// One track forwarded to one subscriber.
#[derive(Debug, Default)]
pub struct Forwarder {
    source: Option<u32>,
    settings: TrackSettings,
    needs_keyframe: bool,
}

impl Forwarder {
    /// A forwarder that has forwarded nothing yet.
    pub fn new() -> Self {
        Self {
            needs_keyframe: true,
            ..Self::default()
        }
    }

    /// The subscriber's wishes changed.
    pub fn set_settings(&mut self, settings: TrackSettings) {
        if self.settings.disabled && !settings.disabled {
            self.needs_keyframe = true;
        }
        self.settings = settings;
    }

    /// Decides about one incoming packet of stream `ssrc`.
    pub fn forward(
        &mut self,
        ssrc: u32,
        sequence_number: u16,
        timestamp: u32,
        keyframe: bool,
        _now: Instant,
    ) -> Option<Forwarded> {
        if self.settings.disabled {
            return None;
        }
        let source = *self.source.get_or_insert(ssrc);
        if source != ssrc {
            return None;
        }
        if keyframe {
            self.needs_keyframe = false;
        }
        Some(Forwarded {
            sequence_number,
            timestamp,
        })
    }

    /// Whether the subscriber waits for a keyframe, and of which incoming stream.
    pub fn keyframe_wanted_for(&self) -> Option<Option<u32>> {
        (self.needs_keyframe && !self.settings.disabled).then_some(self.source)
    }

    /// The subscriber asked for a keyframe (PLI/FIR).
    pub fn keyframe_requested(&mut self) {
        self.needs_keyframe = true;
    }
}
