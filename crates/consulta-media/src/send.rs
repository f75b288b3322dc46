//! The SFU's own write path for the RTP a connection sends: each packet sealed with the
//! connection's SRTP keys here and handed out as a datagram, instead of going through `rtc`'s
//! write path (its interceptor chain, each stage moving the packet through its own queue, then its
//! SRTP and ICE handlers). That path cost 3.1–6.5 µs a packet where sealing alone costs 0.6–0.9
//! (`consulta-sfu-bench pipeline`, docs/benchmarks.md).
//!
//! What `rtc`'s chain did for these packets is done here, with `rtc`'s public parts:
//! - **bandwidth estimation** ([`Estimation`], where [`MediaConfig::congestion_control`] is on):
//!   each packet gets the connection's next transport-wide sequence number and is recorded as it
//!   leaves ([`SendLog`], what `rtc::interceptor::History` kept, without its hash maps); the
//!   remote's feedback is matched against the record
//!   (`convert_twcc`) and drives `rtc`'s GCC, as its TWCC sender and congestion controller did
//!   (they are left out of the chain);
//! - **sender reports** (RFC 3550 §6.4.1), once a second, written through `rtc` (which seals
//!   SRTCP) for every stream that sent: `rtc`'s own report interceptor is left out of the chain,
//!   since it no longer sees the packets;
//! - **NACK answers**: the last [`HISTORY`] datagrams of each stream are kept, and a NACK names
//!   which to send again, byte for byte: one SRTP index, one plaintext (SECURITY.md). As the
//!   caller asks ([`Keep`](crate::Keep)): a copy of the datagram, or the packet's header fields
//!   and its payload shared with other subscribers' copies, sealed again on a NACK and sent only
//!   if its tag is the one it left with ([`RtpCrypto::reseal`]). A resend is recorded in the send
//!   history again under its number, as `resend::Resender`'s were.
//!
//! **The keys** come from [`KeyTap`], the connection's crypto provider, which keeps the
//! DTLS-SRTP keying material `rtc` exports. That depends on how `rtc` 0.21 calls its provider, so
//! they are checked before use: at the first packet, a sender report on its stream is written
//! through `rtc`, and the one candidate (the DTLS client's or server's half, under the GCM or the
//! AES-CM layout) that opens the SRTCP `rtc` sealed it with is the connection's own. If none does,
//! the connection keeps `rtc`'s write path for good (and a warning is logged). Until the check
//! settles (the first packet settles it), packets are dropped: `rtc` never seals RTP on a
//! connection the own path may seal on, so each stream has one SRTP context.
//!
//! [`MediaConfig::congestion_control`]: crate::MediaConfig::congestion_control

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{BandwidthEstimator, Gcc, convert_twcc};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::shared::time::SystemInstant;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::keytap::KeyTap;
use crate::send_log::SendLog;
use crate::srtp::{ReplayWindow, RtpCrypto};

/// How many datagrams of each stream are kept for NACKs (as `resend::Resender` keeps packets).
pub(crate) const HISTORY: usize = 64;
const _: () = assert!(HISTORY <= 64, "a NACK's answered slots are a u64's bits");

/// Most streams one connection reports on and keeps datagrams for at once (8 tracks from each of 8
/// others). A stream whose track was removed gives its place to a new one when all are taken.
const MAX_STREAMS: usize = 64;

/// SSRCs whose SRTCP replay windows a connection keeps: a subscriber's reporting SSRCs
/// (Chromium's two, Firefox's one per transceiver), and a publisher's, which sends a sender
/// report from each stream it sends, each simulcast layer's own (the own read path follows 32).
/// Past it, the least recent gives its place, and a replay from its sender older than the
/// window it gets next would be taken. A window is a few words.
const MAX_RTCP_SENDERS: usize = 64;

/// How often one packet is sent again at most, answering NACKs (LiveKit: 3; libwebrtc's
/// receivers ask up to 10 times, this SFU 3 to 10), and the least time between two resends of
/// it: a receiver asks again a round trip after its last NACK at the earliest, and browsers
/// send NACKs on a 20 ms tick.
pub(crate) const MAX_RESENDS: u8 = 4;
pub(crate) const RESEND_GAP: Duration = Duration::from_millis(10);

/// How often a kept packet was sent again, and when last (both write paths keep one per packet).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Resends {
    count: u8,
    last: Option<Instant>,
}

impl Resends {
    /// Whether the packet may go again at `now`: fewer than [`MAX_RESENDS`] times so far, and
    /// not within [`RESEND_GAP`] of the last.
    pub(crate) fn allowed(&self, now: Instant) -> bool {
        self.count < MAX_RESENDS
            && self
                .last
                .is_none_or(|at| now.saturating_duration_since(at) >= RESEND_GAP)
    }

    /// It went again at `now`.
    pub(crate) fn note(&mut self, now: Instant) {
        self.count += 1;
        self.last = Some(now);
    }
}

/// Senders whose SRTCP the remote's `rtc` context is asked to open before it is made afresh
/// ([`RemoteRtcp`]).
const MAX_CONTEXT_SENDERS: usize = 64;

/// How often each stream's sender report goes out (`rtc`'s report interceptor: 1 s).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a packet no feedback mentioned stays in the send history (`rtc`'s congestion
/// controller: 2 s).
const PRUNE_HORIZON: Duration = Duration::from_secs(2);

/// Most packets one transport-wide feedback report may give a status for. A browser reports
/// every 50-250 ms (libwebrtc); 8 192 in 250 ms is 32 000 packets a second to one subscriber.
/// Past it, or when its chunks describe more packets than it counts (by more than a status
/// vector's padding), a report is not read: `rtc`'s parser reads chunks until they cover the
/// count but keeps the last run's length as written, and its conversion walks every run, so 40
/// bytes made 73 719 acknowledgements, each matched against the send log (review helper-101).
const MAX_FEEDBACK_STATUSES: u16 = 8_192;

/// Bandwidth estimation over transport-wide feedback, as `rtc`'s TWCC sender and congestion
/// controller did: every packet numbered (one counter per connection) and recorded as it leaves,
/// the remote's feedback matched against the record, and GCC's estimate from the result.
pub(crate) struct Estimation {
    next_number: u16,
    history: SendLog,
    gcc: Gcc,
}

impl Estimation {
    /// GCC starting at `initial`, kept within `min..=max` (bits per second).
    pub(crate) fn new(initial: f64, min: f64, max: f64) -> Self {
        Self {
            next_number: 0,
            history: SendLog::default(),
            gcc: Gcc::new(initial, min, max),
        }
    }
}

/// Where the connection's own sealing stands.
enum Seal {
    /// No keys checked yet.
    Unchecked,
    /// A sender report went through `rtc`; the candidate contexts wait for its SRTCP (each with
    /// its profile and which half of the keys it is).
    Checking(Vec<(Context, ProtectionProfile, usize)>),
    /// The connection's own SRTP for what it sends.
    Sealing(Box<RtpCrypto>),
    /// No candidate opened what `rtc` sealed: `rtc`'s write path stays.
    Refused,
}

/// What [`OwnWrite::open_rtcp`] made of a datagram.
pub(crate) enum OpenedRtcp {
    /// Authenticated, first seen: its packets.
    Opened(Vec<Box<dyn rtc::rtcp::Packet>>),
    /// Authenticated, and to be dropped for the reason given: seen before, or older than the
    /// replay window (`rtc`, which may not have seen it the first time, would take it); feedback
    /// counting too many packets; or packets that do not parse.
    Refused(rtc::shared::error::Error),
    /// To be dropped, unauthenticated: its E flag says it is not encrypted, which WebRTC never
    /// sends and `rtc`'s AES-CM cipher takes without checking its authentication tag.
    Unencrypted,
    /// No keys yet, or it does not authenticate: `rtc`'s to refuse.
    Not,
}

impl OpenedRtcp {
    /// Whether the datagram authenticated with the keys it was opened with.
    pub(crate) fn authenticated(&self) -> bool {
        matches!(self, Self::Opened(_) | Self::Refused(_))
    }
}

/// Which SRTCP indexes of one sender were taken, and when the window was used last.
#[derive(Clone, Copy)]
struct RtcpWindow {
    window: ReplayWindow,
    last_used: u64,
}

impl RtcpWindow {
    /// Takes `index` if it is new and not too old.
    fn take(&mut self, index: u32) -> bool {
        let index = u64::from(index);
        if self.window.replayed(index) {
            return false;
        }
        self.window.take(index);
        true
    }
}

/// The remote's half of a connection's keys, for the SRTCP it sends: what the own write path
/// opens transport-wide feedback with, and the own read path the sender reports.
pub(crate) struct RemoteRtcp {
    /// Without a replay window of its own: `rtc`'s moves before a packet is authenticated.
    context: Box<Context>,
    /// What `context` is made from, to make it again (below).
    keys: crate::keytap::MasterKeys,
    /// The senders `context` was asked to open SRTCP of. It keeps state for each, made before
    /// the packet is authenticated and never forgotten, so past [`MAX_CONTEXT_SENDERS`] it is
    /// made afresh: it holds nothing the windows below do not (SRTCP carries its index).
    context_senders: crate::FastSet<u32>,
    windows: crate::FastMap<u32, RtcpWindow>,
    /// Packets taken, for which window was used last.
    taken: u64,
}

impl RemoteRtcp {
    /// The keys it opens with.
    pub(crate) fn keys(&self) -> &crate::keytap::MasterKeys {
        &self.keys
    }

    /// Opens what the remote seals with `keys`.
    pub(crate) fn new(keys: &crate::keytap::MasterKeys) -> Option<Self> {
        Some(Self {
            context: Box::new(keys.context().ok()?),
            keys: keys.clone(),
            context_senders: crate::FastSet::default(),
            windows: crate::FastMap::default(),
            taken: 0,
        })
    }

    /// Opens `datagram`, SRTCP from the remote. Each sender's replay window (64 indexes, as
    /// `rtc`'s) moves only for a packet that authenticated, and starts at the first such one:
    /// `rtc`'s moves on a packet's index before its tag is checked, so in a context fresh
    /// mid-session one forged packet with a high index made every genuine one look old.
    pub(crate) fn open(&mut self, datagram: &[u8]) -> OpenedRtcp {
        use rtc::shared::error::Error;
        let tag_len = match self.keys.profile() {
            ProtectionProfile::AeadAes128Gcm | ProtectionProfile::AeadAes256Gcm => 0,
            _ => 10,
        };
        let (Some(&[a, b, c, d]), Some(trailer)) = (
            datagram.get(4..8),
            crate::mux::srtcp_trailer(datagram, tag_len),
        ) else {
            return OpenedRtcp::Not;
        };
        let ssrc = u32::from_be_bytes([a, b, c, d]);
        if trailer >> 31 == 0 {
            return OpenedRtcp::Unencrypted;
        }
        if !self.context_senders.contains(&ssrc) {
            if self.context_senders.len() >= MAX_CONTEXT_SENDERS {
                let Ok(fresh) = self.keys.context() else {
                    return OpenedRtcp::Not;
                };
                *self.context = fresh;
                self.context_senders.clear();
            }
            self.context_senders.insert(ssrc);
        }
        let Ok(plain) = self.context.decrypt_rtcp(datagram) else {
            return OpenedRtcp::Not;
        };
        if !feedback_counts_within_bounds(&plain) {
            // Not read, nor handed to `rtc`, whose parser would walk it the same.
            return OpenedRtcp::Refused(Error::InvalidHeader);
        }
        let index = trailer & 0x7fff_ffff;
        self.taken += 1;
        let taken = self.taken;
        if !self.windows.contains_key(&ssrc) && self.windows.len() >= MAX_RTCP_SENDERS {
            let least_recent = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.last_used)
                .map(|(&ssrc, _)| ssrc);
            if let Some(least_recent) = least_recent {
                self.windows.remove(&least_recent);
            }
        }
        let window = self.windows.entry(ssrc).or_insert(RtcpWindow {
            window: ReplayWindow::at(u64::from(index)),
            last_used: taken,
        });
        window.last_used = taken;
        if !window.take(index) {
            return OpenedRtcp::Refused(Error::SrtcpSsrcDuplicated(ssrc, index as usize));
        }
        // What authenticated and does not parse is dropped here, as `rtc` would drop it.
        rtc::rtcp::packet::unmarshal(&mut plain.freeze()).map_or(
            OpenedRtcp::Refused(Error::InvalidHeader),
            OpenedRtcp::Opened,
        )
    }
}

/// One stream the connection sends.
struct Stream {
    ssrc: u32,
    clock_rate: u32,
    /// RTP packets and payload octets sent (RFC 3550 counters, wrapping).
    packets: u32,
    octets: u32,
    /// The RTP timestamp of the newest frame and when its first packet left.
    frame: Option<(u32, Instant)>,
    /// The last datagrams sealed here, by sequence number modulo [`HISTORY`].
    sent: Vec<Option<Sent>>,
    /// Its track was removed (the router may reuse the SSRC for another).
    removed: bool,
}

impl Stream {
    fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate,
            packets: 0,
            octets: 0,
            frame: None,
            sent: vec![None; HISTORY],
            removed: false,
        }
    }

    /// Its report, at `ntp_time` on the wall clock and `rtp_time` on its own.
    fn report(&self, ntp_time: u64, rtp_time: u32) -> SenderReport {
        SenderReport {
            ssrc: self.ssrc,
            ntp_time,
            rtp_time,
            packet_count: self.packets,
            octet_count: self.octets,
            ..SenderReport::default()
        }
    }
}

/// A datagram as it left, kept for NACKs.
#[derive(Clone)]
struct Sent {
    seq: u16,
    kept: Kept,
    /// Its transport-wide number and its size before sealing, when the connection estimates.
    numbered: Option<(u16, usize)>,
    resends: Resends,
}

/// How a [`Sent`] datagram is made again.
#[derive(Clone)]
enum Kept {
    /// What [`lay_out`] wrote it from, to be laid out and sealed again at its index
    /// ([`RtpCrypto::reseal`], which keeps it only if its tag is the one it left with), as the
    /// caller asks ([`Keep::Parts`](crate::Keep::Parts): large fan-outs). The payload is the
    /// forwarded packet's, shared with the other subscribers' copies: a copy of each sealed
    /// datagram was a write of ≈1.2 KB into memory gone cold since the slot's last packet, per
    /// packet and subscriber.
    Plain(Plain),
    /// A copy of the datagram, in a buffer the slot keeps for the next copy: as the caller asks
    /// ([`Keep::Copy`](crate::Keep::Copy): 1:1 rooms and small groups, and in large fan-outs
    /// each packet's first copy and copies whose VP8 descriptor was rewritten), and for packets
    /// [`Plain`] cannot describe (CSRCs) or [`lay_out`] does not write (other extensions).
    Copy(Vec<u8>),
}

/// The parts of a packet [`lay_out`] wrote its datagram from, and how it was sealed.
#[derive(Clone)]
struct Plain {
    version: u8,
    padding: bool,
    marker: bool,
    payload_type: u8,
    timestamp: u32,
    payload: Bytes,
    /// The transport-wide number's extension id, when it carried one.
    twcc_id: Option<u8>,
    /// Its SRTP index, and its tag.
    index: u64,
    tag: [u8; 16],
}

/// The own write path of one connection (see the module's text).
pub(crate) struct OwnWrite {
    keys: Arc<KeyTap>,
    seal: Seal,
    streams: Vec<Stream>,
    /// Sealed datagrams to hand out.
    out: VecDeque<Bytes>,
    /// Wall clock against `now`, for the reports' NTP timestamps (taken at the first packet).
    baseline: Option<SystemInstant>,
    next_report: Option<Instant>,
    /// Reports go out with the next packet (the connection connected again).
    report_soon: bool,
    estimation: Option<Estimation>,
    /// The remote's half of the keys, once the check found the connection's own: it opens the
    /// remote's SRTCP ([`open_rtcp`](Self::open_rtcp)).
    remote: Option<RemoteRtcp>,
    /// NACK answers sealed again from the parts kept (not copies), since the last
    /// [`take_resealed`](Self::take_resealed).
    resealed: u64,
    /// NACK answers the connection may still send, in halves ([`ResendBudget`]).
    resend_budget: ResendBudget,
}

/// How many NACK answers a connection may send: one for every two packets it sent, up to
/// [`RESEND_BURST`] at once. Each packet goes again at most [`MAX_RESENDS`] times, but NACKs
/// naming every stream's history over and over (64 streams of 64 packets in one datagram of
/// 1.8 KB) still made 4 096 resends, some 5 MB (review helper-104). A link losing a tenth of
/// what it gets uses a fifth of the budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResendBudget {
    halves: u32,
}

/// NACK answers a connection may send at once, from a budget filled by what it sent.
const RESEND_BURST: u32 = 256;

impl Default for ResendBudget {
    fn default() -> Self {
        Self {
            halves: 2 * RESEND_BURST,
        }
    }
}

impl ResendBudget {
    /// A packet was sent for the first time.
    pub(crate) fn sent(&mut self) {
        self.halves = (self.halves + 1).min(2 * RESEND_BURST);
    }

    /// Whether one may be sent again now (taking it from the budget).
    pub(crate) fn take(&mut self) -> bool {
        let Some(left) = self.halves.checked_sub(2) else {
            return false;
        };
        self.halves = left;
        true
    }
}

impl OwnWrite {
    /// With `estimation`, it numbers packets and estimates the bandwidth from the feedback.
    pub(crate) fn new(keys: Arc<KeyTap>, estimation: Option<Estimation>) -> Self {
        Self {
            estimation,
            keys,
            seal: Seal::Unchecked,
            streams: Vec::new(),
            out: VecDeque::new(),
            baseline: None,
            next_report: None,
            report_soon: false,
            remote: None,
            resealed: 0,
            resend_budget: ResendBudget::default(),
        }
    }

    /// A local stream, sending with `clock_rate` (its counters continue when an SSRC is reused).
    /// When [`MAX_STREAMS`] are kept, a removed one makes room; with none removed, the new stream
    /// goes without reports and NACK answers.
    pub(crate) fn add_stream(&mut self, ssrc: u32, clock_rate: u32) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            stream.removed = false;
            stream.clock_rate = clock_rate;
        } else if self.streams.len() < MAX_STREAMS {
            self.streams.push(Stream::new(ssrc, clock_rate));
        } else if let Some(place) = self.streams.iter_mut().find(|s| s.removed) {
            *place = Stream::new(ssrc, clock_rate);
        } else {
            tracing::warn!(
                "a connection sends more than {MAX_STREAMS} streams: a new one goes without \
                 sender reports and NACK answers"
            );
        }
    }

    /// The stream `ssrc` stopped (its track removed): no more reports on it until it sends again
    /// (a reused SSRC continues its counters), and its place may go to a new stream.
    pub(crate) fn pause_reports(&mut self, ssrc: u32) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            stream.frame = None;
            stream.removed = true;
            // Its browser no longer has the track: nothing to answer a NACK for.
            stream.sent.iter_mut().for_each(|slot| *slot = None);
        }
    }

    /// Sends reports with the next packet (see [`take_report_soon`](Self::take_report_soon)).
    pub(crate) fn report_soon(&mut self) {
        self.report_soon = true;
    }

    /// Whether reports were asked for since the last call: the connection connected again (an
    /// ICE restart), and a report written through `rtc` goes to its selected pair, which the own
    /// datagrams then follow.
    pub(crate) fn take_report_soon(&mut self) -> bool {
        std::mem::take(&mut self.report_soon) && self.sealing()
    }

    /// Whether the keys must be checked now: they were exported and nothing checked them yet.
    /// The caller then writes [`reports`](Self::reports) through `rtc` and shows what `rtc` sends
    /// to [`check`](Self::check). Once the connection `connected`, its DTLS handshake exported
    /// the keys: none in the tap then means it missed them (`rtc` derived them another way), and
    /// they are refused, so that `rtc`'s path carries the media rather than nothing.
    pub(crate) fn wants_check(&mut self, connected: bool) -> bool {
        if !matches!(self.seal, Seal::Unchecked) {
            return false;
        }
        let mut candidates = Vec::new();
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            for (half, keys) in self.keys.keys(profile).into_iter().flatten().enumerate() {
                if let Ok(context) = keys.context() {
                    candidates.push((context, profile, half));
                }
            }
        }
        if candidates.is_empty() {
            if connected {
                tracing::warn!(
                    "the connection's SRTP keys were not seen as DTLS exported them: rtc's write \
                     path stays, without bandwidth estimation"
                );
                self.seal = Seal::Refused;
            }
            return false;
        }
        self.seal = Seal::Checking(candidates);
        true
    }

    /// The keys were checked and refused: `rtc`'s path carries the connection's media.
    pub(crate) fn refused(&self) -> bool {
        matches!(self.seal, Seal::Refused)
    }

    /// A sender report on `packet`'s stream, to write through `rtc` for the key check: its
    /// counters if the stream is tracked, none otherwise (its SSRC is all the check needs).
    pub(crate) fn check_report(&self, now: Instant, packet: &rtc::rtp::Packet) -> SenderReport {
        let ssrc = packet.header.ssrc;
        let ntp_time = self
            .baseline
            .unwrap_or_else(|| SystemInstant::now(now))
            .ntp(now);
        match self.streams.iter().find(|s| s.ssrc == ssrc) {
            Some(stream) => stream.report(ntp_time, packet.header.timestamp),
            None => SenderReport {
                ssrc,
                ntp_time,
                rtp_time: packet.header.timestamp,
                ..SenderReport::default()
            },
        }
    }

    /// The check's report went out and nothing `rtc` sent settled it (or it was not written): the
    /// next packet tries again.
    pub(crate) fn check_again(&mut self) {
        if matches!(self.seal, Seal::Checking(_)) {
            self.seal = Seal::Unchecked;
        }
    }

    /// A datagram `rtc` sends on the connection: while the keys are being checked, an SRTCP
    /// packet (RFC 7983: first byte 128–191, packet type 192–223) that one candidate opens makes
    /// that candidate the connection's own; one that none opens refuses them all.
    pub(crate) fn check(&mut self, datagram: &[u8]) {
        let Seal::Checking(candidates) = &mut self.seal else {
            return;
        };
        if !crate::mux::is_rtcp(datagram) {
            return;
        }
        let opened = candidates
            .iter_mut()
            .position(|(c, _, _)| c.decrypt_rtcp(datagram).is_ok());
        let found = opened
            .map(|i| candidates.swap_remove(i))
            .and_then(|(_, profile, half)| {
                let keys = self.keys.keys(profile)?;
                let [first, second] = &keys;
                let own = if half == 0 { first } else { second };
                let crypto = RtpCrypto::new(own, false).ok()?;
                Some((crypto, profile, half))
            });
        self.seal = match found {
            Some((crypto, profile, half)) => {
                // The other half of the same keys is the remote's: what it sends opens with it.
                self.remote = self
                    .keys
                    .keys(profile)
                    .and_then(|keys| keys.into_iter().nth(1 - half))
                    .and_then(|keys| RemoteRtcp::new(&keys));
                Seal::Sealing(Box::new(crypto))
            }
            None => {
                tracing::warn!(
                    "the connection's SRTP keys opened nothing rtc sealed: rtc's write path stays, \
                     without bandwidth estimation"
                );
                Seal::Refused
            }
        };
    }

    /// Opens `datagram`, SRTCP from the remote, with the remote's half of the keys.
    pub(crate) fn open_rtcp(&mut self, datagram: &[u8]) -> OpenedRtcp {
        self.remote
            .as_mut()
            .map_or(OpenedRtcp::Not, |remote| remote.open(datagram))
    }

    /// Whether the sealing context would refuse `packet` (a copy of one sealed before, one too
    /// old, a stream too many): asked before the packet is counted and numbered, so a refused one
    /// leaves no gap in the transport-wide numbers for the remote to report as a loss.
    pub(crate) fn check_seal(
        &self,
        packet: &rtc::rtp::Packet,
    ) -> Result<(), rtc::shared::error::Error> {
        match &self.seal {
            Seal::Sealing(crypto) => {
                crypto.check(packet.header.ssrc, packet.header.sequence_number)
            }
            _ => Ok(()),
        }
    }

    /// Whether the keys were checked and it seals.
    pub(crate) fn sealing(&self) -> bool {
        matches!(self.seal, Seal::Sealing(_))
    }

    /// Counts `packet`, about to leave on either path, for the sender reports.
    pub(crate) fn count(&mut self, now: Instant, packet: &rtc::rtp::Packet) {
        self.baseline.get_or_insert_with(|| SystemInstant::now(now));
        self.next_report.get_or_insert(now + REPORT_INTERVAL);
        let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.ssrc == packet.header.ssrc)
        else {
            return;
        };
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(packet.payload.len() as u32);
        // Only a later frame moves the clock the reports are written from: a late repair's or
        // a reordered packet's older timestamp would set them back by its lateness (review
        // helper-74).
        let timestamp = packet.header.timestamp;
        if stream
            .frame
            .is_none_or(|(t, _)| timestamp.wrapping_sub(t) as i32 > 0)
        {
            stream.frame = Some((timestamp, now));
        }
    }

    /// Seals `packet` and queues it, when the keys are checked (`Ok(false)` otherwise: `rtc`'s
    /// path takes it). When the connection estimates, the packet first gets its transport-wide
    /// number under the negotiated extension `twcc_id`, and is recorded as it leaves at `now`.
    pub(crate) fn seal(
        &mut self,
        now: Instant,
        packet: &mut rtc::rtp::Packet,
        twcc_id: Option<u8>,
        keep: crate::Keep,
    ) -> Result<bool, rtc::shared::error::Error> {
        let Seal::Sealing(crypto) = &mut self.seal else {
            return Ok(false);
        };
        let mut numbered = None;
        if let Some(estimation) = &mut self.estimation
            && let Some(id) = twcc_id
        {
            let number = estimation.next_number;
            estimation.next_number = number.wrapping_add(1);
            numbered = Some((id, number));
        }
        let laid_out = lay_out(packet, numbered, crypto.tag_len());
        let again =
            keep == crate::Keep::Parts && laid_out.is_some() && packet.header.csrc.is_empty();
        let (mut datagram, header_len) = match laid_out {
            Some(laid_out) => laid_out,
            None => marshal_for_sealing(packet, numbered, crypto.tag_len())?,
        };
        let written = datagram.len();
        let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
        let index = crypto.seal(&mut datagram, header_len, ssrc, seq)?;
        let twcc_id = numbered.map(|(id, _)| id);
        let numbered = numbered.map(|(_, number)| (number, written));
        if let (Some(estimation), Some((number, size))) = (&mut self.estimation, numbered) {
            estimation.history.add(ssrc, seq, number, size, now);
        }
        // A late repair (up to 1024 behind: `srtp::SEAL_REACH`) keeps no slot of a packet sent
        // after it: the NACKs that can still be answered are for the newest 64.
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc)
            && let Some(slot) = stream.sent.get_mut(usize::from(seq) % HISTORY)
            && slot
                .as_ref()
                .is_none_or(|kept| seq.wrapping_sub(kept.seq) as i16 > 0)
        {
            let kept = if again {
                let mut tag = [0; 16];
                let sealed = datagram.get(written..).unwrap_or_default();
                if let Some(place) = tag.get_mut(..sealed.len()) {
                    place.copy_from_slice(sealed);
                }
                let header = &packet.header;
                Kept::Plain(Plain {
                    version: header.version,
                    padding: header.padding,
                    marker: header.marker,
                    payload_type: header.payload_type,
                    timestamp: header.timestamp,
                    payload: packet.payload.clone(),
                    twcc_id,
                    index,
                    tag,
                })
            } else {
                let mut copy = match slot.take().map(|sent| sent.kept) {
                    Some(Kept::Copy(buffer)) => buffer,
                    _ => Vec::new(),
                };
                copy.clear();
                copy.extend_from_slice(&datagram);
                Kept::Copy(copy)
            };
            *slot = Some(Sent {
                seq,
                kept,
                numbered,
                resends: Resends::default(),
            });
        }
        self.out.push_back(Bytes::from(datagram));
        self.resend_budget.sent();
        Ok(true)
    }

    /// Transport-wide feedback from the remote at `now`: the estimate it leads to, when it
    /// changed.
    pub(crate) fn feedback(&mut self, now: Instant, feedback: &TransportLayerCc) -> Option<u64> {
        let estimation = self.estimation.as_mut()?;
        if !within_bounds(feedback) {
            return None;
        }
        let before = estimation.gcc.target_bitrate();
        for acknowledgement in convert_twcc(feedback) {
            estimation.history.acknowledge(acknowledgement);
        }
        let reports = estimation.history.take_reports();
        estimation.gcc.on_reports(now, &reports);
        let after = estimation.gcc.target_bitrate();
        // A float cast saturates: NaN becomes 0 and infinity the largest value.
        (after != before).then_some(after as u64)
    }

    /// Lets the estimator's timers run and forgets packets no feedback mentioned in time.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(estimation) = &mut self.estimation {
            estimation
                .history
                .prune_before(now.checked_sub(PRUNE_HORIZON).unwrap_or(now));
            estimation.gcc.handle_timeout(now);
        }
    }

    /// Queues again, as they first left, the datagrams `nack` names that are still kept. Each
    /// is recorded in the send history again under its transport-wide number (as `rtc`'s
    /// congestion controller saw the resender's; SFU-MEDIA.md, "Loss").
    pub(crate) fn resend(&mut self, now: Instant, nack: &TransportLayerNack) -> usize {
        let Seal::Sealing(crypto) = &self.seal else {
            return 0;
        };
        let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == nack.media_ssrc) else {
            return 0;
        };
        let ssrc = stream.ssrc;
        // Each slot at most once per NACK, however often it names a number: the history once at
        // most (`HISTORY` is 64). And each packet at most [`MAX_RESENDS`] times, not twice within
        // [`RESEND_GAP`]: a datagram of 70 NACKs naming the whole history was otherwise answered
        // 4 500 times, some 5 MB for 2 KB (review helper-103).
        let (mut answered, mut resent) = (0u64, 0);
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                let slot = usize::from(seq) % HISTORY;
                let bit = 1u64 << slot;
                let Some(Some(sent)) = stream.sent.get_mut(slot) else {
                    continue;
                };
                if sent.seq != seq || answered & bit != 0 {
                    continue;
                }
                answered |= bit;
                if !sent.resends.allowed(now) {
                    continue;
                }
                if !self.resend_budget.take() {
                    return resent;
                }
                sent.resends.note(now);
                let datagram = match &sent.kept {
                    Kept::Copy(datagram) => Bytes::copy_from_slice(datagram),
                    Kept::Plain(plain) => {
                        match again(crypto, ssrc, sent.seq, plain, sent.numbered) {
                            Ok(datagram) => {
                                self.resealed += 1;
                                datagram
                            }
                            Err(error) => {
                                // Never expected: the parts kept are the ones the datagram was laid
                                // out from. Once per NACK.
                                tracing::warn!(%error, ssrc, seq, "a NACKed packet did not seal again as it left");
                                return resent;
                            }
                        }
                    }
                };
                if let (Some(estimation), Some((number, size))) =
                    (&mut self.estimation, sent.numbered)
                {
                    estimation.history.add_again(ssrc, seq, number, size, now);
                }
                self.out.push_back(datagram);
                resent += 1;
            }
        }
        resent
    }

    /// Forgets the datagrams kept of stream `ssrc`: it is paused, and a receiver asks for the
    /// packets it lost just before a pause once the stream resumes (the first packet after it
    /// shows the gap; 53 of them in a run of the Chromium test of two paused cameras,
    /// 2026-12-06). Answered, those resends of a picture long gone crowd the link at the moment
    /// a probe is judged on it, and count as its repairs: 124 % of what the resumed layer had
    /// sent, at its first report in one run. A resumed stream starts at a key frame.
    pub(crate) fn forget_sent(&mut self, ssrc: u32) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            stream.sent.iter_mut().for_each(|slot| *slot = None);
        }
    }

    /// How many NACK answers were sealed again from the parts kept since the last call.
    pub(crate) fn take_resealed(&mut self) -> u64 {
        std::mem::take(&mut self.resealed)
    }

    /// The next sealed datagram to send.
    pub(crate) fn poll_datagram(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// When the next sender reports are due, or the estimator wants to run.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let estimator = self.estimation.as_ref().and_then(|e| e.gcc.poll_timeout());
        match (self.next_report, estimator) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The round trip a receiver report arriving at `now` gives: it names the last of this
    /// connection's sender reports it had (`last_sender_report`, the middle 32 bits of its NTP
    /// time) and the delay since (`delay`, in 1/65536 s). `None` before any report went, for a
    /// block naming none, and for one that gives less than nothing or more than a minute (not one
    /// of these reports).
    pub(crate) fn round_trip(
        &self,
        now: Instant,
        last_sender_report: u32,
        delay: u32,
    ) -> Option<Duration> {
        let baseline = self.baseline?;
        if last_sender_report == 0 {
            return None;
        }
        let compact = (baseline.ntp(now) >> 16) as u32;
        let units = compact.wrapping_sub(last_sender_report).wrapping_sub(delay);
        (units <= 60 << 16).then(|| Duration::from_micros((u64::from(units) * 1_000_000) >> 16))
    }

    /// The sender reports due at `now` (every stream that sent; all of them when `force`).
    pub(crate) fn reports(&mut self, now: Instant, force: bool) -> Vec<SenderReport> {
        if !force && self.next_report.is_none_or(|at| at > now) {
            return Vec::new();
        }
        self.next_report = Some(now + REPORT_INTERVAL);
        let Some(baseline) = self.baseline else {
            return Vec::new();
        };
        self.streams
            .iter()
            .filter_map(|s| {
                let (timestamp, at) = s.frame?;
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let ticks = (elapsed * f64::from(s.clock_rate)) as u32;
                Some(s.report(baseline.ntp(now), timestamp.wrapping_add(ticks)))
            })
            .collect()
    }
}

impl std::fmt::Debug for OwnWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seal = match self.seal {
            Seal::Unchecked => "unchecked",
            Seal::Checking(_) => "checking",
            Seal::Sealing(_) => "sealing",
            Seal::Refused => "refused",
        };
        // Never the keys.
        f.debug_struct("OwnWrite")
            .field("seal", &seal)
            .field("streams", &self.streams.len())
            .field("out", &self.out.len())
            .finish_non_exhaustive()
    }
}

/// The datagram packet `seq` of stream `ssrc` left as, made again from the parts `plain` kept
/// and its transport-wide number (`numbered`): laid out and sealed at its index, and kept only
/// if it is the same (see [`Kept`]).
fn again(
    crypto: &RtpCrypto,
    ssrc: u32,
    seq: u16,
    plain: &Plain,
    numbered: Option<(u16, usize)>,
) -> Result<Bytes, rtc::shared::error::Error> {
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: plain.version,
            padding: plain.padding,
            marker: plain.marker,
            payload_type: plain.payload_type,
            sequence_number: seq,
            timestamp: plain.timestamp,
            ssrc,
            ..Default::default()
        },
        payload: plain.payload.clone(),
    };
    let twcc = plain.twcc_id.zip(numbered.map(|(number, _)| number));
    let (mut datagram, header_len) = lay_out(&packet, twcc, crypto.tag_len())
        .ok_or(rtc::shared::error::Error::ErrTooShortRtp)?;
    let tag = plain
        .tag
        .get(..crypto.tag_len())
        .ok_or(rtc::shared::error::Error::ErrFailedToVerifyAuthTag)?;
    crypto.reseal(&mut datagram, header_len, ssrc, plain.index, tag)?;
    Ok(Bytes::from(datagram))
}

/// `packet` laid out as RTP in a vector with room for an SRTP tag of `tag_len` bytes after it
/// (exactly: a full vector becomes `Bytes` without another allocation), and the length of its
/// header. Its one header extension is the transport-wide sequence number when `twcc` (the
/// negotiated id, the number) is given, in the one-byte form (RFC 8285 §4.2), as `rtc` writes it.
/// `None` for what this does not lay out: a packet that still carries other extensions (or says
/// it does), more than 15 CSRCs, or an id outside the one-byte form's 1..=14
/// ([`marshal_for_sealing`] takes those; the SFU picks the id from that range).
/// `rtc`'s marshalling needs the number as a header extension first: two allocations a packet.
fn lay_out(
    packet: &rtc::rtp::Packet,
    twcc: Option<(u8, u16)>,
    tag_len: usize,
) -> Option<(Vec<u8>, usize)> {
    let header = &packet.header;
    let csrcs = u8::try_from(header.csrc.len()).ok().filter(|n| *n <= 15)?;
    if header.extension
        || !header.extensions.is_empty()
        || header.extensions_padding != 0
        || twcc.is_some_and(|(id, _)| !(1..=14).contains(&id))
    {
        return None;
    }
    // As `rtc` pads: to a multiple of four bytes, by four when the payload already is one.
    let padding = if header.padding {
        4 - packet.payload.len() % 4
    } else {
        0
    };
    let header_len = 12 + 4 * usize::from(csrcs) + if twcc.is_some() { 8 } else { 0 };
    let mut datagram = Vec::with_capacity(header_len + packet.payload.len() + padding + tag_len);
    datagram.push(
        header.version << 6 | u8::from(header.padding) << 5 | u8::from(twcc.is_some()) << 4 | csrcs,
    );
    datagram.push(u8::from(header.marker) << 7 | header.payload_type);
    datagram.extend_from_slice(&header.sequence_number.to_be_bytes());
    datagram.extend_from_slice(&header.timestamp.to_be_bytes());
    datagram.extend_from_slice(&header.ssrc.to_be_bytes());
    for csrc in &header.csrc {
        datagram.extend_from_slice(&csrc.to_be_bytes());
    }
    if let Some((id, number)) = twcc {
        // The one-byte profile, one word of elements: the id with a length of 2 (written as 1),
        // the number, a byte of padding.
        let [high, low] = number.to_be_bytes();
        datagram.extend_from_slice(&[0xbe, 0xde, 0, 1, id << 4 | 1, high, low, 0]);
    }
    datagram.extend_from_slice(&packet.payload);
    if let Some(last) = padding.checked_sub(1) {
        datagram.resize(datagram.len() + last, 0);
        datagram.push(padding as u8);
    }
    Some((datagram, header_len))
}

/// Whether the transport-wide feedback reports in `compound` (plain RTCP) give statuses for
/// [`MAX_FEEDBACK_STATUSES`] packets at most, all together. Read off the headers before the
/// compound is parsed: `rtc`'s parser makes an arrival time for each packet a report counts as
/// arrived before it finds the report too short for them (65 535 of them from a few bytes), and
/// a datagram holds some 80 reports, each of which [`within_bounds`] alone would let count
/// 8 192 (review helper-103).
fn feedback_counts_within_bounds(compound: &[u8]) -> bool {
    let mut rest = compound;
    let mut statuses = 0usize;
    while let [first, packet_type, high, low, ..] = *rest {
        // Transport-wide feedback: RTPFB (205) with FMT 15; the count after four 32-bit words
        // less the base number's 16 bits.
        if packet_type == 205 && first & 0x1f == 15 {
            let Some(&[a, b]) = rest.get(14..16) else {
                return false;
            };
            statuses += usize::from(u16::from_be_bytes([a, b]));
            if statuses > usize::from(MAX_FEEDBACK_STATUSES) {
                return false;
            }
        }
        let len = 4 * (usize::from(u16::from_be_bytes([high, low])) + 1);
        let Some(next) = rest.get(len..) else {
            // What does not parse is the parser's to refuse.
            return true;
        };
        rest = next;
    }
    true
}

/// Whether `feedback` gives statuses for at most [`MAX_FEEDBACK_STATUSES`] packets, and its
/// chunks describe no more than it counts, but for the unused symbols of a last status vector
/// (at most 13). A report that does not is not read.
fn within_bounds(feedback: &TransportLayerCc) -> bool {
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::PacketStatusChunk;
    let count = feedback.packet_status_count;
    if count > MAX_FEEDBACK_STATUSES {
        return false;
    }
    let mut described = 0usize;
    for chunk in &feedback.packet_chunks {
        described += match chunk {
            PacketStatusChunk::RunLengthChunk(run) => usize::from(run.run_length),
            PacketStatusChunk::StatusVectorChunk(vector) => vector.symbol_list.len(),
        };
        if described > usize::from(count) + 13 {
            return false;
        }
    }
    true
}

/// What [`lay_out`] does, through `rtc`'s marshalling, for any packet.
fn marshal_for_sealing(
    packet: &mut rtc::rtp::Packet,
    twcc: Option<(u8, u16)>,
    tag_len: usize,
) -> Result<(Vec<u8>, usize), rtc::shared::error::Error> {
    if let Some((id, number)) = twcc {
        let extension = TransportCcExtension {
            transport_sequence: number,
        }
        .marshal()?;
        packet.header.set_extension(id, extension.freeze())?;
    }
    // The header's length is read from what was written: the header's own idea of its size
    // counts a stale `extensions_padding` that `marshal_to` does not write.
    let size = packet.marshal_size();
    let mut datagram = Vec::with_capacity(size + tag_len);
    datagram.resize(size, 0);
    let written = packet.marshal_to(&mut datagram)?;
    datagram.truncate(written);
    let header_len =
        crate::srtp::header_len(&datagram).ok_or(rtc::shared::error::Error::ErrTooShortRtp)?;
    Ok((datagram, header_len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use crate::Keep;
    use crate::keytap::MasterKeys;
    use rtc::shared::marshal::Unmarshal;

    fn packet(ssrc: u32, seq: u16, timestamp: u32, payload: usize) -> rtc::rtp::Packet {
        let mut packet = rtc::rtp::Packet::default();
        packet.header.ssrc = ssrc;
        packet.header.sequence_number = seq;
        packet.header.timestamp = timestamp;
        packet.payload = Bytes::from(vec![0; payload]);
        packet
    }

    #[test]
    fn packets_are_laid_out_byte_for_byte_as_rtc_marshals_them() {
        let mut cases = 0;
        for payload_len in [0, 1, 2, 3, 4, 5, 1_180] {
            for csrcs in [0, 1, 15] {
                for padding in [false, true] {
                    for twcc in [None, Some((1, 0)), Some((5, 0xbeef)), Some((14, 65_535))] {
                        let mut packet = packet(0x1234_5678, 65_535, 0xdead_beef, 0);
                        packet.header.version = 2;
                        packet.header.marker = payload_len % 2 == 1;
                        packet.header.payload_type = 111;
                        packet.header.padding = padding;
                        packet.header.csrc = (0..csrcs).map(|n| 1_000 + n).collect();
                        packet.payload = (0..payload_len).map(|n| n as u8).collect();
                        let (laid_out, header_len) = lay_out(&packet, twcc, 16).unwrap();
                        let (marshalled, rtc_header_len) =
                            marshal_for_sealing(&mut packet, twcc, 16).unwrap();
                        assert_eq!(
                            laid_out, marshalled,
                            "{payload_len} {csrcs} {padding} {twcc:?}"
                        );
                        assert_eq!(header_len, rtc_header_len);
                        assert_eq!(laid_out.capacity(), laid_out.len() + 16, "room for the tag");
                        // It reads back as the packet it was, numbered.
                        let read = rtc::rtp::Packet::unmarshal(&mut laid_out.as_slice()).unwrap();
                        assert_eq!(read.payload, packet.payload);
                        assert_eq!(read.header.csrc, packet.header.csrc);
                        if let Some((id, number)) = twcc {
                            let value = read.header.get_extension(id).unwrap();
                            assert_eq!(value.as_ref(), number.to_be_bytes());
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 7 * 3 * 2 * 4);
    }

    #[test]
    fn what_the_own_layout_does_not_cover_goes_to_rtcs_marshalling() {
        let mut with_extension = packet(1, 2, 3, 10);
        with_extension
            .header
            .set_extension(3, Bytes::from_static(&[9]))
            .unwrap();
        assert!(lay_out(&with_extension, None, 16).is_none());
        let plain = packet(1, 2, 3, 10);
        assert!(
            lay_out(&plain, Some((15, 1)), 16).is_none(),
            "15 ends the elements"
        );
        assert!(
            lay_out(&plain, Some((0, 1)), 16).is_none(),
            "id 0 is padding"
        );
        let mut many = packet(1, 2, 3, 10);
        many.header.csrc = vec![7; 16];
        assert!(lay_out(&many, None, 16).is_none());
        let mut flagged = packet(1, 2, 3, 10);
        flagged.header.extension = true;
        assert!(
            lay_out(&flagged, None, 16).is_none(),
            "an empty block rtc writes"
        );
    }

    #[test]
    fn reports_count_what_was_sent_and_extrapolate_the_rtp_clock() {
        let start = Instant::now();
        let mut own = OwnWrite::new(KeyTap::new(), None);
        own.add_stream(7, 90_000);
        own.add_stream(8, 48_000);
        // Two packets of one frame, then the next frame 100 ms later; stream 8 never sends.
        own.count(start, &packet(7, 1, 1_000, 1_000));
        own.count(start, &packet(7, 2, 1_000, 500));
        own.count(
            start + Duration::from_millis(100),
            &packet(7, 3, 10_000, 200),
        );
        // A late repair of the first frame leaves the clock at the newest frame.
        own.count(start + Duration::from_millis(300), &packet(7, 0, 1_000, 0));
        assert!(
            own.reports(start + Duration::from_millis(500), false)
                .is_empty(),
            "not due"
        );
        assert_eq!(own.poll_timeout(), Some(start + REPORT_INTERVAL));
        let at = start + Duration::from_millis(1_100);
        let reports = own.reports(at, false);
        assert_eq!(reports.len(), 1, "only the stream that sent");
        let report = &reports[0];
        assert_eq!(
            (report.ssrc, report.packet_count, report.octet_count),
            (7, 4, 1_700)
        );
        // 1 s after the newest frame's first packet, at 90 kHz.
        assert_eq!(report.rtp_time, 10_000 + 90_000);
        assert_eq!(own.poll_timeout(), Some(at + REPORT_INTERVAL));
        // A removed track's stream goes unreported until it sends again, its counters kept.
        own.pause_reports(7);
        assert!(own.reports(at, true).is_empty());
        own.count(at, &packet(7, 4, 20_000, 100));
        let reports = own.reports(at, true);
        assert_eq!((reports[0].packet_count, reports[0].rtp_time), (5, 20_000));
    }

    #[test]
    fn a_late_repair_is_sealed_and_leaves_the_history_of_the_packets_after_it() {
        let (mut own, mut open) = sealing(None);
        let now = Instant::now();
        let seal = |own: &mut OwnWrite, seq: u16| {
            let mut sent = packet(7, seq, 0, 50);
            sent.payload = vec![seq as u8; 50].into();
            assert!(own.seal(now, &mut sent, None, Keep::Copy).unwrap(), "{seq}");
            own.poll_datagram().unwrap()
        };
        for seq in (100..=200).filter(|&seq| seq != 120) {
            seal(&mut own, seq);
        }
        // 120's repair from the publisher, 80 behind the newest: it leaves.
        let late = seal(&mut own, 120);
        let plain = open.decrypt_rtp(&late).unwrap();
        let opened = rtc::rtp::Packet::unmarshal(&mut &plain[..]).unwrap();
        assert_eq!(opened.header.sequence_number, 120);
        // 184, in the history slot 120 would take, is still there for a NACK.
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: vec![
                rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                    packet_id: 184,
                    lost_packets: 0,
                },
            ],
        };
        assert_eq!(own.resend(now, &nack), 1);
        let again = own.poll_datagram().unwrap();
        let plain = open.decrypt_rtp(&again).unwrap();
        let opened = rtc::rtp::Packet::unmarshal(&mut &plain[..]).unwrap();
        assert_eq!(
            (opened.header.sequence_number, opened.payload[0]),
            (184, 184)
        );
    }

    /// An `OwnWrite` sealing with fixed keys, and a context with the same keys to open what it
    /// sealed.
    fn sealing(estimation: Option<Estimation>) -> (OwnWrite, Context) {
        sealing_under(ProtectionProfile::AeadAes128Gcm, estimation)
    }

    /// [`sealing`] under `profile`.
    fn sealing_under(
        profile: ProtectionProfile,
        estimation: Option<Estimation>,
    ) -> (OwnWrite, Context) {
        let salt: &[u8] = match profile {
            ProtectionProfile::AeadAes128Gcm => &[9; 12],
            _ => &[9; 14],
        };
        let context = || {
            Context::new(
                &[7; 16],
                salt,
                profile,
                None,
                None,
                &rtc::crypto::providers::RingCrypto,
            )
            .unwrap()
        };
        let mut own = OwnWrite::new(KeyTap::new(), estimation);
        let keys = MasterKeys::new(profile, &[7; 16], salt);
        own.seal = Seal::Sealing(Box::new(RtpCrypto::new(&keys, false).unwrap()));
        own.add_stream(7, 90_000);
        (own, context())
    }

    #[test]
    fn nacks_over_every_stream_get_one_resend_for_every_two_packets_sent() {
        let (mut own, _) = sealing_under(ProtectionProfile::AeadAes128Gcm, None);
        let now = Instant::now();
        // Eight streams of 64 packets: a full budget.
        for ssrc in 1..=8 {
            own.add_stream(ssrc, 90_000);
            for seq in 0..64 {
                let mut sent = packet(ssrc, seq, 0, 50);
                sent.header.version = 2;
                assert!(own.seal(now, &mut sent, None, Keep::Copy).unwrap());
            }
        }
        while own.poll_datagram().is_some() {}
        let everything = |ssrc| TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: ssrc,
            nacks: (0..4)
                .map(
                    |i| rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                        packet_id: 16 * i,
                        lost_packets: 0xffff,
                    },
                )
                .collect(),
        };
        // 512 packets asked for, each may go again: the burst of 256 goes.
        let resent: usize = (1..=8).map(|ssrc| own.resend(now, &everything(ssrc))).sum();
        assert_eq!(resent, RESEND_BURST as usize);
        // Then one for every two packets sent.
        for seq in 64..84 {
            let mut sent = packet(1, seq, 0, 50);
            sent.header.version = 2;
            assert!(own.seal(now, &mut sent, None, Keep::Copy).unwrap());
        }
        let later = now + RESEND_GAP;
        let resent: usize = (1..=8)
            .map(|ssrc| own.resend(later, &everything(ssrc)))
            .sum();
        assert_eq!(resent, 10);
    }

    #[test]
    fn a_datagram_of_feedback_counting_too_many_packets_in_all_is_refused_unread() {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
        };
        let keys = MasterKeys::new(ProtectionProfile::Aes128CmHmacSha1_80, &[3; 16], &[4; 14]);
        let mut remote = RemoteRtcp::new(&keys).unwrap();
        let mut sender = keys.context().unwrap();
        let report = |count: u16| {
            TransportLayerCc {
                sender_ssrc: 1,
                media_ssrc: 2,
                base_sequence_number: 0,
                packet_status_count: count,
                reference_time: 0,
                fb_pkt_count: 0,
                packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketNotReceived,
                    run_length: count,
                })],
                recv_deltas: Vec::new(),
            }
            .marshal()
            .unwrap()
        };
        let mut compound = |reports: usize, count| {
            let report = report(count);
            let plain: Vec<u8> = std::iter::repeat_n(report.iter().copied(), reports)
                .flatten()
                .collect();
            sender.encrypt_rtcp(&plain).unwrap().to_vec()
        };
        // Eighty reports of 8 192 each, in under 2 KB: 655 360 acknowledgements.
        let flood = compound(80, MAX_FEEDBACK_STATUSES);
        assert!(flood.len() < 2_048);
        assert!(matches!(remote.open(&flood), OpenedRtcp::Refused(_)));
        // As many as one report may count, in two, is one too many; a browser's, read.
        let two = compound(2, MAX_FEEDBACK_STATUSES / 2 + 1);
        assert!(matches!(remote.open(&two), OpenedRtcp::Refused(_)));
        let OpenedRtcp::Opened(packets) = remote.open(&compound(1, 40)) else {
            panic!("a report of 40 packets not read");
        };
        assert_eq!(packets.len(), 1);
    }

    /// An empty receiver report from `ssrc`, marshalled.
    fn receiver_report(ssrc: u32) -> bytes::BytesMut {
        rtc::rtcp::receiver_report::ReceiverReport {
            ssrc,
            ..Default::default()
        }
        .marshal()
        .unwrap()
    }

    #[test]
    fn forged_rtcp_of_ever_new_senders_keeps_no_state_past_a_bound() {
        let keys = MasterKeys::new(ProtectionProfile::Aes128CmHmacSha1_80, &[3; 16], &[4; 14]);
        let mut remote = RemoteRtcp::new(&keys).unwrap();
        let mut sender = keys.context().unwrap();
        let report = receiver_report;
        let genuine = sender.encrypt_rtcp(&report(11)).unwrap().to_vec();
        assert!(matches!(remote.open(&genuine), OpenedRtcp::Opened(_)));
        // `rtc`'s context keeps state for each sender before it checks the tag: a thousand forged
        // reports, each from a new sender, are let in a context made afresh every 64.
        for ssrc in 1_000..2_000u32 {
            let mut forged = genuine.clone();
            forged[4..8].copy_from_slice(&ssrc.to_be_bytes());
            assert!(matches!(remote.open(&forged), OpenedRtcp::Not));
            assert!(remote.context_senders.len() <= MAX_CONTEXT_SENDERS);
        }
        let next = sender.encrypt_rtcp(&report(11)).unwrap().to_vec();
        assert!(matches!(remote.open(&next), OpenedRtcp::Opened(_)));
        assert!(
            matches!(remote.open(&next), OpenedRtcp::Refused(_)),
            "a replay"
        );
    }

    #[test]
    fn the_remotes_rtcp_opens_once_and_a_replay_or_forgery_does_not() {
        for (profile, gcm) in [
            (ProtectionProfile::Aes128CmHmacSha1_80, false),
            (ProtectionProfile::AeadAes128Gcm, true),
        ] {
            let keys = || MasterKeys::new(profile, &[3; 16], &vec![4; profile.salt_len()]);
            let mut own = OwnWrite::new(KeyTap::new(), None);
            let report = receiver_report;
            let mut remote = keys().context().unwrap();
            let sealed: Vec<Vec<u8>> = (0..70)
                .map(|_| remote.encrypt_rtcp(&report(11)).unwrap().to_vec())
                .collect();
            assert!(
                matches!(own.open_rtcp(&sealed[0]), OpenedRtcp::Not),
                "no keys yet"
            );
            own.remote = RemoteRtcp::new(&keys());
            // A forged packet far ahead moves nothing: the genuine ones still open.
            let mut forged = sealed[69].clone();
            let tag_byte = forged.len() - if gcm { 5 } else { 1 };
            forged[tag_byte] ^= 1;
            assert!(
                matches!(own.open_rtcp(&forged), OpenedRtcp::Not),
                "{profile:?}"
            );
            let OpenedRtcp::Opened(packets) = own.open_rtcp(&sealed[1]) else {
                panic!("not opened under {profile:?}");
            };
            let opened = packets[0]
                .as_any()
                .downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>()
                .unwrap();
            assert_eq!(opened.ssrc, 11);
            assert!(
                matches!(own.open_rtcp(&sealed[1]), OpenedRtcp::Refused(_)),
                "a replay"
            );
            assert!(
                matches!(own.open_rtcp(&sealed[0]), OpenedRtcp::Opened(_)),
                "late, new"
            );
            assert!(matches!(own.open_rtcp(&sealed[67]), OpenedRtcp::Opened(_)));
            assert!(
                matches!(own.open_rtcp(&sealed[2]), OpenedRtcp::Refused(_)),
                "older than the window"
            );
            // Sent unencrypted (the E flag cleared): refused whatever its tag.
            let mut clear = sealed[68].clone();
            let flag = clear.len() - if gcm { 4 } else { 14 };
            clear[flag] &= 0x7f;
            assert!(
                matches!(own.open_rtcp(&clear), OpenedRtcp::Unencrypted),
                "{profile:?}"
            );
        }
    }

    #[test]
    fn a_header_with_stale_extension_padding_is_sealed_as_written() {
        let (mut own, mut open) = sealing(None);
        let mut stale = packet(7, 1, 0, 50);
        stale
            .header
            .set_extension(3, Bytes::from_static(b"ab"))
            .unwrap();
        stale.header.extensions_padding = 4;
        assert!(
            own.seal(Instant::now(), &mut stale, None, Keep::Copy)
                .unwrap()
        );
        let datagram = own.poll_datagram().unwrap();
        let plain = open.decrypt_rtp(&datagram).unwrap();
        let opened = rtc::rtp::Packet::unmarshal(&mut &plain[..]).unwrap();
        assert_eq!(
            opened.payload, stale.payload,
            "the payload, whole and in the clear"
        );
    }

    #[test]
    fn packets_are_numbered_sealed_and_sent_again_as_they_left() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            numbered_sealed_and_sent_again(profile);
        }
    }

    fn numbered_sealed_and_sent_again(profile: ProtectionProfile) {
        let (mut own, mut open) = sealing_under(profile, Some(Estimation::new(1e6, 1e5, 1e7)));
        let now = Instant::now();
        let mut first = Vec::new();
        for seq in 100..110u16 {
            let mut sent = packet(7, seq, 3_000 * u32::from(seq), 50);
            sent.header.version = 2;
            sent.header.payload_type = 96;
            sent.header.marker = seq % 2 == 1;
            sent.payload = (0..50).map(|n| n ^ seq as u8).collect();
            // Kept as its parts and sealed again (from 102 on; 103 padded), or kept as a copy
            // (100 and 101, as asked; 104, whose CSRCs the history keeps no parts for).
            sent.header.padding = seq == 103;
            if seq == 104 {
                sent.header.csrc = vec![11, 12];
            }
            let keep = if seq < 102 { Keep::Copy } else { Keep::Parts };
            assert!(own.seal(now, &mut sent, Some(5), keep).unwrap());
            first.push(own.poll_datagram().unwrap());
        }
        let kept = |own: &OwnWrite, seq: u16| {
            own.streams[0].sent[usize::from(seq) % HISTORY]
                .as_ref()
                .map(|sent| matches!(sent.kept, Kept::Plain(_)))
        };
        let parts: Vec<_> = (100..110)
            .filter(|seq| kept(&own, *seq) == Some(true))
            .collect();
        assert_eq!(parts, [102, 103, 105, 106, 107, 108, 109], "{profile:?}");
        // Each carries the next transport-wide number under the negotiated id, and opens.
        for (i, datagram) in first.iter().enumerate() {
            let plain = open.decrypt_rtp(datagram).unwrap();
            let header = rtc::rtp::Packet::unmarshal(&mut &plain[..]).unwrap().header;
            let mut number = header.get_extension(5).unwrap();
            let number = TransportCcExtension::unmarshal(&mut number).unwrap();
            assert_eq!(usize::from(number.transport_sequence), i);
        }
        // A copy of a packet sealed before is refused before it is counted or numbered.
        assert!(own.check_seal(&packet(7, 105, 0, 50)).is_err());
        assert!(own.check_seal(&packet(7, 110, 0, 50)).is_ok());
        // A NACK for 102 and 104 (bitmap bit 1): the very datagrams, again.
        let nack = |lost_packets| TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: vec![
                rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                    packet_id: 102,
                    lost_packets,
                },
            ],
        };
        assert_eq!(own.resend(now, &nack(0b10)), 2);
        assert_eq!(own.poll_datagram().as_ref(), Some(&first[2]));
        assert_eq!(own.poll_datagram().as_ref(), Some(&first[4]));
        assert_eq!(own.take_resealed(), 1, "102 sealed again, 104 copied");
        // Within `RESEND_GAP` of its last resend a packet is not sent again: 102 and 104 wait.
        assert_eq!(own.resend(now, &nack(0b111_1111)), 6);
        let mut at = now + RESEND_GAP;
        assert_eq!(own.resend(at, &nack(0b111_1111)), 8);
        let again = std::iter::from_fn(|| own.poll_datagram()).collect::<Vec<_>>();
        assert_eq!(again.len(), 14);
        for (sent, expected) in again[6..].iter().zip(&first[2..10]) {
            assert_eq!(sent, expected, "{profile:?}");
        }
        assert_eq!(own.take_resealed(), 6 + 7);
        // However often a NACK names a number, it is answered once.
        let mut many = nack(0b11);
        many.nacks = vec![many.nacks[0]; 1_000];
        at += RESEND_GAP;
        assert_eq!(own.resend(at, &many), 3);
        while own.poll_datagram().is_some() {}
        assert_eq!(own.take_resealed(), 2, "102 and 103; 104 copied");
        // Each of 102, 103 and 104 went three times: once more, then never again.
        at += RESEND_GAP;
        assert_eq!(own.resend(at, &many), 3);
        at += RESEND_GAP;
        assert_eq!(own.resend(at, &many), 0, "at most {MAX_RESENDS} times each");
        while own.poll_datagram().is_some() {}
        own.take_resealed();
        // A stream paused keeps nothing to send again; another keeps its own.
        let mut paused = sealing_under(profile, None).0;
        paused.add_stream(8, 90_000);
        for ssrc in [7, 8] {
            let mut sent = packet(ssrc, 100, 0, 50);
            sent.header.version = 2;
            assert!(paused.seal(now, &mut sent, None, Keep::Copy).unwrap());
        }
        while paused.poll_datagram().is_some() {}
        paused.forget_sent(7);
        let nack_of = |media_ssrc| TransportLayerNack {
            media_ssrc,
            nacks: vec![
                rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                    packet_id: 100,
                    lost_packets: 0,
                },
            ],
            ..nack(0)
        };
        assert_eq!(paused.resend(now, &nack_of(7)), 0);
        assert_eq!(paused.resend(now, &nack_of(8)), 1);
        // Parts that would not seal again as the datagram left (here, a timestamp that is not
        // the one sealed): nothing is sent for it, and that NACK ends there. (The counts of
        // resends start afresh for it.)
        for sent in own.streams[0].sent.iter_mut().flatten() {
            sent.resends = Resends::default();
        }
        if let Some(Some(Sent {
            kept: Kept::Plain(plain),
            ..
        })) = own.streams[0].sent.get_mut(103 % HISTORY)
        {
            plain.timestamp ^= 1;
        }
        assert_eq!(own.resend(now, &nack(0b111)), 1, "102 only");
        assert_eq!(own.poll_datagram().as_ref(), Some(&first[2]));
        assert_eq!(own.poll_datagram(), None);
        assert_eq!(own.take_resealed(), 1);
        // A removed track's datagrams are let go.
        own.pause_reports(7);
        assert_eq!(own.resend(now, &nack(0)), 0);
    }

    #[test]
    fn a_removed_stream_makes_room_for_a_new_one() {
        let (mut own, _) = sealing(None);
        let now = Instant::now();
        // Stream 7 and more up to the limit: the one past them goes unanswered.
        for ssrc in 100..99 + MAX_STREAMS as u32 {
            own.add_stream(ssrc, 90_000);
        }
        let nack = |media_ssrc, packet_id| TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc,
            nacks: vec![
                rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                    packet_id,
                    lost_packets: 0,
                },
            ],
        };
        // A reused SSRC continues its numbering (an index is never sealed twice).
        let mut next_seq = crate::FastMap::<u32, u16>::default();
        let mut sent_and_resent = |own: &mut OwnWrite, ssrc| {
            let seq = next_seq.entry(ssrc).or_insert(0);
            *seq += 1;
            own.count(now, &packet(ssrc, *seq, 0, 10));
            assert!(
                own.seal(now, &mut packet(ssrc, *seq, 0, 10), None, Keep::Copy)
                    .unwrap()
            );
            while own.poll_datagram().is_some() {}
            own.resend(now, &nack(ssrc, *seq))
        };
        let past = 1_000;
        own.add_stream(past, 90_000);
        assert_eq!(sent_and_resent(&mut own, past), 0, "all places taken");
        // Stream 7's track is removed: the next new stream takes its place.
        own.pause_reports(7);
        own.add_stream(past + 1, 90_000);
        assert_eq!(sent_and_resent(&mut own, past + 1), 1);
        assert!(own.reports(now, true).iter().any(|r| r.ssrc == past + 1));
        // A removed stream whose SSRC comes back keeps its place and its counters.
        assert_eq!(sent_and_resent(&mut own, 100), 1);
        own.pause_reports(100);
        own.add_stream(100, 90_000);
        own.add_stream(past + 2, 90_000);
        assert_eq!(sent_and_resent(&mut own, past + 2), 0, "100 is back");
        assert_eq!(sent_and_resent(&mut own, 100), 1);
        let report = own.reports(now, true);
        let report = report.iter().find(|r| r.ssrc == 100).unwrap();
        assert_eq!(report.packet_count, 2);
    }

    #[test]
    fn nothing_is_sealed_before_the_keys_are_checked() {
        let mut own = OwnWrite::new(KeyTap::new(), None);
        own.add_stream(7, 90_000);
        // No DTLS handshake: no keying material, so no check to make.
        assert!(!own.wants_check(false));
        assert!(!own.refused());
        assert!(
            !own.seal(
                Instant::now(),
                &mut packet(7, 1, 0, 10),
                Some(3),
                Keep::Copy
            )
            .unwrap()
        );
        own.check(&[0x80, 200, 0, 6]);
        assert!(!own.sealing());
        assert_eq!(own.poll_datagram(), None);
        // Connected, and still no keys in the tap: `rtc`'s path, for good.
        assert!(!own.wants_check(true));
        assert!(own.refused());
        assert!(!own.wants_check(true));
        assert!(
            !own.seal(
                Instant::now(),
                &mut packet(7, 2, 0, 10),
                Some(3),
                Keep::Copy
            )
            .unwrap()
        );
    }

    #[test]
    fn a_receiver_report_gives_the_round_trip_from_the_sender_report_it_names() {
        let sent = Instant::now();
        let mut own = OwnWrite::new(KeyTap::new(), None);
        assert_eq!(own.round_trip(sent, 1, 0), None, "no report sent yet");
        own.baseline = Some(SystemInstant::now(sent));
        let named = (own.baseline.unwrap().ntp(sent) >> 16) as u32;
        // Back 80 ms after the report went, 30 ms of it spent at the receiver (1 966 / 65 536 s).
        let back = sent + Duration::from_millis(80);
        let trip = own.round_trip(back, named, 1_966).unwrap();
        let ms = trip.as_secs_f64() * 1e3;
        assert!((49.9..50.1).contains(&ms), "{trip:?}");
        // A block naming no report, or a delay longer than the time since, gives nothing.
        assert_eq!(own.round_trip(back, 0, 1_966), None);
        assert_eq!(own.round_trip(back, named, 65_536 / 10), None);
    }

    #[test]
    fn feedback_describing_more_packets_than_it_counts_or_too_many_is_not_read() {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
            SymbolSizeTypeTcc, SymbolTypeTcc,
        };
        let run = |length| {
            PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketNotReceived,
                run_length: length,
            })
        };
        let report = |count, chunks| {
            let report = TransportLayerCc {
                sender_ssrc: 1,
                media_ssrc: 2,
                base_sequence_number: 100,
                packet_status_count: count,
                reference_time: 0,
                fb_pkt_count: 0,
                packet_chunks: chunks,
                recv_deltas: Vec::new(),
            };
            // As the SFU reads it: off the wire.
            let wire = report.marshal().expect("marshals");
            TransportLayerCc::unmarshal(&mut wire.as_ref()).expect("parses")
        };
        // What a browser sends: runs and a last status vector with unused symbols. (`rtc`'s parser
        // refuses a report without arrival times whose chunks end on a word, so these are odd.)
        let vector = PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
            type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
            symbol_size: SymbolSizeTypeTcc::OneBit,
            symbol_list: vec![SymbolTypeTcc::PacketNotReceived; 14],
        });
        assert!(within_bounds(&report(
            1_001,
            vec![run(500), run(500), vector.clone()]
        )));
        let most = MAX_FEEDBACK_STATUSES;
        assert!(within_bounds(&report(
            most,
            vec![run(most - 2), run(1), run(1)]
        )));
        // Nine runs of 8 191 in 40 bytes: the parser reads chunks until they cover the count,
        // and keeps the last run's length as written.
        let forged = report(u16::MAX, vec![run(8_191); 9]);
        assert!(forged.marshal_size() <= 40);
        assert_eq!(convert_twcc(&forged).len(), 73_719, "what was read before");
        assert!(!within_bounds(&forged));
        // One packet counted, 8 191 described.
        assert!(!within_bounds(&report(1, vec![run(8_191)])));
        assert!(!within_bounds(&report(
            985,
            vec![run(500), run(500), vector]
        )));
        assert!(!within_bounds(&report(
            most + 1,
            vec![run(most - 1), run(1), run(1)]
        )));
    }
}
