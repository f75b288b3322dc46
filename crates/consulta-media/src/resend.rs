//! Answers a NACK with the packet exactly as it first left, transport-wide sequence number
//! included, so that SRTP seals it to the same bytes.
//!
//! The SFU negotiates no RTX towards subscribers (see `register_codecs`), so a packet asked for
//! again goes out under
//! its own SSRC and sequence number: the same SRTP packet index, hence the same AES-GCM nonce
//! (RFC 7714 §8.1). `rtc`'s own NACK responder sits application-ward of the TWCC sender, so each
//! retransmission it makes is given a new transport-wide number on its way out: the same nonce over
//! a different plaintext, which in GCM gives away the authentication key to whoever holds both
//! packets (an on-path attacker can provoke that by dropping packets), and with it the power to
//! forge packets to the subscriber. `tests/it/srtp.rs` shows it with `rtc`'s responder.
//!
//! [`Resender`] sits wire-ward of the TWCC sender ([`SLOT`]), so what it keeps already carries
//! its number. A packet it sends again is the very plaintext that left before, and SRTP seals it
//! to the very same bytes. It still passes the congestion controller's send history (slot 1 000),
//! as `rtc`'s responder's retransmissions do.

use std::collections::HashMap;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

use crate::belt::Belt;

/// Between the congestion controller's send history (1 000) and the TWCC sender (2 000): writes
/// reach it numbered, and what it sends again is still recorded.
pub(crate) const SLOT: usize = 1_500;

/// Most streams one connection keeps packets for: each costs `size` packets of memory, and a
/// subscriber connection carries a few tracks, renegotiated now and then.
const MAX_STREAMS: usize = 32;

/// The last packets sent on one stream, by sequence number.
struct Sent {
    slots: Vec<Option<Slot>>,
    /// The highest sequence number kept (in RTP's wrapping order).
    newest: Option<u16>,
}

/// A packet kept, and how often it was sent again.
#[derive(Clone)]
struct Slot {
    packet: rtc::rtp::Packet,
    resends: crate::send::Resends,
}

impl Sent {
    fn slot(&mut self, seq: u16) -> Option<&mut Option<Slot>> {
        let len = self.slots.len().max(1);
        self.slots.get_mut(usize::from(seq) % len)
    }

    fn keep(&mut self, packet: &rtc::rtp::Packet, size: usize) {
        if self.slots.is_empty() {
            // At the first packet: a connection whose packets take another path (the own write
            // path, `send`) never needs them.
            self.slots = vec![None; size];
        }
        let seq = packet.header.sequence_number;
        if self
            .newest
            .is_none_or(|newest| seq.wrapping_sub(newest) < 0x8000)
        {
            self.newest = Some(seq);
        }
        // A packet as far behind the newest as there are slots (a repair forwarded long after)
        // would take the slot of one sent after it, and could never be fetched itself (review
        // helper-101). Within that reach, each number has a slot of its own.
        let behind = self.newest.map_or(0, |newest| newest.wrapping_sub(seq));
        if usize::from(behind) < self.slots.len()
            && let Some(slot) = self.slot(seq)
        {
            *slot = Some(Slot {
                packet: packet.clone(),
                resends: crate::send::Resends::default(),
            });
        }
    }

    /// The packet numbered `seq` to send again at `now`, if it is among the last `slots.len()`
    /// numbers sent, and was sent again fewer than `send::MAX_RESENDS` times, not within
    /// `send::RESEND_GAP` (as on the own write path: a datagram of NACKs naming the history
    /// over and over was answered every time; review helper-103). An older one could be sealed
    /// under the next rollover counter (SRTP guesses the index from the newest number), an index
    /// the stream will use again.
    fn resend(
        &mut self,
        seq: u16,
        now: Instant,
        budget: &mut crate::send::ResendBudget,
    ) -> Option<rtc::rtp::Packet> {
        let behind = usize::from(self.newest?.wrapping_sub(seq));
        if behind >= self.slots.len() {
            return None;
        }
        let slot = self
            .slot(seq)?
            .as_mut()
            .filter(|s| s.packet.header.sequence_number == seq)?;
        if !slot.resends.allowed(now) || !budget.take() {
            return None;
        }
        slot.resends.note(now);
        Some(slot.packet.clone())
    }
}

/// Keeps the last `size` packets of every local stream that negotiated NACK, and sends again the
/// ones a NACK names, as they were.
pub(crate) struct Resender {
    size: usize,
    streams: HashMap<u32, Sent>,
    belt: Belt,
    budget: crate::send::ResendBudget,
}

impl Resender {
    pub(crate) fn new(size: u16) -> Self {
        Self {
            size: usize::from(size.max(1)),
            streams: HashMap::new(),
            belt: Belt::default(),
            budget: crate::send::ResendBudget::default(),
        }
    }

    fn answer(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(sent) = self.streams.get_mut(&nack.media_ssrc) else {
            return;
        };
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                if let Some(packet) = sent.resend(seq, now, &mut self.budget) {
                    self.belt.write(TaggedPacket {
                        now,
                        transport: TransportContext::default(),
                        message: AttributedPacket::new(Packet::Rtp(packet))
                            .with(Attribute::Retransmission),
                    });
                }
            }
        }
    }
}

impl std::fmt::Debug for Resender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resender")
            .field("size", &self.size)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Resender {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                if let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() {
                    self.answer(msg.now, nack);
                }
            }
        }
        self.belt.read(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.belt.next_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(sent) = self.streams.get_mut(&packet.header.ssrc)
        {
            sent.keep(packet, self.size);
            self.budget.sent();
        }
        self.belt.write(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.belt.next_write()
    }
}

impl Interceptor for Resender {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if nack && self.streams.len() < MAX_STREAMS {
            self.streams.entry(info.ssrc).or_insert_with(|| Sent {
                slots: Vec::new(),
                newest: None,
            });
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use rtc::interceptor::RTCPFeedback;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn stream(ssrc: u32, nack: bool) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtcp_feedback: if nack {
                vec![RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: String::new(),
                }]
            } else {
                Vec::new()
            },
            ..StreamInfo::default()
        }
    }

    fn rtp(ssrc: u32, seq: u16, twcc: u8) -> TaggedPacket {
        let mut packet = rtc::rtp::Packet::default();
        packet.header.ssrc = ssrc;
        packet.header.sequence_number = seq;
        packet.payload = bytes::Bytes::from(vec![twcc; 3]);
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    fn nack(ssrc: u32, packet_id: u16, lost_packets: u16) -> TaggedPacket {
        nack_at(ssrc, packet_id, lost_packets, Instant::now())
    }

    fn nack_at(ssrc: u32, packet_id: u16, lost_packets: u16, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(TransportLayerNack {
                sender_ssrc: 9,
                media_ssrc: ssrc,
                nacks: vec![NackPair {
                    packet_id,
                    lost_packets,
                }],
            })])),
        }
    }

    fn resent(resender: &mut Resender) -> Vec<(u32, u16, Vec<u8>)> {
        std::iter::from_fn(|| resender.poll_write())
            .map(|msg| {
                assert!(msg.message.has(&Attribute::Retransmission));
                let Packet::Rtp(p) = msg.message.packet else {
                    panic!("only RTP is sent again");
                };
                (p.header.ssrc, p.header.sequence_number, p.payload.to_vec())
            })
            .collect()
    }

    #[test]
    fn a_nacked_packet_goes_again_as_it_was_written_here() {
        let mut resender = Resender::new(64);
        resender.bind_local_stream(&stream(1, true));
        for seq in 100..110 {
            resender.handle_write(rtp(1, seq, seq as u8)).unwrap();
        }
        assert_eq!(std::iter::from_fn(|| resender.poll_write()).count(), 10);
        // 102, and 104 and 106 from the bitmap (bits 1 and 3).
        resender.handle_read(nack(1, 102, 0b1010)).unwrap();
        assert_eq!(
            resent(&mut resender),
            vec![
                (1, 102, vec![102; 3]),
                (1, 104, vec![104; 3]),
                (1, 106, vec![106; 3])
            ]
        );
        assert!(
            resender.poll_read().is_some(),
            "the NACK goes on up the chain"
        );
    }

    #[test]
    fn a_packet_goes_again_a_few_times_at_most_and_not_twice_at_once() {
        let mut resender = Resender::new(64);
        resender.bind_local_stream(&stream(1, true));
        resender.handle_write(rtp(1, 100, 1)).unwrap();
        let _ = resender.poll_write();
        let start = Instant::now();
        // Named three times in one NACK, then again at once: sent once.
        resender.handle_read(nack_at(1, 100, 0, start)).unwrap();
        resender.handle_read(nack_at(1, 99, 0b11, start)).unwrap();
        assert_eq!(resent(&mut resender).len(), 1);
        let mut at = start;
        let mut count = 1;
        for _ in 0..10 {
            at += crate::send::RESEND_GAP;
            resender.handle_read(nack_at(1, 100, 0, at)).unwrap();
            count += resent(&mut resender).len();
        }
        assert_eq!(count, usize::from(crate::send::MAX_RESENDS));
    }

    #[test]
    fn what_is_no_longer_kept_or_never_was_is_not_sent() {
        let mut resender = Resender::new(4);
        resender.bind_local_stream(&stream(1, true));
        resender.bind_local_stream(&stream(2, false));
        for seq in 0..8 {
            resender.handle_write(rtp(1, seq, 0)).unwrap();
            resender.handle_write(rtp(2, seq, 0)).unwrap();
        }
        let _ = std::iter::from_fn(|| resender.poll_write()).count();
        // 0-3 were overwritten by 4-7; stream 2 negotiated no NACK; stream 3 is unknown.
        resender.handle_read(nack(1, 0, 0b111)).unwrap();
        resender.handle_read(nack(2, 5, 0)).unwrap();
        resender.handle_read(nack(3, 5, 0)).unwrap();
        assert!(resent(&mut resender).is_empty());
        resender.handle_read(nack(1, 7, 0)).unwrap();
        assert_eq!(resent(&mut resender), vec![(1, 7, vec![0; 3])]);
        // A late packet, as far behind as there are slots, does not take 7's.
        resender.handle_write(rtp(1, 3, 9)).unwrap();
        let _ = std::iter::from_fn(|| resender.poll_write()).count();
        let later = Instant::now() + crate::send::RESEND_GAP;
        resender.handle_read(nack_at(1, 7, 0, later)).unwrap();
        assert_eq!(resent(&mut resender), vec![(1, 7, vec![0; 3])]);
        // Numbering jumps ahead: 7 still sits in its slot, but is now too far behind to send.
        resender.handle_write(rtp(1, 20_004, 0)).unwrap();
        let _ = std::iter::from_fn(|| resender.poll_write()).count();
        resender.handle_read(nack(1, 7, 0)).unwrap();
        assert!(resent(&mut resender).is_empty(), "older than the history");
        resender.unbind_local_stream(&stream(1, true));
        resender.handle_read(nack(1, 7, 0)).unwrap();
        assert!(
            resent(&mut resender).is_empty(),
            "an unbound stream is forgotten"
        );
    }
}
