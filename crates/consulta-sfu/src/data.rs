//! Relaying LiveKit `DataPacket`s between participants (spec `matrixrtc-livekit.md` §2.10).
//!
//! A client sends a protobuf `DataPacket` on its `_reliable` or `_lossy` data channel. The SFU
//! decodes it, refuses it if the sender may not publish data, stamps it with the sender's identity
//! and sid (a client must not speak for someone else), keeps `sequence` (receivers deduplicate
//! reliable packets per sender sid by it), and forwards it on the same kind of channel to everyone
//! else or to the `destination_identities` it names. This module makes that decision; the engine
//! owns the channels.

use std::collections::{HashMap, VecDeque};

use livekit_protocol::{DataPacket, data_packet};
use prost::Message;

use crate::ids::ParticipantSid;

/// SCTP max-message-size the SFU's peer connections advertise, and the largest data packet it
/// relays, stamped with its sender. livekit-client sends packets up to the smaller of this and
/// 64 000 bytes (`RTCEngine.sendDataPacket`) and resolves the send: so every packet it sends is
/// relayed, unless stamping the sender's identity and sid (only where it left them empty) takes
/// it past this. Its own clients keep user data to 15 KiB and split larger payloads into
/// streams. Until review helper-75 the SFU dropped anything over 16 KiB while advertising this,
/// so a 16–24 KiB `publishData` resolved and reached no one. `rtc` keeps one zero-filled buffer
/// of this size per SCTP association, so it is resident memory per participant (64 KiB each at
/// the RFC 8841 default), and it sends nothing larger either.
pub const SCTP_MAX_MESSAGE_BYTES: usize = 24 * 1024;

/// Why a data packet is not relayed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DataError {
    /// Larger than [`SCTP_MAX_MESSAGE_BYTES`], as sent or once stamped.
    #[error("data packet of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a `DataPacket`.
    #[error("malformed data packet: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The sender's grant lacks `canPublishData`.
    #[error("participant may not publish data")]
    NotPermitted,
    /// A packet only the server may send (`speaker`: livekit-client takes it as the room's
    /// active speakers), or a transcription of someone other than its sender.
    #[error("a client may not send this kind of data packet")]
    Forged,
}

/// The kind of data channel, which a relayed packet keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// `_reliable`: ordered, retransmitted.
    Reliable,
    /// `_lossy`: unordered, no retransmissions.
    Lossy,
}

impl DataKind {
    /// The kind of a channel by its label; `None` for other channels (`_data_track`, custom ones).
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "_reliable" => Some(Self::Reliable),
            "_lossy" => Some(Self::Lossy),
            _ => None,
        }
    }

    /// The channel label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Reliable => "_reliable",
            Self::Lossy => "_lossy",
        }
    }
}

/// Who sent a data packet, as the session core knows them.
#[derive(Debug, Clone, Copy)]
pub struct DataSender<'a> {
    /// The sender's identity.
    pub identity: &'a str,
    /// The sender's sid.
    pub sid: &'a ParticipantSid,
    /// `canPublishData` from the sender's permission.
    pub can_publish_data: bool,
}

/// A data packet ready to forward.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayedData {
    /// The re-encoded `DataPacket`, stamped with the sender.
    pub bytes: Vec<u8>,
    /// Identities to deliver to; empty means every participant but the sender.
    pub destinations: Vec<String>,
    /// The kind of channel to forward on (the one it arrived on).
    pub kind: DataKind,
    /// The packet's `sequence`, unchanged.
    pub sequence: u32,
}

/// Checks, decodes and stamps a `DataPacket` that `sender` sent on a channel of `kind`.
pub fn relay_data_packet(
    bytes: &[u8],
    kind: DataKind,
    sender: &DataSender<'_>,
) -> Result<RelayedData, DataError> {
    if !sender.can_publish_data {
        return Err(DataError::NotPermitted);
    }
    if bytes.len() > SCTP_MAX_MESSAGE_BYTES {
        return Err(DataError::TooLarge {
            len: bytes.len(),
            max: SCTP_MAX_MESSAGE_BYTES,
        });
    }
    let mut packet = DataPacket::decode(bytes)?;
    #[allow(
        deprecated,
        reason = "LiveKit deprecated the speaker packet for speakers_changed; livekit-client still obeys it"
    )]
    match &packet.value {
        Some(data_packet::Value::Speaker(_)) => return Err(DataError::Forged),
        Some(data_packet::Value::Transcription(t))
            if t.transcribed_participant_identity != sender.identity =>
        {
            return Err(DataError::Forged);
        }
        _ => {}
    }
    packet.participant_identity = sender.identity.to_owned();
    packet.participant_sid = sender.sid.to_string();
    let mut destinations = packet.destination_identities.clone();
    #[allow(
        deprecated,
        reason = "older clients read and write the sender and destinations inside UserPacket and \
                  the kind field; keep them truthful"
    )]
    {
        packet.kind = match kind {
            DataKind::Reliable => data_packet::Kind::Reliable,
            DataKind::Lossy => data_packet::Kind::Lossy,
        }
        .into();
        if let Some(data_packet::Value::User(user)) = &mut packet.value {
            user.participant_identity = sender.identity.to_owned();
            user.participant_sid = sender.sid.to_string();
            if destinations.is_empty() {
                destinations = user.destination_identities.clone();
            }
        }
    }
    let stamped = packet.encoded_len();
    if stamped > SCTP_MAX_MESSAGE_BYTES {
        return Err(DataError::TooLarge {
            len: stamped,
            max: SCTP_MAX_MESSAGE_BYTES,
        });
    }
    Ok(RelayedData {
        bytes: packet.encode_to_vec(),
        destinations,
        kind,
        sequence: packet.sequence,
    })
}

impl RelayedData {
    /// Whether this packet repeats one already relayed from its sender, whose reliable packets
    /// reached `last` (their `sequence`; 0: none yet). After a resume the client sends again
    /// whatever followed the `last_message_seq` it was told, and the connection it kept may still
    /// deliver the first copies of some of it. A packet arriving after a higher-numbered one counts
    /// too (livekit-client's receivers would drop it as well). Packets without a sequence (lossy
    /// ones, and those of clients that number nothing) are never repeats.
    pub fn repeats(&self, last: u32) -> bool {
        self.kind == DataKind::Reliable && self.sequence != 0 && self.sequence <= last
    }
}

/// Bytes one receiver's data channel may have queued or sent unacknowledged before it takes no
/// more messages (the engine's count, which SCTP lowers as the receiver acknowledges). The SFU
/// relays each participant's data to everyone in the room; a receiver whose link is slow, or whose
/// client holds its SCTP window shut, would otherwise have the room's data queued for it without
/// bound. A megabyte is over a thousand chat messages, or seconds of a busy data track.
pub const DATA_QUEUE_BYTES: usize = 1 << 20;

/// Runs of consecutive messages from one sender that [`QueueShares`] keeps for one channel,
/// shared among the senders as the bytes are (each may start `MAX_QUEUE_RUNS / senders`, and
/// all together twice this at most, when the count of senders changes). Runs split only where
/// two senders' messages interleave, so reaching this takes several busy senders and a receiver
/// that acknowledges nothing; past its part, a sender's message that would start a new run waits
/// like one over its share.
pub const MAX_QUEUE_RUNS: usize = 1024;

/// Who holds how much of one receiver's data channel queue (of [`DATA_QUEUE_BYTES`]), so that one
/// sender's flood cannot take all of it and keep the others' data from that receiver.
///
/// Every sender keeps room in the queue for [`QUEUE_RESERVE_BYTES`] of its own however hard the
/// others flood: each may hold the queue less one reserve, divided among all senders but one,
/// so that what all the others hold leaves a reserve free. The whole queue with one sender (a
/// 1:1 room), all but the reserve with two, about 488 KiB with three, 122 KiB with nine. Never
/// less than the reserve itself, so with more than 21 senders the shares add up to more than the
/// queue, and a quiet sender may find it full. The count is of those who may send data, not of
/// those who do: a lone sender in a large room is held to its share all the same. A share
/// shrinks as senders join, and what a sender holds beyond its new share stays queued until
/// SCTP releases it, so a newcomer may find the queue full until then.
///
/// SCTP releases a channel's bytes as the receiver acknowledges them (or gives up on them),
/// oldest first on a reliable channel; the queue is kept as runs of bytes by sender, oldest
/// first, and released bytes are taken off the oldest runs. On the lossy channel, which
/// delivers out of order, that attribution is approximate, and the total stays exact.
#[derive(Debug, Default)]
pub struct QueueShares {
    /// Bytes queued by sender, oldest first; adjacent runs have different senders.
    runs: VecDeque<(ParticipantSid, usize)>,
    /// The bytes and number of each sender's runs (those with any).
    held: HashMap<ParticipantSid, Held>,
    /// The sum of `runs`' bytes.
    queued: usize,
}

/// What one sender holds of a queue.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    bytes: usize,
    runs: usize,
}

/// What every sender may always have queued for a receiver, whatever the others send: two of the
/// largest messages.
pub const QUEUE_RESERVE_BYTES: usize = 2 * SCTP_MAX_MESSAGE_BYTES;

/// Why [`QueueShares::admit`] refuses a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The receiver's queue holds [`DATA_QUEUE_BYTES`] or more.
    Full,
    /// The message would take its sender past its share of the queue (or the runs are at
    /// [`MAX_QUEUE_RUNS`]).
    OverShare,
}

impl QueueShares {
    /// Whether `sender` may queue a message of `len` bytes for the receiver, whose channel has
    /// `outstanding` bytes queued or unacknowledged now, in a room where `senders` participants
    /// (the receiver apart) may send it data. If so, the message counts as the sender's until
    /// SCTP releases it (or [`undo`](Self::undo)).
    pub fn admit(
        &mut self,
        sender: &ParticipantSid,
        len: usize,
        outstanding: usize,
        senders: usize,
    ) -> Result<(), QueueRefusal> {
        self.release_to(outstanding);
        if outstanding >= DATA_QUEUE_BYTES {
            return Err(QueueRefusal::Full);
        }
        let share = match senders {
            0 | 1 => DATA_QUEUE_BYTES,
            n => ((DATA_QUEUE_BYTES - QUEUE_RESERVE_BYTES) / (n - 1)).max(QUEUE_RESERVE_BYTES),
        };
        let last_is_sender = self.runs.back().is_some_and(|(s, _)| s == sender);
        let held = self.held.get(sender).copied().unwrap_or_default();
        let runs_allowed = (MAX_QUEUE_RUNS / senders.max(1)).max(1);
        if held.bytes + len > share
            || (!last_is_sender
                && (held.runs >= runs_allowed || self.runs.len() >= 2 * MAX_QUEUE_RUNS))
        {
            return Err(QueueRefusal::OverShare);
        }
        let held = self.held.entry(sender.clone()).or_default();
        held.bytes += len;
        match self.runs.back_mut() {
            Some((_, bytes)) if last_is_sender => *bytes += len,
            _ => {
                self.runs.push_back((sender.clone(), len));
                held.runs += 1;
            }
        }
        self.queued += len;
        Ok(())
    }

    /// Takes back the message of `len` bytes `sender` was just admitted for: the channel did not
    /// take it. (Left counted, it would be released from the oldest run, another sender's.)
    pub fn undo(&mut self, sender: &ParticipantSid, len: usize) {
        let Some((last, bytes)) = self.runs.back_mut() else {
            return;
        };
        if last != sender {
            return;
        }
        let taken = len.min(*bytes);
        *bytes -= taken;
        let emptied = *bytes == 0;
        if emptied {
            self.runs.pop_back();
        }
        self.take_held(sender, taken, emptied);
        self.queued -= taken;
    }

    /// Bytes `sender` has queued that SCTP has not released.
    pub fn held_by(&self, sender: &ParticipantSid) -> usize {
        self.held.get(sender).map_or(0, |held| held.bytes)
    }

    /// `bytes` of `sender`'s are no longer queued, and one of its runs with them if `run_gone`.
    fn take_held(&mut self, sender: &ParticipantSid, bytes: usize, run_gone: bool) {
        if let Some(held) = self.held.get_mut(sender) {
            held.bytes = held.bytes.saturating_sub(bytes);
            held.runs = held.runs.saturating_sub(usize::from(run_gone));
            if held.bytes == 0 && held.runs == 0 {
                self.held.remove(sender);
            }
        }
    }

    /// Takes what SCTP released since the last call (the channel now has `outstanding` bytes)
    /// off the oldest runs.
    fn release_to(&mut self, outstanding: usize) {
        let mut released = self.queued.saturating_sub(outstanding);
        while released > 0 {
            let Some((sender, bytes)) = self.runs.front_mut() else {
                break;
            };
            let taken = released.min(*bytes);
            *bytes -= taken;
            released -= taken;
            self.queued -= taken;
            let sender = sender.clone();
            let emptied = *bytes == 0;
            if emptied {
                self.runs.pop_front();
            }
            self.take_held(&sender, taken, emptied);
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

    use livekit_protocol::UserPacket;

    use super::*;

    fn alice() -> ParticipantSid {
        ParticipantSid::parse("PA_alice").unwrap()
    }

    fn sender(sid: &ParticipantSid, can_publish_data: bool) -> DataSender<'_> {
        DataSender {
            identity: "@alice:hs.example:DEV",
            sid,
            can_publish_data,
        }
    }

    #[allow(deprecated, reason = "building packets as older clients do")]
    fn spoofed(destinations: &[&str], user_destinations: &[&str]) -> DataPacket {
        DataPacket {
            participant_identity: "@mallory:evil.example:X".to_owned(),
            participant_sid: "PA_mallory".to_owned(),
            destination_identities: destinations.iter().map(|s| (*s).to_owned()).collect(),
            sequence: 42,
            value: Some(data_packet::Value::User(UserPacket {
                participant_identity: "@mallory:evil.example:X".to_owned(),
                participant_sid: "PA_mallory".to_owned(),
                payload: b"hello".to_vec(),
                topic: Some("chat".to_owned()),
                destination_identities: user_destinations.iter().map(|s| (*s).to_owned()).collect(),
                ..UserPacket::default()
            })),
            ..DataPacket::default()
        }
    }

    #[test]
    #[allow(deprecated, reason = "checking the fields older clients read")]
    fn identity_is_overwritten_and_sequence_kept() {
        let sid = alice();
        let bytes = spoofed(&["@bob:hs.example:B"], &[]).encode_to_vec();
        let relayed = relay_data_packet(&bytes, DataKind::Lossy, &sender(&sid, true)).unwrap();
        assert_eq!(relayed.destinations, vec!["@bob:hs.example:B".to_owned()]);
        assert_eq!(relayed.kind, DataKind::Lossy);
        assert_eq!(relayed.sequence, 42);
        let out = DataPacket::decode(relayed.bytes.as_slice()).unwrap();
        assert_eq!(out.participant_identity, "@alice:hs.example:DEV");
        assert_eq!(out.participant_sid, "PA_alice");
        assert_eq!(out.sequence, 42);
        assert_eq!(out.kind, data_packet::Kind::Lossy as i32);
        let Some(data_packet::Value::User(user)) = out.value else {
            panic!("value lost");
        };
        assert_eq!(user.participant_identity, "@alice:hs.example:DEV");
        assert_eq!(user.participant_sid, "PA_alice");
        assert_eq!(user.payload, b"hello");
        assert_eq!(user.topic.as_deref(), Some("chat"));
    }

    #[test]
    fn a_reliable_packet_numbered_up_to_the_last_relayed_repeats_it() {
        let sid = alice();
        let numbered = |sequence: u32, kind: DataKind| {
            let packet = DataPacket {
                sequence,
                ..spoofed(&[], &[])
            };
            relay_data_packet(&packet.encode_to_vec(), kind, &sender(&sid, true)).unwrap()
        };
        assert!(numbered(41, DataKind::Reliable).repeats(42));
        assert!(numbered(42, DataKind::Reliable).repeats(42));
        assert!(!numbered(43, DataKind::Reliable).repeats(42));
        assert!(!numbered(1, DataKind::Reliable).repeats(0));
        // Lossy packets are not numbered by livekit-client, nor are an older client's.
        assert!(!numbered(7, DataKind::Lossy).repeats(42));
        assert!(!numbered(0, DataKind::Reliable).repeats(42));
    }

    #[test]
    fn destinations_default_to_everyone_or_come_from_the_user_packet() {
        let sid = alice();
        let everyone = relay_data_packet(
            &spoofed(&[], &[]).encode_to_vec(),
            DataKind::Reliable,
            &sender(&sid, true),
        )
        .unwrap();
        assert!(everyone.destinations.is_empty());
        assert_eq!(everyone.kind, DataKind::Reliable);
        let legacy = relay_data_packet(
            &spoofed(&[], &["@carol:hs.example:C"]).encode_to_vec(),
            DataKind::Reliable,
            &sender(&sid, true),
        )
        .unwrap();
        assert_eq!(legacy.destinations, vec!["@carol:hs.example:C".to_owned()]);
    }

    #[test]
    fn refused_without_permission_oversized_or_malformed() {
        let sid = alice();
        let bytes = spoofed(&[], &[]).encode_to_vec();
        assert_eq!(
            relay_data_packet(&bytes, DataKind::Reliable, &sender(&sid, false)),
            Err(DataError::NotPermitted)
        );
        let big = vec![0u8; SCTP_MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            relay_data_packet(&big, DataKind::Reliable, &sender(&sid, true)),
            Err(DataError::TooLarge {
                len: SCTP_MAX_MESSAGE_BYTES + 1,
                max: SCTP_MAX_MESSAGE_BYTES
            })
        );
        // What livekit-client may send (up to the advertised size) is relayed, up to what fits
        // once stamped.
        let user = |len: usize| DataPacket {
            value: Some(data_packet::Value::User(UserPacket {
                payload: vec![7; len],
                ..Default::default()
            })),
            ..Default::default()
        };
        let relay = |len: usize| {
            relay_data_packet(
                &user(len).encode_to_vec(),
                DataKind::Reliable,
                &sender(&sid, true),
            )
        };
        let largest = (0..SCTP_MAX_MESSAGE_BYTES)
            .rev()
            .find(|&len| relay(len).is_ok())
            .unwrap();
        assert!(largest > 20 * 1024, "{largest}");
        assert!(relay(largest).is_ok_and(|r| r.bytes.len() <= SCTP_MAX_MESSAGE_BYTES));
        // One byte more fits the advertised size as sent, not once stamped.
        assert!(user(largest + 1).encoded_len() <= SCTP_MAX_MESSAGE_BYTES);
        assert!(matches!(
            relay(largest + 1),
            Err(DataError::TooLarge {
                max: SCTP_MAX_MESSAGE_BYTES,
                ..
            })
        ));
        // Field 4 (identity) announced as 100 bytes long, 1 present.
        assert!(matches!(
            relay_data_packet(&[0x22, 100, b'x'], DataKind::Reliable, &sender(&sid, true)),
            Err(DataError::Malformed(_))
        ));
        assert!(matches!(
            relay_data_packet(&[0xff; 16], DataKind::Lossy, &sender(&sid, true)),
            Err(DataError::Malformed(_))
        ));
        // The empty message is a valid (empty) DataPacket, stamped like any other.
        let empty = relay_data_packet(&[], DataKind::Lossy, &sender(&sid, true)).unwrap();
        let out = DataPacket::decode(empty.bytes.as_slice()).unwrap();
        assert_eq!(out.participant_sid, "PA_alice");
    }

    #[test]
    #[allow(
        deprecated,
        reason = "building the speaker packet livekit-client still obeys"
    )]
    fn speaker_updates_and_transcriptions_of_others_are_not_relayed() {
        let sid = alice();
        let with = |value: data_packet::Value| {
            let packet = DataPacket {
                value: Some(value),
                ..spoofed(&[], &[])
            };
            relay_data_packet(
                &packet.encode_to_vec(),
                DataKind::Reliable,
                &sender(&sid, true),
            )
        };
        // livekit-client would take it as the room's active speakers.
        let speakers = livekit_protocol::ActiveSpeakerUpdate {
            speakers: vec![livekit_protocol::SpeakerInfo {
                sid: "PA_alice".to_owned(),
                level: 1.0,
                active: true,
            }],
        };
        assert_eq!(
            with(data_packet::Value::Speaker(speakers)),
            Err(DataError::Forged)
        );
        let transcription = |of: &str| livekit_protocol::Transcription {
            transcribed_participant_identity: of.to_owned(),
            ..livekit_protocol::Transcription::default()
        };
        assert_eq!(
            with(data_packet::Value::Transcription(transcription(
                "@doctor:hs.example:D"
            ))),
            Err(DataError::Forged)
        );
        assert!(
            with(data_packet::Value::Transcription(transcription(
                "@alice:hs.example:DEV"
            )))
            .is_ok(),
            "her own captions"
        );
    }

    #[test]
    fn channel_labels() {
        assert_eq!(DataKind::from_label("_reliable"), Some(DataKind::Reliable));
        assert_eq!(DataKind::from_label("_lossy"), Some(DataKind::Lossy));
        assert_eq!(DataKind::from_label("_data_track"), None);
        for k in [DataKind::Reliable, DataKind::Lossy] {
            assert_eq!(DataKind::from_label(k.label()), Some(k));
        }
    }

    fn sid(name: &str) -> ParticipantSid {
        ParticipantSid::parse(name).unwrap()
    }

    /// Queues `len`-byte messages from `sender` until one is refused; returns how many went and
    /// why the next did not.
    fn flood(
        shares: &mut QueueShares,
        outstanding: &mut usize,
        sender: &ParticipantSid,
        len: usize,
        senders: usize,
    ) -> (usize, QueueRefusal) {
        for n in 0.. {
            match shares.admit(sender, len, *outstanding, senders) {
                Ok(()) => *outstanding += len,
                Err(why) => return (n, why),
            }
        }
        unreachable!()
    }

    #[test]
    fn the_one_sender_of_a_one_to_one_room_has_the_whole_queue() {
        let mut shares = QueueShares::default();
        let mut outstanding = 0;
        let (sent, why) = flood(&mut shares, &mut outstanding, &alice(), 12_000, 1);
        assert_eq!(
            (sent, why),
            (DATA_QUEUE_BYTES / 12_000, QueueRefusal::OverShare)
        );
        assert_eq!(shares.held_by(&alice()), outstanding);
    }

    #[test]
    fn a_flood_takes_its_share_and_a_quiet_sender_still_finds_room() {
        let (bob, carol) = (sid("PA_bob"), sid("PA_carol"));
        let mut shares = QueueShares::default();
        let mut outstanding = 0;
        // A room of four: three may send to this receiver, who acknowledges nothing. Each may
        // hold half of what is left once the reserve is set aside.
        let share = (DATA_QUEUE_BYTES - QUEUE_RESERVE_BYTES) / 2;
        let (sent, why) = flood(&mut shares, &mut outstanding, &alice(), 1_000, 3);
        assert_eq!(why, QueueRefusal::OverShare);
        assert_eq!(sent, share / 1_000);
        let (sent, _) = flood(&mut shares, &mut outstanding, &bob, 24_000, 3);
        assert_eq!(sent, share / 24_000);
        // Carol has her reserve: two of the largest messages.
        for _ in 0..2 {
            shares
                .admit(&carol, SCTP_MAX_MESSAGE_BYTES, outstanding, 3)
                .unwrap();
            outstanding += SCTP_MAX_MESSAGE_BYTES;
        }
        assert_eq!(shares.held_by(&carol), QUEUE_RESERVE_BYTES);
        assert!(outstanding <= DATA_QUEUE_BYTES);
    }

    #[test]
    fn what_sctp_releases_comes_off_the_oldest_runs() {
        let bob = sid("PA_bob");
        let mut shares = QueueShares::default();
        let mut outstanding = 0;
        // All but Bob's reserve for Alice, which her messages fill exactly.
        let share = DATA_QUEUE_BYTES - QUEUE_RESERVE_BYTES;
        let (sent, _) = flood(&mut shares, &mut outstanding, &alice(), 8_192, 2);
        assert_eq!(sent * 8_192, share);
        shares.admit(&bob, 5_000, outstanding, 2).unwrap();
        outstanding += 5_000;
        shares.admit(&alice(), 1, outstanding, 2).unwrap_err();
        // The receiver acknowledges 30 000 bytes: Alice's oldest.
        outstanding -= 30_000;
        assert_eq!(shares.admit(&alice(), 30_000, outstanding, 2), Ok(()));
        outstanding += 30_000;
        assert_eq!(shares.held_by(&alice()), share);
        assert_eq!(shares.held_by(&bob), 5_000);
        assert_eq!(shares.queued, outstanding);
        // Everything acknowledged: nothing is held.
        shares.admit(&bob, 1, 0, 2).unwrap();
        assert_eq!(shares.held_by(&alice()), 0);
        assert_eq!(shares.held_by(&bob), 1);
        assert_eq!(shares.runs.len(), 1);
        assert_eq!(shares.held.len(), 1);
    }

    #[test]
    fn a_message_the_channel_did_not_take_is_taken_back_from_its_sender() {
        let bob = sid("PA_bob");
        let mut shares = QueueShares::default();
        shares.admit(&alice(), 100, 0, 2).unwrap();
        shares.admit(&bob, 50, 100, 2).unwrap();
        shares.undo(&bob, 50);
        assert_eq!((shares.held_by(&bob), shares.queued), (0, 100));
        // The channel has Alice's 100 still: nothing of hers is released.
        shares.admit(&bob, 10, 100, 2).unwrap();
        assert_eq!(shares.held_by(&alice()), 100);
        // Only the last run's sender can be taken back from.
        shares.undo(&alice(), 100);
        assert_eq!(shares.held_by(&alice()), 100);
    }

    #[test]
    fn a_full_queue_refuses_everyone() {
        let mut shares = QueueShares::default();
        assert_eq!(
            shares.admit(&alice(), 1, DATA_QUEUE_BYTES, 40),
            Err(QueueRefusal::Full)
        );
        // In a large room the least share is two of the largest messages.
        let mut outstanding = 0;
        let (sent, _) = flood(
            &mut shares,
            &mut outstanding,
            &alice(),
            SCTP_MAX_MESSAGE_BYTES,
            40,
        );
        assert_eq!(sent, 2);
    }

    #[test]
    fn interleaved_senders_make_runs_up_to_a_bound() {
        let bob = sid("PA_bob");
        let mut shares = QueueShares::default();
        let mut outstanding = 0;
        for _ in 0..MAX_QUEUE_RUNS / 2 {
            for sender in [&alice(), &bob] {
                shares.admit(sender, 1, outstanding, 2).unwrap();
                outstanding += 1;
            }
        }
        assert_eq!(shares.runs.len(), MAX_QUEUE_RUNS);
        // Bob's run is the last: he may add to it; Alice may not start another.
        assert_eq!(shares.admit(&bob, 1, outstanding, 2), Ok(()));
        outstanding += 1;
        assert_eq!(
            shares.admit(&alice(), 1, outstanding, 2),
            Err(QueueRefusal::OverShare)
        );
        // Once the oldest are acknowledged she may.
        outstanding -= 10;
        assert_eq!(shares.admit(&alice(), 1, outstanding, 2), Ok(()));
    }

    #[test]
    fn two_senders_interleaving_leave_runs_for_a_third() {
        let (bob, carol) = (sid("PA_bob"), sid("PA_carol"));
        let mut shares = QueueShares::default();
        let mut outstanding = 0;
        // Alice and Bob alternate small messages, past the runs either may start.
        for _ in 0..MAX_QUEUE_RUNS {
            for sender in [&alice(), &bob] {
                if shares.admit(sender, 1, outstanding, 3).is_ok() {
                    outstanding += 1;
                }
            }
        }
        assert_eq!(shares.runs.len(), 2 * (MAX_QUEUE_RUNS / 3));
        assert_eq!(shares.admit(&carol, 1, outstanding, 3), Ok(()));
    }
}
