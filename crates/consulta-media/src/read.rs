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
//! packets, so handing the SSRC back would freeze the camera. A packet that does not open here
//! (a forged one) goes to `rtc`, which drops it too; a replayed one is dropped here.
//!
//! RTCP, STUN and DTLS go to `rtc` as before (the sender reports in RTCP are read here too, for the
//! receiver reports); so does a packet from anywhere but the address `rtc` sends to (the selected
//! candidate pair), so that ICE decides where media may come from. Transport-wide feedback, NACKs
//! and receiver reports are `receive::ReceiveFeedback`'s, which notes the packets of both paths.

use std::sync::Arc;
use std::time::Instant;

use rtc::shared::marshal::Unmarshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::keytap::KeyTap;

/// Streams offered or opened here per connection at most (simulcast layers of a few tracks).
/// Past it, a stream not opened here yet, or one quiet for [`QUIET`], gives its place to a new
/// one; if there is none, the new one stays with `rtc`. An adopted stream that still sends keeps
/// its place: given back to `rtc`, whose context has not seen it since, it could freeze.
const MAX_STREAMS: usize = 32;
const QUIET: std::time::Duration = std::time::Duration::from_secs(5);

/// Offered packets the key search may fail to open before the path is given up for the
/// connection (`rtc` opening everything then).
const MAX_KEY_MISSES: u32 = 8;

/// The replay windows of the own context: `rtc`'s for its remote context (64 packets each for
/// SRTP and SRTCP), so a repair arriving later than that is refused as before.
const REPLAY_WINDOW: usize = 64;

/// What the connection opens with.
enum Keys {
    /// Not found yet: the next offered stream's packet tries the candidates. The count is of
    /// packets none opened.
    Unknown(u32),
    /// The remote side's keys, found by which candidate opened a packet. The context is never
    /// replaced: it keeps each SSRC's rollover counter, so a stream offered again later (its place
    /// given away meanwhile) opens with the right one.
    Opening(Box<Context>),
    /// No candidate opened offered packets: everything stays with `rtc`.
    Refused,
}

struct Stream<T> {
    tag: T,
    /// Its packets are opened here; before, the newest sequence number `rtc` opened.
    adopted: bool,
    last_seq: u16,
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
    /// A packet of a stream opened here, seen before (a replay or a network duplicate): dropped,
    /// as `rtc`'s replay window drops it.
    Replayed,
    /// `rtc`'s to handle: not RTP of a stream here, or it did not open (a forged packet, which
    /// `rtc` drops too).
    Rtc,
}

impl<T: Clone> OwnRead<T> {
    pub(crate) fn new(keys: Arc<KeyTap>) -> Self {
        Self {
            keys,
            open: Keys::Unknown(0),
            streams: crate::FastMap::default(),
        }
    }

    /// `rtc` opened a packet of `ssrc` numbered `seq` and tagged it `tag`: the stream's next
    /// packet may be opened here. A stream already opened here keeps its place and takes the tag.
    pub(crate) fn offer(&mut self, now: Instant, ssrc: u32, seq: u16, tag: T) {
        if matches!(self.open, Keys::Refused) {
            return;
        }
        if let Some(stream) = self.streams.get_mut(&ssrc) {
            if !stream.adopted {
                // Numbers run on from what `rtc` opened last; a smaller one is a wrap (or a packet
                // reordered across one, which is as unsafe to guess).
                stream.wrapped |= seq < stream.last_seq;
                stream.last_seq = seq;
            }
            stream.tag = tag;
            stream.last_seen = now;
            return;
        }
        if self.streams.len() >= MAX_STREAMS {
            let replaceable = self
                .streams
                .iter()
                .filter(|(_, s)| !s.adopted || now.saturating_duration_since(s.last_seen) >= QUIET)
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(&ssrc, _)| ssrc);
            let Some(replaceable) = replaceable else {
                return;
            };
            self.streams.remove(&replaceable);
        }
        self.streams.insert(
            ssrc,
            Stream {
                tag,
                adopted: false,
                last_seq: seq,
                wrapped: false,
                last_seen: now,
            },
        );
    }

    /// Opens `datagram` if it is RTP of a stream offered or adopted here.
    pub(crate) fn open(&mut self, now: Instant, datagram: &[u8]) -> Read<T> {
        // RFC 7983 and RFC 5761: RTP, not RTCP.
        let &[128..=191, second, s0, s1, _, _, _, _, a, b, c, d, ..] = datagram else {
            return Read::Rtc;
        };
        if (192..=223).contains(&second) {
            return Read::Rtc;
        }
        let ssrc = u32::from_be_bytes([a, b, c, d]);
        let seq = u16::from_be_bytes([s0, s1]);
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            return Read::Rtc;
        };
        // Ahead of what `rtc` opened, with no wrap since it first did.
        if !stream.adopted && (stream.wrapped || seq <= stream.last_seq) {
            return Read::Rtc;
        }
        let opened = match &mut self.open {
            Keys::Refused => return Read::Rtc,
            Keys::Opening(context) => context.decrypt_rtp(datagram),
            Keys::Unknown(misses) => match find_keys(&self.keys, datagram) {
                Some((context, plain)) => {
                    self.open = Keys::Opening(Box::new(context));
                    Ok(plain)
                }
                None => {
                    *misses += 1;
                    if *misses >= MAX_KEY_MISSES {
                        tracing::warn!(
                            "no SRTP keys seen as DTLS exported them open the remote's media: \
                             rtc's read path stays"
                        );
                        self.open = Keys::Refused;
                        self.streams.clear();
                    }
                    return Read::Rtc;
                }
            },
        };
        let plain = match opened {
            Ok(plain) => plain,
            Err(rtc::shared::error::Error::SrtpSsrcDuplicated(..)) if stream.adopted => {
                return Read::Replayed;
            }
            Err(_) => return Read::Rtc,
        };
        let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut plain.freeze()) else {
            return Read::Rtc;
        };
        stream.adopted = true;
        stream.last_seq = seq;
        stream.last_seen = now;
        Read::Opened(Opened {
            tag: stream.tag.clone(),
            packet,
        })
    }

    /// The sender reports (SSRC and NTP time) in `datagram`, if it is SRTCP that opens with the
    /// keys found.
    pub(crate) fn sender_reports(&mut self, datagram: &[u8]) -> Vec<(u32, u64)> {
        let Keys::Opening(context) = &mut self.open else {
            return Vec::new();
        };
        if !matches!(datagram, [128..=191, second, ..] if (192..=223).contains(second)) {
            return Vec::new();
        }
        let Ok(plain) = context.decrypt_rtcp(datagram) else {
            return Vec::new();
        };
        rtc::rtcp::packet::unmarshal(&mut plain.freeze())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                p.as_any()
                    .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
            })
            .map(|sr| (sr.ssrc, sr.ntp_time))
            .collect()
    }

    /// The stream's packets came with another payload type: its tag is `tag` from now on.
    pub(crate) fn retag(&mut self, ssrc: u32, tag: T) {
        if let Some(stream) = self.streams.get_mut(&ssrc) {
            stream.tag = tag;
        }
    }
}

/// The candidate keys (either side's, under either profile the connection may have negotiated)
/// that open `datagram`, with what they opened.
fn find_keys(keys: &KeyTap, datagram: &[u8]) -> Option<(Context, bytes::BytesMut)> {
    [
        ProtectionProfile::Aes128CmHmacSha1_80,
        ProtectionProfile::AeadAes128Gcm,
    ]
    .into_iter()
    .filter_map(|profile| keys.keys(profile))
    .flatten()
    .filter_map(|side| side.context_with_replay_window(REPLAY_WINDOW).ok())
    .find_map(|mut context| {
        let plain = context.decrypt_rtp(datagram).ok()?;
        Some((context, plain))
    })
}
