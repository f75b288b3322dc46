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
//! packets, so handing the SSRC back would freeze the camera. So a stream is handed back only if
//! its packets stop opening here (new keys), and then everything `rtc` opens is offered again.
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

/// Streams opened here per connection at most (simulcast layers of a few tracks); past it the one
/// that was quiet longest goes back to `rtc`.
const MAX_STREAMS: usize = 32;

/// Packets of a stream in a row that must fail to open here, with none opened for
/// [`FAILING_FOR`], before everything goes back to `rtc`; and packets the key search may fail on.
/// Both: a forged packet from the remote's address fails too, and must not be able to turn the
/// path off while the real ones open.
const MAX_FAILURES: u32 = 8;
const FAILING_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// What the connection opens with.
enum Keys {
    /// Not found yet: the next offered stream's packet tries the candidates. The count is of
    /// packets none opened.
    Unknown(u32),
    /// The remote side's keys, found by which candidate opened a packet. The context is never
    /// replaced: it keeps each SSRC's rollover counter, so a stream offered again later (its place
    /// given away meanwhile) opens with the right one.
    Opening(Box<Context>),
    /// No candidate opened offered packets, or the found keys stopped opening them: everything
    /// stays with `rtc`.
    Refused,
}

struct Stream<T> {
    tag: T,
    /// The last packet was opened here; before, the newest sequence number `rtc` opened.
    adopted: bool,
    last_seq: u16,
    failures: u32,
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

impl<T: Clone> OwnRead<T> {
    pub(crate) fn new(keys: Arc<KeyTap>) -> Self {
        Self {
            keys,
            open: Keys::Unknown(0),
            streams: crate::FastMap::default(),
        }
    }

    /// `rtc` opened a video packet of `ssrc` numbered `seq`, tagged `tag`: the stream's next
    /// packet may be opened here.
    pub(crate) fn offer(&mut self, now: Instant, ssrc: u32, seq: u16, tag: T) {
        if matches!(self.open, Keys::Refused) {
            return;
        }
        if !self.streams.contains_key(&ssrc) && self.streams.len() >= MAX_STREAMS {
            let quietest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(&ssrc, _)| ssrc);
            if let Some(quietest) = quietest {
                self.streams.remove(&quietest);
            }
        }
        self.streams.insert(
            ssrc,
            Stream {
                tag,
                adopted: false,
                last_seq: seq,
                failures: 0,
                last_seen: now,
            },
        );
    }

    /// Opens `datagram` if it is RTP of a stream offered or adopted here: `None` means it is
    /// `rtc`'s to handle.
    pub(crate) fn open(&mut self, now: Instant, datagram: &[u8]) -> Option<Opened<T>> {
        // RFC 7983 and RFC 5761: RTP, not RTCP.
        let &[128..=191, second, s0, s1, _, _, _, _, a, b, c, d, ..] = datagram else {
            return None;
        };
        if (192..=223).contains(&second) {
            return None;
        }
        let ssrc = u32::from_be_bytes([a, b, c, d]);
        let seq = u16::from_be_bytes([s0, s1]);
        let stream = self.streams.get_mut(&ssrc)?;
        // Ahead of what `rtc` opened, without a wrap in between.
        if !stream.adopted && seq <= stream.last_seq {
            return None;
        }
        let opened = match &mut self.open {
            Keys::Refused => return None,
            Keys::Opening(context) => context.decrypt_rtp(datagram).ok(),
            Keys::Unknown(misses) => match find_keys(&self.keys, datagram) {
                Some((context, plain)) => {
                    self.open = Keys::Opening(Box::new(context));
                    Some(plain)
                }
                None => {
                    *misses += 1;
                    if *misses >= MAX_FAILURES {
                        tracing::warn!(
                            "no SRTP keys seen as DTLS exported them open the remote's media: \
                             rtc's read path stays"
                        );
                        self.refuse();
                    }
                    return None;
                }
            },
        };
        let packet = opened.and_then(|plain| rtc::rtp::Packet::unmarshal(&mut plain.freeze()).ok());
        let Some(packet) = packet else {
            stream.failures += 1;
            if stream.failures >= MAX_FAILURES
                && now.duration_since(stream.last_seen) >= FAILING_FOR
            {
                tracing::warn!(
                    ssrc,
                    "incoming media stopped opening with the connection's SRTP keys: rtc's read \
                     path takes it back"
                );
                self.refuse();
            }
            return None;
        };
        stream.adopted = true;
        stream.failures = 0;
        stream.last_seq = seq;
        stream.last_seen = now;
        Some(Opened {
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

    fn refuse(&mut self) {
        self.open = Keys::Refused;
        self.streams.clear();
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
    .filter_map(|side| side.context().ok())
    .find_map(|mut context| {
        let plain = context.decrypt_rtp(datagram).ok()?;
        Some((context, plain))
    })
}
