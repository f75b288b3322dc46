//! Synthetic media: paced Opus and VP8 RTP framing whose payloads end with a probe (stream id,
//! sequence, send time), and the sinks' bookkeeping of what arrived.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes of the probe at the end of every payload: stream id, sequence, send time (ns since the
/// run's epoch), all big-endian.
pub const PROBE_LEN: usize = 16;
/// Opus: one 20 ms frame per packet.
const AUDIO_PERIOD: Duration = Duration::from_millis(20);
/// An Opus payload of a talking voice at ≈32 kbit/s.
const AUDIO_PAYLOAD: usize = 80;
/// TOC byte: config 15 (hybrid, fullband, 20 ms), mono, one frame (RFC 6716 §3.1).
const OPUS_TOC: u8 = 15 << 3;
/// VP8 at 30 frames/s.
pub const VIDEO_PERIOD: Duration = Duration::from_nanos(33_333_333);
/// Delta frames: 4 packets of 1180 B payload ≈ 1.13 Mbit/s; keyframes are 4× larger.
const VIDEO_PACKETS_DELTA: usize = 4;
const VIDEO_PACKETS_KEY: usize = 16;
const VIDEO_PAYLOAD: usize = 1180;
/// A keyframe at least this often (and whenever one is asked for).
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(3);
/// A sender this far behind its schedule (a stalled generator) restarts it instead of bursting.
const MAX_LAG: Duration = Duration::from_millis(500);
/// A paced video sender's rate: libwebrtc's pacer sends at 2.5 × the target bitrate, here the
/// ≈1.13 Mbit/s of the delta frames.
const PACING_BPS: u64 = 2_800_000;
/// Bytes a packet takes on the wire beyond its payload (RTP header and extensions, SRTP-GCM tag,
/// UDP and IP headers), for the pacer.
const WIRE_OVERHEAD: usize = 60;

/// The probe carried by every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub stream: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

impl Probe {
    /// Stamps `payload`'s probe with a new send time.
    fn restamp(payload: &mut [u8], sent_ns: u64) {
        let at = payload.len().saturating_sub(8);
        if let Some(tail) = payload.get_mut(at..) {
            tail.copy_from_slice(&sent_ns.to_be_bytes());
        }
    }

    fn write(&self, payload: &mut [u8]) {
        let at = payload.len().saturating_sub(PROBE_LEN);
        if let Some(tail) = payload.get_mut(at..) {
            let mut bytes = [0u8; PROBE_LEN];
            bytes[..4].copy_from_slice(&self.stream.to_be_bytes());
            bytes[4..8].copy_from_slice(&self.seq.to_be_bytes());
            bytes[8..].copy_from_slice(&self.sent_ns.to_be_bytes());
            tail.copy_from_slice(&bytes);
        }
    }

    /// Reads the probe at the end of `payload`.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let tail = payload.get(payload.len().checked_sub(PROBE_LEN)?..)?;
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(tail.get(at..at + 4)?.try_into().ok()?))
        };
        Some(Self {
            stream: u32_at(0)?,
            seq: u32_at(4)?,
            sent_ns: u64::from_be_bytes(tail.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The RTP fields of one packet to send (SSRC and payload type are the sender's business).
#[derive(Debug, Clone)]
pub struct OutPacket {
    pub marker: bool,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Audio or video source with absolute deadlines.
#[derive(Debug)]
pub struct Source {
    pub stream: u32,
    video: bool,
    next: Instant,
    rtp_seq: u16,
    rtp_ts: u32,
    probe_seq: u32,
    picture_id: u16,
    last_keyframe: Option<Instant>,
    keyframe_wanted: bool,
    /// Paced: a frame's packets leave one by one at [`PACING_BPS`], as a browser's do.
    paced: bool,
    /// Paced packets waiting, with when each may leave.
    queue: VecDeque<(Instant, OutPacket)>,
    /// When the pacer may send next.
    pacer_free: Instant,
}

impl Source {
    pub fn audio(stream: u32, start: Instant) -> Self {
        Self::new(stream, false, start)
    }

    pub fn video(stream: u32, start: Instant) -> Self {
        Self::new(stream, true, start)
    }

    /// A video source whose packets leave paced ([`PACING_BPS`]) instead of a frame at once.
    pub fn paced_video(stream: u32, start: Instant) -> Self {
        Self {
            paced: true,
            ..Self::new(stream, true, start)
        }
    }

    fn new(stream: u32, video: bool, start: Instant) -> Self {
        Self {
            stream,
            video,
            next: start,
            rtp_seq: rand::random(),
            rtp_ts: rand::random(),
            probe_seq: 0,
            picture_id: rand::random::<u16>() & 0x7fff,
            last_keyframe: None,
            keyframe_wanted: true,
            paced: false,
            queue: VecDeque::new(),
            pacer_free: start,
        }
    }

    pub fn is_video(&self) -> bool {
        self.video
    }

    /// When the next frame or paced packet is due.
    pub fn due(&self) -> Instant {
        self.queue
            .front()
            .map_or(self.next, |(at, _)| self.next.min(*at))
    }

    /// The packets due at `now`, stamped with `sent_ns`: the frame due, if any, or with pacing
    /// those of its packets (and earlier frames') whose turn has come.
    pub fn poll(&mut self, now: Instant, sent_ns: u64, out: &mut Vec<OutPacket>) {
        if !self.paced {
            if self.next <= now {
                self.frame(now, sent_ns, out);
            }
            return;
        }
        if self.next <= now {
            let mut frame = Vec::new();
            self.frame(now, sent_ns, &mut frame);
            for packet in frame {
                let at = self.pacer_free.max(now);
                let bits = ((packet.payload.len() + WIRE_OVERHEAD) * 8) as u64;
                self.pacer_free = at + Duration::from_nanos(bits * 1_000_000_000 / PACING_BPS);
                self.queue.push_back((at, packet));
            }
        }
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, mut packet)) = self.queue.pop_front() {
                let mut payload = packet.payload.to_vec();
                Probe::restamp(&mut payload, sent_ns);
                packet.payload = payload.into();
                out.push(packet);
            }
        }
    }

    /// The receiver asked for a keyframe (PLI/FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    /// The packets of the frame due at or before `now`, stamped with `sent_ns`; moves the deadline.
    fn frame(&mut self, now: Instant, sent_ns: u64, out: &mut Vec<OutPacket>) {
        let period = if self.video {
            VIDEO_PERIOD
        } else {
            AUDIO_PERIOD
        };
        self.next += period;
        if now.saturating_duration_since(self.next) > MAX_LAG {
            self.next = now + period;
        }
        if self.video {
            self.video_frame(now, sent_ns, out);
            self.rtp_ts = self.rtp_ts.wrapping_add(3000);
        } else {
            let mut payload = vec![0x5a; AUDIO_PAYLOAD + PROBE_LEN];
            if let Some(toc) = payload.first_mut() {
                *toc = OPUS_TOC;
            }
            self.push(out, true, payload, sent_ns);
            self.rtp_ts = self.rtp_ts.wrapping_add(960);
        }
    }

    fn video_frame(&mut self, now: Instant, sent_ns: u64, out: &mut Vec<OutPacket>) {
        let keyframe = self.keyframe_wanted
            || self
                .last_keyframe
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_INTERVAL);
        if keyframe {
            self.keyframe_wanted = false;
            self.last_keyframe = Some(now);
        }
        let count = if keyframe {
            VIDEO_PACKETS_KEY
        } else {
            VIDEO_PACKETS_DELTA
        };
        let pid = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        for i in 0..count {
            let first = i == 0;
            // VP8 payload descriptor (RFC 7741 §4.2): X=1, S on the first packet, PID 0; I=1 with
            // a 15-bit PictureID.
            let mut payload = vec![
                0x80 | if first { 0x10 } else { 0 },
                0x80,
                0x80 | (pid >> 8) as u8,
                (pid & 0xff) as u8,
            ];
            if first {
                // VP8 frame tag (RFC 6386 §9.1): P (0 = key), version 0, show_frame, size of the
                // first partition; keyframes add the start code and 640×360.
                let size: u32 = 600;
                let tag = u32::from(!keyframe) | 0x10 | (size << 5);
                payload.extend_from_slice(&tag.to_le_bytes()[..3]);
                if keyframe {
                    payload.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
                }
            }
            payload.resize(VIDEO_PAYLOAD + PROBE_LEN, 0xa5);
            self.push(out, i + 1 == count, payload, sent_ns);
        }
    }

    fn push(&mut self, out: &mut Vec<OutPacket>, marker: bool, mut payload: Vec<u8>, sent_ns: u64) {
        Probe {
            stream: self.stream,
            seq: self.probe_seq,
            sent_ns,
        }
        .write(&mut payload);
        self.probe_seq = self.probe_seq.wrapping_add(1);
        out.push(OutPacket {
            marker,
            sequence_number: self.rtp_seq,
            timestamp: self.rtp_ts,
            payload: payload.into(),
        });
        self.rtp_seq = self.rtp_seq.wrapping_add(1);
    }
}

#[derive(Debug, Clone)]
struct StreamRx {
    first: u32,
    last: u32,
    received: u64,
    /// Sequence numbers skipped over and not yet arrived (at most [`MAX_MISSING`]).
    missing: std::collections::HashSet<u32>,
}

/// How far one participant's set-up got: what a flow that never carried media is named with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Its streams (audio, video), when it publishes.
    pub publish: Option<(u32, u32)>,
    /// The server accepted the join.
    pub joined: bool,
    /// `track_published` answers received.
    pub published: usize,
    /// The answer to its publisher offer was applied.
    pub answered: bool,
    pub publisher: Option<consulta_media::PeerState>,
    pub subscriber: Option<consulta_media::PeerState>,
    /// The local UDP ports of its two connections.
    pub ports: (u16, u16),
    /// ICE has a working pair on each (a connection connecting past it is in DTLS).
    pub publisher_ice: bool,
    pub subscriber_ice: bool,
    /// Subscriber offers answered, and the m-lines of the last one.
    pub offers: u32,
    pub offer_mlines: usize,
    /// Remote tracks (or layers) the subscriber connection opened.
    pub tracks_opened: u32,
    /// The signalling socket ended, or the task failed.
    pub ended: bool,
}

/// Gaps remembered per flow, so that a packet resent after a NACK counts as repaired.
const MAX_MISSING: usize = 1024;

/// What the sinks saw: totals always, a measurement window on demand.
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    /// `epoch` on the kernel's receive-stamp clock (`CLOCK_REALTIME`, since the Unix epoch).
    epoch_realtime: Duration,
    measuring: bool,
    window: HashMap<(u32, u32), StreamRx>,
    /// Send → the sink has the packet (read, decrypted, parsed).
    latencies_ns: Vec<u64>,
    /// Send → the kernel put the datagram in the sink's socket ([`crate::stamp`]).
    socket_latencies_ns: Vec<u64>,
    /// Send → the sink has a packet that filled a gap late: how long a repair took.
    repair_latencies_ns: Vec<u64>,
    lags_ns: Vec<u64>,
    window_bytes: u64,
    duplicates: u64,
    repaired: u64,
    keyframes: u64,
    /// Every packet received since start.
    pub total_packets: u64,
    /// Keyframe requests (PLI/FIR for a video SSRC) the publishers received in the window.
    pub keyframe_requests: u64,
    /// (sink, stream) pairs that delivered media outside a window (to wait for setup).
    flows: std::collections::HashSet<(u32, u32)>,
    /// The newest sequence number each (sink, stream) has delivered, windows or not.
    newest: HashMap<(u32, u32), u32>,
    /// Each participant's set-up, by sink.
    pub progress: HashMap<u32, Progress>,
}

/// One window's results at the sinks.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub received: u64,
    pub expected: u64,
    pub bytes: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The same to the sink's socket (the kernel's receive stamp): without the time the
    /// generator took to get to the datagram and decrypt it.
    pub socket_p50_us: f64,
    pub socket_p99_us: f64,
    pub socket_p999_us: f64,
    /// How late the generator's timers fired (p99): its own scheduling delay. Packets are
    /// stamped when they leave, so it is not in the latency; the same load delays the sinks'
    /// reading, which `p*_us` include and `socket_p*_us` do not.
    pub generator_lag_p99_us: f64,
    /// Packets that arrived again, or late for a gap already repaired or forgotten.
    pub duplicates: u64,
    /// Packets that filled a gap late (a retransmission after a NACK, or reordering): counted
    /// as received, so `expected - received` is what never arrived.
    pub repaired: u64,
    /// How long after it was first sent such a packet arrived (p50, p99): the loss, the NACK
    /// (the receiver's or the node's, upstream) and the resend.
    pub repair_p50_us: f64,
    pub repair_p99_us: f64,
    /// VP8 keyframes that arrived (first packets), over all sinks.
    pub keyframes: u64,
    /// Keyframe requests the publishers received.
    pub keyframe_requests: u64,
    /// (received, expected) per stream, over all its sinks.
    pub per_stream: HashMap<u32, (u64, u64)>,
}

impl WindowStats {
    pub fn loss_percent(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        100.0 * self.expected.saturating_sub(self.received) as f64 / self.expected as f64
    }
}

impl Recorder {
    pub fn new(epoch: Instant) -> Self {
        let epoch_realtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(epoch.elapsed());
        Self {
            epoch,
            epoch_realtime,
            measuring: false,
            window: HashMap::new(),
            latencies_ns: Vec::new(),
            socket_latencies_ns: Vec::new(),
            repair_latencies_ns: Vec::new(),
            lags_ns: Vec::new(),
            window_bytes: 0,
            duplicates: 0,
            repaired: 0,
            keyframes: 0,
            total_packets: 0,
            keyframe_requests: 0,
            flows: std::collections::HashSet::new(),
            newest: HashMap::new(),
            progress: HashMap::new(),
        }
    }

    /// Nanoseconds since the shared epoch.
    pub fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sink `sink` received an RTP packet whose payload is `payload` and whose SRTP datagram
    /// was `wire_len` bytes, at `now`; the kernel received the datagram at `arrived`
    /// ([`crate::stamp::Received::arrived`]) if it said.
    pub fn record(
        &mut self,
        sink: u32,
        payload: &[u8],
        wire_len: usize,
        now: Instant,
        arrived: Option<Duration>,
    ) {
        let Some(probe) = Probe::read(payload) else {
            return;
        };
        self.total_packets += 1;
        let newest = self.newest.entry((sink, probe.stream)).or_insert(probe.seq);
        let late = probe.seq < *newest;
        *newest = (*newest).max(probe.seq);
        if !self.measuring {
            self.flows.insert((sink, probe.stream));
            return;
        }
        if late && !self.window.contains_key(&(sink, probe.stream)) {
            // A resend of a packet from before the window: the window starts at new media.
            self.duplicates += 1;
            return;
        }
        let latency_ns = self.ns(now).saturating_sub(probe.sent_ns);
        self.latencies_ns.push(latency_ns);
        if let Some(arrived) = arrived {
            // CLOCK_MONOTONIC and CLOCK_REALTIME are slewed alike; only a step of the wall clock
            // during the run would shift one against the other.
            let arrived_ns = arrived.saturating_sub(self.epoch_realtime).as_nanos();
            let arrived_ns = u64::try_from(arrived_ns).unwrap_or(u64::MAX);
            self.socket_latencies_ns
                .push(arrived_ns.saturating_sub(probe.sent_ns));
        }
        self.window_bytes += wire_len as u64;
        let entry = self.window.entry((sink, probe.stream)).or_insert(StreamRx {
            first: probe.seq,
            last: probe.seq,
            received: 0,
            missing: std::collections::HashSet::new(),
        });
        if entry.received > 0 && probe.seq <= entry.last {
            if entry.missing.remove(&probe.seq) {
                // A gap filled late: a retransmission after a NACK, or reordering.
                entry.received += 1;
                self.repaired += 1;
                self.repair_latencies_ns.push(latency_ns);
            } else {
                self.duplicates += 1;
            }
            return;
        }
        if entry.received == 0 {
            entry.first = probe.seq;
        } else {
            if entry.missing.len() >= MAX_MISSING / 2 {
                // Gaps older than MAX_MISSING packets are gone for good: forget them.
                let horizon = probe.seq.saturating_sub(MAX_MISSING as u32);
                entry.missing.retain(|&seq| seq >= horizon);
            }
            for seq in entry.last.saturating_add(1)..probe.seq {
                if entry.missing.len() >= MAX_MISSING {
                    break;
                }
                entry.missing.insert(seq);
            }
        }
        entry.last = probe.seq;
        entry.received += 1;
        if is_vp8_keyframe_start(payload) {
            self.keyframes += 1;
        }
    }

    /// A generator timer due at `due` fired at `now`.
    pub fn record_lag(&mut self, due: Instant, now: Instant) {
        if self.measuring {
            let lag = now.saturating_duration_since(due).as_nanos();
            self.lags_ns.push(u64::try_from(lag).unwrap_or(u64::MAX));
        }
    }

    /// How many distinct (sink, stream) pairs have delivered media.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Whether sink `sink` has had media of `stream`.
    pub fn has_flow(&self, sink: u32, stream: u32) -> bool {
        self.flows.contains(&(sink, stream))
    }

    /// Starts a measurement window.
    pub fn start_window(&mut self) {
        self.measuring = true;
        self.window.clear();
        self.latencies_ns.clear();
        self.socket_latencies_ns.clear();
        self.repair_latencies_ns.clear();
        self.lags_ns.clear();
        self.window_bytes = 0;
        self.duplicates = 0;
        self.repaired = 0;
        self.keyframes = 0;
        self.keyframe_requests = 0;
    }

    /// Ends the window and summarises it.
    pub fn end_window(&mut self) -> WindowStats {
        self.measuring = false;
        let mut stats = WindowStats {
            bytes: self.window_bytes,
            duplicates: self.duplicates,
            repaired: self.repaired,
            keyframes: self.keyframes,
            keyframe_requests: self.keyframe_requests,
            ..WindowStats::default()
        };
        for (&(_, stream), rx) in &self.window {
            let expected = if rx.received > 0 {
                u64::from(rx.last - rx.first) + 1
            } else {
                0
            };
            stats.received += rx.received;
            stats.expected += expected;
            let entry = stats.per_stream.entry(stream).or_default();
            entry.0 += rx.received;
            entry.1 += expected;
        }
        self.latencies_ns.sort_unstable();
        self.lags_ns.sort_unstable();
        stats.p50_us = percentile_us(&self.latencies_ns, 0.50);
        stats.p99_us = percentile_us(&self.latencies_ns, 0.99);
        stats.p999_us = percentile_us(&self.latencies_ns, 0.999);
        self.socket_latencies_ns.sort_unstable();
        stats.socket_p50_us = percentile_us(&self.socket_latencies_ns, 0.50);
        stats.socket_p99_us = percentile_us(&self.socket_latencies_ns, 0.99);
        stats.socket_p999_us = percentile_us(&self.socket_latencies_ns, 0.999);
        self.repair_latencies_ns.sort_unstable();
        stats.repair_p50_us = percentile_us(&self.repair_latencies_ns, 0.50);
        stats.repair_p99_us = percentile_us(&self.repair_latencies_ns, 0.99);
        stats.generator_lag_p99_us = percentile_us(&self.lags_ns, 0.99);
        stats
    }
}

/// The `p` quantile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    let n = sorted_ns.len();
    if n == 0 {
        return 0.0;
    }
    let i = ((n as f64 - 1.0) * p).round() as usize;
    sorted_ns.get(i.min(n - 1)).copied().unwrap_or(0) as f64 / 1000.0
}

/// Whether `payload` is our VP8 framing's first packet of a keyframe (descriptor with X, I and a
/// 15-bit PictureID, then the frame tag whose P bit is clear).
fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    matches!(payload, [first, 0x80, _, _, tag, ..] if first & 0x90 == 0x90 && first & 0x07 == 0 && tag & 0x01 == 0)
}

/// Individual dark flows named before the rest are only counted.
const DARK_FLOWS_LISTED: usize = 12;

/// Names the (sink, stream) pairs of `topology` that have not carried media, each with how far
/// its receiving participant's and its publisher's set-up got, then counts them by that.
pub fn describe_dark_flows(recorder: &Recorder, topology: &crate::ideal::Topology) -> Vec<String> {
    let publisher_of = |stream: u32| {
        recorder
            .progress
            .iter()
            .find(|(_, p)| p.publish.is_some_and(|(a, v)| stream == a || stream == v))
            .map(|(&sink, p)| (sink, *p))
    };
    let mut lines = Vec::new();
    let mut tally: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut dark = 0;
    for (sink, streams) in (0u32..).zip(&topology.sinks) {
        for &stream in streams {
            if recorder.has_flow(sink, stream) {
                continue;
            }
            dark += 1;
            let video = topology
                .streams
                .iter()
                .any(|&(s, is_video)| s == stream && is_video);
            let receiver = recorder.progress.get(&sink).copied().unwrap_or_default();
            let others = streams
                .iter()
                .filter(|&&s| s != stream && !recorder.has_flow(sink, s))
                .count();
            let (from, publisher) = publisher_of(stream).unzip();
            let why = format!(
                "receiver: subscriber {:?} (ICE {}), {} offers ({} m-lines), {} tracks opened{}; publisher: {}",
                receiver.subscriber,
                if receiver.subscriber_ice {
                    "up"
                } else {
                    "down"
                },
                receiver.offers,
                receiver.offer_mlines,
                receiver.tracks_opened,
                if receiver.ended { ", ended" } else { "" },
                publisher.map_or("unknown".to_owned(), |p| format!(
                    "{:?} (ICE {}), joined {}, {} published, answered {}{}",
                    p.publisher,
                    if p.publisher_ice { "up" } else { "down" },
                    p.joined,
                    p.published,
                    p.answered,
                    if p.ended { ", ended" } else { "" }
                )),
            );
            if lines.len() < DARK_FLOWS_LISTED {
                lines.push(format!(
                    "sink {sink} (subscriber port {}) lacks {} stream {stream} of sink {} (publisher port {}; {others} more of the sink's streams dark) — {why}",
                    receiver.ports.1,
                    if video { "video" } else { "audio" },
                    from.map_or("?".to_owned(), |s| s.to_string()),
                    publisher.map_or(0, |p| p.ports.0),
                ));
            }
            *tally.entry(why).or_default() += 1;
        }
    }
    if dark > DARK_FLOWS_LISTED {
        lines.push(format!("all {dark}, by how far set-up got:"));
        lines.extend(tally.into_iter().map(|(why, n)| format!("{n:>5} × {why}")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `source` from `start` for `ms` milliseconds in 1 ms steps; returns each packet with
    /// the millisecond it left at.
    fn run(source: &mut Source, start: Instant, ms: u64) -> Vec<(u64, OutPacket)> {
        let mut sent = Vec::new();
        let mut out = Vec::new();
        for t in 0..ms {
            source.poll(start + Duration::from_millis(t), t, &mut out);
            sent.extend(out.drain(..).map(|p| (t, p)));
        }
        sent
    }

    #[test]
    fn a_paced_key_frame_leaves_a_packet_every_few_milliseconds_stamped_when_it_leaves() {
        let start = Instant::now();
        let mut burst = Source::video(1, start);
        let mut paced = Source::paced_video(1, start);
        let at_once = run(&mut burst, start, 1);
        assert_eq!(
            at_once.len(),
            VIDEO_PACKETS_KEY,
            "the first frame is a key frame"
        );
        let sent = run(&mut paced, start, 200);
        let key: Vec<_> = sent.iter().take(VIDEO_PACKETS_KEY).collect();
        // 1 196 bytes of payload + 60 on the wire at 2.8 Mbit/s: one every ≈3.6 ms.
        for pair in key.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!((3..=4).contains(&gap), "{gap} ms between packets");
        }
        for (t, packet) in &sent {
            let probe = Probe::read(&packet.payload).unwrap();
            assert_eq!(
                probe.sent_ns, *t,
                "stamped when it left, not when it was encoded"
            );
        }
        // Nothing is lost or reordered: the frames that queued behind the key frame follow it.
        let seqs: Vec<u16> = sent.iter().map(|(_, p)| p.sequence_number).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        let frames = 200 / 33 + 1;
        assert!(sent.len() >= VIDEO_PACKETS_KEY + (frames - 2) * VIDEO_PACKETS_DELTA);
    }

    #[test]
    fn a_gap_filled_late_is_timed_from_its_first_sending_and_nothing_else_is() {
        let epoch = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let payload = |seq: u32, sent_ms: u64| {
            let mut bytes = vec![0u8; 100];
            let probe = Probe {
                stream: 3,
                seq,
                sent_ns: sent_ms * 1_000_000,
            };
            probe.write(&mut bytes);
            bytes
        };
        let mut recorder = Recorder::new(epoch);
        // Before the window: 0 and 1 arrive.
        recorder.record(0, &payload(0, 0), 100, epoch + ms(1), None);
        recorder.record(0, &payload(1, 0), 100, epoch + ms(1), None);
        recorder.start_window();
        // A resend of a packet from before the window is not timed.
        recorder.record(0, &payload(0, 0), 100, epoch + ms(2), None);
        for seq in 2..6 {
            recorder.record(
                0,
                &payload(seq, 10 * u64::from(seq)),
                100,
                epoch + ms(10 * u64::from(seq) + 1),
                None,
            );
        }
        // 6, 7 and 9 lost, 8 and 10 arrive; the resends come 40 ms (7), 20 ms (9) and 90 ms
        // (6) after those packets were first sent.
        recorder.record(0, &payload(8, 80), 100, epoch + ms(81), None);
        recorder.record(0, &payload(10, 100), 100, epoch + ms(101), None);
        recorder.record(0, &payload(7, 70), 100, epoch + ms(110), None);
        recorder.record(0, &payload(9, 90), 100, epoch + ms(110), None);
        // Again: a duplicate, not a repair.
        recorder.record(0, &payload(7, 70), 100, epoch + ms(111), None);
        recorder.record(0, &payload(6, 60), 100, epoch + ms(150), None);
        let stats = recorder.end_window();
        assert_eq!((stats.repaired, stats.duplicates), (3, 2));
        assert_eq!((stats.received, stats.expected), (9, 9));
        assert_eq!(stats.repair_p50_us, 40_000.0);
        assert_eq!(stats.repair_p99_us, 90_000.0);
        assert_eq!(stats.p50_us, 1_000.0, "the others took 1 ms");
    }

    #[test]
    fn dark_flows_are_named_with_both_ends_set_up_and_counted_past_the_list() {
        use consulta_media::PeerState;
        // One room: sink 0 publishes streams 0 and 1, sink 1 streams 2 and 3.
        let topology = crate::ideal::Topology {
            streams: vec![(0, false), (1, true), (2, false), (3, true)],
            sinks: vec![vec![2, 3], vec![0, 1]],
        };
        let mut recorder = Recorder::new(Instant::now());
        recorder.flows.extend([(0, 2), (0, 3)]);
        let up = Progress {
            joined: true,
            published: 2,
            answered: true,
            publisher: Some(PeerState::Connected),
            subscriber: Some(PeerState::Connected),
            publisher_ice: true,
            subscriber_ice: true,
            offers: 1,
            offer_mlines: 3,
            ..Progress::default()
        };
        recorder.progress.insert(
            0,
            Progress {
                publish: Some((0, 1)),
                publisher: Some(PeerState::Connecting),
                ports: (4000, 4001),
                ..up
            },
        );
        recorder.progress.insert(
            1,
            Progress {
                publish: Some((2, 3)),
                ports: (5000, 5001),
                ..up
            },
        );
        let lines = describe_dark_flows(&recorder, &topology);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with(
                "sink 1 (subscriber port 5001) lacks audio stream 0 of sink 0 (publisher port 4000; 1 more of the sink's streams dark)"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("lacks video stream 1 of sink 0"));
        let publisher =
            "publisher: Some(Connecting) (ICE up), joined true, 2 published, answered true";
        assert!(lines.iter().all(|l| l.ends_with(publisher)), "{lines:#?}");
        // Past the list, they are counted by how far set-up got.
        let many = crate::ideal::Topology {
            streams: topology.streams.clone(),
            sinks: vec![vec![0, 1]; 2 * DARK_FLOWS_LISTED],
        };
        let lines = describe_dark_flows(&recorder, &many);
        // Sinks 0 and 1 as above, 22 more that never reported (listed first: "None" < "Some").
        assert_eq!(lines.len(), DARK_FLOWS_LISTED + 3, "{lines:#?}");
        assert_eq!(lines[DARK_FLOWS_LISTED], "all 48, by how far set-up got:");
        assert!(
            lines[DARK_FLOWS_LISTED + 1]
                .starts_with("   44 × receiver: subscriber None (ICE down)")
        );
        assert!(
            lines[DARK_FLOWS_LISTED + 2]
                .starts_with("    4 × receiver: subscriber Some(Connected)")
        );
    }
}
