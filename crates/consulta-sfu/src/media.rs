//! The seam between the signalling core and the media engine (WebRTC, RTP forwarding).
//!
//! Spec `matrixrtc-livekit.md` §2.5 (v0 dual PeerConnection), §2.7–2.9. The session core owns
//! rooms, participants, tracks and subscriptions; the media engine owns PeerConnections. The core
//! calls a [`MediaEngine`] synchronously with what it has learnt (an SDP offer arrived, a
//! subscription was added, the subscriber PC needs a new offer) and never waits for a result:
//! whatever the engine produces later (answers, offers, ICE candidates, "connected") comes back as
//! a [`MediaEvent`] through `Sfu::handle_media_event`. Implementations must not block; a real
//! engine forwards these calls over a channel to its own loop.

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
    /// publisher PC's own), and offer again what an outstanding offer carried, which it may never
    /// have received.
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
