//! The seam between the signalling core and the media engine (WebRTC, RTP forwarding).
//!
//! Spec `matrixrtc-livekit.md` §2.5 (v0 dual PeerConnection), §2.7–2.9. The session core owns
//! rooms, participants, tracks and subscriptions; the media engine owns PeerConnections. The core
//! calls a [`MediaEngine`] synchronously with what it has learnt (an SDP offer arrived, a
//! subscription was added, the subscriber PC needs a new offer) and never waits for a result:
//! whatever the engine produces later (answers, offers, ICE candidates, "connected") comes back as
//! a [`MediaEvent`] through `Sfu::handle_media_event`. Implementations must not block; a real
//! engine forwards these calls over a channel to its own loop.

use std::collections::BTreeMap;
use std::fmt;

use livekit_protocol::{SessionDescription, SignalTarget, TrackInfo};

use crate::forward::Quality;
use crate::ids::{ParticipantSid, RoomName, TrackSid};

/// What a subscriber asked for one video track (`track_setting`, adaptive stream). Remembered for
/// layer selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackSettings {
    /// Stop forwarding (tile hidden).
    pub disabled: bool,
    /// Rendered width in pixels (0 = unknown).
    pub width: u32,
    /// Rendered height in pixels (0 = unknown).
    pub height: u32,
    /// Wanted frame rate (0 = unknown).
    pub fps: u32,
    /// The layer asked for by name (`quality`), which counts when no size is given: what a
    /// client without adaptive stream sends after `setVideoQuality` (LiveKit's rule).
    pub quality: Option<Quality>,
}

/// The media engine as the signalling core sees it.
pub trait MediaEngine: fmt::Debug + Send {
    /// A participant joined `room`; prepare its two PeerConnections. `identity` is what data
    /// packets it sends are stamped with; without `can_publish_data` its data packets are dropped.
    fn participant_joined(
        &mut self,
        room: &RoomName,
        participant: &ParticipantSid,
        identity: &str,
        can_publish_data: bool,
    );
    /// A participant left; drop its PeerConnections and everything forwarded to or from it.
    fn participant_left(&mut self, participant: &ParticipantSid);
    /// The client's publisher PC offered; answer with [`MediaEvent::PublisherAnswer`] echoing
    /// `offer.id`.
    fn publisher_offer(&mut self, participant: &ParticipantSid, offer: SessionDescription);
    /// The client answered the subscriber PC's offer.
    fn subscriber_answer(&mut self, participant: &ParticipantSid, answer: SessionDescription);
    /// A trickled ICE candidate (`candidateInit` JSON) for the PC named by `target`.
    fn remote_candidate(
        &mut self,
        participant: &ParticipantSid,
        target: SignalTarget,
        candidate_init: String,
    );
    /// A track was announced (`add_track`); match it to incoming media by `cid` (the client's
    /// `MediaStreamTrack.id`, which its SDP carries in `a=msid`).
    fn track_published(&mut self, publisher: &ParticipantSid, cid: &str, track: &TrackInfo);
    /// A track is gone (unpublished or its publisher left).
    fn track_unpublished(&mut self, publisher: &ParticipantSid, track: &TrackSid);
    /// Start forwarding `track` of `publisher` to `subscriber`.
    fn subscribe(
        &mut self,
        subscriber: &ParticipantSid,
        publisher: &ParticipantSid,
        track: &TrackSid,
    );
    /// Stop forwarding `track` to `subscriber`.
    fn unsubscribe(&mut self, subscriber: &ParticipantSid, track: &TrackSid);
    /// The publisher muted or unmuted `track` (`mute`): a muted track is not forwarded, and its
    /// audio does not count towards active speakers.
    fn track_muted(&mut self, publisher: &ParticipantSid, track: &TrackSid, muted: bool);
    /// The subscriber's wishes for `track` changed.
    fn track_settings(
        &mut self,
        subscriber: &ParticipantSid,
        track: &TrackSid,
        settings: TrackSettings,
    );
    /// The subscriber PC of `participant` must be (re)negotiated: send a
    /// [`MediaEvent::SubscriberOffer`] when ready (at most one outstanding offer per PC).
    fn needs_subscriber_offer(&mut self, participant: &ParticipantSid);
    /// The client of `participant` resumed its signalling on a new connection: its network may
    /// have changed. Restart ICE on its subscriber PC with a new offer (the client restarts its
    /// publisher PC's own), unless the engine asked for this resume while restarting that PC
    /// itself, and offer again what an outstanding offer carried, which it may never have
    /// received.
    fn participant_resumed(&mut self, participant: &ParticipantSid);
    /// The `sequence` of the last reliable data packet relayed from `participant` (0: none). A
    /// resume reports it as `last_message_seq`: the client drops what it buffered up to it and
    /// sends the rest again, among it what it held back while resuming. With 0 livekit-client
    /// sends nothing again, so a client none of whose reliable data was relayed yet still loses
    /// what it sends during its first resume; no other value would keep its sequence 1.
    fn last_reliable_sequence(&self, participant: &ParticipantSid) -> u32;
}

/// What the media engine reports back to the core.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Answer to the publisher PC's offer (its `id` must echo the offer's).
    PublisherAnswer {
        /// Whose PC.
        participant: ParticipantSid,
        /// The answer.
        answer: SessionDescription,
    },
    /// An offer for the subscriber PC.
    SubscriberOffer {
        /// Whose PC.
        participant: ParticipantSid,
        /// The offer.
        offer: SessionDescription,
    },
    /// A local ICE candidate for one of the participant's PCs.
    Candidate {
        /// Whose PC.
        participant: ParticipantSid,
        /// Which PC, from the client's point of view.
        target: SignalTarget,
        /// `RTCIceCandidateInit` JSON.
        candidate_init: String,
    },
    /// ICE and DTLS are up: the participant becomes ACTIVE.
    Connected {
        /// Who.
        participant: ParticipantSid,
    },
    /// Video the participant receives was paused because its link carries not even the lowest
    /// layer, or resumed (sent to it as `stream_state_update`).
    StreamStates {
        /// The subscriber.
        participant: ParticipantSid,
        /// Each track whose state changed, with its publisher.
        states: Vec<livekit_protocol::StreamStateInfo>,
    },
    /// Who started or stopped speaking in `room` (a delta, sent as `speakers_changed`).
    SpeakersChanged {
        /// Where.
        room: RoomName,
        /// The changes.
        speakers: Vec<livekit_protocol::SpeakerInfo>,
    },
    /// Nothing came for 5 s from the address the participant's publisher PC sends to, while its
    /// signalling is up: its NAT may have given it a new port. Media from there still arrives,
    /// but the SFU's RTCP (key-frame requests, NACKs, congestion feedback) and data-channel
    /// acknowledgements go on to the old port until the client restarts that PC's ICE, which
    /// only the client, its offerer, can do: ask it to resume (livekit-client restarts ICE on a
    /// resume).
    PublisherDisconnected {
        /// Whose PC.
        participant: ParticipantSid,
    },
    /// One of the participant's peer connections never came up: its DTLS handshake failed (the
    /// client stopped answering, or a path passes ICE but not DTLS). Or its subscriber
    /// connection can no longer be renegotiated: an offer went unanswered for 15 s (the client
    /// could not apply it). Neither a resume nor an ICE restart redoes a handshake or unblocks a
    /// negotiation: the client has to join again, with new connections.
    ConnectionFailed {
        /// Whose connection.
        participant: ParticipantSid,
    },
    /// The participant's client sent a description the SFU cannot take: a publisher offer it
    /// refused (past its limit on media sections, or one `rtc` cannot apply), or
    /// [`MAX_ANSWERS_REFUSED`] subscriber answers in a row it refused. Unanswered, livekit-client
    /// waits out its negotiation timeout (15 s) and then joins again (2.17 on; earlier versions
    /// resume), offering the same again, for good, its camera or screen reaching no one.
    NegotiationRefused {
        /// Whose connection.
        participant: ParticipantSid,
    },
    /// The publisher stopped sending a track: its offer no longer sends it (livekit-client's
    /// `unpublishTrack` sends no signal message, it only renegotiates).
    TrackEnded {
        /// The publisher.
        participant: ParticipantSid,
        /// Which track.
        track: TrackSid,
    },
}

/// Subscriber answers refused in a row before the participant is reported
/// ([`MediaEvent::NegotiationRefused`]): each refusal is followed by a fresh offer, and a client
/// whose answers are always refused would otherwise loop offer and refusal for good.
pub const MAX_ANSWERS_REFUSED: u32 = 3;

/// The tracks an SDP offer sends, by the mid of their media section: the track id is `a=msid`'s
/// second part (livekit-client's `cid`). Only sections that are not rejected (port 0) and whose
/// direction is `sendrecv` (the default) or `sendonly` count. A track removed from a connection
/// keeps its section, made `inactive` or `recvonly` (Chromium keeps its `a=msid`); a later track
/// may reuse that section, under the same mid.
pub fn sent_tracks(sdp: &str) -> BTreeMap<String, String> {
    #[derive(Default)]
    struct Section {
        rejected: bool,
        sends: bool,
        mid: Option<String>,
        track: Option<String>,
    }
    let mut sent = BTreeMap::new();
    let close = |section: Option<Section>, sent: &mut BTreeMap<String, String>| {
        if let Some(Section {
            rejected: false,
            sends: true,
            mid: Some(mid),
            track: Some(track),
        }) = section
        {
            sent.insert(mid, track);
        }
    };
    let mut section: Option<Section> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            close(section.take(), &mut sent);
            section = Some(Section {
                rejected: media.split_whitespace().nth(1) == Some("0"),
                sends: true,
                ..Section::default()
            });
        } else if let Some(current) = section.as_mut() {
            match line {
                "a=sendrecv" | "a=sendonly" => current.sends = true,
                "a=recvonly" | "a=inactive" => current.sends = false,
                _ => {
                    if let Some(mid) = line.strip_prefix("a=mid:") {
                        current.mid = Some(mid.to_owned());
                    } else if let Some(track) = line
                        .strip_prefix("a=msid:")
                        .and_then(|msid| msid.split_whitespace().nth(1))
                    {
                        current.track = Some(track.to_owned());
                    }
                }
            }
        }
    }
    close(section, &mut sent);
    sent
}

/// A media engine that does nothing: the SFU then speaks signalling only (rooms, participants,
/// track metadata) and never answers SDP. For running the shell before the media engine lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignallingOnly;

impl MediaEngine for SignallingOnly {
    fn participant_joined(&mut self, _: &RoomName, _: &ParticipantSid, _: &str, _: bool) {}
    fn participant_left(&mut self, _: &ParticipantSid) {}
    fn publisher_offer(&mut self, _: &ParticipantSid, _: SessionDescription) {}
    fn subscriber_answer(&mut self, _: &ParticipantSid, _: SessionDescription) {}
    fn remote_candidate(&mut self, _: &ParticipantSid, _: SignalTarget, _: String) {}
    fn track_published(&mut self, _: &ParticipantSid, _: &str, _: &TrackInfo) {}
    fn track_unpublished(&mut self, _: &ParticipantSid, _: &TrackSid) {}
    fn subscribe(&mut self, _: &ParticipantSid, _: &ParticipantSid, _: &TrackSid) {}
    fn unsubscribe(&mut self, _: &ParticipantSid, _: &TrackSid) {}
    fn track_muted(&mut self, _: &ParticipantSid, _: &TrackSid, _: bool) {}
    fn track_settings(&mut self, _: &ParticipantSid, _: &TrackSid, _: TrackSettings) {}
    fn needs_subscriber_offer(&mut self, _: &ParticipantSid) {}
    fn participant_resumed(&mut self, _: &ParticipantSid) {}
    fn last_reliable_sequence(&self, _: &ParticipantSid) -> u32 {
        0
    }
}

impl<T: MediaEngine + ?Sized> MediaEngine for Box<T> {
    fn participant_joined(
        &mut self,
        room: &RoomName,
        participant: &ParticipantSid,
        identity: &str,
        can_publish_data: bool,
    ) {
        (**self).participant_joined(room, participant, identity, can_publish_data);
    }
    fn participant_left(&mut self, participant: &ParticipantSid) {
        (**self).participant_left(participant);
    }
    fn publisher_offer(&mut self, participant: &ParticipantSid, offer: SessionDescription) {
        (**self).publisher_offer(participant, offer);
    }
    fn subscriber_answer(&mut self, participant: &ParticipantSid, answer: SessionDescription) {
        (**self).subscriber_answer(participant, answer);
    }
    fn remote_candidate(
        &mut self,
        participant: &ParticipantSid,
        target: SignalTarget,
        candidate_init: String,
    ) {
        (**self).remote_candidate(participant, target, candidate_init);
    }
    fn track_published(&mut self, publisher: &ParticipantSid, cid: &str, track: &TrackInfo) {
        (**self).track_published(publisher, cid, track);
    }
    fn track_unpublished(&mut self, publisher: &ParticipantSid, track: &TrackSid) {
        (**self).track_unpublished(publisher, track);
    }
    fn subscribe(
        &mut self,
        subscriber: &ParticipantSid,
        publisher: &ParticipantSid,
        track: &TrackSid,
    ) {
        (**self).subscribe(subscriber, publisher, track);
    }
    fn unsubscribe(&mut self, subscriber: &ParticipantSid, track: &TrackSid) {
        (**self).unsubscribe(subscriber, track);
    }
    fn track_muted(&mut self, publisher: &ParticipantSid, track: &TrackSid, muted: bool) {
        (**self).track_muted(publisher, track, muted);
    }
    fn track_settings(
        &mut self,
        subscriber: &ParticipantSid,
        track: &TrackSid,
        settings: TrackSettings,
    ) {
        (**self).track_settings(subscriber, track, settings);
    }
    fn needs_subscriber_offer(&mut self, participant: &ParticipantSid) {
        (**self).needs_subscriber_offer(participant);
    }
    fn participant_resumed(&mut self, participant: &ParticipantSid) {
        (**self).participant_resumed(participant);
    }
    fn last_reliable_sequence(&self, participant: &ParticipantSid) -> u32 {
        (**self).last_reliable_sequence(participant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer as Chromium makes it after livekit-client unpublished a screen share: the
    /// camera's section still sends, the share's is `inactive` (Chromium keeps its `a=msid`),
    /// the data channel section has no track.
    const AFTER_UNPUBLISH: &str = "v=0\r\n\
        o=- 1 2 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=group:BUNDLE 0 1 2 3\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:0\r\n\
        a=sendonly\r\n\
        a=msid:stream-a mic-track\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:1\r\n\
        a=msid:stream-v camera-track\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:2\r\n\
        a=inactive\r\n\
        a=msid:stream-s share-track\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        a=mid:3\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:4\r\n\
        a=sendonly\r\n\
        a=msid:stream-x rejected-track\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:5\r\n\
        a=recvonly\r\n\
        a=msid:stream-y not-sent-track\r\n";

    #[test]
    fn only_sections_that_send_name_their_tracks() {
        let sent = sent_tracks(AFTER_UNPUBLISH);
        let expected: BTreeMap<String, String> = [("0", "mic-track"), ("1", "camera-track")]
            .into_iter()
            .map(|(mid, track)| (mid.to_owned(), track.to_owned()))
            .collect();
        assert_eq!(sent, expected);
        assert!(sent_tracks("").is_empty());
        assert!(
            sent_tracks("a=msid:s t\r\n").is_empty(),
            "session level is no track"
        );
    }
}
