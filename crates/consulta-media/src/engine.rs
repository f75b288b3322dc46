//! The SFU's media engine: every participant's two peer connections on one UDP port, and the
//! forwarding of RTP, RTCP feedback and data packets between them.
//!
//! [`Router`] is sans-IO (spec `matrixrtc-livekit.md` §2.5–2.10): it takes the signalling core's
//! calls as [`Command`]s, datagrams and timeouts with `now`, and hands out datagrams to send
//! ([`Router::poll_transmit`]) and events for the core ([`Router::poll_event`]). [`RtcEngine`] is
//! the [`consulta_sfu::MediaEngine`] the core calls: it only queues commands for [`run`], the tokio
//! loop that owns the socket and the router. One router runs on one task (one core).
//!
//! Per participant: a *publisher* peer connection (the client offers, we answer; media and data
//! come in) and a *subscriber* one (we offer, with `_reliable`/`_lossy` data channels and one
//! send-only m-line per subscribed track, `a=msid:PA_x|TR_y TR_y`). The subscriber connection has
//! at most one offer outstanding; changes made meanwhile are folded into the next offer.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use consulta_sfu::ids::{ParticipantSid, RoomName, TrackSid};
use consulta_sfu::media::{MediaEngine, MediaEvent as CoreEvent, TrackSettings};
use livekit_protocol::{SessionDescription, SignalTarget, TrackInfo, TrackType};
use prost::Message as _;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::down::Forwarder;
use crate::mux::Demux;
use crate::peer::{
    DataChannel, Error, LocalTrack, MediaConfig, MediaEvent, MediaKind, MediaPeer, PeerState,
    Transmit,
};

/// A publisher is asked for a keyframe at most this often per incoming stream (subscribers and
/// switches in between share the one that comes).
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// The largest data packet relayed (LiveKit's limit for reliable packets is 15 KiB).
const MAX_DATA_PACKET: usize = 15 * 1024;

/// A call from the signalling core.
#[derive(Debug)]
pub enum Command {
    /// See [`MediaEngine::participant_joined`].
    Joined {
        /// Room.
        room: RoomName,
        /// Who.
        participant: ParticipantSid,
        /// Stamped on their data packets.
        identity: String,
        /// May they send data packets.
        can_publish_data: bool,
    },
    /// See [`MediaEngine::participant_left`].
    Left(ParticipantSid),
    /// See [`MediaEngine::publisher_offer`].
    PublisherOffer(ParticipantSid, SessionDescription),
    /// See [`MediaEngine::subscriber_answer`].
    SubscriberAnswer(ParticipantSid, SessionDescription),
    /// See [`MediaEngine::remote_candidate`].
    Candidate(ParticipantSid, SignalTarget, String),
    /// See [`MediaEngine::track_published`].
    TrackPublished(ParticipantSid, String, Box<TrackInfo>),
    /// See [`MediaEngine::track_unpublished`].
    TrackUnpublished(ParticipantSid, TrackSid),
    /// See [`MediaEngine::subscribe`].
    Subscribe(ParticipantSid, ParticipantSid, TrackSid),
    /// See [`MediaEngine::unsubscribe`].
    Unsubscribe(ParticipantSid, TrackSid),
    /// See [`MediaEngine::track_settings`].
    Settings(ParticipantSid, TrackSid, TrackSettings),
    /// See [`MediaEngine::needs_subscriber_offer`].
    NeedsOffer(ParticipantSid),
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams no connection claimed.
    pub datagrams_unrouted: u64,
    /// Datagrams handed out to send.
    pub datagrams_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed out to send.
    pub bytes_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// RTP packets a subscriber's connection refused (not negotiated yet, closed).
    pub rtp_write_errors: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: u64,
    /// Data packets relayed (per receiver).
    pub data_relayed: u64,
    /// Data packets dropped (malformed, too big, no permission).
    pub data_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerId(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Publisher,
    Subscriber,
}

#[derive(Debug)]
struct Peer {
    owner: ParticipantSid,
    side: Side,
    pc: MediaPeer,
    deadline: Option<Instant>,
    /// Data channels by label (the client's on the publisher side, ours on the subscriber side).
    channels: HashMap<DataChannel, String>,
    open_channels: HashMap<String, DataChannel>,
}

/// One track forwarded to one subscriber.
#[derive(Debug)]
struct Down {
    local: LocalTrack,
    forward: Forwarder,
}

#[derive(Debug, Default)]
struct SubscriberState {
    /// Tracks the subscriber should receive, with their publisher.
    wanted: BTreeMap<TrackSid, ParticipantSid>,
    /// Tracks negotiated (or being negotiated) on the subscriber connection.
    sending: BTreeMap<TrackSid, Down>,
    /// An offer is out and unanswered.
    offer_outstanding: bool,
    /// Something changed since the outstanding offer.
    needs_offer: bool,
    next_offer_id: u32,
    settings: HashMap<TrackSid, TrackSettings>,
}

#[derive(Debug)]
struct Participant {
    room: RoomName,
    identity: String,
    can_publish_data: bool,
    publisher: Option<PeerId>,
    subscriber: Option<PeerId>,
    connected: bool,
    sub: SubscriberState,
    /// `cid` (msid track id) → published track.
    cids: HashMap<String, TrackSid>,
}

#[derive(Debug)]
struct Published {
    publisher: ParticipantSid,
    kind: MediaKind,
    /// Incoming SSRCs (one per simulcast layer).
    ssrcs: BTreeSet<u32>,
    subscribers: BTreeSet<ParticipantSid>,
    last_keyframe_request: HashMap<u32, Instant>,
}

/// The sans-IO media router.
#[derive(Debug)]
pub struct Router {
    local_addr: SocketAddr,
    config: MediaConfig,
    participants: HashMap<ParticipantSid, Participant>,
    peers: HashMap<PeerId, Peer>,
    next_peer: u32,
    demux: Demux<PeerId>,
    tracks: HashMap<TrackSid, Published>,
    deadlines: BTreeSet<(Instant, PeerId)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CoreEvent>,
    ssrc_seed: u32,
    stats: RouterStats,
}

impl Router {
    /// A router whose connections all advertise `local_addr` (the public address of the one UDP
    /// socket) as their host candidate.
    pub fn new(local_addr: SocketAddr, config: MediaConfig) -> Self {
        Self {
            local_addr,
            config,
            participants: HashMap::new(),
            peers: HashMap::new(),
            next_peer: 1,
            demux: Demux::default(),
            tracks: HashMap::new(),
            deadlines: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ssrc_seed: rand::random(),
            stats: RouterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Participants with media state.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.transmits.pop_front()?;
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += transmit.contents.len() as u64;
        Some(transmit)
    }

    /// The next event for the signalling core.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Lets every connection whose timer is due run it.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, id));
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.deadline = None;
                if let Err(error) = peer.pc.handle_timeout(now) {
                    tracing::debug!(%error, "peer timeout failed");
                }
            }
            self.drain(id, now);
        }
    }

    /// One datagram from the socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let Some(id) = self.demux.route(from, datagram) else {
            self.stats.datagrams_unrouted += 1;
            return;
        };
        if let Some(peer) = self.peers.get_mut(&id)
            && let Err(error) = peer.pc.handle_receive(now, from, datagram)
        {
            tracing::trace!(%error, "datagram rejected");
        }
        self.drain(id, now);
    }

    /// One call from the signalling core.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Joined {
                room,
                participant,
                identity,
                can_publish_data,
            } => {
                self.participants.insert(
                    participant,
                    Participant {
                        room,
                        identity,
                        can_publish_data,
                        publisher: None,
                        subscriber: None,
                        connected: false,
                        sub: SubscriberState::default(),
                        cids: HashMap::new(),
                    },
                );
            }
            Command::Left(sid) => self.remove_participant(&sid),
            Command::PublisherOffer(sid, offer) => self.publisher_offer(now, &sid, offer),
            Command::SubscriberAnswer(sid, answer) => self.subscriber_answer(now, &sid, answer),
            Command::Candidate(sid, target, candidate) => {
                let Some(p) = self.participants.get(&sid) else {
                    return;
                };
                let id = match target {
                    SignalTarget::Publisher => p.publisher,
                    SignalTarget::Subscriber => p.subscriber,
                };
                if let Some(peer) = id.and_then(|id| self.peers.get_mut(&id))
                    && let Err(error) = peer.pc.add_remote_candidate(&candidate)
                {
                    tracing::debug!(%error, participant = %sid, "remote candidate refused");
                }
            }
            Command::TrackPublished(sid, cid, info) => self.track_published(&sid, cid, *info),
            Command::TrackUnpublished(_, track) => self.track_unpublished(now, &track),
            Command::Subscribe(sub, publisher, track) => {
                if let Some(p) = self.participants.get_mut(&sub) {
                    p.sub.wanted.insert(track.clone(), publisher);
                    p.sub.needs_offer = true;
                }
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.subscribers.insert(sub);
                }
            }
            Command::Unsubscribe(sub, track) => {
                if let Some(p) = self.participants.get_mut(&sub) {
                    p.sub.wanted.remove(&track);
                    p.sub.needs_offer = true;
                }
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.subscribers.remove(&sub);
                }
            }
            Command::Settings(sub, track, settings) => self.track_settings(&sub, track, settings),
            Command::NeedsOffer(sid) => {
                if let Some(p) = self.participants.get_mut(&sid) {
                    p.sub.needs_offer = true;
                }
                self.maybe_offer(now, &sid);
            }
        }
    }

    fn new_peer(&mut self, owner: &ParticipantSid, side: Side, now: Instant) -> Option<PeerId> {
        let pc = match MediaPeer::with_config(self.local_addr, self.config, now) {
            Ok(pc) => pc,
            Err(error) => {
                tracing::warn!(%error, "could not create a peer connection");
                return None;
            }
        };
        let id = PeerId(self.next_peer);
        self.next_peer = self.next_peer.wrapping_add(1).max(1);
        self.peers.insert(
            id,
            Peer {
                owner: owner.clone(),
                side,
                pc,
                deadline: None,
                channels: HashMap::new(),
                open_channels: HashMap::new(),
            },
        );
        Some(id)
    }

    fn publisher_offer(&mut self, now: Instant, sid: &ParticipantSid, offer: SessionDescription) {
        let Some(existing) = self.participants.get(sid).map(|p| p.publisher) else {
            return;
        };
        let id = match existing {
            Some(id) => id,
            None => {
                let Some(id) = self.new_peer(sid, Side::Publisher, now) else {
                    return;
                };
                if let Some(p) = self.participants.get_mut(sid) {
                    p.publisher = Some(id);
                }
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.pc.accept_offer(offer.sdp, now) {
            Ok(sdp) => {
                if let Some(ufrag) = peer.pc.local_ufrag() {
                    self.demux.register(ufrag, id);
                }
                self.events.push_back(CoreEvent::PublisherAnswer {
                    participant: sid.clone(),
                    answer: SessionDescription {
                        r#type: "answer".to_owned(),
                        sdp,
                        id: offer.id,
                        ..SessionDescription::default()
                    },
                });
            }
            Err(error) => tracing::info!(%error, participant = %sid, "publisher offer refused"),
        }
        self.drain(id, now);
    }

    fn subscriber_answer(
        &mut self,
        now: Instant,
        sid: &ParticipantSid,
        answer: SessionDescription,
    ) {
        let Some(id) = self.participants.get(sid).and_then(|p| p.subscriber) else {
            return;
        };
        if let Some(peer) = self.peers.get_mut(&id)
            && let Err(error) = peer.pc.accept_answer(answer.sdp, now)
        {
            tracing::info!(%error, participant = %sid, "subscriber answer refused");
        }
        if let Some(p) = self.participants.get_mut(sid) {
            p.sub.offer_outstanding = false;
        }
        self.drain(id, now);
        self.request_keyframes_for(sid, now);
        self.maybe_offer(now, sid);
    }

    /// Sends the subscriber connection a new offer if something changed and none is outstanding.
    fn maybe_offer(&mut self, now: Instant, sid: &ParticipantSid) {
        let Some(p) = self.participants.get(sid) else {
            return;
        };
        if p.sub.offer_outstanding || !p.sub.needs_offer {
            return;
        }
        let id = match p.subscriber {
            Some(id) => id,
            None => {
                let Some(id) = self.new_peer(sid, Side::Subscriber, now) else {
                    return;
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                for (label, ordered, retransmits) in
                    [("_reliable", true, None), ("_lossy", false, Some(0))]
                {
                    match peer.pc.create_data_channel(label, ordered, retransmits) {
                        Ok(channel) => {
                            peer.channels.insert(channel, label.to_owned());
                        }
                        Err(error) => tracing::warn!(%error, "data channel not created"),
                    }
                }
                if let Some(p) = self.participants.get_mut(sid) {
                    p.subscriber = Some(id);
                }
                id
            }
        };
        self.apply_subscriptions(sid, id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.pc.create_offer(now) {
            Ok(sdp) => {
                if let Some(ufrag) = peer.pc.local_ufrag() {
                    self.demux.register(ufrag, id);
                }
                if let Some(p) = self.participants.get_mut(sid) {
                    p.sub.offer_outstanding = true;
                    p.sub.needs_offer = false;
                    p.sub.next_offer_id = p.sub.next_offer_id.wrapping_add(1);
                    self.events.push_back(CoreEvent::SubscriberOffer {
                        participant: sid.clone(),
                        offer: SessionDescription {
                            r#type: "offer".to_owned(),
                            sdp,
                            id: p.sub.next_offer_id,
                            ..SessionDescription::default()
                        },
                    });
                }
            }
            Err(error) => tracing::warn!(%error, participant = %sid, "subscriber offer failed"),
        }
        self.drain(id, now);
    }

    /// Adds local tracks for new subscriptions and removes those no longer wanted.
    fn apply_subscriptions(&mut self, sid: &ParticipantSid, id: PeerId) {
        let Some(p) = self.participants.get_mut(sid) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let gone: Vec<TrackSid> = p
            .sub
            .sending
            .keys()
            .filter(|t| !p.sub.wanted.contains_key(*t) || !self.tracks.contains_key(*t))
            .cloned()
            .collect();
        for track in gone {
            if let Some(down) = p.sub.sending.remove(&track)
                && let Err(error) = peer.pc.remove_local_track(down.local)
            {
                tracing::debug!(%error, "local track removal failed");
            }
        }
        for (track, publisher) in &p.sub.wanted {
            if p.sub.sending.contains_key(track) {
                continue;
            }
            let Some(published) = self.tracks.get(track) else {
                continue;
            };
            self.ssrc_seed = self
                .ssrc_seed
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12345);
            let ssrc = self.ssrc_seed | 1;
            let stream_id = format!("{publisher}|{track}");
            match peer
                .pc
                .add_local_track(published.kind, &stream_id, track.as_str(), ssrc)
            {
                Ok(local) => {
                    let mut forward = Forwarder::new();
                    if let Some(settings) = p.sub.settings.get(track) {
                        forward.set_settings(*settings);
                    }
                    p.sub.sending.insert(track.clone(), Down { local, forward });
                }
                Err(error) => tracing::warn!(%error, "local track not added"),
            }
        }
    }

    fn track_published(&mut self, sid: &ParticipantSid, cid: String, info: TrackInfo) {
        let Some(track) = TrackSid::parse(&info.sid) else {
            return;
        };
        let Some(p) = self.participants.get_mut(sid) else {
            return;
        };
        p.cids.insert(cid, track.clone());
        for codec in &info.codecs {
            if !codec.cid.is_empty() {
                p.cids.insert(codec.cid.clone(), track.clone());
            }
        }
        let kind = if info.r#type == i32::from(TrackType::Video) {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        self.tracks.insert(
            track,
            Published {
                publisher: sid.clone(),
                kind,
                ssrcs: BTreeSet::new(),
                subscribers: BTreeSet::new(),
                last_keyframe_request: HashMap::new(),
            },
        );
    }

    fn track_unpublished(&mut self, now: Instant, track: &TrackSid) {
        let Some(published) = self.tracks.remove(track) else {
            return;
        };
        if let Some(p) = self.participants.get_mut(&published.publisher) {
            p.cids.retain(|_, t| t != track);
        }
        for sub in published.subscribers {
            if let Some(p) = self.participants.get_mut(&sub) {
                p.sub.wanted.remove(track);
                p.sub.needs_offer = true;
            }
            self.maybe_offer(now, &sub);
        }
    }

    fn track_settings(&mut self, sub: &ParticipantSid, track: TrackSid, settings: TrackSettings) {
        let Some(p) = self.participants.get_mut(sub) else {
            return;
        };
        if let Some(down) = p.sub.sending.get_mut(&track) {
            down.forward.set_settings(settings);
        }
        p.sub.settings.insert(track, settings);
    }

    fn remove_participant(&mut self, sid: &ParticipantSid) {
        let Some(p) = self.participants.remove(sid) else {
            return;
        };
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(mut peer) = self.peers.remove(&id) {
                let _ = peer.pc.close();
                if let Some(deadline) = peer.deadline {
                    self.deadlines.remove(&(deadline, id));
                }
            }
            self.demux.remove(id);
        }
        self.tracks.retain(|_, t| &t.publisher != sid);
        for t in self.tracks.values_mut() {
            t.subscribers.remove(sid);
        }
    }

    /// Takes every event out of connection `id` and acts on it, then queues its datagrams and
    /// re-arms its timer. Forwarding marks subscriber connections, which are drained in turn.
    fn drain(&mut self, id: PeerId, now: Instant) {
        let mut touched = vec![id];
        let mut index = 0;
        while let Some(&current) = touched.get(index) {
            index += 1;
            while let Some(peer) = self.peers.get_mut(&current) {
                let Some(event) = peer.pc.poll_event() else {
                    break;
                };
                let owner = peer.owner.clone();
                let side = peer.side;
                self.handle_peer_event(current, &owner, side, event, now, &mut touched);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            self.flush(id);
        }
    }

    fn flush(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        while let Some(transmit) = peer.pc.poll_transmit() {
            self.transmits.push_back(transmit);
        }
        let next = peer.pc.poll_timeout();
        if next != peer.deadline {
            if let Some(old) = peer.deadline {
                self.deadlines.remove(&(old, id));
            }
            if let Some(new) = next {
                self.deadlines.insert((new, id));
            }
            peer.deadline = next;
        }
    }

    fn handle_peer_event(
        &mut self,
        id: PeerId,
        owner: &ParticipantSid,
        side: Side,
        event: MediaEvent,
        now: Instant,
        touched: &mut Vec<PeerId>,
    ) {
        match event {
            MediaEvent::StateChanged(state) => {
                tracing::debug!(participant = %owner, ?side, ?state, "peer connection state");
                if state == PeerState::Connected
                    && let Some(p) = self.participants.get_mut(owner)
                    && !p.connected
                {
                    p.connected = true;
                    self.events.push_back(CoreEvent::Connected {
                        participant: owner.clone(),
                    });
                }
            }
            MediaEvent::TrackOpened(track) => {
                let Some(sid) = self
                    .participants
                    .get(owner)
                    .and_then(|p| p.cids.get(&track.track_id))
                else {
                    tracing::debug!(participant = %owner, "media for an unannounced track");
                    return;
                };
                if let Some(published) = self.tracks.get_mut(sid)
                    && track.ssrc != 0
                {
                    published.ssrcs.insert(track.ssrc);
                }
            }
            MediaEvent::Rtp(rtp) => {
                self.stats.rtp_in += 1;
                self.forward_rtp(owner, *rtp, now, touched);
            }
            MediaEvent::Rtcp { packets, .. } => {
                if side == Side::Subscriber {
                    self.subscriber_feedback(owner, &packets, now);
                }
            }
            MediaEvent::DataChannelOpen { channel, label } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    let label = peer.channels.get(&channel).cloned().unwrap_or(label);
                    peer.channels.insert(channel, label.clone());
                    peer.open_channels.insert(label, channel);
                }
            }
            MediaEvent::Data { channel, data } => {
                if side == Side::Publisher {
                    let label = self
                        .peers
                        .get(&id)
                        .and_then(|p| p.channels.get(&channel).cloned());
                    if let Some(label) = label {
                        self.relay_data(owner, &label, &data, now, touched);
                    }
                }
            }
        }
    }

    fn forward_rtp(
        &mut self,
        publisher: &ParticipantSid,
        rtp: crate::peer::IncomingRtp,
        now: Instant,
        touched: &mut Vec<PeerId>,
    ) {
        let Some(track) = self
            .participants
            .get(publisher)
            .and_then(|p| p.cids.get(&rtp.track_id))
            .cloned()
        else {
            return;
        };
        let Some(published) = self.tracks.get_mut(&track) else {
            return;
        };
        published.ssrcs.insert(rtp.ssrc);
        let mime = rtp.mime_type.clone().unwrap_or_default();
        // Every audio packet is a point a subscriber can start from. Treating audio like video
        // left each audio forwarder waiting for a keyframe forever, so the router sent the
        // publisher a PLI for every audio SSRC every KEYFRAME_REQUEST_INTERVAL.
        let keyframe = match published.kind {
            MediaKind::Audio => true,
            MediaKind::Video => vp8_keyframe(&rtp.packet.payload),
        };
        let subscribers: Vec<ParticipantSid> = published.subscribers.iter().cloned().collect();
        let mut wants_keyframe = false;
        for sub in subscribers {
            let Some(p) = self.participants.get_mut(&sub) else {
                continue;
            };
            let Some(sub_peer) = p.subscriber else {
                continue;
            };
            let Some(down) = p.sub.sending.get_mut(&track) else {
                continue;
            };
            let mut packet = rtp.packet.clone();
            let decision = down.forward.forward(
                rtp.ssrc,
                packet.header.sequence_number,
                packet.header.timestamp,
                keyframe,
                now,
            );
            wants_keyframe |= down.forward.keyframe_wanted_for().is_some();
            let Some(out) = decision else {
                continue;
            };
            packet.header.sequence_number = out.sequence_number;
            packet.header.timestamp = out.timestamp;
            let local = down.local;
            let Some(peer) = self.peers.get_mut(&sub_peer) else {
                continue;
            };
            match peer.pc.write_rtp(local, packet, &mime, now) {
                Ok(()) => {
                    self.stats.rtp_forwarded += 1;
                    touched.push(sub_peer);
                }
                Err(_) => self.stats.rtp_write_errors += 1,
            }
        }
        if wants_keyframe {
            self.request_keyframes_for_track(&track, now);
        }
    }

    /// Asks the publisher of `track` for a keyframe on every layer some subscriber waits for.
    fn request_keyframes_for_track(&mut self, track: &TrackSid, now: Instant) {
        let Some(published) = self.tracks.get_mut(track) else {
            return;
        };
        let Some(publisher_peer) = self
            .participants
            .get(&published.publisher)
            .and_then(|p| p.publisher)
        else {
            return;
        };
        let mut ssrcs: BTreeSet<u32> = BTreeSet::new();
        for sub in &published.subscribers {
            if let Some(down) = self
                .participants
                .get(sub)
                .and_then(|p| p.sub.sending.get(track))
                && let Some(source) = down.forward.keyframe_wanted_for()
            {
                match source {
                    Some(ssrc) => {
                        ssrcs.insert(ssrc);
                    }
                    None => ssrcs.extend(published.ssrcs.iter().copied()),
                }
            }
        }
        let mut requested = false;
        for ssrc in ssrcs {
            let due = published
                .last_keyframe_request
                .get(&ssrc)
                .is_none_or(|last| {
                    now.saturating_duration_since(*last) >= KEYFRAME_REQUEST_INTERVAL
                });
            if !due {
                continue;
            }
            published.last_keyframe_request.insert(ssrc, now);
            if let Some(peer) = self.peers.get_mut(&publisher_peer)
                && peer.pc.request_keyframe(ssrc, now).is_ok()
            {
                self.stats.keyframe_requests += 1;
                requested = true;
            }
        }
        if requested {
            self.flush(publisher_peer);
        }
    }

    fn request_keyframes_for(&mut self, sub: &ParticipantSid, now: Instant) {
        let tracks: Vec<TrackSid> = self
            .participants
            .get(sub)
            .map(|p| p.sub.sending.keys().cloned().collect())
            .unwrap_or_default();
        for track in tracks {
            self.request_keyframes_for_track(&track, now);
        }
    }

    /// PLI/FIR from a subscriber about one of our local tracks → the publisher's current layer.
    fn subscriber_feedback(
        &mut self,
        sub: &ParticipantSid,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        let mut asked = Vec::new();
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                asked.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                asked.extend(fir.fir.iter().map(|e| e.ssrc));
            }
        }
        if asked.is_empty() {
            return;
        }
        let tracks: Vec<TrackSid> = self
            .participants
            .get_mut(sub)
            .map(|p| {
                p.sub
                    .sending
                    .iter_mut()
                    .filter(|(_, d)| asked.contains(&d.local.ssrc()))
                    .map(|(t, d)| {
                        d.forward.keyframe_requested();
                        t.clone()
                    })
                    .collect()
            })
            .unwrap_or_default();
        for track in tracks {
            self.request_keyframes_for_track(&track, now);
        }
    }

    /// Relays a data packet from `sender` to the others of its room (or the named identities).
    fn relay_data(
        &mut self,
        sender: &ParticipantSid,
        label: &str,
        data: &[u8],
        now: Instant,
        touched: &mut Vec<PeerId>,
    ) {
        let Some(p) = self.participants.get(sender) else {
            return;
        };
        if !p.can_publish_data || data.len() > MAX_DATA_PACKET {
            self.stats.data_dropped += 1;
            return;
        }
        let Ok(mut packet) = livekit_protocol::DataPacket::decode(data) else {
            self.stats.data_dropped += 1;
            return;
        };
        // Receivers trust these fields to say who sent it.
        packet.participant_identity = p.identity.clone();
        packet.participant_sid = sender.to_string();
        let destinations = std::mem::take(&mut packet.destination_identities);
        let bytes = BytesMut::from(packet.encode_to_vec().as_slice());
        let room = p.room.clone();
        let receivers: Vec<PeerId> = self
            .participants
            .iter()
            .filter(|(sid, other)| {
                *sid != sender
                    && other.room == room
                    && (destinations.is_empty() || destinations.contains(&other.identity))
            })
            .filter_map(|(_, other)| other.subscriber)
            .collect();
        for id in receivers {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let Some(&channel) = peer.open_channels.get(label) else {
                continue;
            };
            if peer.pc.send_data(channel, bytes.clone(), now).is_ok() {
                self.stats.data_relayed += 1;
                touched.push(id);
            }
        }
    }
}

/// The [`MediaEngine`] the signalling core calls: it queues [`Command`]s for [`run`].
#[derive(Debug, Clone)]
pub struct RtcEngine {
    commands: mpsc::UnboundedSender<(Instant, Command)>,
}

impl RtcEngine {
    /// An engine and the receiving end for [`run`].
    pub fn new() -> (Self, mpsc::UnboundedReceiver<(Instant, Command)>) {
        let (commands, rx) = mpsc::unbounded_channel();
        (Self { commands }, rx)
    }

    fn send(&self, command: Command) {
        // The loop stops only at shutdown; commands after it have nowhere to go.
        let _ = self.commands.send((Instant::now(), command));
    }
}

impl MediaEngine for RtcEngine {
    fn participant_joined(
        &mut self,
        room: &RoomName,
        participant: &ParticipantSid,
        identity: &str,
        can_publish_data: bool,
    ) {
        self.send(Command::Joined {
            room: room.clone(),
            participant: participant.clone(),
            identity: identity.to_owned(),
            can_publish_data,
        });
    }
    fn participant_left(&mut self, participant: &ParticipantSid) {
        self.send(Command::Left(participant.clone()));
    }
    fn publisher_offer(&mut self, participant: &ParticipantSid, offer: SessionDescription) {
        self.send(Command::PublisherOffer(participant.clone(), offer));
    }
    fn subscriber_answer(&mut self, participant: &ParticipantSid, answer: SessionDescription) {
        self.send(Command::SubscriberAnswer(participant.clone(), answer));
    }
    fn remote_candidate(
        &mut self,
        participant: &ParticipantSid,
        target: SignalTarget,
        candidate_init: String,
    ) {
        self.send(Command::Candidate(
            participant.clone(),
            target,
            candidate_init,
        ));
    }
    fn track_published(&mut self, publisher: &ParticipantSid, cid: &str, track: &TrackInfo) {
        self.send(Command::TrackPublished(
            publisher.clone(),
            cid.to_owned(),
            Box::new(track.clone()),
        ));
    }
    fn track_unpublished(&mut self, publisher: &ParticipantSid, track: &TrackSid) {
        self.send(Command::TrackUnpublished(publisher.clone(), track.clone()));
    }
    fn subscribe(
        &mut self,
        subscriber: &ParticipantSid,
        publisher: &ParticipantSid,
        track: &TrackSid,
    ) {
        self.send(Command::Subscribe(
            subscriber.clone(),
            publisher.clone(),
            track.clone(),
        ));
    }
    fn unsubscribe(&mut self, subscriber: &ParticipantSid, track: &TrackSid) {
        self.send(Command::Unsubscribe(subscriber.clone(), track.clone()));
    }
    fn track_settings(
        &mut self,
        subscriber: &ParticipantSid,
        track: &TrackSid,
        settings: TrackSettings,
    ) {
        self.send(Command::Settings(
            subscriber.clone(),
            track.clone(),
            settings,
        ));
    }
    fn needs_subscriber_offer(&mut self, participant: &ParticipantSid) {
        self.send(Command::NeedsOffer(participant.clone()));
    }
}

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741 §4.2–4.3): the first packet of
/// partition 0 whose frame header has the P bit clear.
fn vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    if !start {
        return false;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        offset = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            offset += if payload.get(2).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            offset += 1;
        }
        if x & 0x30 != 0 {
            offset += 1;
        }
    }
    payload.get(offset).is_some_and(|b| b & 0x01 == 0)
}

/// Datagrams read per wake-up before the router's output is flushed.
const RECV_BATCH: usize = 64;

/// Runs the router on `socket` until `stop` turns true: commands from the core in, events for
/// the core out through `on_event`.
pub async fn run<F>(
    mut router: Router,
    socket: UdpSocket,
    mut commands: mpsc::UnboundedReceiver<(Instant, Command)>,
    mut stop: watch::Receiver<bool>,
    mut on_event: F,
) -> Result<(), Error>
where
    F: FnMut(CoreEvent),
{
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(transmit) = router.poll_transmit() {
            if let Err(error) = socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                tracing::debug!(%error, destination = %transmit.destination, "udp send failed");
            }
        }
        while let Some(event) = router.poll_event() {
            on_event(event);
        }
        let deadline = router
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return Ok(());
                }
            }
            command = commands.recv() => match command {
                Some((at, command)) => router.handle_command(at.max(Instant::now()), command),
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(deadline.into()) => {
                router.handle_timeout(Instant::now());
            }
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received?;
                let now = Instant::now();
                router.handle_datagram(now, from, buf.get(..len).unwrap_or_default());
                for _ in 1..RECV_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((len, from)) => {
                            router.handle_datagram(now, from, buf.get(..len).unwrap_or_default());
                        }
                        Err(_) => break,
                    }
                }
                router.handle_timeout(Instant::now());
            }
        }
    }
}
