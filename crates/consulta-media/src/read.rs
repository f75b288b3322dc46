//! The own read path: a receiving connection opens its incoming media itself, with the keys DTLS
//! exported, instead of passing each datagram through `rtc`'s ICE, DTLS, SRTP and interceptor
//! handlers. In 1:1 rooms that walk was the largest part of what a forwarded packet cost
//! (docs/SFU-MEDIA.md, "The own read path").
//!
//! `rtc` still sees every stream first. It learns which track and simulcast layer an SSRC carries
//! from the first packets' `mid` and `rid` extensions; once it delivered a packet of a track, the SSRC
//! is *offered* here with the tag `rtc` gave it, and its next packet is opened here if it follows
//! the one `rtc` opened without a wrap of the sequence number in between (a wrap would put the two
//! SRTP contexts' rollover counters out of step). From then on the SSRC stays here, renegotiations
//! included: `rtc` forgets its layers' SSRCs at each one (finding 7), and its SRTP context, which
//! no longer sees the stream, would guess a stale rollover counter once the stream passed 65 536
//! packets, so handing the SSRC back would freeze the camera. A packet of an adopted stream that
//! does not open here (a forged or replayed one) is dropped here, never handed to `rtc`: after a
//! wrap, that stale context would take a replay of a packet from before it for a new one.
//!
//! A simulcast publisher's retransmissions (RFC 4588) come on repair streams that `rtc` never
//! delivers (it skips packets naming their layer by `repaired-rtp-stream-id`; docs/SFU-MEDIA.md,
//! "Loss"). Those are opened here from their first packet: one from the selected pair on an SSRC
//! not known here, with a negotiated RTX payload type and the `mid` and repaired rid of a layer
//! stream known here, becomes that layer's repair stream ([`Layer::repair`]).
//!
//! RTCP, STUN and DTLS go to `rtc` as before (the sender reports in RTCP are read here too, for the
//! receiver reports); so does a packet from anywhere but the address `rtc` sends to (the selected
//! candidate pair), so that ICE decides where media may come from. Transport-wide feedback, NACKs
//! and receiver reports are `receive::ReceiveFeedback`'s, which notes the packets of both paths.

use std::sync::Arc;
use std::time::Instant;

use rtc::shared::marshal::Unmarshal;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::keytap::KeyTap;
use crate::send::RemoteRtcp;
use crate::srtp::RtpCrypto;

/// Streams offered or opened here per connection at most (simulcast layers of a few tracks).
/// Past it, a stream not opened here yet, or one quiet for [`QUIET`], gives its place to a new
/// one; if there is none, the new one stays with `rtc`. An adopted stream that still sends keeps
/// its place: given back to `rtc`, whose context has not seen it since, it could freeze.
const MAX_STREAMS: usize = 32;
const QUIET: std::time::Duration = std::time::Duration::from_secs(5);

/// Offered packets the key search may fail to open before the path is given up for the
/// connection (`rtc` opening everything then).
const MAX_KEY_MISSES: u32 = 8;

/// What the connection opens with.
enum Keys {
    /// Not found yet: the next offered stream's packet tries the candidates, and so does SRTCP
    /// ([`OwnRead::sender_reports`]). The count is of
    /// packets none opened that `rtc` then opened; the packets none opened wait for that, by
    /// SSRC and number (the last [`MAX_KEY_MISSES`]). A forged packet, which `rtc` does not
    /// open either, so counts nothing: eight of them could otherwise turn the path off for the
    /// connection (review helper-101).
    Unknown(u32, Vec<(u32, u16)>),
    /// The remote side's keys, found by which candidate opened a packet: the own SRTP for its
    /// media, and for its RTCP (the sender reports) `rtc`'s context with replay windows of the
    /// own write path's, which only authenticated packets move. The media's is never replaced:
    /// it keeps each SSRC's rollover counter, so a stream offered again later (its place given
    /// away meanwhile) opens with the right one.
    Opening(Box<RtpCrypto>, Box<RemoteRtcp>),
    /// No candidate opened offered packets: everything stays with `rtc`.
    Refused,
}

/// What [`OwnRead::sender_reports`] made of a datagram.
#[derive(Debug, PartialEq)]
pub(crate) enum Reports {
    /// SRTCP that authenticated, first seen: the sender reports in it (SSRC and NTP time).
    Opened(Vec<(u32, u64)>),
    /// To be dropped: a replay, feedback counting too many packets, or SRTCP sent unencrypted
    /// (`RemoteRtcp::open`).
    Refused,
    /// Not SRTCP that opens with the keys found, or no keys yet: `rtc`'s.
    Unknown,
}

/// How the read path sees a stream's tag.
pub(crate) trait Layer: Clone {
    /// The m-line (`mid`) and simulcast layer (`rid`) the stream carries.
    fn layer(&self) -> (Option<&str>, Option<&str>);
    /// Whether it is a repair stream (RTX) rather than a layer's own.
    fn is_repair(&self) -> bool;
    /// The tag of a repair stream of this layer whose packets have payload type `payload_type`.
    fn repair(&self, payload_type: u8) -> Self;
}

/// What names a publisher's repair streams, as the last description negotiated it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RepairNames {
    /// The ids of the `mid` and `repaired-rtp-stream-id` header extensions.
    pub(crate) mid: Option<u8>,
    pub(crate) repaired_rid: Option<u8>,
    /// The RTX payload types (`a=rtpmap:<pt> rtx/90000`).
    pub(crate) payload_types: Vec<u8>,
}

struct Stream<T> {
    tag: T,
    /// Its packets are opened here; before, the newest sequence number `rtc` opened, and which
    /// of the 63 before it it opened too (bit n: `last_seq` − n).
    adopted: bool,
    last_seq: u16,
    opened: u64,
    /// `rtc` opened packets on both sides of a wrap of the sequence number before the stream
    /// was adopted: its rollover counter is past what a fresh context assumes, so it stays
    /// `rtc`'s.
    wrapped: bool,
    last_seen: Instant,
}

/// One connection's own read path.
pub(crate) struct OwnRead<T> {
    keys: Arc<KeyTap>,
    open: Keys,
    /// Offered and adopted streams (each with how its packets are tagged, as `rtc` tagged its
    /// first ones), by SSRC.
    streams: crate::FastMap<u32, Stream<T>>,
    repairs: RepairNames,
    /// The layouts the connection offers its remote, and which half of the keys DTLS exported
    /// the remote seals with (0: the DTLS client's), once a description said: only those are
    /// candidates. The remote holds every half and layout, so with more of them to choose from
    /// it could have the path find keys the remote does not use (its first SRTCP sealed with
    /// this side's half), keep them, and send on unscreened (review helper-108).
    profiles: Vec<ProtectionProfile>,
    remote_half: Option<usize>,
    /// While the keys are still to be found: each candidate's context for the remote's RTCP,
    /// made once DTLS exported the keys: a datagram that authenticates with none costs 0.4 µs
    /// here, where making them for each cost 6 µs.
    rtcp_candidates: Vec<RemoteRtcp>,
}

/// A packet the own read path opened, with its stream's tag.
pub(crate) struct Opened<T> {
    pub(crate) tag: T,
    pub(crate) packet: rtc::rtp::Packet,
}

/// What the own read path made of a datagram.
pub(crate) enum Read<T> {
    /// It opened it.
    Opened(Opened<T>),
    /// Dropped here, never `rtc`'s: a packet of a stream opened here that was seen before (a
    /// replay or a network duplicate), as `rtc`'s replay window drops it, or that does not open
    /// (forged, or replayed from before a wrap), or one that opened but is not a packet (its
    /// header extensions or padding do not parse: its sender's garbage, whose index is taken).
    Dropped,
    /// `rtc`'s to handle: not RTP of a stream here, or of one offered but not opened here yet
    /// that did not open (a forged packet, which `rtc`, whose context still follows the
    /// stream, drops too).
    Rtc,
}

impl<T: Layer> OwnRead<T> {
    /// A read path for a connection offering `profiles`.
    pub(crate) fn new(keys: Arc<KeyTap>, profiles: Vec<ProtectionProfile>) -> Self {
        Self {
            keys,
            open: Keys::Unknown(0, Vec::new()),
            streams: crate::FastMap::default(),
            repairs: RepairNames::default(),
            profiles,
            remote_half: None,
            rtcp_candidates: Vec::new(),
        }
    }

    /// The first remote description said which half of the keys the remote seals with (0: the
    /// DTLS client's, 1: the server's). Later ones are not heard: `rtc` keeps the role the first
    /// gave, and a description that said otherwise would have the path find keys the remote does
    /// not use (review helper-109).
    pub(crate) fn set_remote_half(&mut self, half: usize) {
        self.remote_half.get_or_insert(half);
    }

    /// The half of the keys the remote seals with, once a description said.
    #[cfg(test)]
    pub(crate) fn remote_half(&self) -> Option<usize> {
        self.remote_half
    }

    /// A read path that found `keys` already (as after its first offered packet).
    #[cfg(test)]
    pub(crate) fn with_keys(keys: &crate::keytap::MasterKeys) -> Self {
        let mut read = Self::new(KeyTap::new(), Vec::new());
        let context = RemoteRtcp::new(keys).expect("a context");
        let crypto = RtpCrypto::new(keys, true).expect("keys");
        read.open = Keys::Opening(Box::new(crypto), Box::new(context));
        read
    }

    /// What names repair streams from now on (a description was negotiated).
    pub(crate) fn set_repair_names(&mut self, names: RepairNames) {
        self.repairs = names;
    }

    /// Whether `payload_type` is one the remote's repair streams are negotiated to carry.
    pub(crate) fn repairs_with(&self, payload_type: u8) -> bool {
        self.repairs.payload_types.contains(&payload_type)
    }

    /// The SSRC of the layer stream (not a repair stream) whose tag `is_layer` picks, the most
    /// recently heard if several are.
    pub(crate) fn layer_ssrc(&self, is_layer: impl Fn(&T) -> bool) -> Option<u32> {
        self.streams
            .iter()
            .filter(|(_, s)| !s.tag.is_repair() && is_layer(&s.tag))
            .max_by_key(|(_, s)| s.last_seen)
            .map(|(&ssrc, _)| ssrc)
    }

    /// Makes room for one more stream: past [`MAX_STREAMS`], a repair stream goes first (its
    /// packets name their layer, so it is opened here again from its next one, its SRTP state
    /// kept), else the least recently heard of those not opened here yet or quiet for [`QUIET`].
    /// Whether there is room.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.streams.len() < MAX_STREAMS {
            return true;
        }
        let replaceable = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.tag.is_repair()
                    || !s.adopted
                    || now.saturating_duration_since(s.last_seen) >= QUIET
            })
            .min_by_key(|(_, s)| (!s.tag.is_repair(), s.last_seen))
            .map(|(&ssrc, _)| ssrc);
        let Some(replaceable) = replaceable else {
            return false;
        };
        self.streams.remove(&replaceable);
        true
    }

    /// `rtc` opened a packet of `ssrc` numbered `seq` and tagged it `tag`: the stream's next
    /// packet may be opened here. A stream already opened here keeps its place and takes the tag.
    pub(crate) fn offer(&mut self, now: Instant, ssrc: u32, seq: u16, tag: T) {
        if let Keys::Unknown(misses, tried) = &mut self.open
            && let Some(at) = tried.iter().position(|&tried| tried == (ssrc, seq))
        {
            // A packet no candidate opened, and `rtc` did: the keys seen are not the ones.
            tried.remove(at);
            *misses += 1;
            if *misses >= MAX_KEY_MISSES {
                tracing::warn!(
                    "no SRTP keys seen as DTLS exported them open the remote's media: rtc's read \
                     path stays"
                );
                self.open = Keys::Refused;
                self.streams.clear();
                self.rtcp_candidates = Vec::new();
            }
        }
        if matches!(self.open, Keys::Refused) {
            return;
        }
        if let Some(stream) = self.streams.get_mut(&ssrc) {
            if !stream.adopted {
                // Numbers run on from what `rtc` opened last; a smaller one is a wrap (or a packet
                // reordered across one, which is as unsafe to guess).
                stream.wrapped |= seq < stream.last_seq;
                let ahead = u32::from(seq.wrapping_sub(stream.last_seq));
                stream.opened = stream.opened.checked_shl(ahead).unwrap_or(0) | 1;
                stream.last_seq = seq;
            } else if let Keys::Opening(crypto, _) = &mut self.open {
                // `rtc` opened a packet of a stream opened here (from another address than the
                // selected pair): it is taken here too, so a copy of it is not.
                let _ = crypto.taken(ssrc, seq, 1);
            }
            stream.tag = tag;
            stream.last_seen = now;
            return;
        }
        if !self.make_room(now) {
            return;
        }
        self.streams.insert(
            ssrc,
            Stream {
                tag,
                adopted: false,
                last_seq: seq,
                opened: 1,
                wrapped: false,
                last_seen: now,
            },
        );
    }

    /// Opens `datagram` if it is RTP of a stream offered or adopted here.
    pub(crate) fn open(&mut self, now: Instant, datagram: &[u8]) -> Read<T> {
        let Some((ssrc, seq)) = rtp_ssrc_and_seq(datagram) else {
            return Read::Rtc;
        };
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            return self.open_repair(now, datagram, ssrc, seq);
        };
        // Ahead of what `rtc` opened, with no wrap since it first did.
        if !stream.adopted && (stream.wrapped || seq <= stream.last_seq) {
            return Read::Rtc;
        }
        // What an adopted stream's packet that does not open here would be in `rtc`'s context,
        // which has not seen the stream since: after a wrap of its numbers, a replay of a packet
        // from before it, which that context would take for a new one. So it is dropped.
        let refused = if stream.adopted {
            Read::Dropped
        } else {
            Read::Rtc
        };
        // The header is parsed from the opened packet, whose buffer its extensions then share.
        let Some(header_len) = crate::srtp::header_len(datagram) else {
            return refused;
        };
        // Taking a stream over from `rtc`: what it opened counts as taken here too, or a replay
        // of one of its last 64 packets would be taken (and sealed again to the subscribers).
        // Only those: a late repair of one it never saw is still welcome.
        let opened_by_rtc = (!stream.adopted).then_some((stream.last_seq, stream.opened));
        let opened = match &mut self.open {
            Keys::Refused => return Read::Rtc,
            Keys::Opening(crypto, _) => {
                if let Some((newest, seen)) = opened_by_rtc
                    && crypto.taken(ssrc, newest, seen).is_err()
                {
                    return Read::Rtc;
                }
                crypto.open(datagram, header_len, ssrc, seq)
            }
            Keys::Unknown(_, tried) => {
                let candidates = candidate_keys(&self.keys, &self.profiles, self.remote_half);
                match find_keys(candidates, datagram, header_len, ssrc, (seq, opened_by_rtc)) {
                    Some((crypto, rtcp, plain)) => {
                        self.open = Keys::Opening(Box::new(crypto), Box::new(rtcp));
                        self.rtcp_candidates = Vec::new();
                        Ok(plain)
                    }
                    None => {
                        if tried.len() >= MAX_KEY_MISSES as usize {
                            tried.remove(0);
                        }
                        tried.push((ssrc, seq));
                        return Read::Rtc;
                    }
                }
            }
        };
        let plain = match opened {
            Ok(plain) => plain,
            // Taken here before (an adopted stream's, or one `rtc` opened): never `rtc`'s, whose
            // context has not seen it since.
            Err(rtc::shared::error::Error::SrtpSsrcDuplicated(..)) => {
                return Read::Dropped;
            }
            Err(_) => return refused,
        };
        let Some(packet) = packet_of(plain.freeze(), header_len) else {
            return Read::Dropped;
        };
        stream.adopted = true;
        stream.last_seq = seq;
        stream.last_seen = now;
        Read::Opened(Opened {
            tag: stream.tag.clone(),
            packet,
        })
    }

    /// Opens `datagram` (packet `seq` of `ssrc`, a stream not known here) as the first packet of
    /// a repair stream: it has an RTX payload type and names a layer stream known here by its
    /// `mid` and repaired rid. It is tagged as that layer's repair stream from then on.
    fn open_repair(&mut self, now: Instant, datagram: &[u8], ssrc: u32, seq: u16) -> Read<T> {
        let (Some(mid_id), Some(rrid_id)) = (self.repairs.mid, self.repairs.repaired_rid) else {
            return Read::Rtc;
        };
        let payload_type = datagram.get(1).map_or(0, |b| b & 0x7f);
        if !self.repairs.payload_types.contains(&payload_type) {
            return Read::Rtc;
        }
        let Some(header_len) = crate::srtp::header_len(datagram) else {
            return Read::Rtc;
        };
        // Read before the packet is opened, to choose: the header is authenticated with the
        // rest, so what it names is the sender's once the packet opens below.
        let Some(header) = datagram
            .get(..header_len)
            .and_then(|mut header| rtc::rtp::Header::unmarshal(&mut header).ok())
        else {
            return Read::Rtc;
        };
        let (Some(mid), Some(rid)) = (header.get_extension(mid_id), header.get_extension(rrid_id))
        else {
            return Read::Rtc;
        };
        let Some(layer) = self
            .layer_ssrc(|tag| {
                let (tag_mid, tag_rid) = tag.layer();
                tag_mid.is_some_and(|m| m.as_bytes() == mid.as_ref())
                    && tag_rid.is_some_and(|r| r.as_bytes() == rid.as_ref())
            })
            .and_then(|layer| self.streams.get(&layer))
            .map(|layer| layer.tag.repair(payload_type))
        else {
            return Read::Rtc;
        };
        let Keys::Opening(crypto, _) = &mut self.open else {
            return Read::Rtc;
        };
        let plain = match crypto.open(datagram, header_len, ssrc, seq) {
            Ok(plain) => plain,
            Err(rtc::shared::error::Error::SrtpSsrcDuplicated(..)) => return Read::Dropped,
            Err(_) => return Read::Rtc,
        };
        let Some(packet) = packet_of(plain.freeze(), header_len) else {
            return Read::Dropped;
        };
        if self.make_room(now) {
            self.streams.insert(
                ssrc,
                Stream {
                    tag: layer.clone(),
                    adopted: true,
                    last_seq: seq,
                    opened: 1,
                    wrapped: false,
                    last_seen: now,
                },
            );
        }
        Read::Opened(Opened { tag: layer, packet })
    }

    /// What `datagram` is, if it is SRTCP: opened with the keys found, the sender reports
    /// (SSRC and NTP time) in it. While the keys are still to be found, SRTCP that one of the
    /// candidates opens finds them, as RTP does: a remote that sends RTCP and no media (or
    /// before it) is screened all the same.
    pub(crate) fn sender_reports(&mut self, datagram: &[u8]) -> Reports {
        if !crate::mux::is_rtcp(datagram) {
            return Reports::Unknown;
        }
        let opened = match &mut self.open {
            Keys::Opening(_, context) => context.open(datagram),
            Keys::Unknown(..) => {
                if self.rtcp_candidates.is_empty() {
                    self.rtcp_candidates =
                        candidate_keys(&self.keys, &self.profiles, self.remote_half)
                            .filter_map(|side| RemoteRtcp::new(&side))
                            .collect();
                }
                let Some((found, opened)) = self
                    .rtcp_candidates
                    .iter_mut()
                    .map(|context| context.open(datagram))
                    .enumerate()
                    .find(|(_, opened)| opened.authenticated())
                else {
                    return Reports::Unknown;
                };
                let context = self.rtcp_candidates.swap_remove(found);
                self.rtcp_candidates = Vec::new();
                let Ok(crypto) = RtpCrypto::new(context.keys(), true) else {
                    return Reports::Unknown;
                };
                self.open = Keys::Opening(Box::new(crypto), Box::new(context));
                opened
            }
            Keys::Refused => return Reports::Unknown,
        };
        let packets = match opened {
            crate::send::OpenedRtcp::Opened(packets) => packets,
            crate::send::OpenedRtcp::Refused(_) | crate::send::OpenedRtcp::Unencrypted => {
                return Reports::Refused;
            }
            crate::send::OpenedRtcp::Not => return Reports::Unknown,
        };
        Reports::Opened(
            packets
                .iter()
                .filter_map(|p| {
                    p.as_any()
                        .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                })
                .map(|sr| (sr.ssrc, sr.ntp_time))
                .collect(),
        )
    }

    /// Whether `datagram` is RTP that authenticates with the keys found (without taking it: a
    /// stream's window does not move).
    pub(crate) fn authenticates(&self, datagram: &[u8]) -> bool {
        let (Some((ssrc, seq)), Keys::Opening(crypto, _)) =
            (rtp_ssrc_and_seq(datagram), &self.open)
        else {
            return false;
        };
        crate::srtp::header_len(datagram)
            .is_some_and(|header_len| crypto.opens(datagram, header_len, ssrc, seq))
    }

    /// Whether `datagram`, from elsewhere than the selected pair, is RTP of a stream opened here
    /// that does not open with this path's context: a copy of a packet taken here, one older
    /// than the window, or one that does not authenticate at the index this context places it
    /// (a forged one, or after a wrap of the stream's numbers a replay from before it). It is
    /// dropped rather than handed to `rtc`, whose context has not seen the stream since and
    /// would take the last two. What opens goes to `rtc` as before, so that ICE decides where
    /// media may come from.
    pub(crate) fn refused(&self, datagram: &[u8]) -> bool {
        let (Some((ssrc, seq)), Keys::Opening(crypto, _)) =
            (rtp_ssrc_and_seq(datagram), &self.open)
        else {
            return false;
        };
        if !self.streams.get(&ssrc).is_some_and(|s| s.adopted) {
            return false;
        }
        // The look-up first: a copy is refused without being opened.
        crypto.check(ssrc, seq).is_err()
            || crate::srtp::header_len(datagram)
                .is_none_or(|header_len| !crypto.opens(datagram, header_len, ssrc, seq))
    }

    /// The stream's packets came with another payload type: its tag is `tag` from now on.
    pub(crate) fn retag(&mut self, ssrc: u32, tag: T) {
        if let Some(stream) = self.streams.get_mut(&ssrc) {
            stream.tag = tag;
        }
    }
}

/// The SSRC and sequence number of `datagram` if it is RTP (RFC 7983: a version-2 first byte;
/// RFC 5761: not RTCP by its packet type).
fn rtp_ssrc_and_seq(datagram: &[u8]) -> Option<(u32, u16)> {
    let &[128..=191, second, s0, s1, _, _, _, _, a, b, c, d, ..] = datagram else {
        return None;
    };
    (!(192..=223).contains(&second)).then(|| {
        (
            u32::from_be_bytes([a, b, c, d]),
            u16::from_be_bytes([s0, s1]),
        )
    })
}

/// The packet `plain` (an opened datagram, header and payload, the header `header_len` bytes
/// long by its CSRC count and extension length) is: what `rtp::Packet::unmarshal` makes of it
/// (the payload without its padding), with the payload after the whole extension block. `rtc`
/// stops reading extensions at the reserved id 15 (the rest of the block then read as payload),
/// and takes an element longer than its block from the payload: `None` for the second, and for a
/// header or padding that does not parse.
fn packet_of(plain: bytes::Bytes, header_len: usize) -> Option<rtc::rtp::Packet> {
    // Read from `Bytes`, the extensions' values and the payload are views of `plain`: one shared
    // count for all of them, where reading from a slice allocated a copy of each extension.
    let len = plain.len();
    let mut payload = plain;
    let header = rtc::rtp::Header::unmarshal(&mut payload).ok()?;
    let unread = header_len.checked_sub(len - payload.len())?;
    if payload.len() < unread {
        return None;
    }
    bytes::Buf::advance(&mut payload, unread);
    if header.padding {
        let padding = usize::from(*payload.last()?);
        let kept = payload.len().checked_sub(padding)?;
        payload.truncate(kept);
    }
    Some(rtc::rtp::Packet { header, payload })
}

/// The one of `candidates` that opens `datagram` (packet `seq` of `ssrc`, its header `header_len`
/// bytes long; the packets `rtc` opened as [`RtpCrypto::taken`] takes them), with what it opened
/// and `rtc`'s context for the same side's RTCP.
fn find_keys(
    mut candidates: impl Iterator<Item = crate::keytap::MasterKeys>,
    datagram: &[u8],
    header_len: usize,
    ssrc: u32,
    (seq, opened_by_rtc): (u16, Option<(u16, u64)>),
) -> Option<(RtpCrypto, RemoteRtcp, bytes::BytesMut)> {
    candidates.find_map(|side| {
        let mut crypto = RtpCrypto::new(&side, true).ok()?;
        if let Some((newest, seen)) = opened_by_rtc {
            crypto.taken(ssrc, newest, seen).ok()?;
        }
        let plain = crypto.open(datagram, header_len, ssrc, seq).ok()?;
        let rtcp = RemoteRtcp::new(&side)?;
        Some((crypto, rtcp, plain))
    })
}

/// The remote's half of the keys (`remote_half`, none before a description said) under each of
/// `profiles`, once DTLS exported them.
fn candidate_keys<'a>(
    keys: &'a KeyTap,
    profiles: &'a [ProtectionProfile],
    remote_half: Option<usize>,
) -> impl Iterator<Item = crate::keytap::MasterKeys> + 'a {
    profiles
        .iter()
        .filter_map(move |&profile| keys.keys(profile)?.into_iter().nth(remote_half?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keytap::MasterKeys;
    use rtc::shared::marshal::{Marshal, MarshalSize};

    impl Layer for &'static str {
        fn layer(&self) -> (Option<&str>, Option<&str>) {
            (None, None)
        }
        fn is_repair(&self) -> bool {
            false
        }
        fn repair(&self, _: u8) -> Self {
            self
        }
    }

    /// A tag with a layer: mid, rid, and the payload type of a repair stream.
    #[derive(Debug, Clone, PartialEq)]
    struct Tag(&'static str, &'static str, Option<u8>);

    impl Layer for Tag {
        fn layer(&self) -> (Option<&str>, Option<&str>) {
            (Some(self.0), Some(self.1))
        }
        fn is_repair(&self) -> bool {
            self.2.is_some()
        }
        fn repair(&self, payload_type: u8) -> Self {
            Self(self.0, self.1, Some(payload_type))
        }
    }

    pub(crate) fn keys() -> MasterKeys {
        MasterKeys::new(ProtectionProfile::Aes128CmHmacSha1_80, &[7; 16], &[9; 14])
    }

    /// A read path that found `keys()` already (as after its first offered packet).
    fn read_path<T: Layer>() -> OwnRead<T> {
        OwnRead::with_keys(&keys())
    }

    /// The remote side: seals packets under `keys()`.
    pub(crate) struct Sender(rtc::srtp::context::Context);

    impl Sender {
        pub(crate) fn new() -> Self {
            Self(keys().context().expect("a context"))
        }

        pub(crate) fn seal(&mut self, ssrc: u32, seq: u16) -> Vec<u8> {
            self.seal_with(ssrc, seq, 96, &[], b"payload")
        }

        /// Packet `seq` of `ssrc` with payload type `pt`, header extensions `(id, value)` and
        /// `payload`.
        fn seal_with(
            &mut self,
            ssrc: u32,
            seq: u16,
            pt: u8,
            extensions: &[(u8, &'static [u8])],
            payload: &'static [u8],
        ) -> Vec<u8> {
            let mut header = rtc::rtp::Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                payload_type: pt,
                ..Default::default()
            };
            for &(id, value) in extensions {
                header
                    .set_extension(id, bytes::Bytes::from_static(value))
                    .expect("an extension");
            }
            let packet = rtc::rtp::Packet {
                header,
                payload: bytes::Bytes::from_static(payload),
            };
            let plain = packet.marshal().expect("marshals");
            self.0.encrypt_rtp(&plain).expect("seals").to_vec()
        }
    }

    fn opened<T: Layer>(read: &mut OwnRead<T>, at: Instant, datagram: &[u8]) -> Option<u16> {
        match read.open(at, datagram) {
            Read::Opened(o) => Some(o.packet.header.sequence_number),
            _ => None,
        }
    }

    #[test]
    fn a_repair_stream_naming_a_layer_known_here_is_opened_as_its_repair() {
        let (mut read, mut sender, now) = (read_path::<Tag>(), Sender::new(), Instant::now());
        // `rtc` delivered layer `f` of mid 1 (SSRC 10) and layer `h` (SSRC 11); both adopted.
        for (ssrc, rid) in [(10, "f"), (11, "h")] {
            let _ = sender.seal(ssrc, 100);
            read.offer(now, ssrc, 100, Tag("1", rid, None));
            assert_eq!(opened(&mut read, now, &sender.seal(ssrc, 101)), Some(101));
        }
        let (mid, rrid) = (4, 10);
        let repair = |sender: &mut Sender, seq, pt, names: &[(u8, &'static [u8])]| {
            // The original sequence number, 100, leads the payload (RFC 4588 §4).
            sender.seal_with(20, seq, pt, names, &[0, 100, 1, 2, 3])
        };
        let layer_f: &[(u8, &'static [u8])] = &[(mid, b"1"), (rrid, b"f")];
        let first = repair(&mut sender, 5000, 97, layer_f);
        // Before a description named the repair streams: `rtc`'s.
        assert!(matches!(read.open(now, &first), Read::Rtc));
        read.set_repair_names(RepairNames {
            mid: Some(mid),
            repaired_rid: Some(rrid),
            payload_types: vec![97, 99],
        });
        let Read::Opened(o) = read.open(now, &first) else {
            panic!("a repair of layer f not opened here");
        };
        assert_eq!(o.tag, Tag("1", "f", Some(97)));
        assert_eq!(o.packet.payload.as_ref(), &[0, 100, 1, 2, 3]);
        assert_eq!(
            read.layer_ssrc(|t| t.1 == "f"),
            Some(10),
            "the layer, not its repairs"
        );
        // Known from then on, tagged as it was first, whether the packet names its layer or not.
        let Read::Opened(o) = read.open(now, &repair(&mut sender, 5001, 97, &[])) else {
            panic!("the repair stream's next packet not opened here");
        };
        assert_eq!(o.tag, Tag("1", "f", Some(97)));
        // A copy is dropped, and so is a forged packet (as any of a stream opened here).
        assert!(matches!(read.open(now, &first), Read::Dropped));
        let mut forged = repair(&mut sender, 5002, 97, &[]);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(read.open(now, &forged), Read::Dropped));
        // Not a repair stream here: a layer not known here, another mid, a payload type that is
        // not RTX, or one naming no layer.
        let mut on = |ssrc, pt, names: &[(u8, &'static [u8])]| {
            let datagram = sender.seal_with(ssrc, 1, pt, names, &[0, 1]);
            read.open(now, &datagram)
        };
        assert!(matches!(
            on(21, 97, &[(mid, b"1"), (rrid, b"q")]),
            Read::Rtc
        ));
        assert!(matches!(
            on(22, 97, &[(mid, b"2"), (rrid, b"f")]),
            Read::Rtc
        ));
        assert!(matches!(on(23, 96, layer_f), Read::Rtc));
        assert!(matches!(on(24, 99, &[(mid, b"1")]), Read::Rtc));
        let Read::Opened(o) = on(25, 99, &[(mid, b"1"), (rrid, b"h")]) else {
            panic!("a repair of layer h not opened here");
        };
        assert_eq!(o.tag, Tag("1", "h", Some(99)));
    }

    #[test]
    fn a_repair_stream_gives_its_place_first_and_is_opened_again_from_its_next_packet() {
        let (mut read, mut sender, now) = (read_path::<Tag>(), Sender::new(), Instant::now());
        read.set_repair_names(RepairNames {
            mid: Some(4),
            repaired_rid: Some(10),
            payload_types: vec![97],
        });
        let layer_f: &[(u8, &'static [u8])] = &[(4, b"1"), (10, b"f")];
        let _ = sender.seal(1, 10);
        read.offer(now, 1, 10, Tag("1", "f", None));
        assert_eq!(opened(&mut read, now, &sender.seal(1, 11)), Some(11));
        let repair = sender.seal_with(2, 500, 97, layer_f, &[0, 9]);
        assert!(matches!(read.open(now, &repair), Read::Opened(_)));
        // The other places taken by streams that still send.
        for ssrc in 3..=MAX_STREAMS as u32 {
            let _ = sender.seal(ssrc, 10);
            read.offer(now, ssrc, 10, Tag("9", "q", None));
            assert_eq!(opened(&mut read, now, &sender.seal(ssrc, 11)), Some(11));
        }
        // A new layer takes the repair stream's place, not a sending layer's.
        let _ = sender.seal(100, 10);
        read.offer(now, 100, 10, Tag("2", "f", None));
        assert_eq!(opened(&mut read, now, &sender.seal(100, 11)), Some(11));
        assert_eq!(opened(&mut read, now, &sender.seal(3, 12)), Some(12));
        // The repair stream's next packet names its layer: opened here again, as its repair.
        // (All places are taken by sending layers now: it is opened, not kept.)
        let Read::Opened(o) = read.open(now, &sender.seal_with(2, 501, 97, layer_f, &[0, 8]))
        else {
            panic!("the repair stream's next packet not opened");
        };
        assert_eq!(o.tag, Tag("1", "f", Some(97)));
        // Its copy is still a copy: the SRTP state of the stream was kept.
        assert!(matches!(read.open(now, &repair), Read::Dropped));
    }

    #[test]
    fn a_stream_is_opened_here_from_the_packet_after_the_one_rtc_opened() {
        let (mut read, mut sender, now) = (read_path(), Sender::new(), Instant::now());
        let first = sender.seal(1, 100);
        let second = sender.seal(1, 101);
        assert!(matches!(read.open(now, &second), Read::Rtc), "not offered");
        read.offer(now, 1, 100, "camera");
        assert!(matches!(read.open(now, &first), Read::Rtc), "rtc's already");
        assert_eq!(opened(&mut read, now, &second), Some(101));
        // What `rtc` opened before counts as taken here: a replay of it is dropped.
        assert!(matches!(read.open(now, &first), Read::Dropped));
        // Adopted: from now on, out of order too; a replay is dropped here, and so is a forged
        // packet (`rtc`'s context no longer follows the stream), which changes nothing.
        let (third, fourth) = (sender.seal(1, 102), sender.seal(1, 103));
        assert_eq!(opened(&mut read, now, &fourth), Some(103));
        assert_eq!(opened(&mut read, now, &third), Some(102));
        assert!(matches!(read.open(now, &third), Read::Dropped));
        let mut forged = sender.seal(1, 104);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(read.open(now, &forged), Read::Dropped));
        assert!(read.refused(&forged), "nor from another address");
        assert_eq!(opened(&mut read, now, &sender.seal(1, 105)), Some(105));
    }

    #[test]
    fn only_what_rtc_opened_counts_as_taken_and_copies_of_it_stay_out_of_rtc() {
        let (mut read, mut sender, now) = (read_path(), Sender::new(), Instant::now());
        let sealed: Vec<Vec<u8>> = (0..8).map(|n| sender.seal(1, 200 + n)).collect();
        // `rtc` opened 200, 201 and 203; 202 was lost on the way.
        for seq in [200, 201, 203] {
            read.offer(now, 1, seq, "camera");
        }
        assert_eq!(opened(&mut read, now, &sealed[4]), Some(204));
        assert!(matches!(read.open(now, &sealed[1]), Read::Dropped));
        assert!(matches!(read.open(now, &sealed[3]), Read::Dropped));
        // The repair of the lost one, late, is still taken.
        assert_eq!(opened(&mut read, now, &sealed[2]), Some(202));
        // `rtc` opened one more (from another address): a copy of it is not opened here.
        read.offer(now, 1, 205, "camera");
        assert!(matches!(read.open(now, &sealed[5]), Read::Dropped));
        // From elsewhere than the selected pair, a copy of what was taken is not `rtc`'s either;
        // a new packet is.
        assert!(read.refused(&sealed[4]));
        assert!(read.refused(&sealed[0]));
        assert!(!read.refused(&sealed[6]));
        assert_eq!(opened(&mut read, now, &sealed[6]), Some(206));
    }

    #[test]
    fn a_packet_with_extensions_and_padding_opens_to_what_rtp_reads_from_it() {
        let (mut read, mut sender, now) = (read_path(), Sender::new(), Instant::now());
        let _ = sender.seal(5, 1);
        read.offer(now, 5, 1, "camera");
        let mut header = rtc::rtp::Header {
            version: 2,
            ssrc: 5,
            sequence_number: 2,
            payload_type: 96,
            padding: true,
            ..Default::default()
        };
        for (id, value) in [(1, &b"0"[..]), (3, b"abc"), (10, b"0123456789")] {
            header
                .set_extension(id, bytes::Bytes::from_static(value))
                .expect("an extension");
        }
        let packet = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::from_static(b"a payload of 19 b"),
        };
        let plain = packet.marshal().expect("marshals");
        assert!(plain.len() > packet.header.marshal_size() + packet.payload.len());
        let sealed = sender.0.encrypt_rtp(&plain).expect("seals");
        let Read::Opened(opened) = read.open(now, &sealed) else {
            panic!("not opened here");
        };
        let expected = rtc::rtp::Packet::unmarshal(&mut &plain[..]).expect("reads");
        assert_eq!(opened.packet, expected);
        assert_eq!(opened.packet.payload, packet.payload);
        // Padding longer than the payload: authentic, so its index is taken, but not a packet.
        let mut bad = plain.to_vec();
        *bad.last_mut().expect("bytes") = 255;
        bad[3] = 3; // the next sequence number, not a replay
        let sealed = sender.0.encrypt_rtp(&bad).expect("seals");
        assert!(matches!(read.open(now, &sealed), Read::Dropped));
    }

    #[test]
    fn the_payload_starts_after_the_whole_extension_block() {
        let (mut read, mut sender, now) = (read_path(), Sender::new(), Instant::now());
        let _ = sender.seal(5, 1);
        read.offer(now, 5, 1, "camera");
        let mut crypto = RtpCrypto::new(&keys(), false).expect("keys");
        let mut seal = |seq: u16, block: &[u8]| {
            let [high, low] = seq.to_be_bytes();
            let mut datagram = vec![0x90, 96, high, low, 0, 0, 0, 1, 0, 0, 0, 5];
            datagram.extend_from_slice(block);
            let header_len = datagram.len();
            datagram.extend_from_slice(b"the payload");
            crypto
                .seal(&mut datagram, header_len, 5, seq)
                .expect("sealed");
            datagram
        };
        // The reserved id 15 ends the elements (RFC 8285 §4.2), not the block: `rtc` stops
        // reading there, and the payload still starts after the block's two words.
        let ended = seal(2, &[0xbe, 0xde, 0, 2, 0x10, 42, 0xf0, 1, 2, 3, 4, 5]);
        let Read::Opened(ended) = read.open(now, &ended) else {
            panic!("not opened here");
        };
        assert_eq!(ended.packet.payload.as_ref(), b"the payload");
        assert_eq!(
            ended.packet.header.get_extension(1).as_deref(),
            Some(&[42][..])
        );
        // An element of 16 bytes in a block of one word: `rtc` would read it from the payload.
        let overlong = seal(3, &[0xbe, 0xde, 0, 1, 0x1f, 0, 0, 0]);
        assert!(matches!(read.open(now, &overlong), Read::Dropped));
        // Taken all the same: a copy is a replay.
        assert!(matches!(read.open(now, &overlong), Read::Dropped));
        let next = seal(4, &[0xbe, 0xde, 0, 1, 0x10, 7, 0, 0]);
        assert_eq!(opened(&mut read, now, &next), Some(4));
    }

    #[test]
    fn a_stream_rtc_saw_wrap_before_it_was_adopted_stays_with_rtc() {
        let (mut read, mut sender, now) = (read_path(), Sender::new(), Instant::now());
        // `rtc` opened 65 535 and then 0 (the counter went to 1), and its offers said so before
        // the own path took a packet.
        let _ = (sender.seal(2, 65_535), sender.seal(2, 0));
        read.offer(now, 2, 65_535, "camera");
        read.offer(now, 2, 0, "camera");
        assert!(matches!(read.open(now, &sender.seal(2, 1)), Read::Rtc));
        // Its packets are not even tried: while the keys are still to be found, they would count
        // as misses and turn the path off for the whole connection (a tap without keys here).
        let mut searching = OwnRead::new(KeyTap::new(), Vec::new());
        searching.offer(now, 2, 65_535, "camera");
        searching.offer(now, 2, 0, "camera");
        for seq in 1..=MAX_KEY_MISSES as u16 {
            assert!(matches!(
                searching.open(now, &sender.seal(2, seq)),
                Read::Rtc
            ));
        }
        assert!(
            matches!(&searching.open, Keys::Unknown(0, tried) if tried.is_empty()),
            "nothing tried"
        );
        searching.offer(now, 4, 10, "microphone");
        // Packets none of the keys opens, that `rtc` does not open either (forged): no misses.
        for seq in 11..11 + 2 * MAX_KEY_MISSES as u16 {
            let _ = searching.open(now, &sender.seal(4, seq));
        }
        assert!(
            matches!(searching.open, Keys::Unknown(0, _)),
            "forged ones not counted"
        );
        // Ones `rtc` opened after none of the keys did are misses.
        for seq in 100..100 + MAX_KEY_MISSES as u16 {
            let _ = searching.open(now, &sender.seal(4, seq));
            assert!(
                !matches!(searching.open, Keys::Refused),
                "only once rtc opened it"
            );
            searching.offer(now, 4, seq, "microphone");
        }
        assert!(matches!(searching.open, Keys::Refused), "misses counted");
        // One that wraps after it was adopted is the own context's to follow.
        let _ = sender.seal(3, 65_534);
        read.offer(now, 3, 65_534, "screen");
        for seq in [65_535, 0, 1] {
            assert_eq!(opened(&mut read, now, &sender.seal(3, seq)), Some(seq));
        }
    }

    #[test]
    fn after_an_adopted_stream_wraps_a_replay_from_before_the_wrap_is_dropped_not_rtcs() {
        let (mut read, mut sender, now) = (read_path(), Sender::new(), Instant::now());
        // `rtc` opened 100, and its context saw nothing of the stream after.
        let mut rtcs = keys().context().expect("a context");
        rtcs.decrypt_rtp(&sender.seal(5, 100)).expect("opens");
        read.offer(now, 5, 100, "camera");
        // Sealed and opened here before the wrap (rollover counter 0), and recorded by someone
        // on the path.
        let recorded = sender.seal(5, 20_000);
        for seq in [101, 20_000, 40_000, 60_000] {
            let datagram = if seq == 20_000 {
                recorded.clone()
            } else {
                sender.seal(5, seq)
            };
            assert_eq!(opened(&mut read, now, &datagram), Some(seq));
        }
        // The numbers wrap: 5 000 is the 70 536th packet (counter 1).
        assert_eq!(opened(&mut read, now, &sender.seal(5, 5_000)), Some(5_000));
        // Replayed now, 20 000 lies ahead of the newest at counter 1, where it does not
        // authenticate. `rtc`'s context, which last saw 100 at counter 0, would open it as new.
        assert!(matches!(read.open(now, &recorded), Read::Dropped));
        assert!(read.refused(&recorded), "nor from another address");
        assert!(
            rtcs.decrypt_rtp(&recorded).is_ok(),
            "what rtc would have done"
        );
        // Nothing moved: the stream's own 20 000, at counter 1, still opens.
        assert!(!read.refused(&sender.seal(5, 19_999)));
        assert_eq!(
            opened(&mut read, now, &sender.seal(5, 20_000)),
            Some(20_000)
        );
    }

    #[test]
    fn rtp_authenticates_with_the_keys_found_without_being_taken() {
        let mut read = read_path::<&str>();
        let mut sender = Sender::new();
        let genuine = sender.seal(9, 100);
        let mut forged = genuine.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(read.authenticates(&genuine));
        assert!(!read.authenticates(&forged));
        assert!(!read.authenticates(&genuine[..12]), "too short");
        let mut unknown = OwnRead::<&str>::new(KeyTap::new(), Vec::new());
        assert!(!unknown.authenticates(&genuine), "no keys found yet");
        // Nothing was taken: the stream's packet still opens, once.
        read.offer(Instant::now(), 9, 99, "camera");
        assert!(read.authenticates(&genuine));
        assert_eq!(opened(&mut read, Instant::now(), &genuine), Some(100));
        assert!(!read.authenticates(&genuine), "now a replay");
        unknown.open = Keys::Refused;
        assert!(!unknown.authenticates(&genuine));
    }

    #[test]
    fn a_forged_sender_report_far_ahead_does_not_keep_the_genuine_ones_out() {
        let mut read = read_path::<&str>();
        let mut remote = keys().context().expect("a context");
        let report = |ssrc, ntp_time| {
            rtc::rtcp::sender_report::SenderReport {
                ssrc,
                ntp_time,
                ..Default::default()
            }
            .marshal()
            .expect("marshals")
        };
        let first = remote.encrypt_rtcp(&report(4, 1)).expect("seals").to_vec();
        // Its index (E flag set) moved far ahead, under a tag that no longer matches: sent from
        // the publisher's address before its first genuine report.
        let mut forged = first.clone();
        let at = forged.len() - 14;
        forged[at..at + 4].copy_from_slice(&0xc000_0000u32.to_be_bytes());
        assert_eq!(read.sender_reports(&forged), Reports::Unknown);
        assert_eq!(read.sender_reports(&first), Reports::Opened(vec![(4, 1)]));
        let second = remote.encrypt_rtcp(&report(4, 2)).expect("seals").to_vec();
        assert_eq!(read.sender_reports(&second), Reports::Opened(vec![(4, 2)]));
        assert_eq!(
            read.sender_reports(&second),
            Reports::Refused,
            "a replay, dropped"
        );
        // What the `rtc` context with a window of 64 used before did: the forged index moved
        // its window, so the genuine first report looked too old.
        let mut before = keys().context_with_replay_window(64).expect("a context");
        assert!(before.decrypt_rtcp(&forged).is_err());
        assert!(before.decrypt_rtcp(&first).is_err(), "kept out");
    }

    #[test]
    fn srtcp_finds_the_keys_before_any_media_and_is_screened_from_then_on() {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc, TransportLayerCc,
        };
        let material: Vec<u8> = (0..64).collect();
        let [_, remote] = KeyTap::with_material(&material)
            .keys(ProtectionProfile::Aes128CmHmacSha1_80)
            .expect("keys");
        let mut sealing = remote.context().expect("a context");
        let mut seal = |plain: Vec<u8>| sealing.encrypt_rtcp(&plain).expect("seals").to_vec();
        // Feedback counting 80 × 8 192 packets in one datagram, as the remote's first RTCP.
        let feedback = TransportLayerCc {
            sender_ssrc: 4,
            media_ssrc: 5,
            packet_status_count: 8_192,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketNotReceived,
                run_length: 8_192,
            })],
            ..Default::default()
        }
        .marshal()
        .expect("marshals");
        let flood = seal(feedback.repeat(80));
        let report = |ntp_time| {
            rtc::rtcp::sender_report::SenderReport {
                ssrc: 4,
                ntp_time,
                ..Default::default()
            }
            .marshal()
            .expect("marshals")
            .to_vec()
        };
        let first = seal(report(1));
        let mut forged = flood.clone();
        forged[20] ^= 1;
        let mut unencrypted = flood.clone();
        let flag = unencrypted.len() - 14;
        unencrypted[flag] &= 0x7f;
        // The remote sealed with the DTLS server's half (1), under AES-CM.
        let reader = |layouts: &[ProtectionProfile], half: Option<usize>| {
            let mut read = OwnRead::<&str>::new(KeyTap::with_material(&material), layouts.to_vec());
            if let Some(half) = half {
                read.set_remote_half(half);
            }
            read
        };
        let cm = ProtectionProfile::Aes128CmHmacSha1_80;
        let both = [ProtectionProfile::AeadAes128Gcm, cm];
        let mut unexported = OwnRead::<&str>::new(KeyTap::new(), both.to_vec());
        unexported.set_remote_half(1);
        // Nothing is found with keys the remote does not use, though it holds them: this side's
        // half, a layout not offered, or before a description said which half is the remote's.
        for (mut read, unfound) in [
            (unexported, "before DTLS exported keys"),
            (reader(&both, None), "before a description"),
            (reader(&both, Some(0)), "this side's half"),
            (
                reader(&[ProtectionProfile::AeadAes128Gcm], Some(1)),
                "a layout not offered",
            ),
        ] {
            assert_eq!(read.sender_reports(&flood), Reports::Unknown, "{unfound}");
            assert!(matches!(read.open, Keys::Unknown(0, _)), "{unfound}");
        }
        let mut read = reader(&both, Some(1));
        read.set_remote_half(0);
        assert_eq!(
            read.remote_half(),
            Some(1),
            "a later description is not heard"
        );
        // What does not authenticate finds nothing, and stays `rtc`'s to refuse.
        for unknown in [&forged, &unencrypted] {
            assert_eq!(read.sender_reports(unknown), Reports::Unknown);
            assert!(matches!(read.open, Keys::Unknown(0, _)), "no keys from it");
        }
        // The flood authenticates: it finds the keys, and is refused unread (it went to `rtc`'s
        // parser before).
        assert_eq!(read.sender_reports(&flood), Reports::Refused);
        assert!(matches!(read.open, Keys::Opening(..)));
        assert_eq!(read.sender_reports(&first), Reports::Opened(vec![(4, 1)]));
        assert_eq!(read.sender_reports(&first), Reports::Refused, "a replay");
        assert_eq!(read.sender_reports(&unencrypted), Reports::Refused);
        // The remote's media opens with the keys found, from the packet after `rtc`'s.
        let mut media = remote.context().expect("a context");
        let mut packet = |seq| {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    ssrc: 6,
                    sequence_number: seq,
                    payload_type: 96,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(b"payload"),
            };
            let plain = packet.marshal().expect("marshals");
            media.encrypt_rtp(&plain).expect("seals").to_vec()
        };
        let _ = packet(1);
        read.offer(Instant::now(), 6, 1, "camera");
        let second = packet(2);
        assert_eq!(opened(&mut read, Instant::now(), &second), Some(2));
    }

    #[test]
    fn a_stream_that_still_sends_keeps_its_place() {
        let (mut read, mut sender, start) = (read_path(), Sender::new(), Instant::now());
        for ssrc in 0..MAX_STREAMS as u32 {
            let _ = sender.seal(ssrc, 10);
            read.offer(start, ssrc, 10, "layer");
            assert_eq!(opened(&mut read, start, &sender.seal(ssrc, 11)), Some(11));
        }
        // A new stream while all send: it stays with rtc.
        let late = start + QUIET / 2;
        let _ = sender.seal(99, 10);
        read.offer(late, 99, 10, "new");
        assert!(matches!(read.open(late, &sender.seal(99, 11)), Read::Rtc));
        // Once one has been quiet long enough, it gives its place.
        for ssrc in 1..MAX_STREAMS as u32 {
            assert_eq!(opened(&mut read, late, &sender.seal(ssrc, 12)), Some(12));
        }
        let later = start + QUIET;
        read.offer(later, 99, 11, "new");
        assert_eq!(opened(&mut read, later, &sender.seal(99, 12)), Some(12));
        assert!(
            matches!(read.open(later, &sender.seal(0, 12)), Read::Rtc),
            "0's gone"
        );
    }
}
