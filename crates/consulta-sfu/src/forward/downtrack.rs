//! One forwarded track as one subscriber receives it: which packets go out, and with which
//! sequence number, timestamp and VP8 PictureID/TL0PICIDX.
//!
//! The engine feeds every RTP packet of the published track (all simulcast layers) to each of its
//! [`DownTrack`]s with [`DownTrack::handle_packet`], sends what comes back as [`Forward::Send`] on
//! the subscriber's SSRC, and drains [`DownTrack::poll_keyframe_request`] into PLIs to the
//! publisher. Nothing here reads the clock: `now` comes with every call.
//!
//! The rules (spec `matrixrtc-livekit.md` §2.8, §5 item 12):
//! - Only the current layer is forwarded. A different layer becomes current only at one of its key
//!   frames; until then the old one keeps flowing. The same holds when the layer's SSRC changes
//!   (the publisher restarted its encoder).
//! - The layer wanted is the target set from track settings, unless that layer has not arrived for
//!   [`DownTrackConfig::layer_timeout`] while another one has: then the best available lower layer,
//!   else the lowest available higher one.
//! - Outgoing sequence numbers are contiguous: each current layer maps its sequence space with one
//!   offset chosen so its first packet follows the last one sent. Reordered packets keep their
//!   mapped number; packets older than the switch point are dropped, never sent "backwards".
//! - Timestamps continue: the first packet of a new mapping is stamped with the last sent timestamp
//!   plus the wall time elapsed since, at the clock rate, and at least
//!   [`DownTrackConfig::min_timestamp_step`] (one frame at 30 fps, or 20 ms of audio), because
//!   layers have independent RTP timestamp bases.
//! - VP8 PictureID and TL0PICIDX run on from the last values sent: the descriptor a subscriber
//!   gets, where it differs, comes back with the decision (the payload itself is shared).
//! - Paused (the subscriber hid the tile, or the bandwidth cap is `None`: not even the lowest layer
//!   fits the subscriber's link) drops everything; resuming is a new mapping at the next
//!   key frame.
//! - Audio has no layers and needs no key frame: each packet passes, remapped only after a pause or
//!   an SSRC change.

use std::time::{Duration, Instant};

use livekit_protocol::TrackInfo;

use super::quality::{Quality, quality_for_settings};
use super::{Codec, is_keyframe, vp8};
use crate::media::TrackSettings;

/// Tunables of a [`DownTrack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownTrackConfig {
    /// The track's codec.
    pub codec: Codec,
    /// RTP clock rate of the track (90 000 for video, 48 000 for Opus).
    pub clock_rate: u32,
    /// At most one key frame request per layer in this interval. Default 500 ms: a PLI is answered
    /// within about one round trip plus an encode, so a second request before that only makes the
    /// publisher send more key frames; waiting the full second some SFUs use (str0m's guidance)
    /// doubles the freeze a subscriber sees when one request or key frame is lost. The engine
    /// should still merge requests of all subscribers for one publisher layer.
    pub keyframe_request_interval: Duration,
    /// A layer that has not arrived for this long, while another layer of the track has, counts as
    /// gone (the publisher's encoder dropped it for lack of bandwidth). Default 1 s: a live layer
    /// sends several frames a second, and a second is short enough that a subscriber does not
    /// stare at a frozen tile for long.
    pub layer_timeout: Duration,
    /// Whether the track is published with simulcast (several rids). Without, its one stream is
    /// forwarded whatever the target, and there is nothing to fall back to. Default false.
    pub simulcast: bool,
    /// The least a timestamp advances when a new mapping starts (after a switch, resume or SSRC
    /// change), in clock ticks. Default: one frame at 30 fps for video, 20 ms for audio.
    pub min_timestamp_step: u32,
}

impl DownTrackConfig {
    /// Defaults for a codec, at its default clock rate.
    pub fn new(codec: Codec) -> Self {
        let clock_rate = codec.default_clock_rate();
        Self {
            codec,
            clock_rate,
            simulcast: false,
            keyframe_request_interval: Duration::from_millis(500),
            layer_timeout: Duration::from_secs(1),
            min_timestamp_step: if codec.is_video() {
                clock_rate / 30
            } else {
                clock_rate / 50
            },
        }
    }
}

/// One incoming RTP packet of the published track, as [`DownTrack::handle_packet`] needs it.
#[derive(Debug)]
pub struct IncomingPacket<'a> {
    /// The simulcast layer it belongs to ([`Quality::from_rid`]); [`Quality::High`] for audio and
    /// single-layer video.
    pub quality: Quality,
    /// The publisher's SSRC for this layer.
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The RTP payload as the publisher sent it, shared by every subscriber: what this one's copy
    /// changes comes back in [`Forward::Send`]'s `head`.
    pub payload: &'a [u8],
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Send it with these header fields, and the payload with its first bytes replaced by `head`
    /// where that is given.
    Send {
        /// Outgoing sequence number.
        seq: u16,
        /// Outgoing RTP timestamp.
        timestamp: u32,
        /// Marker bit, unchanged.
        marker: bool,
        /// The VP8 payload descriptor as this subscriber gets it, when it differs from the
        /// publisher's (its PictureID and TL0PICIDX continue across layer switches). `None`: the
        /// payload goes as it came, so the subscribers of a packet can share one buffer and
        /// nothing is copied for them.
        head: Option<vp8::Head>,
    },
    /// Do not send it.
    Drop(DropReason),
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber paused the track.
    Paused,
    /// A layer that is neither current nor wanted: normal with simulcast.
    OtherLayer,
    /// The wanted layer, but not at a key frame, where a switch or start could happen.
    WaitingForKeyframe,
    /// A late packet of the current layer from before the switch to it, or one that cannot be a
    /// reordered or repaired one: too far back ([`RESTART_DISTANCE`]), or behind in numbering
    /// but ahead in time (numbering that restarted just behind the old numbers).
    BeforeSwitch,
}

/// Ask the publisher for a key frame of this layer (a PLI to its SSRC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    /// The layer.
    pub quality: Quality,
    /// Its SSRC, if a packet of it has been seen; otherwise the engine maps the quality to a rid.
    pub ssrc: Option<u32>,
}

/// Counters for metrics. Bytes are RTP payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownTrackStats {
    /// Packets forwarded.
    pub packets_forwarded: u64,
    /// Payload bytes forwarded.
    pub bytes_forwarded: u64,
    /// Packets of other layers not forwarded ([`DropReason::OtherLayer`]); expected.
    pub skipped_other_layer: u64,
    /// Packets dropped while paused.
    pub dropped_paused: u64,
    /// Packets of the wanted layer dropped while waiting for its key frame.
    pub dropped_waiting_for_keyframe: u64,
    /// Late packets from before a switch, dropped.
    pub dropped_before_switch: u64,
    /// Switches from one layer or SSRC to another.
    pub layer_switches: u64,
    /// Key frame requests issued.
    pub keyframe_requests: u64,
    /// Times the publisher's numbering on the current layer restarted on the same SSRC (a jump
    /// far back or of 32 768 or more, or to just behind with time going on): followed again from
    /// the next key frame.
    pub sequence_restarts: u64,
    /// Key frames not started from because their first packet came after later packets of
    /// their layer (which were dropped while waiting for it).
    pub late_keyframes_refused: u64,
}

/// How far behind the newest packet forwarded a packet must be (in sequence numbers) to count
/// towards a restart of the publisher's numbering: more than any reordering, or any repair a
/// publisher's retransmission history still holds.
const RESTART_DISTANCE: i64 = 3000;

/// Packets in a row that far behind (or behind but newer in time) before the numbering counts as
/// restarted: a stray old duplicate does not move the mapping.
const RESTART_AFTER: u8 = 3;

/// The mapping of the current layer's sequence, timestamp and PictureID spaces onto the outgoing
/// ones.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    quality: Quality,
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// Modulo 2^15; applied truncated to the packet's PictureID width.
    picture_id_offset: u16,
    tl0_offset: u8,
    /// Highest incoming sequence number forwarded, and how far (in packets) it is past the first
    /// one of this mapping, so a late packet from before the switch is recognised.
    highest_seq: u16,
    highest_index: i64,
    /// The RTP timestamp of the packet numbered `highest_seq`.
    highest_ts: u32,
}

impl Mapping {
    /// Whether a packet numbered `seq` at `timestamp` cannot belong to this numbering: too far
    /// back ([`RESTART_DISTANCE`]) for any reordering or repair, or on the other side of the
    /// newest packet in time than in number. A reordered or retransmitted packet is older in
    /// both, a new one newer in both (or of the same frame). Numbering that restarted on the same
    /// SSRC a little behind the old numbers, with the clock going on, is behind in one and ahead
    /// in the other; so is a late packet of the old numbering after such a restart, ahead of the
    /// new numbers but older. This assumes timestamps never fall as numbers rise: true of Opus,
    /// VP8 and the constrained-baseline H.264 negotiated (no B-frames).
    fn foreign(&self, seq: u16, timestamp: u32) -> bool {
        let delta = i64::from(seq.wrapping_sub(self.highest_seq) as i16);
        let time = timestamp.wrapping_sub(self.highest_ts) as i32;
        delta <= -RESTART_DISTANCE || delta < 0 && time > 0 || delta > 0 && time < 0
    }
}

/// The last packet sent (the newest by sequence number).
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    timestamp: u32,
    at: Instant,
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Layer {
    last_seen: Option<Instant>,
    ssrc: Option<u32>,
    last_request: Option<Instant>,
    /// The highest sequence number seen on `ssrc`, and its timestamp.
    highest: Option<(u16, u32)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Layers {
    low: Layer,
    medium: Layer,
    high: Layer,
}

impl Layers {
    fn get(&self, q: Quality) -> &Layer {
        match q {
            Quality::Low => &self.low,
            Quality::Medium => &self.medium,
            Quality::High => &self.high,
        }
    }

    fn get_mut(&mut self, q: Quality) -> &mut Layer {
        match q {
            Quality::Low => &mut self.low,
            Quality::Medium => &mut self.medium,
            Quality::High => &mut self.high,
        }
    }
}

/// One subscriber's forwarding state for one track. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct DownTrack {
    config: DownTrackConfig,
    target: Quality,
    /// The highest layer the subscriber's bandwidth allows (see [`crate::bandwidth`]); `None`
    /// while not even the lowest fits, which pauses the track.
    cap: Option<Quality>,
    paused: bool,
    current: Option<Mapping>,
    last: Option<Sent>,
    layers: Layers,
    /// When the first packet (of any layer) arrived: a layer never seen gets this long to show up
    /// before it counts as gone.
    first_packet_at: Option<Instant>,
    /// Packets in a row that cannot belong to the current mapping's numbering
    /// ([`Mapping::foreign`]); [`RESTART_AFTER`] of them restart it.
    foreign_in_a_row: u8,
    stats: DownTrackStats,
}

impl DownTrack {
    /// A down track that targets [`Quality::High`], not paused, forwarding nothing until the first
    /// key frame (or, for audio, the first packet).
    pub fn new(config: DownTrackConfig) -> Self {
        Self {
            config,
            target: Quality::High,
            cap: Some(Quality::High),
            paused: false,
            current: None,
            last: None,
            layers: Layers::default(),
            first_packet_at: None,
            foreign_in_a_row: 0,
            stats: DownTrackStats::default(),
        }
    }

    /// Numbers this track's packets on from where `previous` stopped (sequence number, timestamp
    /// by the time elapsed, VP8 PictureID), as after a layer switch: for a new track sent on the
    /// SSRC `previous` used, so the receiver and SRTP see one continuous stream.
    pub fn continue_after(&mut self, previous: &DownTrack) {
        self.last = previous.last;
    }

    /// The configuration.
    pub fn config(&self) -> &DownTrackConfig {
        &self.config
    }

    /// Sets the layer the subscriber should get; the switch happens at that layer's next key
    /// frame.
    pub fn set_target(&mut self, quality: Quality) {
        self.target = quality;
    }

    /// The layer the subscriber should get.
    pub fn target(&self) -> Quality {
        self.target
    }

    /// Limits the layer to `cap` whatever the target (the subscriber's link carries no more); the
    /// switch happens at the next key frame of the layer that results, as for a target change.
    /// `None` pauses the track until a cap is set again, as [`DownTrack::set_paused`] does.
    pub fn set_cap(&mut self, cap: Option<Quality>) {
        if cap.is_none() {
            self.current = None;
        }
        self.cap = cap;
    }

    /// The bandwidth limit (`Some(`[`Quality::High`]`)`: none; `None`: paused for bandwidth).
    pub fn cap(&self) -> Option<Quality> {
        self.cap
    }

    /// Pauses (the subscriber hid the tile) or resumes. Resuming waits for a key frame; the
    /// sequence then continues at the last sent + 1 and the timestamp advances by the wall time
    /// paused.
    pub fn set_paused(&mut self, paused: bool) {
        if paused {
            self.current = None;
        }
        self.paused = paused;
    }

    /// Whether forwarding is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Applies a subscriber's `track_setting` for `track`: pause when disabled, and target the
    /// layer [`quality_for_settings`] picks (by rendered size, else by the quality named).
    pub fn handle_track_settings(&mut self, settings: &TrackSettings, track: &TrackInfo) {
        self.set_paused(settings.disabled);
        self.set_target(quality_for_settings(track, settings));
    }

    /// The layer currently forwarded, if any.
    pub fn current(&self) -> Option<Quality> {
        self.current.map(|m| m.quality)
    }

    /// The counters.
    pub fn stats(&self) -> DownTrackStats {
        self.stats
    }

    /// Decides what to do with one incoming packet, and, when it is forwarded with a VP8
    /// descriptor other than the publisher's, which.
    pub fn handle_packet(&mut self, packet: IncomingPacket<'_>, now: Instant) -> Forward {
        let layer = self.layers.get_mut(packet.quality);
        layer.last_seen = Some(now);
        if layer.ssrc != Some(packet.ssrc) {
            layer.highest = None;
        }
        layer.ssrc = Some(packet.ssrc);
        // Behind the highest seen, by no more than a repair comes late ([`loss::WINDOW`]), and
        // of a frame no newer: a packet behind it by more, or of a newer frame, is the
        // publisher's numbering restarted (review helper-76), and becomes the highest.
        let mut behind = layer.highest.is_some_and(|(seq, timestamp)| {
            (1..=super::loss::WINDOW).contains(&seq.wrapping_sub(packet.seq))
                && packet.timestamp.wrapping_sub(timestamp) as i32 <= 0
        });
        if !behind {
            layer.highest = Some((packet.seq, packet.timestamp));
        }
        self.first_packet_at.get_or_insert(now);

        if self.paused || self.cap.is_none() {
            self.stats.dropped_paused += 1;
            return Forward::Drop(DropReason::Paused);
        }
        if let Some(m) = self.current
            && m.quality == packet.quality
            && m.ssrc == packet.ssrc
        {
            if !self.numbering_restarted(&m, packet.seq, packet.timestamp) {
                return self.forward(m, packet, now);
            }
            // Every later packet would look late: chosen again as at a switch (at a key frame
            // for video), numbered on from the last packet sent.
            self.current = None;
            behind = false;
            self.layers.get_mut(packet.quality).highest = Some((packet.seq, packet.timestamp));
        }

        let video = self.config.codec.is_video();
        let wanted = if self.config.simulcast {
            self.wanted(now)
        } else {
            packet.quality
        };
        if packet.quality != wanted {
            self.stats.skipped_other_layer += 1;
            return Forward::Drop(DropReason::OtherLayer);
        }
        if video && !is_keyframe(self.config.codec, packet.payload) {
            // While the old layer still flows, the new one's delta frames are simply not chosen.
            if self.current.is_some() {
                self.stats.skipped_other_layer += 1;
                return Forward::Drop(DropReason::OtherLayer);
            }
            self.stats.dropped_waiting_for_keyframe += 1;
            return Forward::Drop(DropReason::WaitingForKeyframe);
        }
        if video && behind {
            // A key frame's first packet that came after later packets of its layer (reordered,
            // or a repair from the publisher): those were dropped while no mapping took the
            // layer, and nothing would send them again, so the frame could never be decoded and
            // the subscriber would freeze until its own keyframe request (review helper-74).
            // The next key frame is asked for as the layer's requests allow: at once would be
            // dropped by the engine's own interval per stream (review helper-76).
            self.stats.late_keyframes_refused += 1;
            return Forward::Drop(DropReason::WaitingForKeyframe);
        }
        let mapping = self.start(&packet, now);
        self.forward(mapping, packet, now)
    }

    /// A key frame request to send to the publisher, if the wanted layer is not flowing yet (at
    /// the start, after a target change or layer loss, on resume), at most one per layer per
    /// [`DownTrackConfig::keyframe_request_interval`]. Call after handling packets and on a timer.
    pub fn poll_keyframe_request(&mut self, now: Instant) -> Option<KeyframeRequest> {
        if self.paused || self.cap.is_none() || !self.config.codec.is_video() {
            return None;
        }
        let wanted = self.wanted(now);
        let interval = self.config.keyframe_request_interval;
        let current = self.current;
        let layer = self.layers.get_mut(wanted);
        let flowing = current
            .is_some_and(|m| m.quality == wanted && layer.ssrc.is_none_or(|ssrc| ssrc == m.ssrc));
        if flowing
            || layer
                .last_request
                .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return None;
        }
        layer.last_request = Some(now);
        self.stats.keyframe_requests += 1;
        Some(KeyframeRequest {
            quality: wanted,
            ssrc: layer.ssrc,
        })
    }

    /// The publisher was not asked for the key frame of `quality` this forwarder requested:
    /// another request for that stream went less than its interval before, and the next may go
    /// at `until`. The forwarder asks again then, if it still waits (rather than a whole
    /// interval of its own after its request, past the first moment it could have gone).
    pub fn keyframe_request_held(&mut self, quality: Quality, until: Instant) {
        let interval = self.config.keyframe_request_interval;
        let layer = self.layers.get_mut(quality);
        // As if it had asked an interval before `until`.
        layer.last_request = Some(until.checked_sub(interval).unwrap_or(until));
    }

    /// The layer to forward now: the target, or the nearest available one if the target stopped
    /// arriving (or never came) while others did. Without simulcast, the one that arrives
    /// ([`Quality::High`], a stream without rid, until one does).
    fn wanted(&self, now: Instant) -> Quality {
        if !self.config.simulcast {
            return Quality::ALL
                .into_iter()
                .filter_map(|q| Some((self.layers.get(q).last_seen?, q)))
                .max()
                .map_or(Quality::High, |(_, q)| q);
        }
        let available = |q: Quality| {
            self.layers
                .get(q)
                .last_seen
                .or(self.first_packet_at)
                .is_none_or(|t| now.saturating_duration_since(t) < self.config.layer_timeout)
        };
        // Within the bandwidth first; above it only when no lower layer is left.
        let target = self.cap.map_or(self.target, |cap| self.target.min(cap));
        if available(target) || !Quality::ALL.into_iter().any(available) {
            return target;
        }
        let lower = std::iter::successors(target.lower(), |q| q.lower());
        let higher = std::iter::successors(target.higher(), |q| q.higher());
        lower
            .chain(higher)
            .find(|&q| available(q))
            .unwrap_or(target)
    }

    /// Whether the packet `seq` at `timestamp` is the [`RESTART_AFTER`]th in a row that cannot
    /// belong to mapping `m`'s numbering ([`Mapping::foreign`]).
    fn numbering_restarted(&mut self, m: &Mapping, seq: u16, timestamp: u32) -> bool {
        if !m.foreign(seq, timestamp) {
            self.foreign_in_a_row = 0;
            return false;
        }
        self.foreign_in_a_row += 1;
        if self.foreign_in_a_row < RESTART_AFTER {
            return false;
        }
        self.foreign_in_a_row = 0;
        self.stats.sequence_restarts += 1;
        true
    }

    /// A new mapping that makes `packet` follow the last packet sent.
    fn start(&mut self, packet: &IncomingPacket<'_>, now: Instant) -> Mapping {
        let descriptor = match self.config.codec {
            Codec::Vp8 => vp8::Descriptor::parse(packet.payload),
            _ => None,
        };
        let mut mapping = Mapping {
            quality: packet.quality,
            ssrc: packet.ssrc,
            seq_offset: 0,
            ts_offset: 0,
            picture_id_offset: 0,
            tl0_offset: 0,
            highest_seq: packet.seq,
            highest_index: 0,
            highest_ts: packet.timestamp,
        };
        if let Some(last) = self.last {
            mapping.seq_offset = last.seq.wrapping_add(1).wrapping_sub(packet.seq);
            let elapsed = now.saturating_duration_since(last.at);
            // RTP timestamps live modulo 2^32: truncating the tick count is the right wrap.
            let ticks =
                (elapsed.as_nanos() * u128::from(self.config.clock_rate) / 1_000_000_000) as u32;
            let step = ticks.max(self.config.min_timestamp_step);
            mapping.ts_offset = last
                .timestamp
                .wrapping_add(step)
                .wrapping_sub(packet.timestamp);
            if let (Some(last_id), Some(id)) = (
                last.picture_id,
                descriptor.and_then(|d| d.picture_id.map(|p| p.value())),
            ) {
                mapping.picture_id_offset = last_id.wrapping_add(1).wrapping_sub(id) & 0x7fff;
            }
            if let (Some(last_tl0), Some(tl0)) =
                (last.tl0_pic_idx, descriptor.and_then(|d| d.tl0_pic_idx))
            {
                mapping.tl0_offset = last_tl0.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        if self.current.is_some() {
            self.stats.layer_switches += 1;
        }
        self.current = Some(mapping);
        self.foreign_in_a_row = 0;
        mapping
    }

    fn forward(&mut self, mut m: Mapping, packet: IncomingPacket<'_>, now: Instant) -> Forward {
        let delta = i64::from(packet.seq.wrapping_sub(m.highest_seq) as i16);
        let index = m.highest_index + delta;
        // Before the mapping's first packet, or not a reordered or repaired one (the publisher's
        // numbering moved: see `numbering_restarted`).
        if index < 0 || m.foreign(packet.seq, packet.timestamp) {
            self.stats.dropped_before_switch += 1;
            return Forward::Drop(DropReason::BeforeSwitch);
        }
        let newest = delta > 0;
        if newest {
            m.highest_seq = packet.seq;
            m.highest_index = index;
            m.highest_ts = packet.timestamp;
            self.current = Some(m);
        }
        let seq = packet.seq.wrapping_add(m.seq_offset);
        let timestamp = packet.timestamp.wrapping_add(m.ts_offset);

        let mut picture_id = None;
        let mut tl0_pic_idx = None;
        let mut head = None;
        if self.config.codec == Codec::Vp8
            && let Some(d) = vp8::Descriptor::parse(packet.payload)
        {
            let id = d
                .picture_id
                .map_or(0, |p| p.value().wrapping_add(m.picture_id_offset));
            let tl0 = d.tl0_pic_idx.map_or(0, |t| t.wrapping_add(m.tl0_offset));
            if let Some((d, changed)) = vp8::rewritten(packet.payload, id, tl0) {
                picture_id = d.picture_id.map(|p| p.value());
                tl0_pic_idx = d.tl0_pic_idx;
                head = changed;
            }
        }

        // A reordered or duplicate packet keeps its mapped number but does not move "last"; the
        // first packet of a mapping (index 0, nothing newer yet) does.
        if newest || index == 0 && m.highest_index == 0 {
            let last = self.last.get_or_insert(Sent {
                seq,
                timestamp,
                at: now,
                picture_id,
                tl0_pic_idx,
            });
            last.seq = seq;
            last.timestamp = timestamp;
            last.at = now;
            last.picture_id = picture_id.or(last.picture_id);
            last.tl0_pic_idx = tl0_pic_idx.or(last.tl0_pic_idx);
        }
        self.stats.packets_forwarded += 1;
        self.stats.bytes_forwarded += packet.payload.len() as u64;
        Forward::Send {
            seq,
            timestamp,
            marker: packet.marker,
            head,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use super::*;
    use crate::forward::vp8::Descriptor;
    use crate::forward::vp8::tests::packet as vp8_packet;

    const FRAME: Duration = Duration::from_millis(33);

    /// One simulcast layer of a simulated VP8 publisher, with its own SSRC and its own sequence,
    /// timestamp, PictureID and TL0PICIDX bases.
    struct Stream {
        quality: Quality,
        ssrc: u32,
        seq: u16,
        ts: u32,
        picture_id: u16,
        tl0: u8,
        long_ids: bool,
    }

    impl Stream {
        fn new(quality: Quality, seq: u16, ts: u32, picture_id: u16) -> Self {
            Self {
                quality,
                ssrc: 1000 + quality.index() as u32,
                seq,
                ts,
                picture_id,
                tl0: (picture_id as u8).wrapping_mul(3),
                long_ids: true,
            }
        }

        /// One frame of `n` packets: (quality, ssrc, seq, ts, marker, payload).
        fn frame(&mut self, key: bool, n: usize) -> Vec<Pkt> {
            let frame = (0..n)
                .map(|i| {
                    let seq = self.seq;
                    self.seq = self.seq.wrapping_add(1);
                    Pkt {
                        quality: self.quality,
                        ssrc: self.ssrc,
                        seq,
                        ts: self.ts,
                        marker: i + 1 == n,
                        payload: vp8_packet(self.long_ids, self.picture_id, self.tl0, i == 0, key),
                    }
                })
                .collect();
            self.ts = self.ts.wrapping_add(3000);
            self.picture_id = self.picture_id.wrapping_add(1) & 0x7fff;
            self.tl0 = self.tl0.wrapping_add(1);
            frame
        }
    }

    #[derive(Clone)]
    struct Pkt {
        quality: Quality,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    }

    /// What the subscriber received.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Out {
        quality: Quality,
        seq: u16,
        ts: u32,
        picture_id: u16,
        tl0: u8,
        key: bool,
    }

    struct Sim {
        dt: DownTrack,
        now: Instant,
        out: Vec<Out>,
        layers: Vec<Stream>,
    }

    impl Sim {
        fn new(codec: Codec) -> Self {
            Self {
                dt: DownTrack::new(DownTrackConfig {
                    simulcast: true,
                    ..DownTrackConfig::new(codec)
                }),
                now: Instant::now(),
                out: Vec::new(),
                layers: vec![
                    Stream::new(Quality::Low, 100, 5_000, 10),
                    Stream::new(Quality::Medium, 60_000, 1_000_000, 20_000),
                    Stream::new(Quality::High, 65_500, u32::MAX - 20_000, 32_760),
                ],
            }
        }

        fn feed(&mut self, p: &Pkt) -> Forward {
            let mut payload = p.payload.clone();
            let f = self.dt.handle_packet(
                IncomingPacket {
                    quality: p.quality,
                    ssrc: p.ssrc,
                    seq: p.seq,
                    timestamp: p.ts,
                    marker: p.marker,
                    payload: &p.payload,
                },
                self.now,
            );
            if let Forward::Send {
                seq,
                timestamp,
                head,
                ..
            } = f
            {
                if let Some(head) = head {
                    head.apply(&mut payload);
                }
                assert_eq!(payload.len(), p.payload.len());
                let d = Descriptor::parse(&payload).unwrap();
                self.out.push(Out {
                    quality: p.quality,
                    seq,
                    ts: timestamp,
                    picture_id: d.picture_id.unwrap().value(),
                    tl0: d.tl0_pic_idx.unwrap(),
                    key: d.keyframe,
                });
            }
            f
        }

        /// One frame time: a frame of 3 packets from each of `qualities`, key frames for those in
        /// `keys`.
        fn tick(&mut self, qualities: &[Quality], keys: &[Quality]) {
            let mut packets = Vec::new();
            for s in &mut self.layers {
                if qualities.contains(&s.quality) {
                    packets.extend(s.frame(keys.contains(&s.quality), 3));
                }
            }
            for p in &packets {
                self.feed(p);
            }
            self.now += FRAME;
        }

        fn ticks(&mut self, n: usize, qualities: &[Quality]) {
            for _ in 0..n {
                self.tick(qualities, &[]);
            }
        }

        fn forwarded_qualities(&self) -> Vec<Quality> {
            let mut q: Vec<Quality> = self.out.iter().map(|o| o.quality).collect();
            q.dedup();
            q
        }
    }

    const ALL: &[Quality] = &Quality::ALL;

    /// Every outgoing sequence number follows the previous one; timestamps, PictureIDs and
    /// TL0PICIDX never go backwards and step by one frame at a time.
    fn assert_continuous(out: &[Out]) {
        for w in out.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert_eq!(
                b.seq,
                a.seq.wrapping_add(1),
                "seq gap between {a:?} and {b:?}"
            );
            let dts = b.ts.wrapping_sub(a.ts) as i32;
            assert!(dts >= 0, "timestamp went back between {a:?} and {b:?}");
            if dts == 0 {
                assert_eq!(b.picture_id, a.picture_id, "same frame: {a:?} {b:?}");
                assert_eq!(b.tl0, a.tl0);
            } else {
                assert_eq!(
                    b.picture_id,
                    a.picture_id.wrapping_add(1) & 0x7fff,
                    "new frame: PictureID continues, {a:?} {b:?}"
                );
                assert_eq!(b.tl0, a.tl0.wrapping_add(1), "{a:?} {b:?}");
            }
        }
    }

    /// A track sent on a departed track's SSRC numbers on from it: to the receiver (and to SRTP's
    /// rollover counter) the SSRC carries one continuous stream.
    #[test]
    fn a_track_on_a_reused_ssrc_continues_the_previous_numbering() {
        let mut before = Sim::new(Codec::Vp8);
        before.tick(ALL, &[Quality::High]);
        before.ticks(4, ALL);
        let last = *before.out.last().unwrap();

        let mut after = Sim::new(Codec::Vp8);
        after.now = before.now;
        // Another publisher's stream, numbered nowhere near the first one.
        after.layers = vec![Stream::new(Quality::High, 40_000, 123_456, 7_000)];
        after.dt.continue_after(&before.dt);
        after.tick(&[Quality::High], &[Quality::High]);
        after.ticks(3, &[Quality::High]);
        let mut out = vec![last];
        out.extend(after.out.iter().copied());
        assert_continuous(&out);
        assert!(after.out[0].key);

        // Without it, numbering starts where the new stream does.
        let mut fresh = Sim::new(Codec::Vp8);
        fresh.layers = vec![Stream::new(Quality::High, 40_000, 123_456, 7_000)];
        fresh.tick(&[Quality::High], &[Quality::High]);
        assert_eq!(fresh.out[0].seq, 40_000);
    }

    /// A publisher whose numbering on one SSRC jumps by 32 768 or more (it restarted, or skipped)
    /// is followed again from its next key frame, numbered on from the last packet sent. Before,
    /// every later packet counted as a late one from before the switch and the track froze. A
    /// stray old packet or two changes nothing.
    #[test]
    fn a_sequence_jump_on_the_same_ssrc_is_followed_from_the_next_keyframe() {
        const HIGH: usize = 2;
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(&[Quality::High], &[Quality::High]);
        let frame = sim.layers[HIGH].frame(false, 3);
        for p in &frame {
            sim.feed(p);
        }
        sim.now += FRAME;
        for _ in 0..2 {
            let stray = Pkt {
                seq: frame[0].seq.wrapping_sub(20_000),
                ..frame[0].clone()
            };
            assert_eq!(sim.feed(&stray), Forward::Drop(DropReason::BeforeSwitch));
        }
        sim.ticks(2, &[Quality::High]);
        assert_eq!(sim.dt.stats().sequence_restarts, 0);
        let before = sim.out.len();
        assert_eq!(before, 12);

        // 40 000 on: as a 16-bit difference, 25 536 behind.
        sim.layers[HIGH].seq = sim.layers[HIGH].seq.wrapping_add(40_000);
        sim.ticks(2, &[Quality::High]);
        assert_eq!(sim.out.len(), before, "nothing until a key frame");
        assert_eq!(sim.dt.stats().sequence_restarts, 1);
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).map(|r| r.quality),
            Some(Quality::High)
        );
        sim.tick(&[Quality::High], &[Quality::High]);
        sim.ticks(3, &[Quality::High]);
        assert_eq!(sim.out.len(), before + 12);
        assert!(sim.out[before].key);
        assert_continuous(&sim.out);
        assert_eq!(sim.dt.stats().sequence_restarts, 1);
    }

    /// Numbering that restarts on the same SSRC just behind the old numbers, with the clock going
    /// on, is followed from the next key frame too. Before, its packets went out as late ones of
    /// the old numbering (numbers the receiver had already had) until the new numbers caught up:
    /// here 500 packets, for a camera several seconds of frozen video. A whole frame that arrives
    /// late (behind, and older in time) is still forwarded as a reordered one; a packet of the old
    /// numbering that arrives after the restart (ahead of the new numbers, older in time) is
    /// dropped and moves nothing.
    #[test]
    fn numbering_restarted_just_behind_is_followed_from_the_next_keyframe() {
        const HIGH: usize = 2;
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(&[Quality::High], &[Quality::High]);
        let late = sim.layers[HIGH].frame(false, 3);
        sim.now += FRAME;
        sim.tick(&[Quality::High], &[]);
        for p in &late {
            assert!(
                matches!(sim.feed(p), Forward::Send { .. }),
                "reordered frame"
            );
        }
        sim.ticks(2, &[Quality::High]);
        assert_eq!(sim.dt.stats().sequence_restarts, 0);
        let before = sim.out.len();
        assert_eq!(before, 15);

        // Still in flight when the numbering restarts: it arrives after the new key frame.
        let stale = sim.layers[HIGH].frame(false, 3);
        sim.now += FRAME;
        sim.layers[HIGH].seq = sim.layers[HIGH].seq.wrapping_sub(500);
        let restarted = sim.layers[HIGH].frame(false, 3);
        for p in &restarted[..2] {
            assert_eq!(sim.feed(p), Forward::Drop(DropReason::BeforeSwitch));
        }
        assert_eq!(
            sim.feed(&restarted[2]),
            Forward::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(sim.dt.stats().sequence_restarts, 1);
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).map(|r| r.quality),
            Some(Quality::High)
        );
        sim.now += FRAME;
        sim.ticks(2, &[Quality::High]);
        assert_eq!(sim.out.len(), before, "nothing until a key frame");
        sim.tick(&[Quality::High], &[Quality::High]);
        assert_eq!(sim.feed(&stale[2]), Forward::Drop(DropReason::BeforeSwitch));
        sim.ticks(3, &[Quality::High]);
        assert_eq!(sim.out.len(), before + 12);
        assert!(sim.out[before].key);
        // From the two frames before the restart (sent in order) on: numbered on without a gap.
        assert_continuous(&sim.out[before - 6..]);
        assert_eq!(sim.dt.stats().sequence_restarts, 1);
    }

    #[test]
    fn starts_and_switches_only_on_a_keyframe_of_the_target() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.ticks(5, ALL);
        assert!(sim.out.is_empty(), "nothing before a key frame");
        assert_eq!(sim.dt.stats().dropped_waiting_for_keyframe, 15);
        // A key frame of another layer does not start a High subscriber.
        sim.tick(ALL, &[Quality::Low]);
        assert!(sim.out.is_empty());
        sim.tick(ALL, &[Quality::High]);
        assert_eq!(sim.forwarded_qualities(), vec![Quality::High]);
        assert!(sim.out[0].key);
        assert_eq!(sim.dt.current(), Some(Quality::High));

        sim.dt.set_target(Quality::Low);
        sim.ticks(10, ALL);
        assert_eq!(
            sim.forwarded_qualities(),
            vec![Quality::High],
            "the old layer flows until the new one's key frame"
        );
        // A Medium key frame is not the target's.
        sim.tick(ALL, &[Quality::Medium]);
        assert_eq!(sim.dt.current(), Some(Quality::High));
        sim.tick(ALL, &[Quality::Low]);
        assert_eq!(sim.forwarded_qualities(), vec![Quality::High, Quality::Low]);
        let first_low = sim.out.iter().find(|o| o.quality == Quality::Low).unwrap();
        assert!(first_low.key);
        sim.ticks(5, ALL);
        assert_eq!(sim.forwarded_qualities(), vec![Quality::High, Quality::Low]);
        assert_eq!(sim.dt.stats().layer_switches, 1);
        assert_continuous(&sim.out);
    }

    #[test]
    fn a_bandwidth_cap_lowers_the_layer_below_the_target_and_lifting_it_restores_it() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(ALL, &[Quality::High]);
        sim.ticks(3, ALL);
        sim.dt.set_cap(Some(Quality::Low));
        assert_eq!(
            sim.dt.target(),
            Quality::High,
            "the tile still asks for High"
        );
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).map(|r| r.quality),
            Some(Quality::Low),
            "the capped layer is asked for at once"
        );
        sim.ticks(3, ALL);
        assert_eq!(sim.dt.current(), Some(Quality::High), "until its key frame");
        sim.tick(ALL, &[Quality::Low]);
        assert_eq!(sim.dt.current(), Some(Quality::Low));
        // A tile asking for less than the cap gets what it asks for.
        sim.dt.set_cap(Some(Quality::Medium));
        sim.dt.set_target(Quality::Low);
        sim.tick(ALL, &[Quality::Medium]);
        assert_eq!(sim.dt.current(), Some(Quality::Low));
        sim.dt.set_target(Quality::High);
        sim.tick(ALL, &[Quality::Medium]);
        assert_eq!(sim.dt.current(), Some(Quality::Medium));
        sim.dt.set_cap(Some(Quality::High));
        sim.tick(ALL, &[Quality::High]);
        assert_eq!(sim.dt.current(), Some(Quality::High));
        assert_eq!(
            sim.forwarded_qualities(),
            vec![Quality::High, Quality::Low, Quality::Medium, Quality::High]
        );
        assert_continuous(&sim.out);
    }

    #[test]
    fn no_cap_pauses_the_track_and_a_cap_again_resumes_it_at_a_key_frame_continuously() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(ALL, &[Quality::High]);
        sim.ticks(3, ALL);
        let sent = sim.out.len();
        sim.dt.set_cap(None);
        sim.ticks(5, ALL);
        assert_eq!(sim.out.len(), sent, "nothing is forwarded while paused");
        assert_eq!(sim.dt.current(), None);
        assert_eq!(sim.dt.poll_keyframe_request(sim.now), None, "nor asked for");
        // The lowest layer comes back at its own key frame, not before.
        sim.dt.set_cap(Some(Quality::Low));
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).map(|r| r.quality),
            Some(Quality::Low)
        );
        sim.ticks(2, ALL);
        assert_eq!(sim.out.len(), sent);
        sim.tick(ALL, &[Quality::Low]);
        assert_eq!(sim.dt.current(), Some(Quality::Low));
        assert_eq!(sim.forwarded_qualities(), vec![Quality::High, Quality::Low]);
        assert_continuous(&sim.out);
    }

    #[test]
    fn continuous_across_two_switches_a_pause_and_wraps() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(ALL, &[Quality::High]);
        // High's sequence (from 65 500), timestamp and 15-bit PictureID (from 32 760) wrap here.
        sim.ticks(20, ALL);
        sim.dt.set_target(Quality::Medium);
        sim.ticks(3, ALL);
        sim.tick(ALL, &[Quality::Medium]);
        sim.ticks(10, ALL);
        sim.dt.set_target(Quality::Low);
        sim.tick(ALL, &[Quality::Low]);
        sim.ticks(10, ALL);
        assert_eq!(
            sim.forwarded_qualities(),
            vec![Quality::High, Quality::Medium, Quality::Low]
        );
        assert_eq!(sim.dt.stats().layer_switches, 2);
        assert_continuous(&sim.out);

        // Pause for 2 s, then resume: nothing until a key frame.
        let before = *sim.out.last().unwrap();
        sim.dt.set_paused(true);
        sim.ticks(60, ALL);
        assert_eq!(*sim.out.last().unwrap(), before);
        sim.dt.set_paused(false);
        sim.ticks(3, ALL);
        assert_eq!(
            *sim.out.last().unwrap(),
            before,
            "resume waits for a key frame"
        );
        sim.tick(ALL, &[Quality::Low]);
        let after = sim.out[sim.out.iter().position(|o| *o == before).unwrap() + 1];
        assert_eq!(after.seq, before.seq.wrapping_add(1));
        assert!(after.key);
        // The timestamp advanced by the wall time between the last packet sent and the resume:
        // 64 frame times of 33 ms at 90 kHz.
        assert_eq!(after.ts.wrapping_sub(before.ts), 64 * 33 * 90);
        sim.ticks(5, ALL);
        assert_continuous(&sim.out);

        // The subscriber's sequence itself wrapped somewhere along the way.
        let seqs: Vec<u16> = sim.out.iter().map(|o| o.seq).collect();
        assert!(
            seqs.windows(2).any(|w| w[1] < w[0]),
            "no u16 wrap in {seqs:?}"
        );
        let s = sim.dt.stats();
        assert_eq!(s.packets_forwarded as usize, sim.out.len());
        assert!(s.dropped_paused > 0 && s.skipped_other_layer > 0);
    }

    #[test]
    fn timestamps_move_forward_even_when_the_new_layer_is_behind() {
        let mut sim = Sim::new(Codec::Vp8);
        // Low's RTP clock is far behind High's: after the switch the subscriber still sees time
        // advance by one frame, not jump back.
        sim.tick(ALL, &[Quality::High]);
        sim.ticks(3, ALL);
        let last_high = *sim.out.last().unwrap();
        sim.dt.set_target(Quality::Low);
        // The key frame arrives in the same instant as the last High frame was sent.
        sim.now -= FRAME;
        sim.tick(&[Quality::Low], &[Quality::Low]);
        let first_low = sim.out[sim.out.len() - 3];
        assert_eq!(first_low.quality, Quality::Low);
        assert_eq!(first_low.ts.wrapping_sub(last_high.ts), 3000);
        assert_continuous(&sim.out);
    }

    #[test]
    fn seven_bit_picture_ids_stay_seven_bits_and_continue() {
        let mut sim = Sim::new(Codec::Vp8);
        for s in &mut sim.layers {
            s.long_ids = false;
        }
        sim.layers[0].picture_id = 120;
        sim.tick(ALL, &[Quality::High]);
        sim.ticks(4, ALL);
        sim.dt.set_target(Quality::Low);
        sim.tick(ALL, &[Quality::Low]);
        sim.ticks(10, ALL); // Low's 7-bit PictureID wraps from 127 to 0.
        assert_eq!(sim.forwarded_qualities(), vec![Quality::High, Quality::Low]);
        for w in sim.out.windows(2) {
            if w[1].ts != w[0].ts {
                assert_eq!(w[1].picture_id, (w[0].picture_id + 1) & 0x7f, "{w:?}");
            }
            assert!(w[1].picture_id < 128);
        }
    }

    #[test]
    fn reordered_and_late_packets() {
        let mut sim = Sim::new(Codec::Vp8);
        let key = sim.layers[2].frame(true, 3);
        let next = sim.layers[2].frame(false, 3);
        for p in &key {
            sim.feed(p);
        }
        // Packets 2 and 1 of the next frame arrive swapped, then a duplicate.
        let f2 = sim.feed(&next[1]);
        let f1 = sim.feed(&next[0]);
        let dup = sim.feed(&next[0]);
        let f3 = sim.feed(&next[2]);
        let seq_of = |f: Forward| match f {
            Forward::Send { seq, .. } => seq,
            Forward::Drop(r) => panic!("dropped: {r:?}"),
        };
        let base = sim.out[0].seq;
        assert_eq!(seq_of(f1), base.wrapping_add(3));
        assert_eq!(seq_of(f2), base.wrapping_add(4));
        assert_eq!(seq_of(dup), base.wrapping_add(3));
        assert_eq!(seq_of(f3), base.wrapping_add(5));

        // Switch to Low; a late Low packet from before its key frame is never sent backwards.
        sim.dt.set_target(Quality::Low);
        let before = sim.layers[0].frame(false, 2);
        let low_key = sim.layers[0].frame(true, 2);
        for p in &low_key {
            sim.feed(p);
        }
        assert_eq!(sim.dt.current(), Some(Quality::Low));
        assert_eq!(
            sim.feed(&before[1]),
            Forward::Drop(DropReason::BeforeSwitch)
        );
        // A late High packet is another layer now.
        assert_eq!(sim.feed(&next[1]), Forward::Drop(DropReason::OtherLayer));
        assert_eq!(sim.dt.stats().dropped_before_switch, 1);
    }

    #[test]
    fn a_key_frame_whose_first_packet_comes_after_the_rest_is_not_started_from() {
        let mut sim = Sim::new(Codec::Vp8);
        let asked = sim.dt.poll_keyframe_request(sim.now);
        assert_eq!(asked.map(|r| r.quality), Some(Quality::High));
        // The key frame's first packet is lost before the SFU; its repair comes after the rest,
        // which were dropped while waiting for a key frame.
        let key = sim.layers[2].frame(true, 3);
        for p in &key[1..] {
            assert_eq!(sim.feed(p), Forward::Drop(DropReason::WaitingForKeyframe));
        }
        assert_eq!(
            sim.feed(&key[0]),
            Forward::Drop(DropReason::WaitingForKeyframe),
            "a key frame of which only the first packet would be sent"
        );
        assert_eq!(sim.dt.stats().late_keyframes_refused, 1);
        assert!(sim.out.is_empty());
        // The next one is asked for once the interval since the last request has passed.
        assert!(sim.dt.poll_keyframe_request(sim.now).is_none());
        sim.now += DownTrackConfig::new(Codec::Vp8).keyframe_request_interval;
        let asked = sim.dt.poll_keyframe_request(sim.now);
        assert_eq!(asked.map(|r| r.quality), Some(Quality::High));
        sim.tick(&[Quality::High], &[Quality::High]);
        sim.ticks(3, &[Quality::High]);
        assert_eq!(sim.out.len(), 12);
        assert!(sim.out[0].key);
        assert_continuous(&sim.out);
        // Reordered within a frame once the layer flows: forwarded as before.
        let next = sim.layers[2].frame(false, 3);
        for i in [1, 0, 2] {
            assert!(matches!(sim.feed(&next[i]), Forward::Send { .. }));
        }
    }

    #[test]
    fn a_layer_whose_numbering_restarted_while_not_forwarded_starts_at_its_next_key_frame() {
        for back in [100u16, 5_000] {
            let mut sim = Sim::new(Codec::Vp8);
            sim.tick(ALL, ALL);
            sim.ticks(3, ALL);
            assert_eq!(sim.dt.current(), Some(Quality::High));
            // Low's numbering goes back (a publisher's encoder restarted) while High flows.
            sim.layers[0].seq = sim.layers[0].seq.wrapping_sub(back);
            sim.ticks(3, ALL);
            sim.dt.set_target(Quality::Low);
            sim.tick(ALL, &[Quality::Low]);
            assert_eq!(sim.dt.current(), Some(Quality::Low), "{back} back");
            assert_eq!(sim.dt.stats().late_keyframes_refused, 0);
            assert_continuous(&sim.out);
        }
    }

    #[test]
    fn keyframe_requests_are_throttled_per_layer() {
        let mut sim = Sim::new(Codec::Vp8);
        let t0 = sim.now;
        let req = sim.dt.poll_keyframe_request(t0).unwrap();
        assert_eq!(req.quality, Quality::High);
        assert_eq!(req.ssrc, None, "nothing seen yet");
        assert_eq!(sim.dt.poll_keyframe_request(t0), None);
        assert_eq!(
            sim.dt
                .poll_keyframe_request(t0 + Duration::from_millis(499)),
            None
        );
        sim.ticks(1, ALL);
        let req = sim
            .dt
            .poll_keyframe_request(t0 + Duration::from_millis(500))
            .unwrap();
        assert_eq!(req.ssrc, Some(1002));
        sim.now = t0 + Duration::from_millis(600);
        sim.tick(ALL, &[Quality::High]);
        // Flowing: no more requests, however long we wait.
        assert_eq!(
            sim.dt
                .poll_keyframe_request(sim.now + Duration::from_secs(5)),
            None
        );

        // A target change asks for the new layer at once (its own throttle), once.
        sim.dt.set_target(Quality::Medium);
        let req = sim.dt.poll_keyframe_request(sim.now).unwrap();
        assert_eq!(req.quality, Quality::Medium);
        assert_eq!(sim.dt.poll_keyframe_request(sim.now), None);

        // Paused: never; resumed: again, once the throttle allows.
        sim.dt.set_paused(true);
        assert_eq!(
            sim.dt
                .poll_keyframe_request(sim.now + Duration::from_secs(1)),
            None
        );
        sim.dt.set_paused(false);
        sim.tick(ALL, &[]);
        assert_eq!(sim.dt.poll_keyframe_request(sim.now), None, "throttled");
        sim.now += Duration::from_millis(500);
        sim.tick(ALL, &[]);
        assert!(sim.dt.poll_keyframe_request(sim.now).is_some());
        assert_eq!(sim.dt.stats().keyframe_requests, 4);
    }

    #[test]
    fn a_request_held_by_the_publishers_throttle_goes_again_when_it_opens() {
        let mut sim = Sim::new(Codec::Vp8);
        let t0 = sim.now;
        let req = sim.dt.poll_keyframe_request(t0).unwrap();
        // Another subscriber's request went 100 ms before: the publisher may be asked again
        // 900 ms from now, past this forwarder's own 500 ms.
        let until = t0 + Duration::from_millis(900);
        sim.dt.keyframe_request_held(req.quality, until);
        for ms in [0, 500, 899] {
            assert_eq!(
                sim.dt.poll_keyframe_request(t0 + Duration::from_millis(ms)),
                None,
                "{ms} ms"
            );
        }
        assert!(sim.dt.poll_keyframe_request(until).is_some());
        // Held until sooner than its own interval would wait: it asks then.
        sim.dt
            .keyframe_request_held(req.quality, until + Duration::from_millis(100));
        assert!(
            sim.dt
                .poll_keyframe_request(until + Duration::from_millis(100))
                .is_some()
        );
    }

    #[test]
    fn a_layer_that_stops_falls_back_and_comes_back_on_keyframes() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(ALL, &[Quality::High]);
        sim.ticks(5, ALL);
        assert_eq!(sim.dt.poll_keyframe_request(sim.now), None);

        // The publisher drops High. Within the timeout nothing changes.
        sim.ticks(25, &[Quality::Low, Quality::Medium]);
        assert_eq!(sim.dt.current(), Some(Quality::High));
        assert_eq!(sim.dt.poll_keyframe_request(sim.now), None);
        sim.ticks(10, &[Quality::Low, Quality::Medium]);
        // Now it is gone: ask for the best lower layer, switch at its key frame.
        let req = sim.dt.poll_keyframe_request(sim.now).unwrap();
        assert_eq!(req.quality, Quality::Medium);
        assert_eq!(req.ssrc, Some(1001));
        sim.tick(&[Quality::Low, Quality::Medium], &[Quality::Low]);
        assert_eq!(
            sim.dt.current(),
            Some(Quality::High),
            "Low is not the fallback"
        );
        sim.tick(&[Quality::Low, Quality::Medium], &[Quality::Medium]);
        assert_eq!(sim.dt.current(), Some(Quality::Medium));
        sim.ticks(5, &[Quality::Low, Quality::Medium]);

        // High returns (a re-enabled encoder starts with a key frame): back to the target.
        sim.tick(ALL, &[Quality::High]);
        assert_eq!(sim.dt.current(), Some(Quality::High));
        sim.ticks(3, ALL);
        assert_eq!(
            sim.forwarded_qualities(),
            vec![Quality::High, Quality::Medium, Quality::High]
        );
        assert_continuous(&sim.out);
    }

    #[test]
    fn a_low_target_on_a_single_layer_track_gets_the_only_layer() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.dt = DownTrack::new(DownTrackConfig::new(Codec::Vp8));
        sim.dt.set_target(Quality::Low);
        let req = sim.dt.poll_keyframe_request(sim.now).unwrap();
        assert_eq!(
            req.quality,
            Quality::High,
            "nothing seen yet: the rid-less stream"
        );
        sim.now += Duration::from_millis(500);
        sim.tick(&[Quality::High], &[]);
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).unwrap().quality,
            Quality::High
        );
        sim.tick(&[Quality::High], &[Quality::High]);
        assert_eq!(sim.dt.current(), Some(Quality::High));
    }

    #[test]
    fn a_simulcast_layer_that_never_comes_is_given_up_after_the_timeout() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.dt.set_target(Quality::Low);
        // Low never arrives (e.g. the publisher sends only h and f). Starting, it may still come.
        sim.tick(&[Quality::Medium, Quality::High], &[Quality::Medium]);
        assert!(sim.out.is_empty());
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).unwrap().quality,
            Quality::Low
        );
        sim.ticks(30, &[Quality::Medium, Quality::High]);
        // After a second, the lowest available higher layer.
        let req = sim.dt.poll_keyframe_request(sim.now).unwrap();
        assert_eq!(req.quality, Quality::Medium);
        sim.tick(
            &[Quality::Medium, Quality::High],
            &[Quality::High, Quality::Medium],
        );
        assert_eq!(sim.forwarded_qualities(), vec![Quality::Medium]);
    }

    #[test]
    fn an_ssrc_change_is_a_switch_at_the_next_keyframe() {
        let mut sim = Sim::new(Codec::Vp8);
        sim.tick(&[Quality::High], &[Quality::High]);
        sim.ticks(2, &[Quality::High]);
        sim.layers[2].ssrc = 4242;
        sim.layers[2].seq = 7;
        sim.tick(&[Quality::High], &[]);
        assert_eq!(sim.out.len(), 9, "new SSRC waits for a key frame");
        assert_eq!(
            sim.dt.poll_keyframe_request(sim.now).unwrap().ssrc,
            Some(4242)
        );
        sim.tick(&[Quality::High], &[Quality::High]);
        assert_eq!(sim.out.len(), 12);
        assert_eq!(sim.dt.stats().layer_switches, 1);
        assert_continuous(&sim.out);
    }

    #[test]
    fn track_settings_pause_and_pick_the_layer() {
        let mut dt = DownTrack::new(DownTrackConfig::new(Codec::Vp8));
        let track = TrackInfo {
            width: 1280,
            height: 720,
            ..TrackInfo::default()
        };
        let mut settings = TrackSettings {
            width: 320,
            height: 180,
            ..TrackSettings::default()
        };
        dt.handle_track_settings(&settings, &track);
        assert_eq!(dt.target(), Quality::Low);
        assert!(!dt.is_paused());
        settings.disabled = true;
        dt.handle_track_settings(&settings, &track);
        assert!(dt.is_paused());
    }

    /// Feeds the Opus packet `seq`, the `i`th of its 20 ms frames since `t0`, on SSRC 9.
    fn opus_packet(dt: &mut DownTrack, t0: Instant, seq: u16, i: u32) -> Forward {
        dt.handle_packet(
            IncomingPacket {
                quality: Quality::High,
                ssrc: 9,
                seq,
                timestamp: 960 * i,
                marker: false,
                payload: &[0x78, 0x01, 0x02],
            },
            t0 + Duration::from_millis(20) * i,
        )
    }

    /// Audio restarts at once: the third packet far behind starts a new mapping, numbered on
    /// from the last sent. A packet that far behind is never forwarded, even when the mapping is
    /// old enough for it to look like a late one of its own.
    #[test]
    fn audio_follows_a_sequence_jump_at_once_and_never_forwards_a_packet_far_behind() {
        let mut dt = DownTrack::new(DownTrackConfig::new(Codec::Opus));
        let t0 = Instant::now();
        let feed = |dt: &mut DownTrack, seq: u16, i: u32| opus_packet(dt, t0, seq, i);
        for i in 0..3100u32 {
            assert!(matches!(feed(&mut dt, i as u16, i), Forward::Send { .. }));
        }
        for _ in 0..2 {
            assert_eq!(
                feed(&mut dt, 50, 3100),
                Forward::Drop(DropReason::BeforeSwitch)
            );
        }
        assert!(matches!(
            feed(&mut dt, 3100, 3100),
            Forward::Send { seq: 3100, .. }
        ));
        assert_eq!(dt.stats().sequence_restarts, 0);

        // 40 000 on: the first two are dropped, the third starts a new mapping.
        let jumped = |k: u16| 3101u16.wrapping_add(40_000).wrapping_add(k);
        for k in 0..2 {
            assert_eq!(
                feed(&mut dt, jumped(k), 3101 + u32::from(k)),
                Forward::Drop(DropReason::BeforeSwitch)
            );
        }
        for k in 2..5 {
            match feed(&mut dt, jumped(k), 3101 + u32::from(k)) {
                Forward::Send { seq, .. } => assert_eq!(seq, 3099 + k),
                other => panic!("packet {k} after the jump: {other:?}"),
            }
        }
        assert_eq!(dt.stats().sequence_restarts, 1);
    }

    /// Audio whose numbering restarts 100 behind, its clock going on, is followed from the third
    /// packet, numbered on from the last one sent; none of the new packets goes out with an old
    /// number.
    #[test]
    fn audio_follows_numbering_restarted_just_behind() {
        let mut dt = DownTrack::new(DownTrackConfig::new(Codec::Opus));
        let t0 = Instant::now();
        let feed = |dt: &mut DownTrack, seq: u16, i: u32| opus_packet(dt, t0, seq, i);
        for i in 0..200u32 {
            assert!(matches!(feed(&mut dt, i as u16, i), Forward::Send { .. }));
        }
        // A packet reordered by two (older in time) is forwarded with its own number.
        assert!(matches!(
            feed(&mut dt, 197, 197),
            Forward::Send { seq: 197, .. }
        ));
        for k in 0..2u16 {
            assert_eq!(
                feed(&mut dt, 100 + k, 200 + u32::from(k)),
                Forward::Drop(DropReason::BeforeSwitch)
            );
        }
        for k in 2..5u16 {
            match feed(&mut dt, 100 + k, 200 + u32::from(k)) {
                Forward::Send { seq, .. } => assert_eq!(seq, 198 + k),
                other => panic!("packet {k} after the restart: {other:?}"),
            }
        }
        assert_eq!(dt.stats().sequence_restarts, 1);
    }

    #[test]
    fn audio_passes_through_and_remaps_only_around_a_pause() {
        let mut dt = DownTrack::new(DownTrackConfig::new(Codec::Opus));
        let t0 = Instant::now();
        let mut sent = Vec::new();
        let send = |sent: &mut Vec<(u16, u32)>, dt: &mut DownTrack, i: u32, now: Instant| {
            let f = dt.handle_packet(
                IncomingPacket {
                    quality: Quality::High,
                    ssrc: 9,
                    seq: 65_530u16.wrapping_add(i as u16),
                    timestamp: 960 * i,
                    marker: false,
                    payload: &[0x78, 0x01, 0x02],
                },
                now,
            );
            if let Forward::Send {
                seq,
                timestamp,
                head,
                ..
            } = f
            {
                assert_eq!(head, None, "audio payload untouched");
                sent.push((seq, timestamp));
            }
            f
        };
        for i in 0..10 {
            send(&mut sent, &mut dt, i, t0 + Duration::from_millis(20) * i);
        }
        // Pass through: the publisher's own numbers.
        assert_eq!(sent[0], (65_530, 0));
        assert_eq!(sent[9], (3, 960 * 9));
        assert_eq!(dt.poll_keyframe_request(t0), None, "audio never asks");

        dt.set_paused(true);
        for i in 10..60 {
            assert_eq!(
                send(&mut sent, &mut dt, i, t0 + Duration::from_millis(20) * i),
                Forward::Drop(DropReason::Paused)
            );
        }
        dt.set_paused(false);
        send(&mut sent, &mut dt, 60, t0 + Duration::from_millis(1200));
        send(&mut sent, &mut dt, 61, t0 + Duration::from_millis(1220));
        // Sequence continues; time advanced by the 1020 ms of wall time since the last packet.
        assert_eq!(sent[10], (4, 960 * 9 + 48 * 1020));
        assert_eq!(sent[11], (5, 960 * 9 + 48 * 1020 + 960));
        assert_eq!(dt.stats().dropped_paused, 50);
        assert_eq!(dt.stats().bytes_forwarded, 12 * 3);
    }
}
