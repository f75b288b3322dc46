//! What a receiving connection tells the sender about the media it gets: transport-wide feedback
//! (TWCC) on every packet, NACKs for video's gaps, and receiver reports on audio.
//!
//! `rtc`'s TWCC receiver, NACK generator and receiver report generator did this inside its
//! interceptor chain, so they saw only the packets `rtc` itself opened. The own read path
//! (`read::OwnRead`) opens a publisher's media outside `rtc`, so every incoming packet, whichever
//! path opened it, is noted here instead, and the connection writes what falls due through `rtc`
//! (which seals SRTCP).
//!
//! Transport-wide feedback follows draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1: a base
//! number, a count, a reference time in 64 ms units, status chunks and receive deltas in 250 µs
//! units. Each report covers the numbers from the first one the previous report did not, and
//! stops before a delta that does not fit in 16 bits. NACKs (RFC 4585 §6.2.1) go out for the
//! numbers missing from each video stream, paced by the round trip to the sender once it is known
//! ([`NackPacing`]). Receiver reports (RFC 3550 §6.4.2, the counts of its appendix A.3 and the
//! jitter of A.8) go out each second on audio only: a report block about a video stream stops
//! Chromium from tagging it with its `mid` and `rid`, which `rtc` needs to bind it again after a
//! renegotiation (docs/SFU-MEDIA.md, finding 7). Opus adapts its loss protection to them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

/// How often transport-wide feedback goes out while packets arrive (libwebrtc's receivers and
/// `rtc`'s TWCC receiver: 100 ms).
pub(crate) const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

/// How long after one NACK a packet still missing is NACKed again while the round trip to the
/// sender is not known (libwebrtc's receivers assume 100 ms too until they know); once it is, see
/// [`NackPacing::for_round_trip`]. The first NACK goes out as soon as the gap shows (the next
/// packet of the stream arrives), as libwebrtc's receivers send theirs: a repair that waited for a
/// periodic tick (`rtc`'s generator: every 100 ms) came after the subscriber's jitter buffer had
/// given its frame up.
pub(crate) const NACK_INTERVAL: Duration = Duration::from_millis(100);

/// Added to the round trip before a packet still missing is asked for again, at least (a quarter
/// of the round trip when that is more): the sender's pacer and the repair's own queue on the way.
const NACK_SLACK: Duration = Duration::from_millis(10);

/// How far back round trips measured count: the longest of them paces the NACKs (as libwebrtc's
/// receivers take the longest of their last 1.5 s). Browsers report every 0.5–1.5 s on video,
/// every 2.5–7.5 s on audio alone (libwebrtc's intervals), so a participant who receives only
/// voice still has one in the window. With none that recent, the pacing is the default again:
/// the path may have changed since.
const ROUND_TRIP_WINDOW: Duration = Duration::from_secs(10);

/// The window is kept in this many spans, each holding the longest round trip measured in it,
/// however many reports come (one also rides along with each NACK and PLI a browser sends).
const ROUND_TRIP_SPANS: usize = 8;

/// The least and the most time between two NACKs of one packet, whatever the round trip.
const NACK_INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(500));

/// How many asks a missing packet gets: as many as make their count times the interval this long
/// at least, [`MIN_NACKS`] to [`MAX_NACKS`] (three at the default interval; below 30 ms the ten
/// asks span less).
const NACK_SPAN: Duration = Duration::from_millis(300);

/// The fewest asks a missing packet gets.
const MIN_NACKS: u8 = 3;

/// How often receiver reports go out (`rtc`'s generator: 1 s).
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Report blocks one receiver report holds at most (RFC 3550: five bits of count).
const MAX_REPORT_BLOCKS: usize = 31;

/// How often one missing packet is NACKed at most (libwebrtc's receivers: 10): as its gap shows,
/// then one interval after each ([`NackPacing`]). `rtc`'s generator has no cap by default: with
/// RTX negotiated it never saw the repairs (see `peer::register_codecs`), and at 4 % loss 12 104
/// of the 19 699 packets Chromium's camera sent were retransmissions. Here a repair fills its gap
/// whether it comes on the stream's own SSRC or on RTX ([`ReceiveFeedback::repaired`]), and the
/// cap only bounds the asks for a packet that is gone for good.
const MAX_NACKS: u8 = 10;

/// How a connection NACKs a packet that stays missing: how long after each NACK it asks again,
/// and how many asks it makes at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NackPacing {
    pub(crate) interval: Duration,
    pub(crate) asks: u8,
}

impl Default for NackPacing {
    /// While the round trip is not known: every [`NACK_INTERVAL`], three times.
    fn default() -> Self {
        Self::with_interval(NACK_INTERVAL)
    }
}

impl NackPacing {
    /// With the round trip to the sender known: a repair asked for comes back after about one
    /// round trip, so asking again sooner brings a second copy while the first is on its way
    /// (Chromium's sender resends on every NACK that finds the packet out of its pacer: it holds
    /// a resend back by its own round trip only when receiver reports about the video give it
    /// one, and the SFU sends none, docs/SFU-MEDIA.md finding 7; the router drops the copy), and
    /// waiting longer leaves a lost repair unasked for. On a short path that is many more asks in
    /// the same span: a repair lost too is asked for again in 20 ms where it waited 100 ms; on a
    /// long one (a mobile network, 150–300 ms) the asks no longer all go before the first repair
    /// could be back.
    pub(crate) fn for_round_trip(round_trip: Duration) -> Self {
        let (least, most) = NACK_INTERVAL_BOUNDS;
        let slack = NACK_SLACK.max(round_trip / 4);
        Self::with_interval(round_trip.saturating_add(slack).clamp(least, most))
    }

    fn with_interval(interval: Duration) -> Self {
        let asks = NACK_SPAN
            .as_micros()
            .div_ceil(interval.as_micros().max(1))
            .clamp(u128::from(MIN_NACKS), u128::from(MAX_NACKS));
        Self {
            interval,
            asks: u8::try_from(asks).unwrap_or(MAX_NACKS),
        }
    }
}

/// The packets `packet` asks for, if it is a NACK: each pair names one and one more per bit of
/// its mask (RFC 4585 §6.2.1).
pub(crate) fn nack_asks(packet: &dyn rtc::rtcp::Packet) -> Option<u64> {
    let nack = packet.as_any().downcast_ref::<TransportLayerNack>()?;
    let pairs = nack.nacks.iter();
    Some(
        pairs
            .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
            .sum(),
    )
}

/// How far behind a stream's newest packet a gap is still NACKed (`rtc`'s receive log: 512).
const NACK_REACH: i64 = 512;

/// Arrivals kept for the next report at most: 100 ms of a flood. Past it the oldest go unreported.
const MAX_PENDING: usize = 8192;

/// Numbers one report covers at most, and the received ones among them: a report stays well under
/// a datagram (a delta is 1–2 bytes).
const MAX_RECEIVED_PER_REPORT: usize = 250;

/// How far behind the next report's start a late packet still moves it back.
const LATE_REACH: i64 = 256;

/// Lost numbers reported before the first received one, at most (one run-length chunk holds 8 191).
const MAX_LOST_RUN: i64 = 8191;

/// Video streams whose gaps are followed per connection; past this the list starts over, as the
/// connection's tags do.
const MAX_STREAMS: usize = 64;

const TICK_US: i64 = 250;
const REFERENCE_US: i64 = 64_000;

/// Turns 16-bit numbers into a count that keeps growing past the wrap.
#[derive(Debug, Default, Clone, Copy)]
struct Unwrapper {
    newest: Option<i64>,
}

impl Unwrapper {
    /// The count `number` stands for, nearest the newest so far, without taking it.
    fn peek(&self, number: u16) -> i64 {
        match self.newest {
            None => i64::from(number),
            Some(newest) => newest + i64::from(number.wrapping_sub(newest as u16) as i16),
        }
    }

    fn unwrap(&mut self, number: u16) -> i64 {
        let unwrapped = self.peek(number);
        if self.newest.is_none_or(|newest| unwrapped > newest) {
            self.newest = Some(unwrapped);
        }
        unwrapped
    }
}

/// Arrival times by transport-wide number, until a report carries them.
#[derive(Debug, Default)]
struct Arrivals {
    numbers: Unwrapper,
    /// Arrival in µs since `epoch`, by unwrapped number.
    pending: BTreeMap<i64, i64>,
    /// Arrivals reported already, the last [`LATE_REACH`] numbers' worth: a packet that comes
    /// after the report that covered its number (as lost) moves the next report's start back to
    /// it, and these are reported again with it, as libwebrtc's receiver does.
    reported: BTreeMap<i64, i64>,
    /// The first number the next report covers (the one after the last reported).
    next: Option<i64>,
    epoch: Option<Instant>,
    /// Reports sent, modulo 256 (`fb_pkt_count`).
    reports: u8,
}

impl Arrivals {
    fn record(&mut self, number: u16, at: Instant) {
        let epoch = *self.epoch.get_or_insert(at);
        let number = self.numbers.unwrap(number);
        let micros = i64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(0);
        if let Some(next) = self.next.filter(|&next| number < next) {
            // Reported as lost already. Within reach, the next report starts again from it;
            // once reported as received, a number stays so.
            if next - number > LATE_REACH || self.reported.contains_key(&number) {
                return;
            }
            let again = self.reported.split_off(&number);
            self.pending.extend(again);
            self.next = Some(number);
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_first();
        }
        self.pending.entry(number).or_insert(micros);
    }

    /// Reports on everything pending, oldest first.
    fn reports(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Vec<TransportLayerCc> {
        let mut out = Vec::new();
        while let Some(report) = self.report(sender_ssrc, media_ssrc) {
            out.push(report);
        }
        out
    }

    fn report(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Option<TransportLayerCc> {
        let (&first, &first_at) = self.pending.first_key_value()?;
        let base = self
            .next
            .map_or(first, |next| next.max(first - MAX_LOST_RUN));
        let reference = first_at.div_euclid(REFERENCE_US);
        let mut last_at = reference * REFERENCE_US;
        let mut symbols = Vec::new();
        let mut deltas = Vec::new();
        let mut end = base;
        for (&number, &at) in self.pending.range(base..) {
            let ticks = (at - last_at + TICK_US / 2).div_euclid(TICK_US);
            let symbol = if (0..=255).contains(&ticks) {
                SymbolTypeTcc::PacketReceivedSmallDelta
            } else if i16::try_from(ticks).is_ok() {
                SymbolTypeTcc::PacketReceivedLargeDelta
            } else {
                break;
            };
            if number - base >= i64::from(u16::MAX) || deltas.len() == MAX_RECEIVED_PER_REPORT {
                break;
            }
            symbols.extend((end..number).map(|_| SymbolTypeTcc::PacketNotReceived));
            symbols.push(symbol);
            deltas.push(RecvDelta {
                type_tcc_packet: symbol,
                delta: ticks * TICK_US,
            });
            last_at += ticks * TICK_US;
            end = number + 1;
        }
        // The first received number always fits (its delta is under 64 ms), so `end > base`.
        let rest = self.pending.split_off(&end);
        self.reported
            .extend(std::mem::replace(&mut self.pending, rest));
        self.reported = self.reported.split_off(&(end - LATE_REACH));
        self.next = Some(end);
        let count = self.reports;
        self.reports = self.reports.wrapping_add(1);
        Some(TransportLayerCc {
            sender_ssrc,
            media_ssrc,
            base_sequence_number: base as u16,
            packet_status_count: symbols.len() as u16,
            // 24 bits on the wire.
            reference_time: (reference as u32) & 0x00ff_ffff,
            fb_pkt_count: count,
            packet_chunks: chunks(&symbols),
            recv_deltas: deltas,
        })
    }
}

/// Status chunks for `symbols`: a run-length chunk for seven or more alike, and for each run of
/// the last few; two-bit vectors of seven otherwise.
fn chunks(symbols: &[SymbolTypeTcc]) -> Vec<PacketStatusChunk> {
    const VECTOR: usize = 7;
    const MAX_RUN: usize = 0x1fff;
    let mut out = Vec::new();
    let mut rest = symbols;
    while let Some(&first) = rest.first() {
        let run = rest
            .iter()
            .take_while(|&&s| s == first)
            .count()
            .min(MAX_RUN);
        // A vector is filled with seven symbols, or a reader takes its padding for losses.
        let taken = if run >= VECTOR || rest.len() < VECTOR {
            out.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: first,
                run_length: run as u16,
            }));
            run
        } else {
            out.push(PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: rest.iter().take(VECTOR).copied().collect(),
            }));
            VECTOR
        };
        rest = rest.get(taken..).unwrap_or_default();
    }
    out
}

/// The numbers missing from one stream, with the NACKs each has had.
#[derive(Debug, Default)]
struct Gaps {
    /// The stream may be NACKed (decided at its first packet): else no gap is kept.
    nack: bool,
    numbers: Unwrapper,
    newest: Option<i64>,
    missing: BTreeMap<i64, Ask>,
    /// When the next NACK is due: never later than the earliest [`Ask::at`] (it may be earlier
    /// once numbers are filled, which costs one call of [`due`](Self::due) that finds nothing).
    next: Option<Instant>,
}

/// The NACKs one missing number has had, and when the next is due.
#[derive(Debug, Clone, Copy)]
struct Ask {
    sent: u8,
    at: Instant,
}

impl Gaps {
    fn new(nack: bool) -> Self {
        Self {
            nack,
            ..Self::default()
        }
    }

    /// Packet `number` arrived `at`; whether it showed numbers missing (due to be NACKed `at`).
    fn note(&mut self, number: u16, at: Instant) -> bool {
        if !self.nack {
            return false;
        }
        let number = self.numbers.unwrap(number);
        let Some(newest) = self.newest else {
            self.newest = Some(number);
            return false;
        };
        if number <= newest {
            self.missing.remove(&number);
            self.forget_timer_if_done();
            return false;
        }
        let gap = number - newest > 1 && number - newest <= NACK_REACH;
        if gap {
            let ask = Ask { sent: 0, at };
            self.missing.extend((newest + 1..number).map(|n| (n, ask)));
            self.next = Some(self.next.map_or(at, |next| next.min(at)));
        } else if number - newest > NACK_REACH {
            // A jump (a restarted sender): nothing before it is worth asking for.
            self.missing.clear();
        }
        self.newest = Some(number);
        while let Some(oldest) = self.missing.first_entry()
            && *oldest.key() < number - NACK_REACH
        {
            oldest.remove();
        }
        self.forget_timer_if_done();
        gap
    }

    fn forget_timer_if_done(&mut self) {
        if self.missing.is_empty() {
            self.next = None;
        }
    }

    /// `number` came as a retransmission on a repair stream: it is missing no more. A number
    /// ahead of the newest is not taken from a repair (only the stream's own packets move it).
    fn repaired(&mut self, number: u16) {
        let number = self.numbers.peek(number);
        self.missing.remove(&number);
        self.forget_timer_if_done();
    }

    /// The numbers to NACK at `now`; each counts one more NACK and is due again one of
    /// `pacing`'s intervals later, and one that had its last is dropped.
    fn due(&mut self, now: Instant, pacing: NackPacing) -> Vec<u16> {
        let mut due = Vec::new();
        if self.next.is_none_or(|next| next > now) {
            return due;
        }
        let mut next: Option<Instant> = None;
        self.missing.retain(|&number, ask| {
            // Asked for as often as a new pacing allows already.
            if ask.sent >= pacing.asks {
                return false;
            }
            if ask.at <= now {
                due.push(number as u16);
                ask.sent += 1;
                ask.at = now + pacing.interval;
            }
            let keep = ask.sent < pacing.asks;
            if keep {
                next = Some(next.map_or(ask.at, |next| next.min(ask.at)));
            }
            keep
        });
        self.next = next;
        due
    }
}

/// What one audio stream's receiver reports say (RFC 3550 appendix A.3 and A.8).
#[derive(Debug)]
struct Reception {
    clock_rate: f64,
    numbers: Unwrapper,
    first: i64,
    newest: i64,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units.
    jitter: f64,
    /// The last packet's arrival and RTP timestamp.
    last: (Instant, u32),
    /// The middle 32 bits of the last sender report's NTP time, and when it came.
    sender_report: Option<(u32, Instant)>,
    last_seen: Instant,
}

impl Reception {
    fn new(at: Instant, header: &rtc::rtp::Header, clock_rate: u32) -> Self {
        let mut numbers = Unwrapper::default();
        let first = numbers.unwrap(header.sequence_number);
        Self {
            clock_rate: f64::from(clock_rate),
            numbers,
            first,
            newest: first,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            last: (at, header.timestamp),
            sender_report: None,
            last_seen: at,
        }
    }

    fn note(&mut self, at: Instant, header: &rtc::rtp::Header) {
        let number = self.numbers.unwrap(header.sequence_number);
        self.newest = self.newest.max(number);
        self.received += 1;
        let (last_at, last_timestamp) = self.last;
        let elapsed = if at >= last_at {
            at.duration_since(last_at).as_secs_f64()
        } else {
            -last_at.duration_since(at).as_secs_f64()
        };
        let d = elapsed * self.clock_rate
            - f64::from(header.timestamp.wrapping_sub(last_timestamp) as i32);
        self.jitter += (d.abs() - self.jitter) / 16.0;
        self.last = (at, header.timestamp);
        self.last_seen = at;
    }

    fn block(&mut self, ssrc: u32, now: Instant) -> rtc::rtcp::reception_report::ReceptionReport {
        let expected = self.newest - self.first + 1;
        let lost = (expected - self.received as i64).clamp(-0x80_0000, 0x7f_ffff);
        let expected_interval = expected - self.expected_prior;
        let lost_interval = expected_interval - (self.received - self.received_prior) as i64;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let fraction_lost = if expected_interval > 0 && lost_interval > 0 {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        } else {
            0
        };
        let (last_sender_report, delay) = match self.sender_report {
            Some((middle, at)) => (
                middle,
                (now.saturating_duration_since(at).as_secs_f64() * 65_536.0) as u32,
            ),
            None => (0, 0),
        };
        rtc::rtcp::reception_report::ReceptionReport {
            ssrc,
            fraction_lost,
            // 24 bits, two's complement.
            total_lost: (lost as u32) & 0x00ff_ffff,
            last_sequence_number: self.newest as u32,
            jitter: self.jitter as u32,
            last_sender_report,
            delay,
        }
    }
}

/// Which of a connection's reports an incoming packet counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Noted {
    /// Video: its gaps are NACKed.
    Video,
    /// Audio at this clock rate: receiver reports are about it.
    Audio(u32),
    /// Neither (a kind not known yet).
    Other,
}

/// Transport-wide feedback, NACKs and receiver reports for one receiving connection.
#[derive(Debug)]
pub(crate) struct ReceiveFeedback {
    /// The SSRC the reports are sent as (the connection sends no media of its own to name).
    sender_ssrc: u32,
    /// The negotiated id of the transport-wide sequence number extension.
    transport_cc: Option<u8>,
    arrivals: Arrivals,
    /// The SSRC of the newest packet with a transport-wide number (a report names one).
    media_ssrc: u32,
    gaps: crate::FastMap<u32, Gaps>,
    /// Audio streams reported on, when the connection makes its receiver reports here.
    receptions: Option<crate::FastMap<u32, Reception>>,
    next_report: Option<Instant>,
    next_nacks: Option<Instant>,
    /// The longest round trip to the sender measured in each span of the window, newest first,
    /// with when the span began.
    round_trips: [Option<(Instant, Duration)>; ROUND_TRIP_SPANS],
    /// The remote address's IP the round trips were measured for.
    round_trip_path: Option<std::net::IpAddr>,
    next_receiver_report: Option<Instant>,
}

impl ReceiveFeedback {
    /// Feedback for a connection; with `receiver_reports`, its receiver reports too (else `rtc`'s
    /// interceptor makes them).
    pub(crate) fn new(receiver_reports: bool) -> Self {
        Self {
            sender_ssrc: rand::random(),
            transport_cc: None,
            arrivals: Arrivals::default(),
            media_ssrc: 0,
            gaps: crate::FastMap::default(),
            receptions: receiver_reports.then(crate::FastMap::default),
            next_report: None,
            next_nacks: None,
            round_trips: [None; ROUND_TRIP_SPANS],
            round_trip_path: None,
            next_receiver_report: None,
        }
    }

    /// A round trip to the sender measured at `now` on the path to `path` (the remote's IP):
    /// NACKs are paced by the longest of those of the last [`ROUND_TRIP_WINDOW`] on that path
    /// ([`NackPacing::for_round_trip`]; asks already made keep the time set for their next).
    pub(crate) fn add_round_trip(
        &mut self,
        now: Instant,
        round_trip: Duration,
        path: std::net::IpAddr,
    ) {
        self.keep_round_trips_of(Some(path));
        self.round_trip_path = Some(path);
        let span = ROUND_TRIP_WINDOW / ROUND_TRIP_SPANS as u32;
        match &mut self.round_trips[0] {
            Some((since, longest)) if now.saturating_duration_since(*since) < span => {
                *longest = (*longest).max(round_trip);
            }
            _ => {
                self.round_trips.rotate_right(1);
                self.round_trips[0] = Some((now, round_trip));
            }
        }
    }

    /// The connection sends to `path` now: round trips measured for another are forgotten.
    pub(crate) fn keep_round_trips_of(&mut self, path: Option<std::net::IpAddr>) {
        if self.round_trip_path.is_some() && self.round_trip_path != path {
            self.round_trips = [None; ROUND_TRIP_SPANS];
            self.round_trip_path = None;
        }
    }

    /// How NACKs are paced at `now`.
    fn nack_pacing(&self, now: Instant) -> NackPacing {
        self.round_trips
            .iter()
            .flatten()
            .filter(|(at, _)| now.saturating_duration_since(*at) < ROUND_TRIP_WINDOW)
            .map(|&(_, round_trip)| round_trip)
            .max()
            .map_or_else(NackPacing::default, NackPacing::for_round_trip)
    }

    /// The remote's sender report on `ssrc` (its NTP time) arrived `at`: the next receiver report
    /// block on it refers to it.
    pub(crate) fn sender_report(&mut self, ssrc: u32, ntp_time: u64, at: Instant) {
        if let Some(reception) = self.receptions.as_mut().and_then(|r| r.get_mut(&ssrc)) {
            reception.sender_report = Some(((ntp_time >> 16) as u32, at));
        }
    }

    /// The transport-wide sequence number extension's id, as the last description negotiated it.
    pub(crate) fn set_transport_cc(&mut self, id: Option<u8>) {
        self.transport_cc = id;
    }

    /// A packet (authenticated) arrived `at`.
    pub(crate) fn note(&mut self, at: Instant, header: &rtc::rtp::Header, noted: Noted) {
        self.note_gated(at, header, noted, || true);
    }

    /// [`note`](Self::note), where a video stream's gaps are NACKed only if `nack` says so at its
    /// first packet (asked once per stream, and again after [`forget_gaps`](Self::forget_gaps)).
    pub(crate) fn note_gated(
        &mut self,
        at: Instant,
        header: &rtc::rtp::Header,
        noted: Noted,
        nack: impl FnOnce() -> bool,
    ) {
        if self.receptions.is_some() {
            // Reports go out each second from the first packet on, with blocks or without, as
            // `rtc`'s generator (and a browser) sends them.
            self.next_receiver_report
                .get_or_insert(at + REPORT_INTERVAL);
        }
        if let Some(number) = self
            .transport_cc
            .and_then(|id| header.get_extension(id))
            .and_then(|value| match *value {
                [a, b, ..] => Some(u16::from_be_bytes([a, b])),
                _ => None,
            })
        {
            self.arrivals.record(number, at);
            self.media_ssrc = header.ssrc;
            self.next_report.get_or_insert(at + FEEDBACK_INTERVAL);
        }
        match noted {
            Noted::Video => {
                if !self.gaps.contains_key(&header.ssrc) && self.gaps.len() >= MAX_STREAMS {
                    self.gaps.clear();
                }
                let gap = self
                    .gaps
                    .entry(header.ssrc)
                    .or_insert_with(|| Gaps::new(nack()))
                    .note(header.sequence_number, at);
                if gap {
                    self.next_nacks = Some(self.next_nacks.map_or(at, |next| next.min(at)));
                }
            }
            Noted::Audio(clock_rate) if clock_rate > 0 => {
                let Some(receptions) = &mut self.receptions else {
                    return;
                };
                if let Some(reception) = receptions.get_mut(&header.ssrc) {
                    reception.note(at, header);
                    return;
                }
                if receptions.len() >= MAX_REPORT_BLOCKS {
                    let quietest = receptions
                        .iter()
                        .min_by_key(|(_, r)| r.last_seen)
                        .map(|(&ssrc, _)| ssrc);
                    if let Some(quietest) = quietest {
                        receptions.remove(&quietest);
                    }
                }
                receptions.insert(header.ssrc, Reception::new(at, header, clock_rate));
            }
            Noted::Audio(_) | Noted::Other => {}
        }
    }

    /// A retransmission on a repair stream (RTX, RFC 4588) carried packet `number` of the video
    /// stream `ssrc`: it is NACKed no more. (The retransmission itself is noted as
    /// [`Noted::Other`]: its transport-wide number is reported, and its own SSRC has no gaps to
    /// ask for.)
    pub(crate) fn repaired(&mut self, ssrc: u32, number: u16) {
        if let Some(gaps) = self.gaps.get_mut(&ssrc) {
            gaps.repaired(number);
        }
    }

    /// Forgets every gap noted so far: none is NACKed until packets show new ones.
    pub(crate) fn forget_gaps(&mut self) {
        self.gaps.clear();
    }

    /// When [`due`](Self::due) has something to give.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [self.next_report, self.next_nacks, self.next_receiver_report]
            .into_iter()
            .flatten()
            .min()
    }

    /// The reports and NACKs due at `now`, to write. Each timer runs while there is something to
    /// report and stops when there is not, until the next packet (for NACKs, the next gap).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        let mut out: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        if self.next_report.is_some_and(|at| at <= now) {
            let reports = self.arrivals.reports(self.sender_ssrc, self.media_ssrc);
            self.next_report = (!reports.is_empty()).then_some(now + FEEDBACK_INTERVAL);
            out.extend(reports.into_iter().map(|r| Box::new(r) as _));
        }
        if self.next_nacks.is_some_and(|at| at <= now) {
            let pacing = self.nack_pacing(now);
            for (&ssrc, gaps) in &mut self.gaps {
                let due = gaps.due(now, pacing);
                if due.is_empty() {
                    continue;
                }
                out.push(Box::new(TransportLayerNack {
                    sender_ssrc: self.sender_ssrc,
                    media_ssrc: ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&due),
                }));
            }
            // Numbers still missing keep the timer running, each to its own next NACK.
            self.next_nacks = self.gaps.values().filter_map(|gaps| gaps.next).min();
        }
        if self.next_receiver_report.is_some_and(|at| at <= now)
            && let Some(receptions) = &mut self.receptions
        {
            // A stream is reported on while it sends (RFC 3550 §6.4: sources heard since the
            // last report); one quiet for five reports is forgotten (a removed track never sends
            // again) and starts over if it does.
            receptions
                .retain(|_, r| now.saturating_duration_since(r.last_seen) < REPORT_INTERVAL * 5);
            let reports = receptions
                .iter_mut()
                .filter(|(_, r)| now.saturating_duration_since(r.last_seen) < REPORT_INTERVAL)
                .map(|(&ssrc, r)| r.block(ssrc, now))
                .collect();
            self.next_receiver_report = Some(now + REPORT_INTERVAL);
            out.push(Box::new(rtc::rtcp::receiver_report::ReceiverReport {
                ssrc: self.sender_ssrc,
                reports,
                profile_extensions: bytes::Bytes::new(),
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::convert_twcc;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    /// The remote's address the tests' round trips are measured for.
    const PATH: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    /// A report as the sender's side reads it: off the wire, through `rtc`'s reader.
    fn read_back(report: &TransportLayerCc) -> (TransportLayerCc, Vec<(u16, Option<Duration>)>) {
        let wire = report.marshal().expect("marshals");
        let parsed = TransportLayerCc::unmarshal(&mut wire.as_ref()).expect("parses");
        let acks = convert_twcc(&parsed)
            .into_iter()
            .map(|a| (a.sequence_number, a.arrival.filter(|_| a.arrived)))
            .collect();
        (parsed, acks)
    }

    #[test]
    fn every_number_is_reported_with_its_arrival_late_ones_again() {
        let epoch = Instant::now();
        let mut arrivals = Arrivals::default();
        // Numbers wrap past 65 535; every 9th is lost, pairs are swapped now and then, and there
        // is a pause longer than a 16-bit delta holds (8.19 s).
        let mut truth = BTreeMap::new();
        let mut at_us = 0i64;
        let mut reported = Vec::new();
        let mut next_report_us = 100_000;
        let mut state = 0x2545_f491_u64;
        let mut roll = |sides: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % sides
        };
        let mut order: Vec<i64> = (65_000..70_000).collect();
        for i in (0..order.len() - 1).step_by(2) {
            if roll(5) == 0 {
                order.swap(i, i + 1);
            }
        }
        for (i, &number) in order.iter().enumerate() {
            at_us += if i == 2_500 {
                9_000_000
            } else {
                roll(6_000) as i64
            };
            while at_us >= next_report_us {
                reported.extend(arrivals.reports(1, 2));
                next_report_us += 100_000;
            }
            if number % 9 == 0 {
                continue;
            }
            truth.insert(number, at_us);
            arrivals.record(number as u16, epoch + Duration::from_micros(at_us as u64));
        }
        reported.extend(arrivals.reports(1, 2));

        // Arrivals count from the first.
        let first_at = *truth.values().min().expect("arrivals");
        // The last word on each number; a report may start before where the previous one ended
        // (a late packet), never after it.
        let mut last_word: BTreeMap<i64, Option<Duration>> = BTreeMap::new();
        let mut previous_end: Option<i64> = None;
        for report in &reported {
            let (parsed, acks) = read_back(report);
            assert_eq!(parsed, *report, "the report survives the wire");
            assert_eq!(
                acks.len(),
                usize::from(report.packet_status_count),
                "no padding is read as packets"
            );
            let mut end = None;
            for (number, arrival) in acks {
                // Unwrap against the numbers sent.
                let unwrapped = (65_000..70_000)
                    .find(|n| *n as u16 == number)
                    .expect("a number sent");
                if end.is_none() {
                    assert!(
                        previous_end.is_none_or(|e| unwrapped <= e),
                        "no number skipped: {unwrapped} after {previous_end:?}"
                    );
                }
                end = Some(unwrapped + 1);
                match (truth.get(&unwrapped), arrival) {
                    (Some(&at), Some(reported)) => {
                        let error = reported.as_micros() as i64 - (at - first_at);
                        assert!(error.abs() <= 125, "{unwrapped}: off by {error} µs");
                    }
                    (_, None) => assert!(
                        last_word.get(&unwrapped).is_none_or(Option::is_none),
                        "{unwrapped} reported received, then lost"
                    ),
                    (None, Some(_)) => panic!("{unwrapped} reported but never received"),
                }
                last_word.insert(unwrapped, arrival);
            }
            previous_end = end.max(previous_end);
        }
        assert_eq!(last_word.len(), 5_000, "every number is reported");
        let late = last_word
            .iter()
            .filter(|(n, arrival)| truth.contains_key(n) && arrival.is_none())
            .count();
        assert_eq!(late, 0, "{late} that came late never reported received");
        assert!(
            reported.len() > 2,
            "the pause split the reports: {}",
            reported.len()
        );
    }

    #[test]
    fn a_long_loss_is_one_run_and_a_late_packet_is_reported_with_what_followed_it() {
        let epoch = Instant::now();
        let mut arrivals = Arrivals::default();
        arrivals.record(10, epoch);
        let first = arrivals.reports(1, 2);
        assert_eq!(first.len(), 1);
        // 9 comes after the report on 10; then 3 000.
        arrivals.record(9, epoch + Duration::from_millis(5));
        arrivals.record(3_000, epoch + Duration::from_millis(20));
        let second = arrivals.reports(1, 2);
        assert_eq!(second.len(), 1);
        let report = &second[0];
        assert_eq!(report.base_sequence_number, 9, "from the late one");
        assert_eq!(report.packet_status_count, 3_000 - 9 + 1);
        let (_, acks) = read_back(report);
        let received: Vec<u16> = acks
            .iter()
            .filter(|(_, arrival)| arrival.is_some())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(received, vec![9, 10, 3_000], "10 again, with its arrival");
        assert!(arrivals.reports(1, 2).is_empty(), "nothing new");
        // A packet from further back than the reach, or one reported received, is not.
        arrivals.record(9, epoch + Duration::from_millis(30));
        arrivals.record(2_000, epoch + Duration::from_millis(30));
        assert!(arrivals.reports(1, 2).is_empty());
    }

    fn header(ssrc: u32, sequence_number: u16) -> rtc::rtp::Header {
        rtc::rtp::Header {
            ssrc,
            sequence_number,
            ..Default::default()
        }
    }

    /// The NACKed numbers of each NACK in `packets`.
    fn nacked(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<Vec<u16>> {
        packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .map(|nack| {
                nack.nacks
                    .iter()
                    .flat_map(|pair| pair.packet_list())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_gap_is_nacked_as_soon_as_it_shows_then_twice_more_unless_it_is_filled() {
        let start = Instant::now();
        let mut feedback = ReceiveFeedback::new(false);
        // Packets in order ask for nothing.
        for seq in [65_534, 65_535] {
            feedback.note(start, &header(7, seq), Noted::Video);
        }
        assert_eq!(feedback.poll_timeout(), None);
        let shown = start + Duration::from_millis(7);
        for seq in [2, 3] {
            feedback.note(shown, &header(7, seq), Noted::Video);
        }
        feedback.note(shown, &header(8, 1), Noted::Other);
        assert_eq!(
            feedback.poll_timeout(),
            Some(shown),
            "due when the gap shows"
        );
        assert!(feedback.due(shown - Duration::from_millis(1)).is_empty());
        assert_eq!(nacked(&feedback.due(shown)), vec![vec![0, 1]]);
        assert!(feedback.due(shown).is_empty(), "asked once at a time");
        let again = |n: u32| shown + NACK_INTERVAL * n;
        assert_eq!(feedback.poll_timeout(), Some(again(1)));
        feedback.note(
            again(1) - Duration::from_millis(1),
            &header(7, 0),
            Noted::Video,
        );
        assert_eq!(nacked(&feedback.due(again(1))), vec![vec![1]]);
        // A gap showing meanwhile is asked for at once, the older one at its own time.
        let later = again(1) + Duration::from_millis(30);
        feedback.note(later, &header(7, 5), Noted::Video);
        assert_eq!(feedback.poll_timeout(), Some(later));
        assert_eq!(nacked(&feedback.due(later)), vec![vec![4]]);
        assert_eq!(feedback.poll_timeout(), Some(again(2)));
        assert_eq!(nacked(&feedback.due(again(2))), vec![vec![1]]);
        assert_eq!(nacked(&feedback.due(later + NACK_INTERVAL)), vec![vec![4]]);
        assert_eq!(
            feedback.poll_timeout(),
            Some(later + NACK_INTERVAL * 2),
            "1 asked for three times"
        );
        assert_eq!(
            nacked(&feedback.due(later + NACK_INTERVAL * 2)),
            vec![vec![4]]
        );
        assert_eq!(feedback.poll_timeout(), None, "nothing left to ask for");
        // A jump past the reach asks for nothing before it.
        feedback.note(again(5), &header(7, 5 + 600), Noted::Video);
        assert_eq!(feedback.poll_timeout(), None);
        assert!(nacked(&feedback.due(again(6))).is_empty());
    }

    #[test]
    fn a_gap_a_retransmission_repaired_is_nacked_no_more() {
        let start = Instant::now();
        let mut feedback = ReceiveFeedback::new(false);
        for seq in [65_533, 65_534, 1, 2] {
            feedback.note(start, &header(7, seq), Noted::Video);
        }
        let tick = |n: u32| start + NACK_INTERVAL * n;
        assert_eq!(nacked(&feedback.due(start)), vec![vec![65_535, 0]]);
        // 0 comes on the repair stream (its own SSRC, 9, and number): the layer's gap is filled,
        // and the repair stream has none of its own.
        feedback.note(tick(1), &header(9, 500), Noted::Other);
        feedback.repaired(7, 0);
        // A repair of a number the stream never reached, or of another stream, changes nothing.
        feedback.repaired(7, 10);
        feedback.repaired(8, 65_535);
        assert_eq!(nacked(&feedback.due(tick(1))), vec![vec![65_535]]);
        feedback.note(tick(1), &header(7, 3), Noted::Video);
        assert_eq!(nacked(&feedback.due(tick(2))), vec![vec![65_535]]);
        assert_eq!(feedback.poll_timeout(), None);
    }

    #[test]
    fn each_streams_gaps_keep_their_own_times_and_a_filled_or_forgotten_one_asks_nothing() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut feedback = ReceiveFeedback::new(false);
        // Two layers, gaps 40 ms apart: each is asked for at its own time.
        feedback.note(ms(0), &header(7, 10), Noted::Video);
        feedback.note(ms(0), &header(8, 500), Noted::Video);
        feedback.note(ms(10), &header(7, 12), Noted::Video);
        feedback.note(ms(50), &header(8, 503), Noted::Video);
        assert_eq!(nacked(&feedback.due(ms(10))), vec![vec![11]]);
        assert_eq!(feedback.poll_timeout(), Some(ms(50)));
        assert_eq!(nacked(&feedback.due(ms(50))), vec![vec![501, 502]]);
        assert_eq!(feedback.poll_timeout(), Some(ms(110)));
        assert_eq!(nacked(&feedback.due(ms(110))), vec![vec![11]]);
        assert_eq!(feedback.poll_timeout(), Some(ms(150)));
        // A gap filled before its NACK (reordered) leaves a timer that finds nothing, once.
        feedback.note(ms(60), &header(7, 14), Noted::Video);
        feedback.note(ms(61), &header(7, 13), Noted::Video);
        assert_eq!(feedback.poll_timeout(), Some(ms(60)));
        assert!(feedback.due(ms(61)).is_empty());
        assert_eq!(feedback.poll_timeout(), Some(ms(150)));
        // A jump clears what its stream was asking for; the other stream's stand.
        feedback.note(ms(70), &header(7, 14 + 600), Noted::Video);
        assert_eq!(nacked(&feedback.due(ms(150))), vec![vec![501, 502]]);
        assert_eq!(feedback.poll_timeout(), Some(ms(250)));
        // Forgotten gaps are asked for no more.
        feedback.forget_gaps();
        assert!(feedback.due(ms(250)).is_empty());
        assert_eq!(feedback.poll_timeout(), None);
    }

    #[test]
    fn nacks_are_paced_by_the_round_trip_once_it_is_known() {
        let ms = Duration::from_millis;
        let pacing = |trip: u64| NackPacing::for_round_trip(ms(trip));
        let paced = |interval: u64, asks: u8| NackPacing {
            interval: ms(interval),
            asks,
        };
        // Unknown: every 100 ms, three times (as before the round trip was used).
        assert_eq!(NackPacing::default(), paced(100, 3));
        // The round trip plus a quarter of it, 10 ms at least, from 20 ms to 500 ms; as many
        // asks as span 300 ms, 3 to 10.
        assert_eq!(pacing(0), paced(20, 10));
        assert_eq!(pacing(1), paced(20, 10));
        assert_eq!(pacing(40), paced(50, 6));
        assert_eq!(pacing(80), paced(100, 3));
        assert_eq!(pacing(240), paced(300, 3));
        assert_eq!(pacing(5_000), paced(500, 3));
        assert_eq!(pacing(u64::MAX / 2_000), paced(500, 3), "no overflow");

        // On a short path a packet that stays missing is asked for every 20 ms, ten times.
        let start = Instant::now();
        let at = |n: u64| start + ms(n);
        let mut feedback = ReceiveFeedback::new(false);
        feedback.add_round_trip(start, ms(2), PATH);
        feedback.note(start, &header(7, 1), Noted::Video);
        feedback.note(start, &header(7, 3), Noted::Video);
        let mut asks = Vec::new();
        while let Some(due) = feedback.poll_timeout() {
            if !nacked(&feedback.due(due)).is_empty() {
                asks.push(due - start);
            }
        }
        let expected: Vec<Duration> = (0..10).map(|n| ms(20) * n).collect();
        assert_eq!(asks, expected);
        // On a long one (240 ms), three times, 300 ms apart: not all before the first repair
        // could be back.
        feedback.add_round_trip(at(300), ms(240), PATH);
        feedback.note(at(300), &header(7, 5), Noted::Video);
        assert_eq!(nacked(&feedback.due(at(300))), vec![vec![4]]);
        assert_eq!(feedback.poll_timeout(), Some(at(600)));
        assert!(feedback.due(at(599)).is_empty());
        // A shorter round trip within 10 s of the longer one does not shorten the asks.
        feedback.add_round_trip(at(400), ms(30), PATH);
        assert_eq!(nacked(&feedback.due(at(600))), vec![vec![4]]);
        assert_eq!(
            feedback.poll_timeout(),
            Some(at(900)),
            "the longest of the last 10 s"
        );
        assert_eq!(nacked(&feedback.due(at(900))), vec![vec![4]]);
        assert_eq!(feedback.poll_timeout(), None, "three asks");
        // 10 s after the last span began with none since, the path may have changed: the
        // default again.
        feedback.note(at(10_400), &header(7, 7), Noted::Video);
        assert_eq!(nacked(&feedback.due(at(10_400))), vec![vec![6]]);
        assert_eq!(feedback.poll_timeout(), Some(at(10_500)));
        for n in [10_500, 10_600] {
            assert_eq!(nacked(&feedback.due(at(n))), vec![vec![6]]);
        }
        assert_eq!(feedback.poll_timeout(), None);
        // A pacing allowing fewer asks than a number has had drops it unasked: 8, asked four
        // times 20 ms apart, when a 400 ms round trip allows three.
        feedback.add_round_trip(at(11_000), ms(2), PATH);
        feedback.note(at(11_000), &header(7, 9), Noted::Video);
        for n in [11_000, 11_020, 11_040, 11_060] {
            assert_eq!(nacked(&feedback.due(at(n))), vec![vec![8]]);
        }
        feedback.add_round_trip(at(11_070), ms(400), PATH);
        assert!(feedback.due(at(11_080)).is_empty());
        assert_eq!(feedback.poll_timeout(), None);
    }

    #[test]
    fn the_longest_round_trip_is_kept_however_many_reports_come_and_only_for_its_path() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let at = |n: u64| start + ms(n);
        let mut feedback = ReceiveFeedback::new(false);
        // Twelve reports in 1.1 s (a browser's NACKs and PLIs carry one each), the first the
        // longest: it paces until its span leaves the window.
        feedback.add_round_trip(at(0), ms(240), PATH);
        for n in 1..12 {
            feedback.add_round_trip(at(n * 100), ms(5), PATH);
        }
        assert_eq!(feedback.nack_pacing(at(9_000)).interval, ms(300));
        feedback.add_round_trip(at(9_500), ms(5), PATH);
        assert_eq!(feedback.nack_pacing(at(9_999)).interval, ms(300));
        assert_eq!(feedback.nack_pacing(at(10_000)).interval, ms(20));
        // One measured for another address (the connection moved) starts over.
        let moved = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        feedback.add_round_trip(at(10_100), ms(100), moved);
        assert_eq!(feedback.nack_pacing(at(10_100)).interval, ms(125));
        // And once the connection sends elsewhere, those are forgotten.
        feedback.keep_round_trips_of(Some(moved));
        assert_eq!(feedback.nack_pacing(at(10_100)).interval, ms(125));
        feedback.keep_round_trips_of(Some(PATH));
        assert_eq!(feedback.nack_pacing(at(10_100)), NackPacing::default());
    }

    /// Over a random trace (gaps, reorders, jumps, repairs, forgetting, round trips measured, on
    /// two streams), the timer is never left due after `due`; each number is asked for again no
    /// sooner than the pacing at its last ask says, and no later than that and one step of the
    /// trace; no more times than the pacing allows; and a number missing when `due` runs after
    /// its gap showed is asked for then.
    #[test]
    fn the_nack_timer_is_never_left_due_and_asks_in_time() {
        let start = Instant::now();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound
        };
        let mut feedback = ReceiveFeedback::new(false);
        let mut newest = [1_000u16, 60_000];
        // Per stream and number: the NACKs seen, the last one's time and the pacing then.
        let mut asked: BTreeMap<(u32, u16), (u8, Instant, NackPacing)> = BTreeMap::new();
        let mut now = start;
        // The longest step of the trace.
        let step = Duration::from_millis(14);
        for _ in 0..20_000 {
            now += Duration::from_millis(next(15));
            let stream = next(2) as usize;
            let ssrc = 7 + stream as u32;
            let number = match next(100) {
                0..=79 => Some(newest[stream].wrapping_add(1)),
                80..=93 => Some(newest[stream].wrapping_add(2 + next(4) as u16)),
                94..=97 => Some(newest[stream].wrapping_sub(next(5) as u16)),
                98 => Some(newest[stream].wrapping_add(600)),
                _ => {
                    match next(3) {
                        0 => feedback.add_round_trip(now, Duration::from_millis(next(300)), PATH),
                        1 => {
                            // What was asked before is forgotten too: a stream starts over.
                            feedback.forget_gaps();
                            asked.clear();
                        }
                        _ => feedback.repaired(ssrc, newest[stream].wrapping_sub(next(8) as u16)),
                    }
                    None
                }
            };
            if let Some(number) = number {
                if number.wrapping_sub(newest[stream]) < 0x8000 {
                    newest[stream] = number;
                }
                feedback.note(now, &header(ssrc, number), Noted::Video);
            }
            if feedback.poll_timeout().is_some_and(|at| at <= now) {
                for nack in feedback.due(now) {
                    let Some(nack) = nack.as_any().downcast_ref::<TransportLayerNack>() else {
                        continue;
                    };
                    for number in nack.nacks.iter().flat_map(|pair| pair.packet_list()) {
                        let pacing = feedback.nack_pacing(now);
                        let entry = asked
                            .entry((nack.media_ssrc, number))
                            .or_insert((0, now, pacing));
                        if entry.0 > 0 {
                            let (since, interval) = (now - entry.1, entry.2.interval);
                            assert!(since >= interval, "{number} asked again early");
                            assert!(since <= interval + step, "{number} asked again late");
                        }
                        *entry = (entry.0 + 1, now, pacing);
                        assert!(
                            entry.0 <= pacing.asks,
                            "{number} asked for {} times",
                            entry.0
                        );
                    }
                }
                assert!(
                    feedback.poll_timeout().is_none_or(|at| at > now),
                    "the timer is left due"
                );
            }
            // What is missing and past its time was just asked for: none waits for a tick.
            for (ssrc, gaps) in &feedback.gaps {
                for ask in gaps.missing.values() {
                    assert!(ask.at > now, "a number of {ssrc} waits past its time");
                }
            }
            // Numbers wrap: forget what was asked long ago.
            asked.retain(|_, (_, at, _)| now - *at < Duration::from_secs(2));
        }
        assert!(asked.len() > 10, "the trace had gaps to ask for");
    }

    #[test]
    fn receiver_reports_state_loss_jitter_and_the_last_sender_report() {
        let start = Instant::now();
        let mut feedback = ReceiveFeedback::new(true);
        // Opus every 20 ms, numbers wrapping; 65 535 and 3 lost.
        let mut at = start;
        for (i, seq) in [65_533u16, 65_534, 0, 1, 2, 4, 5].into_iter().enumerate() {
            let mut packet = header(9, seq);
            packet.timestamp = 960 * u32::from(seq.wrapping_sub(65_533));
            at = start + Duration::from_millis(20 * u64::from(seq.wrapping_sub(65_533)));
            feedback.note(at, &packet, Noted::Audio(48_000));
            // A video stream is never reported on.
            feedback.note(at, &header(10, i as u16), Noted::Video);
        }
        feedback.sender_report(9, 0x1234_5678_9abc_def0, at);
        let due = start + REPORT_INTERVAL;
        assert_eq!(feedback.poll_timeout().map(|t| t <= due), Some(true));
        let reports: Vec<_> = feedback
            .due(due)
            .into_iter()
            .filter_map(|p| {
                p.as_any()
                    .downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>()
                    .cloned()
            })
            .collect();
        assert_eq!(reports.len(), 1);
        let [block] = reports[0].reports.as_slice() else {
            panic!("one block, on the audio: {reports:?}");
        };
        assert_eq!(block.ssrc, 9);
        assert_eq!(block.total_lost, 2);
        assert_eq!(u32::from(block.fraction_lost), (2 << 8) / 9);
        assert_eq!(block.last_sequence_number, 65_536 + 5, "the wrap counted");
        assert_eq!(block.jitter, 0, "packets came on their clock");
        assert_eq!(block.last_sender_report, 0x5678_9abc);
        let since = due.duration_since(at).as_secs_f64() * 65_536.0;
        assert!((f64::from(block.delay) - since).abs() <= 1.0);

        // The next second: nothing lost since; then the stream is quiet and is not reported on,
        // but reports go on.
        let mut packet = header(9, 6);
        packet.timestamp = 960 * 9;
        feedback.note(due + REPORT_INTERVAL / 2, &packet, Noted::Audio(48_000));
        let next = feedback.due(due + REPORT_INTERVAL);
        let rr = next[0]
            .as_any()
            .downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>()
            .expect("a report");
        assert_eq!(
            (rr.reports[0].fraction_lost, rr.reports[0].total_lost),
            (0, 2)
        );
        let blocks = |packets: Vec<Box<dyn rtc::rtcp::Packet>>| -> Vec<usize> {
            packets
                .iter()
                .filter_map(|p| {
                    p.as_any()
                        .downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>()
                })
                .map(|rr| rr.reports.len())
                .collect()
        };
        assert_eq!(blocks(feedback.due(due + REPORT_INTERVAL * 2)), vec![0]);
        assert_eq!(
            feedback.poll_timeout(),
            Some(due + REPORT_INTERVAL * 3),
            "every second"
        );
    }
}
