//! The SFU's media router with client peer connections in memory, in simulated time (no sockets,
//! no sleeping): join, publish, subscribe, renegotiation with one outstanding offer, forwarding,
//! leave.
//!
//! In every test, each RTP packet the router sends a subscriber is opened with the connection's
//! keys (both ends derive the same DTLS-SRTP keying material; the client's side is read through
//! `consulta_media::keytap`), and a packet index sealed twice with different plaintexts fails the
//! test at once: AES-GCM must never reuse a nonce (`SrtpWatch`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use consulta_media::keytap::KeyTap;
use rtc::srtp::protection_profile::ProtectionProfile;

use consulta_media::engine::{
    Command, OFFER_ANSWER_TIMEOUT, Router, RouterStats, UNOFFERED_TRACK_TIMEOUT,
};
use consulta_media::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use consulta_media::rtcp::sender_report::SenderReport;
use consulta_media::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use consulta_media::rtp::{Header, Packet};
use consulta_media::{
    DataChannel, LocalTrack, MediaConfig, MediaEvent, MediaKind, MediaPeer, PeerState,
};
use consulta_sfu::ids::{ParticipantSid, RoomName, TrackSid};
use consulta_sfu::media::MediaEvent as CoreEvent;
use livekit_protocol::{
    DataPacket, SessionDescription, SimulcastCodecInfo, TrackInfo, TrackType, UserPacket,
    data_packet,
};
use prost::Message;

const SFU: &str = "10.0.0.1:7882";

/// One client: its publisher and subscriber peer connections.
struct Client {
    sid: ParticipantSid,
    publisher: MediaPeer,
    publisher_addr: SocketAddr,
    /// The publisher connection's cryptography, keeping its DTLS-SRTP keying material.
    publisher_keys: Arc<KeyTap>,
    subscriber: MediaPeer,
    subscriber_addr: SocketAddr,
    /// The subscriber connection's cryptography, keeping its DTLS-SRTP keying material.
    subscriber_keys: Arc<KeyTap>,
    received: Vec<MediaEvent>,
    connected: bool,
    publisher_pli_seen: bool,
    publisher_nacks_seen: usize,
    /// The media SSRC of each NACK the publisher got.
    publisher_nacked: Vec<u32>,
    /// Each NACK the publisher got: when, its media SSRC and the numbers it asks for.
    publisher_nack_log: Vec<(Instant, u32, Vec<u16>)>,
    /// The numbers all NACKs the publisher got asked for.
    publisher_nack_asks: usize,
    /// Labels of the publisher connection's data channels once open.
    publisher_channels_open: Vec<String>,
    /// The publisher connection's data channels that closed.
    publisher_channels_closed: Vec<DataChannel>,
}

struct World {
    /// Drop this many more RTP datagrams from client 0's publisher after skipping `drop_after`.
    drop_rtp: usize,
    drop_after: usize,
    rtp_seen: usize,
    router: Router,
    clients: Vec<Client>,
    now: Instant,
    core_events: Vec<CoreEvent>,
    /// The STUN binding requests the router sent: where to, and their transaction IDs.
    checks: Vec<(SocketAddr, [u8; 12])>,
    /// The last binding request client 0's publisher sent.
    client0_check: Vec<u8>,
    /// The last RTP datagram client 0's publisher sent.
    client0_rtp: Vec<u8>,
    /// Packets of client 0's publisher, by SSRC and sequence number, lost on the way to the
    /// router however often they are sent.
    lost_from_client0: Vec<(u32, u16)>,
    /// Addresses whose datagrams are lost both ways (a network gone; signalling still works).
    cut: Vec<SocketAddr>,
    /// Client addresses whose DTLS datagrams are lost on the way to the router, while their
    /// ICE checks and everything the router sends pass (a middlebox passing STUN only).
    no_dtls_from: Vec<SocketAddr>,
    /// RTP datagrams the router sends to this address that are lost: this many more, after
    /// letting this many through.
    lose_to: Option<(SocketAddr, usize, usize)>,
    srtp: SrtpWatch,
}

/// Every RTP packet the router sealed for a subscriber, opened, by packet index: the same index
/// must never carry two plaintexts (one AES-GCM nonce per index, RFC 7714 §8.1).
#[derive(Default)]
struct SrtpWatch {
    /// (subscriber address, SSRC) → a context with the router's keys for it (no replay window:
    /// it opens resends too), and the highest packet index seen.
    streams: HashMap<(SocketAddr, u32), (rtc::srtp::context::Context, u64)>,
    /// The keying material each subscriber address's streams were opened with.
    material: HashMap<SocketAddr, Vec<u8>>,
    /// RTP packets of a known stream that its context did not open, under unchanged keys.
    unopened: usize,
    /// (subscriber address, SSRC, packet index) → plaintext.
    sealed: HashMap<(SocketAddr, u32, u64), Bytes>,
    /// RTP packets opened, and those sent again with the same bytes (NACK answers).
    opened: usize,
    resent: usize,
    /// The sender reports the router sent subscribers (SRTCP, opened with the same keys).
    reports: Vec<SenderReport>,
}

impl SrtpWatch {
    /// Opens `datagram`, sent by the router to the subscriber connection at `to` whose keying
    /// material `keys` kept, and records it by index; panics on a nonce used for two plaintexts.
    fn watch(&mut self, to: SocketAddr, keys: &KeyTap, datagram: &[u8]) {
        let rtp = is_rtp(datagram);
        let rtcp = datagram.first().is_some_and(|b| b >> 6 == 2)
            && datagram.get(1).is_some_and(|b| (200..=206).contains(b));
        if rtcp && let Some(halves) = keys.aes128_gcm_keys() {
            let plain = halves
                .iter()
                .find_map(|keys| keys.context().unwrap().decrypt_rtcp(datagram).ok());
            if let Some(plain) = plain {
                let packets = rtc::rtcp::packet::unmarshal(&mut &plain[..]).unwrap_or_default();
                self.reports.extend(
                    packets
                        .iter()
                        .filter_map(|p| p.as_any().downcast_ref::<SenderReport>().cloned()),
                );
            }
        }
        let Some((ssrc, seq)) = ssrc_and_sequence(datagram).filter(|_| rtp) else {
            return;
        };
        let known = self
            .streams
            .get_mut(&(to, ssrc))
            .and_then(|(context, last)| Some((context.decrypt_rtp(datagram).ok()?, *last)));
        let material = keys.keying_material(2 * (16 + 12));
        let (plain, last) = match known {
            Some(opened) => opened,
            None if self.streams.contains_key(&(to, ssrc))
                && self.material.get(&to) == material.as_ref() =>
            {
                // Sealed under the same keys, yet not as its stream's earlier packets were.
                self.unopened += 1;
                return;
            }
            None => {
                // New stream, or new keys: the router's half opens its packets.
                let Some(halves) = keys.aes128_gcm_keys() else {
                    return;
                };
                let Some((context, plain)) = halves.iter().find_map(|keys| {
                    let mut context = keys.context().unwrap();
                    let plain = context.decrypt_rtp(datagram).ok()?;
                    Some((context, plain))
                }) else {
                    return;
                };
                self.sealed.retain(|(t, s, _), _| (*t, *s) != (to, ssrc));
                self.streams.insert((to, ssrc), (context, u64::from(seq)));
                if let Some(material) = material {
                    self.material.insert(to, material);
                }
                (plain, u64::from(seq))
            }
        };
        let plain = plain.freeze();
        // The index nearest the highest seen (RFC 3711 §3.3.1).
        let index = [-1i64, 0, 1]
            .iter()
            .map(|roc| ((last >> 16) as i64 + roc).max(0) as u64 * 65_536 + u64::from(seq))
            .min_by_key(|i| i.abs_diff(last))
            .unwrap();
        if let Some((_, highest)) = self.streams.get_mut(&(to, ssrc)) {
            *highest = (*highest).max(index);
        }
        self.opened += 1;
        match self.sealed.get(&(to, ssrc, index)) {
            Some(first) if *first != plain => panic!(
                "the router sealed packet index {index} of SSRC {ssrc:#x} to {to} twice with \
                 different plaintexts: a reused AES-GCM nonce\n first: {first:02x?}\n again: \
                 {plain:02x?}"
            ),
            Some(_) => self.resent += 1,
            None => {
                self.sealed.insert((to, ssrc, index), plain);
            }
        }
    }
}

impl World {
    fn new() -> Self {
        Self::with_config(MediaConfig::default())
    }

    /// A world whose router's connections take `config`.
    fn with_config(config: MediaConfig) -> Self {
        Self {
            drop_rtp: 0,
            drop_after: 0,
            rtp_seen: 0,
            router: Router::new(SFU.parse().unwrap(), config),
            clients: Vec::new(),
            now: Instant::now(),
            core_events: Vec::new(),
            checks: Vec::new(),
            client0_check: Vec::new(),
            client0_rtp: Vec::new(),
            lost_from_client0: Vec::new(),
            cut: Vec::new(),
            no_dtls_from: Vec::new(),
            lose_to: None,
            srtp: SrtpWatch::default(),
        }
    }

    fn join(&mut self, n: u8, sid: &str) -> usize {
        self.join_with(n, sid, MediaConfig::default())
    }

    /// [`join`](Self::join), the client's publisher connection taking `publisher`.
    fn join_with(&mut self, n: u8, sid: &str, publisher: MediaConfig) -> usize {
        let publisher_addr: SocketAddr = format!("10.0.1.{n}:5000").parse().unwrap();
        let subscriber_addr: SocketAddr = format!("10.0.1.{n}:5001").parse().unwrap();
        let sid = ParticipantSid::parse(sid).unwrap();
        self.router.handle_command(
            self.now,
            Command::Joined {
                room: RoomName::parse("consultation").unwrap(),
                participant: sid.clone(),
                identity: sid.to_string(),
                can_publish_data: true,
            },
        );
        let (publisher_keys, subscriber_keys) = (KeyTap::new(), KeyTap::new());
        self.clients.push(Client {
            sid,
            publisher: MediaPeer::with_crypto(
                publisher_addr,
                publisher,
                Some(publisher_keys.clone()),
                self.now,
            )
            .unwrap(),
            publisher_addr,
            publisher_keys,
            subscriber: MediaPeer::with_crypto(
                subscriber_addr,
                MediaConfig::default(),
                Some(subscriber_keys.clone()),
                self.now,
            )
            .unwrap(),
            subscriber_addr,
            subscriber_keys,
            received: Vec::new(),
            connected: false,
            publisher_pli_seen: false,
            publisher_nacks_seen: 0,
            publisher_nacked: Vec::new(),
            publisher_nack_log: Vec::new(),
            publisher_nack_asks: 0,
            publisher_channels_open: Vec::new(),
            publisher_channels_closed: Vec::new(),
        });
        self.clients.len() - 1
    }

    /// Moves datagrams both ways until nothing moves; collects events.
    fn exchange(&mut self) {
        let sfu: SocketAddr = SFU.parse().unwrap();
        let now = self.now;
        loop {
            let mut moved = false;
            while let Some(t) = self.router.poll_transmit() {
                moved = true;
                // What a cut network loses was still sealed, and an on-path attacker sees it.
                if let Some(c) = self
                    .clients
                    .iter()
                    .find(|c| c.subscriber_addr == t.destination)
                {
                    self.srtp
                        .watch(t.destination, &c.subscriber_keys, &t.contents);
                }
                if self.cut.contains(&t.destination) {
                    continue;
                }
                if let Some((to, pass, lose)) = &mut self.lose_to
                    && *to == t.destination
                    && is_rtp(&t.contents)
                {
                    if *pass > 0 {
                        *pass -= 1;
                    } else if *lose > 0 {
                        *lose -= 1;
                        continue;
                    }
                }
                if let Some(id) = binding_request_id(&t.contents) {
                    self.checks.push((t.destination, id));
                }
                for c in &mut self.clients {
                    if t.destination == c.publisher_addr {
                        let _ = c.publisher.handle_receive(self.now, sfu, &t.contents);
                    } else if t.destination == c.subscriber_addr {
                        let _ = c.subscriber.handle_receive(self.now, sfu, &t.contents);
                    }
                }
            }
            for (i, c) in self.clients.iter_mut().enumerate() {
                for (peer, from) in [
                    (&mut c.publisher, c.publisher_addr),
                    (&mut c.subscriber, c.subscriber_addr),
                ] {
                    while let Some(t) = peer.poll_transmit() {
                        moved = true;
                        if self.cut.contains(&from)
                            || (self.no_dtls_from.contains(&from) && is_dtls(&t.contents))
                        {
                            continue;
                        }
                        // RTP from client 0.
                        let rtp = is_rtp(&t.contents);
                        if i == 0 && from == c.publisher_addr && rtp {
                            self.rtp_seen += 1;
                            self.client0_rtp = t.contents.to_vec();
                            if let Some(named) = ssrc_and_sequence(&t.contents)
                                && self.lost_from_client0.contains(&named)
                            {
                                continue;
                            }
                            if self.rtp_seen > self.drop_after && self.drop_rtp > 0 {
                                self.drop_rtp -= 1;
                                continue;
                            }
                        }
                        if i == 0
                            && from == c.publisher_addr
                            && binding_request_id(&t.contents).is_some()
                        {
                            self.client0_check = t.contents.to_vec();
                        }
                        self.router.handle_datagram(self.now, from, &t.contents);
                    }
                }
                while let Some(e) = c.subscriber.poll_event() {
                    moved = true;
                    c.received.push(e);
                }
                while let Some(e) = c.publisher.poll_event() {
                    moved = true;
                    match e {
                        MediaEvent::StateChanged(PeerState::Connected) => c.connected = true,
                        MediaEvent::DataChannelOpen { label, .. } => {
                            c.publisher_channels_open.push(label);
                        }
                        MediaEvent::DataChannelClosed { channel } => {
                            c.publisher_channels_closed.push(channel);
                        }
                        MediaEvent::Rtcp { packets, .. } => {
                            for p in &packets {
                                let any = p.as_any();
                                if any.is::<PictureLossIndication>() {
                                    c.publisher_pli_seen = true;
                                }
                                if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                                    c.publisher_nacks_seen += 1;
                                    c.publisher_nacked.push(nack.media_ssrc);
                                    let numbers: Vec<u16> =
                                        nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
                                    c.publisher_nack_asks += numbers.len();
                                    c.publisher_nack_log.push((now, nack.media_ssrc, numbers));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            while let Some(e) = self.router.poll_event() {
                moved = true;
                self.core_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn step(&mut self) {
        self.exchange();
        let next = self
            .clients
            .iter_mut()
            .flat_map(|c| [c.publisher.poll_timeout(), c.subscriber.poll_timeout()])
            .chain([self.router.poll_timeout()])
            .flatten()
            .min()
            .unwrap_or(self.now + Duration::from_millis(20));
        self.now = next.clamp(self.now, self.now + Duration::from_millis(20));
        for c in &mut self.clients {
            let _ = c.publisher.handle_timeout(self.now);
            let _ = c.subscriber.handle_timeout(self.now);
        }
        self.router.handle_timeout(self.now);
        self.exchange();
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start < Duration::from_secs(10),
                "{what}: not within 10 s of simulated time"
            );
            self.step();
        }
    }

    /// Subscriber offers the router emitted for `sid` so far.
    fn offers_for(&self, sid: &ParticipantSid) -> Vec<SessionDescription> {
        self.core_events
            .iter()
            .filter_map(|e| match e {
                CoreEvent::SubscriberOffer { participant, offer } if participant == sid => {
                    Some(offer.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The core asks the router to (re)negotiate client `i`'s subscriber connection.
    fn needs_offer(&mut self, i: usize) {
        let sid = self.clients[i].sid.clone();
        self.router
            .handle_command(self.now, Command::NeedsOffer(sid));
        self.exchange();
    }

    /// Client `i`'s publisher connection offers (numbered `id`) and takes the router's answer;
    /// returns the id the answer echoed.
    fn negotiate_publisher(&mut self, i: usize, id: u32) -> u32 {
        self.negotiate_publisher_with(i, id, false, |sdp| sdp)
    }

    /// [`World::negotiate_publisher`], restarting ICE if `restart_ice`, with the offer's SDP
    /// passed through `edit` on its way.
    fn negotiate_publisher_with(
        &mut self,
        i: usize,
        id: u32,
        restart_ice: bool,
        edit: impl FnOnce(String) -> String,
    ) -> u32 {
        let offer = self.clients[i]
            .publisher
            .create_offer_with(self.now, restart_ice);
        self.offer_publisher(i, edit(offer.unwrap()), id);
        let answer = self.publisher_answer(i);
        self.clients[i]
            .publisher
            .accept_answer(answer.sdp, self.now)
            .unwrap();
        answer.id
    }

    /// Hands the router client `i`'s publisher offer `sdp`, numbered `id`, and lets it answer.
    fn offer_publisher(&mut self, i: usize, sdp: String, id: u32) {
        let sid = self.clients[i].sid.clone();
        self.router.handle_command(
            self.now,
            Command::PublisherOffer(
                sid,
                SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    id,
                    ..SessionDescription::default()
                },
            ),
        );
        self.exchange();
    }

    /// How many publisher answers the router gave, to anyone.
    fn publisher_answers(&self) -> usize {
        self.core_events
            .iter()
            .filter(|e| matches!(e, CoreEvent::PublisherAnswer { .. }))
            .count()
    }

    /// The router's latest answer to client `i`'s publisher offer.
    fn publisher_answer(&self, i: usize) -> SessionDescription {
        let sid = &self.clients[i].sid;
        self.core_events
            .iter()
            .rev()
            .find_map(|e| match e {
                CoreEvent::PublisherAnswer {
                    participant,
                    answer,
                } if participant == sid => Some(answer.clone()),
                _ => None,
            })
            .expect("publisher answer")
    }

    /// Client `i` adds a VP8 track to its publisher connection and the core announces it as
    /// `sid`; returns the client's local track.
    fn publish_video(
        &mut self,
        i: usize,
        name: &str,
        cid: &str,
        sid: &str,
        ssrc: u32,
    ) -> LocalTrack {
        let local = self.clients[i]
            .publisher
            .add_local_track(MediaKind::Video, "video/VP8", name, cid, ssrc)
            .unwrap();
        let publisher = self.clients[i].sid.clone();
        self.router.handle_command(
            self.now,
            Command::TrackPublished(publisher, cid.to_owned(), Box::new(video_track(sid, cid))),
        );
        local
    }

    /// Client `i` adds an Opus track (`cid-mic`, SSRC `ssrc`) to its publisher connection and the
    /// core announces it as `TR_mic`; returns the client's local track.
    fn publish_microphone(&mut self, i: usize, ssrc: u32) -> LocalTrack {
        let local = self.clients[i]
            .publisher
            .add_local_track(
                MediaKind::Audio,
                "audio/opus",
                "microphone",
                "cid-mic",
                ssrc,
            )
            .unwrap();
        let publisher = self.clients[i].sid.clone();
        let track = TrackInfo {
            sid: "TR_mic".to_owned(),
            r#type: TrackType::Audio.into(),
            mime_type: "audio/opus".to_owned(),
            ..TrackInfo::default()
        };
        self.router.handle_command(
            self.now,
            Command::TrackPublished(publisher, "cid-mic".to_owned(), Box::new(track)),
        );
        local
    }

    /// Client `i` writes Opus packet `seq` (20 ms of a voice) on `microphone`; the number moves on.
    fn write_opus(&mut self, i: usize, microphone: LocalTrack, seq: &mut u16) {
        let packet = Packet {
            header: Header {
                version: 2,
                payload_type: 111,
                sequence_number: *seq,
                timestamp: 960 * u32::from(*seq),
                ssrc: 1,
                ..Default::default()
            },
            payload: vec![0xFC; 80].into(),
        };
        self.clients[i]
            .publisher
            .write_rtp(
                microphone,
                packet,
                "audio/opus",
                consulta_media::Keep::Copy,
                self.now,
            )
            .unwrap();
        *seq = seq.wrapping_add(1);
    }

    /// Client `sub` subscribes to client `publisher`'s track `track`.
    fn subscribe(&mut self, sub: usize, publisher: usize, track: &str) {
        let (sub, publisher) = (
            self.clients[sub].sid.clone(),
            self.clients[publisher].sid.clone(),
        );
        self.router.handle_command(
            self.now,
            Command::Subscribe(sub, publisher, TrackSid::parse(track).unwrap()),
        );
    }

    /// The client answers the router's latest subscriber offer.
    fn answer_latest(&mut self, i: usize) {
        self.answer_latest_with(i, |sdp| sdp);
    }

    /// [`World::answer_latest`], with the answer's SDP passed through `edit` on its way.
    fn answer_latest_with(&mut self, i: usize, edit: impl FnOnce(String) -> String) {
        let sid = self.clients[i].sid.clone();
        let offer = self.offers_for(&sid).pop().expect("an offer");
        let answer = edit(
            self.clients[i]
                .subscriber
                .accept_offer(offer.sdp, self.now)
                .unwrap(),
        );
        self.router.handle_command(
            self.now,
            Command::SubscriberAnswer(
                sid,
                SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer,
                    id: offer.id,
                    ..SessionDescription::default()
                },
            ),
        );
    }
}

fn video_track(sid: &str, cid: &str) -> TrackInfo {
    TrackInfo {
        sid: sid.to_owned(),
        r#type: TrackType::Video.into(),
        mime_type: "video/VP8".to_owned(),
        codecs: vec![SimulcastCodecInfo {
            mime_type: "video/VP8".to_owned(),
            cid: cid.to_owned(),
            ..SimulcastCodecInfo::default()
        }],
        ..TrackInfo::default()
    }
}

fn vp8(seq: u16, timestamp: u32, keyframe: bool) -> Packet {
    let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(&[0x5A; 300]);
    Packet {
        header: Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: seq,
            timestamp,
            ssrc: 1,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

/// The router's connections without bandwidth estimation.
fn without_estimation() -> MediaConfig {
    MediaConfig {
        congestion_control: false,
        ..MediaConfig::default()
    }
}

/// The router's connections on `rtc`'s write path (what a connection whose key check failed
/// keeps).
fn rtcs_write_path() -> MediaConfig {
    MediaConfig {
        own_write_path: false,
        ..MediaConfig::default()
    }
}

/// On the router's own write path (`MediaConfig::own_write_path`, the default): every packet to
/// Bob numbered and sealed by the router itself, the two Bob asks for again sent as they first
/// left, and sender reports on what it sent. And on its own read path
/// (`MediaConfig::own_read_path`, the default): `rtc` opened the first packet of Alice's camera,
/// the router every later one, the two it NACKed itself included.
#[test]
fn publish_subscribe_renegotiate_forward_and_leave() {
    let stats = forward_and_leave(MediaConfig::default());
    assert_eq!(
        stats.rtp_sealed_here, stats.rtp_forwarded,
        "every packet to Bob was sealed by the router itself: {stats:?}"
    );
    assert_eq!(
        stats.rtp_opened_here + 1,
        stats.rtp_in,
        "all of Alice's packets but the first opened by the router itself: {stats:?}"
    );
    // Bob's transport-wide feedback read by the router's own write path, not by `rtc`.
    assert!(stats.feedback_opened_here > 0, "{stats:?}");
}

/// The same on `rtc`'s read path.
#[test]
fn publish_subscribe_renegotiate_forward_and_leave_on_rtcs_read_path() {
    let stats = forward_and_leave(MediaConfig {
        own_read_path: false,
        ..MediaConfig::default()
    });
    assert_eq!(stats.rtp_opened_here, 0, "{stats:?}");
    assert_eq!(stats.rtp_sealed_here, stats.rtp_forwarded, "{stats:?}");
}

/// The same without bandwidth estimation (no transport-wide numbers).
#[test]
fn publish_subscribe_renegotiate_forward_and_leave_without_estimation() {
    let stats = forward_and_leave(without_estimation());
    assert_eq!(stats.rtp_sealed_here, stats.rtp_forwarded, "{stats:?}");
    assert_eq!(
        stats.feedback_opened_here, 0,
        "no feedback asked for: {stats:?}"
    );
}

/// The same on `rtc`'s write path.
#[test]
fn publish_subscribe_renegotiate_forward_and_leave_on_rtcs_write_path() {
    let stats = forward_and_leave(rtcs_write_path());
    assert_eq!(stats.rtp_sealed_here, 0, "{stats:?}");
}

/// Alice publishes a camera and Bob subscribes; the router forwards it (repairing two losses),
/// pauses it while muted, and frees everything once both leave. Returns the router's counters
/// from before they left.
fn forward_and_leave(config: MediaConfig) -> RouterStats {
    let mut w = World::with_config(config);
    let alice = w.join(1, "PA_alice");
    let bob = w.join(2, "PA_bob");
    let (alice_sid, bob_sid) = (w.clients[alice].sid.clone(), w.clients[bob].sid.clone());

    // The first subscriber offer right after join, with the two data channels.
    w.needs_offer(bob);
    let first = w.offers_for(&bob_sid);
    assert_eq!(first.len(), 1);
    assert!(first[0].sdp.contains("m=application"), "{}", first[0].sdp);
    assert_eq!(first[0].r#type, "offer");

    // Alice publishes a camera: her offer is answered with its id echoed.
    let local = w.publish_video(alice, "camera", "cid-cam", "TR_cam", 0xA11CE);
    assert_eq!(
        w.negotiate_publisher(alice, 7),
        7,
        "the answer echoes the offer id"
    );

    // Bob subscribes while his first offer is still unanswered: no second offer yet.
    let cam = TrackSid::parse("TR_cam").unwrap();
    w.router.handle_command(
        w.now,
        Command::Subscribe(bob_sid.clone(), alice_sid.clone(), cam.clone()),
    );
    w.needs_offer(bob);
    assert_eq!(w.offers_for(&bob_sid).len(), 1, "one offer outstanding");
    // His answer releases the queued change as the next offer, with the track's msid.
    w.answer_latest(bob);
    w.exchange();
    let offers = w.offers_for(&bob_sid);
    assert_eq!(offers.len(), 2, "the change goes out after the answer");
    assert!(offers[1].id > offers[0].id);
    assert!(
        offers[1].sdp.contains("a=msid:PA_alice|TR_cam TR_cam"),
        "{}",
        offers[1].sdp
    );
    w.answer_latest(bob);

    w.run_until("everyone connected", |w| {
        w.clients[alice].connected
            && w.core_events.iter().any(|e| {
                matches!(e, CoreEvent::Connected { participant } if *participant == w.clients[1].sid)
            })
    });

    // Alice's camera starts mid-stream (delta frames): Bob's forwarder waits for a keyframe and
    // the router asks Alice for one; from the keyframe on everything arrives, renumbered without
    // gaps of the SFU's making. Two packets are lost on the way from Alice: the router NACKs them,
    // Alice's connection resends them from its history, and they reach Bob late but complete.
    w.drop_after = w.rtp_seen + 12;
    w.drop_rtp = 2;
    for i in 0..30u16 {
        w.clients[alice]
            .publisher
            .write_rtp(
                local,
                vp8(500 + i, 3000 * u32::from(i), i == 5 || i == 20),
                "video/VP8",
                consulta_media::Keep::Copy,
                w.now,
            )
            .unwrap();
        w.step();
    }
    w.run_until("bob receives", |w| {
        w.clients[1]
            .received
            .iter()
            .filter(|e| matches!(e, MediaEvent::Rtp(_)))
            .count()
            >= 25
    });
    for _ in 0..50 {
        w.step();
    }
    let seqs: Vec<u16> = w.clients[bob]
        .received
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Rtp(rtp) => Some(rtp.packet.header.sequence_number),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs.len(),
        25,
        "every packet from the keyframe on, once, the lost two resent: {seqs:?}"
    );
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    let steps: Vec<u16> = sorted.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    assert!(
        steps.iter().all(|s| *s == 1),
        "no hole once the resent two are in: {seqs:?}"
    );
    assert_ne!(seqs, sorted, "the resent two arrived after later packets");
    assert!(
        w.clients[alice].publisher_nacks_seen >= 1,
        "the router NACKed the lost packets"
    );
    let stats = w.router.stats();
    assert_eq!(stats.rtp_forwarded, 25);
    assert_eq!(
        (stats.rtp_lost_in, stats.rtp_late_in),
        (0, 2),
        "the two resent filled their gaps, so they are not loss: {stats:?}"
    );
    assert!(
        stats.keyframe_requests >= 1,
        "a PLI asked for the first keyframe"
    );
    assert!(
        w.clients[alice].publisher_pli_seen,
        "the PLI reached Alice's publisher connection"
    );

    // Muted by Alice: nothing reaches Bob. Unmuted: Bob's stream starts again at a keyframe, its
    // numbering going on from the last packet he got.
    let bob_rtp = |w: &World| rtp_sequences(w, bob);
    let last = *sorted.last().unwrap();
    let send = |w: &mut World, from: u16, keyframe_at: u16| {
        for i in from..from + 10 {
            w.clients[alice]
                .publisher
                .write_rtp(
                    local,
                    vp8(500 + i, 3000 * u32::from(i), i == keyframe_at),
                    "video/VP8",
                    consulta_media::Keep::Copy,
                    w.now,
                )
                .unwrap();
            w.step();
        }
        for _ in 0..50 {
            w.step();
        }
    };
    w.router
        .handle_command(w.now, Command::Muted(cam.clone(), true));
    send(&mut w, 30, 30);
    assert_eq!(bob_rtp(&w).len(), 25, "nothing forwarded while muted");
    w.router
        .handle_command(w.now, Command::Muted(cam.clone(), false));
    send(&mut w, 40, 43);
    let after: Vec<u16> = bob_rtp(&w).split_off(25);
    let expected: Vec<u16> = (1..=7).map(|n| last.wrapping_add(n)).collect();
    assert_eq!(after, expected, "from the keyframe on, numbered on");
    // Every packet sent to Bob was opened with his connection's keys, and those his connection
    // asked for again (the two that came late) went out as they first did: `SrtpWatch` fails the
    // test at once on an index sealed over another plaintext.
    assert!(
        w.srtp.opened >= 32 && w.srtp.resent >= 1 && w.srtp.unopened == 0,
        "opened {}, sent again {}, not opened {}",
        w.srtp.opened,
        w.srtp.resent,
        w.srtp.unopened
    );
    // Bob's connection reports on the camera it sends him, once a second: one report came after
    // the first 25 packets (a report at the first packet alone would not do).
    let camera_ssrc = w.clients[bob]
        .received
        .iter()
        .find_map(|e| match e {
            MediaEvent::Rtp(rtp) => Some(rtp.packet.header.ssrc),
            _ => None,
        })
        .expect("bob got the camera");
    assert!(
        w.srtp
            .reports
            .iter()
            .any(|r| r.ssrc == camera_ssrc && r.packet_count >= 25 && r.octet_count > 0),
        "a sender report on the camera: {:?}",
        w.srtp.reports
    );
    let stats = w.router.stats();

    // Unpublishing renegotiates Bob; Alice leaving frees everything of hers.
    w.router
        .handle_command(w.now, Command::TrackUnpublished(alice_sid.clone(), cam));
    w.exchange();
    assert_eq!(w.offers_for(&bob_sid).len(), 3, "unpublish renegotiates");
    w.router.handle_command(w.now, Command::Left(alice_sid));
    w.router.handle_command(w.now, Command::Left(bob_sid));
    assert_eq!(w.router.participant_count(), 0);
    stats
}

/// The `a=ice-ufrag` of an SDP.
fn ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .to_owned()
}

/// A resume (`Command::Resumed`): an offer left unanswered on the dropped socket is sent again as
/// it was, and its answer is followed by an ICE restart of the subscriber connection. An answer
/// that comes twice applies once; the connection comes up on the new credentials.
#[test]
fn a_resume_offers_again_what_was_unanswered_then_restarts_ice() {
    let mut w = World::new();
    let bob = w.join(2, "PA_bob");
    let bob_sid = w.clients[bob].sid.clone();
    w.needs_offer(bob);
    let first = w.offers_for(&bob_sid);
    assert_eq!(first.len(), 1);

    // Bob's socket dropped before the offer reached him; he resumes.
    w.router
        .handle_command(w.now, Command::Resumed(bob_sid.clone()));
    w.exchange();
    let offers = w.offers_for(&bob_sid);
    assert_eq!(offers.len(), 2, "the outstanding offer again");
    assert_eq!((offers[1].id, &offers[1].sdp), (first[0].id, &first[0].sdp));

    w.answer_latest(bob);
    w.exchange();
    let offers = w.offers_for(&bob_sid);
    assert_eq!(offers.len(), 3, "then the ICE restart");
    let restart = offers[2].clone();
    assert_eq!(restart.id, first[0].id + 1);
    assert_ne!(ufrag(&restart.sdp), ufrag(&first[0].sdp));

    // The first answer once more (it was in flight twice): not applied to the restart offer.
    let stale = SessionDescription {
        r#type: "answer".into(),
        sdp: w.clients[bob]
            .subscriber
            .local_sdp()
            .expect("bob's first answer"),
        id: first[0].id,
        ..SessionDescription::default()
    };
    w.router
        .handle_command(w.now, Command::SubscriberAnswer(bob_sid.clone(), stale));
    // Still waiting for the restart's answer: a change meanwhile waits for it too.
    w.needs_offer(bob);
    assert_eq!(
        w.offers_for(&bob_sid).len(),
        3,
        "the stale answer was not taken"
    );
    w.answer_latest(bob);
    w.exchange();
    assert_eq!(
        w.offers_for(&bob_sid).len(),
        4,
        "the waiting change after the answer"
    );
    w.answer_latest(bob);
    w.run_until("bob's subscriber connection up", |w| {
        w.clients[bob]
            .received
            .iter()
            .any(|e| matches!(e, MediaEvent::StateChanged(PeerState::Connected)))
    });

    // A resume with nothing outstanding restarts ICE at once.
    w.router
        .handle_command(w.now, Command::Resumed(bob_sid.clone()));
    w.exchange();
    let offers = w.offers_for(&bob_sid);
    assert_eq!(offers.len(), 5);
    assert_eq!(offers[4].id, restart.id + 2);
    assert_ne!(ufrag(&offers[4].sdp), ufrag(&offers[3].sdp));
}

/// Bob's network is gone for 40 s while his signalling stays (he answers every offer, as
/// livekit-client does), then he resumes: the router's ICE restart connects his subscriber
/// connection again. `rtc` gives ICE up after 30 s without a word and then has no candidate left
/// to restart with, so the router never lets it.
#[test]
fn a_resume_after_a_long_outage_connects_again() {
    let mut w = World::new();
    let bob = w.join(2, "PA_bob");
    let bob_sid = w.clients[bob].sid.clone();
    // Bob's side re-gathers on an ICE restart, as a browser does (`rtc` would not after failing).
    let config = MediaConfig {
        ice_fails: false,
        ..MediaConfig::default()
    };
    let addr = w.clients[bob].subscriber_addr;
    w.clients[bob].subscriber_keys = KeyTap::new();
    w.clients[bob].subscriber = MediaPeer::with_crypto(
        addr,
        config,
        Some(w.clients[bob].subscriber_keys.clone()),
        w.now,
    )
    .unwrap();
    w.needs_offer(bob);
    w.answer_latest(bob);
    w.run_until("bob's subscriber connection up", |w| {
        subscriber_connected(w, 0)
    });
    let mut answered = w.offers_for(&bob_sid).len();
    let mut answer_offers = |w: &mut World| {
        w.exchange();
        if w.offers_for(&bob_sid).len() > answered {
            answered = w.offers_for(&bob_sid).len();
            w.answer_latest(bob);
        }
        w.step();
    };
    w.cut.push(addr);
    let left = w.now;
    while w.now - left < Duration::from_secs(40) {
        answer_offers(&mut w);
    }
    w.cut.clear();
    w.clients[bob].received.clear();
    w.router
        .handle_command(w.now, Command::Resumed(bob_sid.clone()));
    let back = w.now;
    while !subscriber_connected(&w, 0) {
        assert!(
            w.now - back < Duration::from_secs(10),
            "bob's subscriber connection not up again"
        );
        answer_offers(&mut w);
    }
}

/// Alice (client 0) connected, publishing a camera (`TR_cam`); Bob (client 1) joined.
/// A client whose DTLS never reaches the router (its ICE checks do) is a connection that cannot
/// come up: the router's side ends in a failed connection, counts it, and tells the core, which
/// asks the client to join again (`core` tests); Bob, beside it, connects as usual.
#[test]
fn a_publisher_whose_handshake_never_arrives_is_reported_failed_to_the_core() {
    let mut w = World::new();
    let alice = w.join(1, "PA_alice");
    let bob = w.join(2, "PA_bob");
    let alice_addr = w.clients[alice].publisher_addr;
    w.no_dtls_from.push(alice_addr);
    w.publish_video(alice, "camera", "cid-alice", "TR_alice", 0xA11CE);
    w.publish_video(bob, "camera", "cid-bob", "TR_bob", 0xB0B);
    w.negotiate_publisher(alice, 1);
    w.negotiate_publisher(bob, 1);
    w.run_until("bob connected", |w| w.clients[bob].connected);
    let start = w.now;
    let failed = |w: &World| {
        w.core_events.iter().any(|e| {
            matches!(e, CoreEvent::ConnectionFailed { participant }
                if participant.as_str() == "PA_alice")
        })
    };
    while !failed(&w) {
        assert!(
            w.now - start < Duration::from_secs(20),
            "alice's connection not reported failed within 20 s of simulated time"
        );
        w.step();
    }
    let took = w.now - start;
    // ICE came up: the failure is the handshake's, not a path's.
    assert!(
        w.checks.iter().any(|(to, _)| *to == alice_addr),
        "the router never checked alice's address"
    );
    assert!(!w.clients[alice].connected, "alice connected without DTLS");
    assert_eq!(w.router.stats().handshakes_failed, 1, "counted once");
    // Not at once: a handshake gets 15 s from ICE coming up before it counts as stalled.
    assert!(
        took >= Duration::from_secs(10),
        "failed after {took:?}: sooner than a handshake is given"
    );
    // Reported once, and about alice only.
    assert_eq!(connections_failed(&w), ["PA_alice"]);
    assert!(w.clients[bob].connected);
}

/// Whose failed connections the router reported to the core, in order.
fn connections_failed(w: &World) -> Vec<String> {
    reported(w, |e| match e {
        CoreEvent::ConnectionFailed { participant } => Some(participant),
        _ => None,
    })
}

/// Whose refused negotiations the router reported to the core, in order.
fn negotiations_refused(w: &World) -> Vec<String> {
    reported(w, |e| match e {
        CoreEvent::NegotiationRefused { participant } => Some(participant),
        _ => None,
    })
}

/// The participants of the events `which` picks, in order.
fn reported(w: &World, which: impl Fn(&CoreEvent) -> Option<&ParticipantSid>) -> Vec<String> {
    w.core_events
        .iter()
        .filter_map(|e| which(e).map(|p| p.as_str().to_owned()))
        .collect()
}

/// The tracks the router reported ended, in order.
fn tracks_ended(w: &World) -> Vec<String> {
    w.core_events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::TrackEnded { track, .. } => Some(track.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// Alice's client gave up publishing a second camera (its `track_published` went to a dead
/// socket), so no offer ever carries it: 30 s after it was announced the router ends it, and the
/// core tells the others, who would otherwise keep a track that never carries media. A track an
/// offer carried is not ended so, nor is one unpublished in time.
#[test]
fn a_track_no_offer_carries_is_ended_once_its_time_is_up() {
    let (mut w, _camera) = alice_with_a_camera_and_bob();
    let alice = 0;
    let alice_sid = w.clients[alice].sid.clone();
    let announced = w.now;
    for (cid, sid) in [("cid-ghost", "TR_ghost"), ("cid-gone", "TR_gone")] {
        w.router.handle_command(
            w.now,
            Command::TrackPublished(
                alice_sid.clone(),
                cid.into(),
                Box::new(video_track(sid, cid)),
            ),
        );
    }
    // A screen share announced at the same time, and offered.
    w.publish_video(alice, "screen", "cid-screen", "TR_screen", 0x5C2EE);
    w.negotiate_publisher(alice, 2);
    step_until(&mut w, announced + Duration::from_secs(1));
    w.router.handle_command(
        w.now,
        Command::TrackUnpublished(alice_sid.clone(), TrackSid::parse("TR_gone").unwrap()),
    );
    let margin = Duration::from_millis(500);
    step_until(&mut w, announced + UNOFFERED_TRACK_TIMEOUT - margin);
    assert!(tracks_ended(&w).is_empty(), "ended before its time");
    step_until(&mut w, announced + UNOFFERED_TRACK_TIMEOUT + margin);
    assert_eq!(tracks_ended(&w), ["TR_ghost"]);
    assert_eq!(w.router.stats().tracks_never_offered, 1);
    step_until(&mut w, announced + UNOFFERED_TRACK_TIMEOUT * 3);
    assert_eq!(tracks_ended(&w), ["TR_ghost"], "ended once");
}

/// Steps the world until `at`.
fn step_until(w: &mut World, at: Instant) {
    while w.now < at {
        w.step();
    }
}

/// Bob's client cannot apply the router's offer of Alice's screen share and sends no answer
/// (livekit-client then starts no reconnect), and every later change of his subscriber
/// connection waits behind that offer: 15 s on, the core is told, once, so that it asks him to
/// join again. A resume sends the offer again and gives it its time again; an answer that comes
/// late still applies, and what waited is offered next.
#[test]
fn a_subscriber_offer_left_unanswered_has_the_client_asked_to_join_again() {
    let (mut w, _camera, _seq) = alice_sending_her_camera_to_bob();
    let (alice, bob) = (0, 1);
    let bob_sid = w.clients[bob].sid.clone();
    w.publish_video(alice, "screen", "cid-screen", "TR_screen", 0x5C2EE);
    w.negotiate_publisher(alice, 2);
    w.subscribe(bob, alice, "TR_screen");
    w.needs_offer(bob);
    let offers = w.offers_for(&bob_sid).len();
    let sent = w.now;
    let margin = Duration::from_millis(500);
    step_until(&mut w, sent + OFFER_ANSWER_TIMEOUT - margin);
    assert!(
        connections_failed(&w).is_empty(),
        "told before the offer's time was up"
    );
    step_until(&mut w, sent + OFFER_ANSWER_TIMEOUT + margin);
    assert_eq!(connections_failed(&w), ["PA_bob"]);
    assert_eq!(w.router.stats().offers_unanswered, 1);
    // Once per offer; a change meanwhile still waits behind it.
    w.needs_offer(bob);
    step_until(&mut w, sent + OFFER_ANSWER_TIMEOUT * 3);
    assert_eq!(
        connections_failed(&w).len(),
        1,
        "told again for the same offer"
    );
    assert_eq!(w.offers_for(&bob_sid).len(), offers);

    // A resume: the same offer again, with its time again.
    w.router
        .handle_command(w.now, Command::Resumed(bob_sid.clone()));
    w.exchange();
    let resent = w.now;
    let again = w.offers_for(&bob_sid);
    assert_eq!(again.len(), offers + 1, "the offer again");
    assert_eq!(again[offers].id, again[offers - 1].id);
    step_until(&mut w, resent + OFFER_ANSWER_TIMEOUT - margin);
    assert_eq!(
        connections_failed(&w).len(),
        1,
        "the offer sent again has its time again"
    );
    step_until(&mut w, resent + OFFER_ANSWER_TIMEOUT + margin);
    assert_eq!(connections_failed(&w), ["PA_bob", "PA_bob"]);

    // A late answer applies, and the ICE restart the resume asked for follows; answered in
    // time, it is not counted.
    w.answer_latest(bob);
    w.exchange();
    assert_eq!(
        w.offers_for(&bob_sid).len(),
        offers + 2,
        "the restart after the late answer"
    );
    w.answer_latest(bob);
    let answered = w.now;
    step_until(&mut w, answered + OFFER_ANSWER_TIMEOUT * 2);
    assert_eq!(connections_failed(&w).len(), 2, "an answered offer counted");
    assert_eq!(w.router.stats().offers_unanswered, 2);
    assert!(subscriber_connected(&w, bob));
}

fn alice_with_a_camera_and_bob() -> (World, LocalTrack) {
    alice_with_a_camera_and_bob_with(MediaConfig::default())
}

/// [`alice_with_a_camera_and_bob`], the router's connections taking `config`.
fn alice_with_a_camera_and_bob_with(config: MediaConfig) -> (World, LocalTrack) {
    let mut w = World::with_config(config);
    let alice = w.join(1, "PA_alice");
    w.join(2, "PA_bob");
    let camera = w.publish_video(alice, "camera", "cid-cam", "TR_cam", 0xA11CE);
    w.negotiate_publisher(alice, 1);
    w.run_until("alice connected", |w| w.clients[0].connected);
    (w, camera)
}

/// [`alice_with_a_camera_and_bob`], Bob subscribed to the camera and receiving it; returns the
/// next sequence number of the camera.
fn alice_sending_her_camera_to_bob() -> (World, LocalTrack, u16) {
    alice_sending_her_camera_to_bob_with(MediaConfig::default())
}

/// [`alice_sending_her_camera_to_bob`], the router's connections taking `config`.
fn alice_sending_her_camera_to_bob_with(config: MediaConfig) -> (World, LocalTrack, u16) {
    let (mut w, camera) = alice_with_a_camera_and_bob_with(config);
    subscribe_and_connect(&mut w, 1, 0, "TR_cam");
    let mut seq = 1u16;
    deltas_then_keyframe(&mut w, camera, &mut seq);
    (w, camera, seq)
}

/// Bob's client asks for a key frame of Alice's camera every 100 ms (a decoder that keeps
/// failing, or a hostile client): Alice is asked once a second at most, LiveKit's interval for
/// a track's upper layers (its low layer's is 500 ms), however many PLIs Bob sends.
#[test]
fn a_subscribers_keyframe_requests_reach_the_publisher_once_a_second_at_most() {
    let (mut w, _camera, _seq) = alice_sending_her_camera_to_bob();
    let bob = 1;
    let camera_at_bob = w.clients[bob]
        .received
        .iter()
        .find_map(|e| match e {
            MediaEvent::Rtp(rtp) => Some(rtp.ssrc),
            _ => None,
        })
        .expect("bob receives the camera");
    let (start, asked) = (w.now, w.router.stats().keyframe_requests);
    let mut sent = 0;
    while w.now < start + Duration::from_millis(3_050) {
        w.clients[bob]
            .subscriber
            .request_keyframe(camera_at_bob, w.now)
            .unwrap();
        sent += 1;
        let next = w.now + Duration::from_millis(100);
        step_until(&mut w, next);
    }
    let asked = w.router.stats().keyframe_requests - asked;
    assert!(sent >= 30);
    assert!(
        (3..=4).contains(&asked),
        "{asked} key frame requests to Alice for {sent} from Bob in 3 s"
    );
}

/// [`alice_sending_her_camera_to_bob`], with Carol (client 2) and `others` more subscribers
/// (clients 3 on) taking the camera too, from a key frame on; returns the next sequence number of
/// the camera.
fn alice_sending_her_camera_to_bob_carol_and(others: u8) -> (World, LocalTrack, u16) {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    for n in 3..4 + others {
        let sid = if n == 3 {
            "PA_carol".to_owned()
        } else {
            format!("PA_more{n}")
        };
        let subscriber = w.join(n, &sid);
        subscribe_and_connect(&mut w, subscriber, 0, "TR_cam");
    }
    deltas_then_keyframe(&mut w, camera, &mut seq);
    (w, camera, seq)
}

/// A client trickles far more candidates than any browser has: here 100 addresses of a network
/// that is not its own, to its publisher connection while that connection is still checking
/// paths (its real address cut off meanwhile, so checking goes on for seconds). The router takes
/// 64 of them for the connection's ICE credentials and sends checks to no more addresses than
/// those.
#[test]
fn a_client_naming_endless_candidates_has_the_router_check_64_at_most() {
    let mut w = World::new();
    let alice = w.join(1, "PA_alice");
    w.publish_video(alice, "camera", "cid-cam", "TR_cam", 0xA11CE);
    let real = w.clients[alice].publisher_addr;
    w.cut.push(real);
    w.negotiate_publisher(alice, 1);
    let named = |n: u32| -> SocketAddr {
        format!("10.9.{}.{}:4000", n / 200, n % 200 + 1)
            .parse()
            .unwrap()
    };
    let sid = w.clients[alice].sid.clone();
    for n in 0..100 {
        let to = named(n);
        let init = serde_json::json!({
            "candidate": format!("candidate:{n} 1 udp 2122260223 {} {} typ host", to.ip(), to.port()),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        });
        w.router.handle_command(
            w.now,
            Command::Candidate(
                sid.clone(),
                livekit_protocol::SignalTarget::Publisher,
                init.to_string(),
            ),
        );
    }
    let start = w.now;
    while w.now - start < Duration::from_secs(8) {
        w.step();
    }
    let checked: std::collections::HashSet<SocketAddr> = w
        .checks
        .iter()
        .map(|(to, _)| *to)
        .filter(|to| (0..100).any(|n| named(n) == *to))
        .collect();
    assert!(
        !checked.is_empty() && checked.len() <= 64,
        "{} addresses checked",
        checked.len()
    );
    // Without the bound, all 100 (checked by raising it).
}

/// Candidates written into a client's offers count too, each once however often it is written
/// (as a client that does not trickle writes them into every offer). An offer naming more than
/// the connection may still take is answered with those past 64 left out (the bound is on what
/// `rtc` checks, not a reason to refuse the rest of the offer); an ICE restart starts the count
/// again.
#[test]
fn candidates_written_into_offers_count_once_and_those_past_the_bound_are_left_out() {
    let mut w = World::new();
    let alice = w.join(1, "PA_alice");
    w.publish_video(alice, "camera", "cid-cam", "TR_cam", 0xA11CE);
    let written = |offer: String, from: u32, count: u32| {
        let lines: String = (from..from + count)
            .map(|n| {
                format!(
                    "a=candidate:{n} 1 udp 2122260223 10.8.{}.{} 4000 typ host\r\n",
                    n / 200,
                    n % 200 + 1
                )
            })
            .collect();
        let at = offer.find("a=mid:").unwrap();
        format!("{}{lines}{}", &offer[..at], &offer[at..])
    };
    // The same ten in each of five offers: ten taken.
    for id in 1..=5 {
        w.negotiate_publisher_with(alice, id, false, |offer| written(offer, 0, 10));
    }
    w.run_until("alice connected", |w| w.clients[0].connected);
    // Taken: the ten, and the client's own (its offers carry its host candidate). Written
    // again with 60 more: answered.
    let before = w.publisher_answers();
    let sdp = w.clients[alice].publisher.create_offer(w.now).unwrap();
    assert!(sdp.contains("a=candidate:"));
    w.offer_publisher(alice, written(sdp, 0, 70), 6);
    assert_eq!(
        w.publisher_answers(),
        before + 1,
        "past the bound: answered"
    );
    let answer = w.publisher_answer(alice);
    assert_eq!(answer.id, 6);
    w.clients[alice]
        .publisher
        .accept_answer(answer.sdp, w.now)
        .unwrap();
    // An ICE restart forgets them: as many new ones are taken again, and no more. With the
    // client's real address cut, the restarted ICE checks what it took for seconds: 64 at most
    // of the 70 named (written first, they fill the bound before the client's own).
    w.cut.push(w.clients[alice].publisher_addr);
    w.negotiate_publisher_with(alice, 7, true, |offer| written(offer, 100, 70));
    assert_eq!(w.publisher_answer(alice).id, 7);
    // One trickled now finds the bound full.
    let trickled: SocketAddr = "10.7.0.1:4000".parse().unwrap();
    let init = serde_json::json!({
        "candidate": format!("candidate:7 1 udp 2122260223 {} {} typ host", trickled.ip(), trickled.port()),
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    });
    let sid = w.clients[alice].sid.clone();
    w.router.handle_command(
        w.now,
        Command::Candidate(
            sid,
            livekit_protocol::SignalTarget::Publisher,
            init.to_string(),
        ),
    );
    let start = w.now;
    while w.now - start < Duration::from_secs(8) {
        w.step();
    }
    assert!(
        w.checks.iter().all(|(to, _)| *to != trickled),
        "a candidate past the bound is not checked"
    );
    let named: std::collections::HashSet<SocketAddr> = (100..170)
        .map(|n: u32| {
            format!("10.8.{}.{}:4000", n / 200, n % 200 + 1)
                .parse()
                .unwrap()
        })
        .collect();
    let checked: std::collections::HashSet<SocketAddr> = w
        .checks
        .iter()
        .map(|(to, _)| *to)
        .filter(|to| named.contains(to))
        .collect();
    assert!(
        (60..=64).contains(&checked.len()),
        "{} of the named addresses checked",
        checked.len()
    );
    assert_eq!(negotiations_refused(&w), Vec::<String>::new());
}

/// An offer with more media sections than any client needs (129: the client's video section and
/// 128 copies of it under mids of their own) is refused before `rtc` makes a transceiver of any,
/// and nothing answers it; the client's next offer, as it made it, is answered and connects.
#[test]
fn an_offer_of_too_many_media_sections_is_refused_and_the_next_answered() {
    let mut w = World::new();
    let alice = w.join(1, "PA_alice");
    w.publish_video(alice, "camera", "cid-cam", "TR_cam", 0xA11CE);
    let mut swollen = None;
    w.negotiate_publisher_with(alice, 1, false, |offer| {
        let at = offer.find("m=video").unwrap();
        let length = offer[at + 1..]
            .find("\r\nm=")
            .map_or(offer.len() - at, |n| n + 3);
        let section = &offer[at..at + length];
        let mid = section
            .lines()
            .find_map(|line| line.strip_prefix("a=mid:"))
            .unwrap();
        let mut sdp = offer.clone();
        for n in 0..128 {
            sdp += &section.replace(&format!("a=mid:{mid}\r\n"), &format!("a=mid:x{n}\r\n"));
        }
        swollen = Some(sdp);
        offer
    });
    w.run_until("alice connected", |w| w.clients[0].connected);
    let before = w.publisher_answers();
    w.offer_publisher(alice, swollen.unwrap(), 2);
    assert_eq!(w.publisher_answers(), before, "not answered");
    assert_eq!(negotiations_refused(&w), ["PA_alice"], "but reported");
    assert_eq!(w.negotiate_publisher(alice, 3), 3);
    assert_eq!(w.router.stats().negotiations_refused, 1);
}

/// Bob's NAT gives his subscriber connection a new public port mid-call. `rtc`, controlling that
/// connection's ICE, answers his checks from there but keeps sending to the old port; once it has
/// heard nothing on the old one for 5 s, the router restarts ICE, and Alice's camera reaches him
/// again.
///
/// On the own write path (the default) its datagrams follow the connection's new selected pair
/// after the restart (a report through `rtc` shows where that is).
#[test]
fn a_subscriber_whose_nat_port_changed_gets_its_media_again() {
    let stats = nat_port_changed(MediaConfig::default());
    assert_eq!(stats.rtp_sealed_here, stats.rtp_forwarded, "{stats:?}");
}

/// The same on `rtc`'s write path.
#[test]
fn a_subscriber_whose_nat_port_changed_gets_its_media_again_on_rtcs_write_path() {
    let stats = nat_port_changed(rtcs_write_path());
    assert_eq!(stats.rtp_sealed_here, 0, "{stats:?}");
}

fn nat_port_changed(config: MediaConfig) -> RouterStats {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob_with(config);
    let bob = 1;
    let bob_sid = w.clients[bob].sid.clone();
    let bob_rtp = |w: &World| rtp_received(w, 1);
    assert!(bob_rtp(&w) > 0, "bob got the camera");

    let offers = w.offers_for(&bob_sid).len();
    w.clients[bob].subscriber_addr = "10.0.1.2:6001".parse().unwrap();
    let moved = w.now;
    while w.offers_for(&bob_sid).len() == offers {
        assert!(
            w.now - moved < Duration::from_secs(10),
            "no ICE restart offered"
        );
        send_vp8(&mut w, camera, &mut seq, false);
    }
    let restart = w.offers_for(&bob_sid).pop().unwrap();
    assert_ne!(
        ufrag(&restart.sdp),
        ufrag(&w.offers_for(&bob_sid)[offers - 1].sdp)
    );
    w.answer_latest(bob);
    let before = bob_rtp(&w);
    for _ in 0..50 {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    deltas_then_keyframe(&mut w, camera, &mut seq);
    assert!(
        bob_rtp(&w) > before,
        "the camera reached bob at his new port"
    );
    w.router.stats()
}

/// Alice's camera, once the router opens it itself (`MediaConfig::own_read_path`), stays with the
/// router when she renegotiates (a screen share published), though `rtc` forgets at each
/// renegotiation which SSRC carries which track (docs/SFU-MEDIA.md, finding 7), and across the
/// wrap of its sequence numbers.
#[test]
fn a_camera_opened_by_the_router_keeps_coming_through_a_renegotiation_and_a_wrap() {
    let (mut w, camera) = alice_with_a_camera_and_bob();
    let (alice, bob) = (0, 1);
    subscribe_and_connect(&mut w, bob, alice, "TR_cam");
    // Packet `n` of the camera: its number wraps, its timestamp goes on (`send_vp8` derives the
    // timestamp from the number).
    let n = std::cell::Cell::new(65_500u32);
    let mut send = |w: &mut World, keyframe: bool| {
        let packet = vp8(n.get() as u16, 3000 * n.get(), keyframe);
        w.clients[alice]
            .publisher
            .write_rtp(
                camera,
                packet,
                "video/VP8",
                consulta_media::Keep::Copy,
                w.now,
            )
            .unwrap();
        n.set(n.get() + 1);
        w.step();
    };
    let key_frame_when_asked = |w: &mut World, send: &mut dyn FnMut(&mut World, bool)| {
        w.clients[alice].publisher_pli_seen = false;
        for _ in 0..20 {
            let asked = w.clients[alice].publisher_pli_seen;
            send(w, asked);
            if asked {
                break;
            }
        }
        for _ in 0..5 {
            send(w, false);
        }
        for _ in 0..20 {
            w.step();
        }
    };
    key_frame_when_asked(&mut w, &mut send);
    let bob_rtp = |w: &World| rtp_received(w, bob);
    let (before, opened_before) = (bob_rtp(&w), w.router.stats().rtp_opened_here);
    assert!(before > 0 && opened_before > 0, "{:?}", w.router.stats());

    w.publish_video(alice, "screen", "cid-screen", "TR_screen", 0x5C4EE);
    w.negotiate_publisher(alice, 2);
    for _ in 0..60 {
        send(&mut w, false);
    }
    for _ in 0..20 {
        w.step();
    }
    assert!(n.get() > 65_536 + 20, "the numbers wrapped within the 60");
    let stats = w.router.stats();
    assert_eq!(
        stats.rtp_opened_here - opened_before,
        60,
        "every packet after the renegotiation opened by the router: {stats:?}"
    );
    assert_eq!(bob_rtp(&w) - before, 60, "and forwarded to bob");

    // Carol subscribes now: the router asks Alice for a key frame on the camera (its SSRC still
    // leads to its receiver), and Carol gets it.
    let carol = w.join(3, "PA_carol");
    subscribe_and_connect(&mut w, carol, alice, "TR_cam");
    key_frame_when_asked(&mut w, &mut send);
    assert!(
        w.clients[alice].publisher_pli_seen,
        "alice was asked for a key frame"
    );
    assert!(
        w.clients[carol]
            .received
            .iter()
            .any(|e| matches!(e, MediaEvent::Rtp(rtp) if is_keyframe(&rtp.packet))),
        "carol got the key frame"
    );
}

/// On the own read path a packet of Alice's camera sent again as it was (a replay, or the
/// network's duplicate) is dropped, as `rtc`'s replay window drops it, and one that does not
/// authenticate (forged, or corrupted on the way) goes nowhere either; the camera's later packets
/// are still opened by the router.
#[test]
fn a_replayed_or_forged_packet_of_a_stream_opened_by_the_router_is_dropped() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    let alice = w.clients[0].publisher_addr;
    let bob_rtp = |w: &World| rtp_received(w, 1);
    send_vp8(&mut w, camera, &mut seq, false);
    let (received, stats) = (bob_rtp(&w), w.router.stats());
    assert!(stats.rtp_opened_here > 0, "{stats:?}");
    let replay = w.client0_rtp.clone();
    let mut forged = replay.clone();
    if let Some(last) = forged.last_mut() {
        *last ^= 0x55;
    }
    for datagram in [&replay, &forged, &replay] {
        w.router.handle_datagram(w.now, alice, datagram);
        w.step();
    }
    let after = w.router.stats();
    assert_eq!(
        (after.rtp_in, bob_rtp(&w)),
        (stats.rtp_in, received),
        "nothing taken in or forwarded: {after:?}"
    );
    send_vp8(&mut w, camera, &mut seq, false);
    let last = w.router.stats();
    assert_eq!(last.rtp_opened_here, stats.rtp_opened_here + 1, "{last:?}");
    assert_eq!(bob_rtp(&w), received + 1);
}

/// What a publisher whose offer has no RTX sends reaches the router under AES-CM with HMAC-SHA1,
/// though the client offers GCM first, as browsers do: without RTX a browser resends a NACKed
/// packet under its own SRTP index with another transport-wide sequence number (measured with
/// Chromium: SECURITY.md), which under GCM would seal two plaintexts with one nonce. What the
/// router sends goes under GCM (`SrtpWatch` opens it).
#[test]
fn a_publisher_sends_to_the_router_under_aes_cm() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    send_vp8(&mut w, camera, &mut seq, false);
    let opens = |profile| alice_sent_under(&w, profile);
    assert!(opens(ProtectionProfile::Aes128CmHmacSha1_80));
    assert!(!opens(ProtectionProfile::AeadAes128Gcm));
    assert!(w.srtp.opened > 0, "the router sent bob GCM");
}

/// Whether the last RTP datagram client 0's publisher sent opens with its connection's keys
/// under `profile`.
fn alice_sent_under(w: &World, profile: ProtectionProfile) -> bool {
    w.clients[0]
        .publisher_keys
        .keys(profile)
        .expect("alice's connection exported its keys")
        .iter()
        .any(|keys| keys.context().unwrap().decrypt_rtp(&w.client0_rtp).is_ok())
}

/// A publisher whose offer resends video on RTX, as browsers' offers do, sends to the router under
/// AES-GCM: its repairs come on the repair stream, under SRTP indexes of their own, and the router
/// answers with RTX. Its camera still reaches Bob, and a packet lost on the way is still NACKed
/// (the test client resends it on its own SSRC, with the bytes it first sent).
#[test]
fn a_publisher_that_resends_on_rtx_sends_to_the_router_under_gcm() {
    let (mut w, camera, mut seq) = alice_resending_on_rtx_sending_her_camera_to_bob();
    let answer = w.publisher_answer(0).sdp;
    assert!(
        answer.contains("rtx/90000"),
        "the router's answer: {answer}"
    );
    send_vp8(&mut w, camera, &mut seq, false);
    let opens = |profile| alice_sent_under(&w, profile);
    assert!(opens(ProtectionProfile::AeadAes128Gcm));
    assert!(!opens(ProtectionProfile::Aes128CmHmacSha1_80));
    assert_eq!(w.router.stats().publishers_gcm, 1);
    let received = w.clients[1].received.len();
    let nacks = w.clients[0].publisher_nacks_seen;
    (w.drop_after, w.drop_rtp) = (w.rtp_seen + 2, 1);
    for _ in 0..30 {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert!(w.clients[0].publisher_nacks_seen > nacks, "the loss NACKed");
    assert!(
        w.clients[1].received.len() >= received + 29,
        "bob got the camera"
    );
}

/// The router NACKs a publisher at the pace of the round trip its subscriber connection measures
/// (the same browser on the same path): before any is known, a packet lost for good is asked for
/// three times 100 ms apart; once Alice's subscriber connection has reported on Bob's microphone
/// (a near-zero round trip here), every 20 ms, ten times, so a repair lost too is asked for again
/// in 20 ms; and once her subscriber connection runs from another address, 100 ms again.
#[test]
fn a_publishers_nacks_are_paced_by_the_round_trip_its_subscriber_connection_measures() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    let (alice, bob) = (0, 1);
    // Alice's camera sends for 1.5 s, its first two packets lost however often she resends them:
    // how far apart the router's asks for them came.
    // The next packet is lost.
    let asks_for = |w: &mut World, seq: &mut u16| -> Vec<Duration> {
        let lost = *seq;
        // The one after it too: the two go in one NACK (a number and a bit of its mask).
        w.lost_from_client0.push((0xA11CE, lost));
        w.lost_from_client0.push((0xA11CE, lost.wrapping_add(1)));
        w.clients[alice].publisher_nack_log.clear();
        let from = w.now;
        while w.now - from < Duration::from_millis(1_500) {
            send_vp8(w, camera, seq, false);
        }
        let times: Vec<Instant> = w.clients[alice]
            .publisher_nack_log
            .iter()
            .filter(|(_, ssrc, numbers)| *ssrc == 0xA11CE && numbers.contains(&lost))
            .map(|(at, _, _)| *at)
            .collect();
        times.windows(2).map(|t| t[1] - t[0]).collect()
    };
    let unknown = asks_for(&mut w, &mut seq);
    assert_eq!(
        unknown,
        [Duration::from_millis(100); 2],
        "three asks, 100 ms apart"
    );

    // Bob's microphone to Alice: her subscriber connection's receiver reports give the router
    // the round trip of her path.
    let microphone = w.publish_microphone(bob, 0xB0B);
    w.negotiate_publisher(bob, 1);
    w.run_until("bob's publisher connected", |w| w.clients[1].connected);
    subscribe_and_connect(&mut w, alice, bob, "TR_mic");
    let mut voice = 1u16;
    let from = w.now;
    while w.now - from < Duration::from_secs(3) {
        w.write_opus(bob, microphone, &mut voice);
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert!(rtp_received(&w, alice) > 50, "alice heard bob");
    let known = asks_for(&mut w, &mut seq);
    assert_eq!(
        known,
        [Duration::from_millis(20); 9],
        "ten asks, 20 ms apart"
    );

    // Alice's subscriber connection moves to another address (another network; her publisher
    // connection stays): its round trips no longer say anything of the publisher's path, and
    // 10 s after the last one that did, the pacing is the default again.
    let alice_sid = w.clients[alice].sid.clone();
    let offers = w.offers_for(&alice_sid).len();
    w.clients[alice].subscriber_addr = "10.0.9.1:5001".parse().unwrap();
    let moved = w.now;
    while w.offers_for(&alice_sid).len() == offers {
        assert!(w.now - moved < Duration::from_secs(10), "no ICE restart");
        w.write_opus(bob, microphone, &mut voice);
        send_vp8(&mut w, camera, &mut seq, false);
    }
    w.answer_latest(alice);
    let heard = rtp_received(&w, alice);
    let from = w.now;
    while w.now - from < Duration::from_secs(11) {
        w.write_opus(bob, microphone, &mut voice);
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert!(
        rtp_received(&w, alice) > heard + 50,
        "alice hears bob at her new address"
    );
    let elsewhere = asks_for(&mut w, &mut seq);
    assert_eq!(
        elsewhere,
        [Duration::from_millis(100); 2],
        "three asks, 100 ms apart"
    );
    // The router counted what it sent (its metrics `nacks_sent_total`, `nack_asks_sent_total`).
    let stats = w.router.stats();
    let got = (
        w.clients[alice].publisher_nacks_seen,
        w.clients[alice].publisher_nack_asks,
    );
    assert!(got.1 >= 32 && got.1 > got.0, "two numbers a NACK: {got:?}");
    assert_eq!(
        (stats.nacks_out as usize, stats.nack_asks_out as usize),
        got
    );
}

/// A repair that comes late from a publisher resending on RTX, as browsers do, still reaches the
/// subscriber: the packet Alice's camera sent is lost on the way, her resends of it on the camera's
/// own SSRC too, and her retransmission on the RTX stream her offer declares
/// (`a=ssrc-group:FID`) arrives only after 100 more of the camera's packets went to Bob. The
/// router takes it as its stream's late packet and seals it for Bob at the number it jumped over,
/// though 64 or more behind the newest it sent him (`srtp::SEAL_REACH`; below 64 the sealing
/// context's window alone would take it).
#[test]
fn a_repair_alice_sends_late_on_rtx_reaches_bob_at_the_number_it_was_missing_from() {
    let (mut w, camera, mut seq) = alice_resending_on_rtx_sending_her_camera_to_bob();
    let (alice, bob) = (w.clients[0].publisher_addr, w.clients[1].subscriber_addr);
    let offer = w.clients[0].publisher.local_sdp().unwrap();
    let (media, repair) = offer
        .lines()
        .find_map(|line| line.strip_prefix("a=ssrc-group:FID "))
        .and_then(|group| {
            let mut ssrcs = group.split(' ').map(|s| s.trim().parse::<u32>());
            Some((ssrcs.next()?.ok()?, ssrcs.next()?.ok()?))
        })
        .expect("alice's offer declares her camera's RTX stream");
    assert_eq!(media, 0xA11CE);
    let payload_type_of = |name: &str| {
        offer.lines().find_map(|line| {
            let (pt, codec) = line.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            (codec == name).then(|| pt.parse::<u8>().ok()).flatten()
        })
    };
    let vp8_type = payload_type_of("VP8/90000").expect("VP8 offered");
    let rtx_type = offer
        .lines()
        .filter_map(|line| line.strip_prefix("a=fmtp:")?.split_once(' '))
        .find(|(_, fmtp)| *fmtp == format!("apt={vp8_type}"))
        .and_then(|(pt, _)| pt.parse::<u8>().ok())
        .expect("an RTX payload type for VP8");
    // The half of the keys that opens what Alice sends seals her retransmission.
    let sent = w.client0_rtp.clone();
    let mut sealer = w.clients[0]
        .publisher_keys
        .aes128_gcm_keys()
        .expect("GCM keys")
        .iter()
        .map(|keys| keys.context().unwrap())
        .find_map(|mut context| context.decrypt_rtp(&sent).is_ok().then_some(context))
        .expect("a half of the keys opens alice's packets");

    let lost = seq;
    w.lost_from_client0.push((media, lost));
    w.clients[0].publisher_nacked.clear();
    let original = vp8(lost, 3000 * u32::from(lost), false);
    for _ in 0..101 {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert!(
        w.clients[0].publisher_nacked.contains(&media),
        "the router asked alice for it"
    );
    // Bob's camera stream: what the router sealed for him, by index.
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for (to, ssrc, _) in w.srtp.sealed.keys() {
        if *to == bob {
            *counts.entry(*ssrc).or_default() += 1;
        }
    }
    let bobs_camera = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(ssrc, _)| ssrc)
        .expect("bob got the camera");
    let sealed_for_bob = |w: &World| -> Vec<u64> {
        let mut indexes: Vec<u64> = w
            .srtp
            .sealed
            .keys()
            .filter(|(to, ssrc, _)| (*to, *ssrc) == (bob, bobs_camera))
            .map(|(_, _, index)| *index)
            .collect();
        indexes.sort_unstable();
        indexes
    };
    let before = sealed_for_bob(&w);
    let (first, newest) = (before[0], before[before.len() - 1]);
    let missing: Vec<u64> = (first..newest)
        .filter(|index| before.binary_search(index).is_err())
        .collect();
    assert_eq!(missing.len(), 1, "one packet missing at bob: {missing:?}");
    let gap = missing[0];
    assert!(
        newest - gap >= 64,
        "the repair comes {} behind",
        newest - gap
    );

    // Alice's retransmission: the original sequence number, then the payload (RFC 4588 §4).
    let mut payload = lost.to_be_bytes().to_vec();
    payload.extend_from_slice(&original.payload);
    let retransmission = Packet {
        header: Header {
            version: 2,
            marker: original.header.marker,
            payload_type: rtx_type,
            sequence_number: 1,
            timestamp: original.header.timestamp,
            ssrc: repair,
            ..Default::default()
        },
        payload: payload.into(),
    };
    let datagram = sealer
        .encrypt_rtp(&rtc::shared::marshal::Marshal::marshal(&retransmission).unwrap())
        .unwrap();
    let errors = w.router.stats().rtp_write_errors;
    w.router.handle_datagram(w.now, alice, &datagram);
    w.step();

    assert!(
        sealed_for_bob(&w).binary_search(&gap).is_ok(),
        "the repair reached bob at {gap}: {:?}",
        w.router.stats()
    );
    assert_eq!(w.router.stats().rtp_write_errors, errors);
    // It is the lost packet, unwrapped: its payload as Alice first sent it, and its timestamp
    // between its neighbours' (each of Alice's packets is a frame, 3000 ticks after the last).
    let packet_at = |index: u64| {
        let plain = &w.srtp.sealed[&(bob, bobs_camera, index)];
        <Packet as rtc::shared::marshal::Unmarshal>::unmarshal(&mut &plain[..]).unwrap()
    };
    let repaired = packet_at(gap);
    assert_eq!(repaired.payload, original.payload);
    assert_eq!(
        (
            packet_at(gap - 1).header.timestamp.wrapping_add(3000),
            packet_at(gap + 1).header.timestamp.wrapping_sub(3000),
        ),
        (repaired.header.timestamp, repaired.header.timestamp),
        "the lost packet's timestamp"
    );
}

/// On a GCM publisher connection, a video m-line whose offer has no RTX (no browser's lacks it)
/// is not NACKed: its resends would come under their own SRTP index. Alice's second offer adds a
/// screen share; with its RTX taken out of the offer, a loss on it is not NACKed, while one on
/// her camera is. The control: the same offer with RTX left in gets both NACKed.
#[test]
fn a_gcm_publisher_connection_nacks_no_m_line_offered_without_rtx() {
    let (camera, screen) = (0xA11CE, 0x5C2EE);
    let nacked = screen_shared_with_a_loss_on_each_track(&[without_rtx_in_the_last_video_section]);
    assert!(nacked.contains(&camera), "the camera's loss: {nacked:x?}");
    assert!(!nacked.contains(&screen), "the screen's loss: {nacked:x?}");
    let nacked = screen_shared_with_a_loss_on_each_track(&[unedited]);
    assert!(nacked.contains(&camera), "the camera's loss: {nacked:x?}");
    assert!(nacked.contains(&screen), "the screen's loss: {nacked:x?}");
    // An m-line negotiated once without RTX is not NACKed after a later offer gives it RTX: its
    // sender may send as before until it has applied the answer.
    let nacked =
        screen_shared_with_a_loss_on_each_track(&[without_rtx_in_the_last_video_section, unedited]);
    assert!(nacked.contains(&camera), "the camera's loss: {nacked:x?}");
    assert!(!nacked.contains(&screen), "the screen's loss: {nacked:x?}");
}

fn unedited(sdp: String) -> String {
    sdp
}

/// [`alice_sending_her_camera_to_bob`], Alice's publisher connection offering RTX (under GCM).
fn alice_resending_on_rtx_sending_her_camera_to_bob() -> (World, LocalTrack, u16) {
    let mut w = World::new();
    let rtx = MediaConfig {
        rtx: true,
        ..MediaConfig::default()
    };
    let alice = w.join_with(1, "PA_alice", rtx);
    w.join(2, "PA_bob");
    let camera = w.publish_video(alice, "camera", "cid-cam", "TR_cam", 0xA11CE);
    w.negotiate_publisher(alice, 1);
    w.run_until("alice connected", |w| w.clients[0].connected);
    subscribe_and_connect(&mut w, 1, 0, "TR_cam");
    let mut seq = 1u16;
    deltas_then_keyframe(&mut w, camera, &mut seq);
    (w, camera, seq)
}

/// Alice (offering RTX) adds a screen share, with one more offer passed through each of `edits`
/// in turn, sends both tracks, and one datagram of each is lost: the SSRCs of the NACKs she gets.
fn screen_shared_with_a_loss_on_each_track(edits: &[fn(String) -> String]) -> Vec<u32> {
    let (mut w, camera, mut seq) = alice_resending_on_rtx_sending_her_camera_to_bob();
    let screen = w.publish_video(0, "screen", "cid-screen", "TR_screen", 0x5C2EE);
    // (`rtc` answers each video section with the codecs it negotiated for the first, RTX
    // included, whatever the offer said there: what both say is what the connection goes by.)
    for (id, edit) in (2..).zip(edits) {
        w.negotiate_publisher_with(0, id, false, edit);
    }
    let send_both = |w: &mut World, seq: &mut u16, screen_seq: &mut u16| {
        send_vp8(w, camera, seq, false);
        send_vp8(w, screen, screen_seq, *screen_seq == 1);
    };
    let mut screen_seq = 1u16;
    for _ in 0..10 {
        send_both(&mut w, &mut seq, &mut screen_seq);
    }
    w.clients[0].publisher_nacked.clear();
    // Two datagrams in a row lost: one of each track.
    (w.drop_after, w.drop_rtp) = (w.rtp_seen + 2, 2);
    for _ in 0..30 {
        send_both(&mut w, &mut seq, &mut screen_seq);
    }
    std::mem::take(&mut w.clients[0].publisher_nacked)
}

/// `sdp` with the RTX formats of its last video section taken out.
fn without_rtx_in_the_last_video_section(sdp: String) -> String {
    let at = sdp.rfind("m=video").expect("a video section");
    let (head, last) = sdp.split_at(at);
    let repairs: Vec<String> = last
        .lines()
        .filter_map(|line| line.strip_prefix("a=rtpmap:"))
        .filter(|rest| rest.contains(" rtx/"))
        .filter_map(|rest| rest.split(' ').next().map(str::to_owned))
        .collect();
    assert!(!repairs.is_empty(), "the offer had RTX to take out: {sdp}");
    let mut out = head.to_owned();
    for line in last.split_inclusive("\r\n") {
        let names_repair = |prefix: &str| {
            repairs
                .iter()
                .any(|pt| line.starts_with(&format!("{prefix}{pt} ")))
        };
        if names_repair("a=rtpmap:") || names_repair("a=fmtp:") || names_repair("a=rtcp-fb:") {
            continue;
        }
        if line.starts_with("m=video") {
            let kept: Vec<&str> = line
                .trim_end()
                .split(' ')
                .filter(|field| !repairs.iter().any(|pt| pt == field))
                .collect();
            out += &kept.join(" ");
            out += "\r\n";
            continue;
        }
        out += line;
    }
    out
}

/// Media sent to a subscriber whose network is gone for 2 s, too short for ICE to notice, makes an
/// outage once its connection is heard from again (the loss its next report states is not
/// congestion: `consulta_sfu::bandwidth::OUTAGE_GAP`). Media it answers as it comes makes none.
#[test]
fn a_subscriber_heard_from_again_after_media_went_unanswered_ends_an_outage() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    let outages = |w: &World| w.router.stats().subscriber_outages;
    let send_for = |w: &mut World, seq: &mut u16, secs: u64| {
        let from = w.now;
        while w.now - from < Duration::from_secs(secs) {
            send_vp8(w, camera, seq, false);
        }
    };
    send_for(&mut w, &mut seq, 3);
    assert_eq!(outages(&w), 0, "bob answers as the media comes");
    w.cut.push(w.clients[1].subscriber_addr);
    send_for(&mut w, &mut seq, 2);
    assert_eq!(outages(&w), 0, "nothing heard yet");
    w.cut.clear();
    send_for(&mut w, &mut seq, 2);
    assert_eq!(outages(&w), 1, "heard from again");
    send_for(&mut w, &mut seq, 3);
    assert_eq!(outages(&w), 1);
}

/// An outage ends only when the subscriber is heard from where its media goes. Bob's network
/// goes for 1.5 s and comes back behind a new NAT port: the camera still goes to the old one,
/// unanswered, while his checks come from the new one. Those do not end the outage (the media
/// still reaches nobody); once the router's ICE restart moves the media to the new port and he
/// is heard from there, it ends. Counting any address fails the first assertion.
#[test]
fn a_subscriber_heard_only_from_a_new_port_is_still_in_an_outage() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    let bob = 1;
    let bob_sid = w.clients[bob].sid.clone();
    let outages = |w: &World| w.router.stats().subscriber_outages;
    let from = w.now;
    while w.now - from < Duration::from_secs(2) {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert_eq!(outages(&w), 0, "bob answers as the media comes");

    let offers = w.offers_for(&bob_sid).len();
    let new_port: SocketAddr = "10.0.1.2:6001".parse().unwrap();
    w.clients[bob].subscriber_addr = new_port;
    // Nothing at all for 1.5 s, then his datagrams from the new port: each of those, from a
    // connection that had been answering briskly, would end an outage if any address counted.
    w.cut.push(new_port);
    let moved = w.now;
    while w.now - moved < Duration::from_millis(1_500) {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    w.cut.clear();
    while w.offers_for(&bob_sid).len() == offers {
        assert!(
            w.now - moved < Duration::from_secs(10),
            "no ICE restart offered"
        );
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert_eq!(
        outages(&w),
        0,
        "bob's datagrams from his new port do not end the outage"
    );

    w.answer_latest(bob);
    let restarted = w.now;
    while outages(&w) == 0 {
        assert!(
            w.now - restarted < Duration::from_secs(5),
            "no outage ended after the restart"
        );
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert_eq!(outages(&w), 1);
}

/// A gap the publisher left (numbers the SFU never received, and no retransmission fills)
/// reaches Bob as numbers the SFU skipped: his receiver reports count them lost, and the router
/// takes their loss net of them (`consulta_sfu::bandwidth::loss_net_of_skipped`). A handful sent
/// after such a gap is too few to weigh, and is weighed with the next block about the stream. On
/// Alice's microphone: the test clients, as the router's own connections, report on audio only
/// (`VideoReportFilter`).
#[test]
fn numbers_the_publisher_never_sent_are_netted_out_of_the_subscribers_reports() {
    let mut w = World::new();
    let (alice, bob) = (w.join(1, "PA_alice"), w.join(2, "PA_bob"));
    let microphone = w.publish_microphone(alice, 0xA0D10);
    w.negotiate_publisher(alice, 1);
    w.run_until("alice connected", |w| w.clients[0].connected);
    w.subscribe(bob, alice, "TR_mic");
    w.needs_offer(bob);
    w.answer_latest(bob);
    w.run_until("bob's subscriber connection up", |w| {
        subscriber_connected(w, 1)
    });
    let send_one = |w: &mut World, seq: &mut u16| {
        w.write_opus(alice, microphone, seq);
        w.step();
    };
    let send_for = |w: &mut World, seq: &mut u16, secs: u64| {
        let from = w.now;
        while w.now - from < Duration::from_secs(secs) {
            send_one(w, seq);
        }
    };
    let netted = |w: &World| {
        let stats = w.router.stats();
        (stats.reports_net_of_skipped, stats.loss_before_sfu)
    };
    let mut seq = 1;
    send_for(&mut w, &mut seq, 3);
    assert_eq!(netted(&w), (0, 0), "nothing skipped");
    seq += 100;
    send_for(&mut w, &mut seq, 3);
    // `rtc`'s receiver counts the whole gap lost (libwebrtc would take a jump this long for a
    // new stream of Opus, and count nothing): all 100 were the publisher's.
    assert_eq!(netted(&w), (1, 100), "bob's report of the gap, netted");
    assert_eq!(
        w.router.stats().loss_reports_carried,
        0,
        "3 s sent after it"
    );
    // Another gap, and three packets after it before the microphone goes quiet: the report
    // that covers them has 3 sent between 100 skipped, too few to weigh; they are carried. So
    // are the next three, with them (6), and then 3 s of audio takes them all.
    let quiet = |w: &mut World| {
        let from = w.now;
        while w.now - from < Duration::from_millis(1_500) {
            w.step();
        }
    };
    let carried = |w: &World| w.router.stats().loss_reports_carried;
    let three = |w: &mut World, seq: &mut u16| (0..3).for_each(|_| send_one(w, seq));
    seq += 100;
    three(&mut w, &mut seq);
    quiet(&mut w);
    assert_eq!(netted(&w), (2, 200), "the second gap, netted");
    assert_eq!(carried(&w), 1, "3 sent: carried");
    three(&mut w, &mut seq);
    quiet(&mut w);
    assert_eq!(
        carried(&w),
        2,
        "3 more, nothing skipped: carried with the first 3"
    );
    send_for(&mut w, &mut seq, 3);
    assert_eq!(carried(&w), 2, "weighed with 3 s of audio");
    assert_eq!(netted(&w), (2, 200));
}

/// Bob's NAT gives both his connections new ports mid-call. Both go quiet: the router restarts
/// his subscriber connection's ICE and asks for his resume (for his publisher connection). That
/// resume restarts nothing more on the subscriber connection while the router's own restart is
/// under way (the offer still out is sent again as it was), nor just after it connected; a resume
/// the router did not ask for restarts it as ever.
#[test]
fn a_resume_asked_for_while_the_routers_own_restart_runs_restarts_nothing_more() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    let bob = 1;
    let bob_sid = w.clients[bob].sid.clone();
    w.publish_video(bob, "camera", "cid-bobcam", "TR_bobcam", 0xB0B);
    w.negotiate_publisher(bob, 1);
    w.run_until("bob's publisher connection up", |w| w.clients[1].connected);
    let asked = |w: &World| {
        w.core_events.iter().any(
            |e| matches!(e, CoreEvent::PublisherDisconnected { participant } if *participant == bob_sid),
        )
    };
    let restarts = |w: &World| {
        let mut ufrags: Vec<String> = w
            .offers_for(&bob_sid)
            .iter()
            .map(|o| ufrag(&o.sdp))
            .collect();
        ufrags.dedup();
        ufrags.len()
    };
    let before = restarts(&w);
    w.clients[bob].subscriber_addr = "10.0.1.2:6001".parse().unwrap();
    w.clients[bob].publisher_addr = "10.0.1.2:6000".parse().unwrap();
    let moved = w.now;
    while !(asked(&w) && restarts(&w) > before) {
        assert!(w.now - moved < Duration::from_secs(10), "nothing done");
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert_eq!(restarts(&w), before + 1);
    let offers = w.offers_for(&bob_sid);
    let restart = offers.last().unwrap().clone();

    // His client resumes before answering the restart: the offer comes again, as it was.
    w.router
        .handle_command(w.now, Command::Resumed(bob_sid.clone()));
    w.exchange();
    let again = w.offers_for(&bob_sid);
    assert_eq!(again.len(), offers.len() + 1);
    assert_eq!(again.last(), Some(&restart));
    w.answer_latest(bob);
    w.exchange();
    w.clients[bob].connected = false;
    w.negotiate_publisher_with(bob, 2, true, |sdp| sdp);
    w.run_until("bob's publisher connection up again", |w| {
        w.clients[1].connected
    });
    for _ in 0..50 {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert_eq!(restarts(&w), before + 1, "one restart in all");

    // A resume the router did not ask for restarts it.
    w.router
        .handle_command(w.now, Command::Resumed(bob_sid.clone()));
    w.exchange();
    assert_eq!(restarts(&w), before + 2);
}

/// Alice's NAT gives her publisher connection a new public port mid-call. Her camera still comes
/// (her checks name the connection and claim the new port), but `rtc`, controlled on that
/// connection, keeps the pair it selected: the router's RTCP (key-frame requests, NACKs, reports)
/// goes to the old port, and only an ICE restart by Alice, the offerer, moves it. Once the old
/// port has been quiet for 5 s the router says so, once; the core then asks her client to resume,
/// which restarts that ICE, and the router's NACKs reach her at the new port.
#[test]
fn a_publisher_whose_nat_port_changed_is_asked_to_restart_its_ice() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob();
    let alice = 0;
    let alice_sid = w.clients[alice].sid.clone();
    let quiet = |w: &World| {
        w.core_events
            .iter()
            .filter(|e| matches!(e, CoreEvent::PublisherDisconnected { participant } if *participant == alice_sid))
            .count()
    };
    // A lost packet is asked for again (the NACK reaches her).
    let nacked_after_a_loss = |w: &mut World, seq: &mut u16| {
        let nacks = w.clients[0].publisher_nacks_seen;
        (w.drop_after, w.drop_rtp) = (w.rtp_seen + 2, 1);
        for _ in 0..30 {
            send_vp8(w, camera, seq, false);
        }
        w.clients[0].publisher_nacks_seen > nacks
    };
    assert!(
        nacked_after_a_loss(&mut w, &mut seq),
        "nacks reach alice before"
    );
    assert_eq!(quiet(&w), 0);

    w.clients[alice].publisher_addr = "10.0.1.1:6000".parse().unwrap();
    let moved = w.now;
    while quiet(&w) == 0 {
        assert!(
            w.now - moved < Duration::from_secs(10),
            "the router said nothing"
        );
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert!(
        !nacked_after_a_loss(&mut w, &mut seq),
        "nacks reached the new port without a restart"
    );
    let forwarded = w.router.stats().rtp_forwarded;
    while w.now - moved < Duration::from_secs(20) {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    assert!(
        w.router.stats().rtp_forwarded > forwarded,
        "her camera still comes"
    );
    assert_eq!(quiet(&w), 1, "said once");
    assert_eq!(w.router.stats().publishers_quiet, 1);

    // Her client resumes and restarts its publisher connection's ICE.
    w.router
        .handle_command(w.now, Command::Resumed(alice_sid.clone()));
    w.clients[alice].connected = false;
    w.negotiate_publisher_with(alice, 2, true, |sdp| sdp);
    w.run_until("alice connected again", |w| w.clients[0].connected);
    assert!(
        nacked_after_a_loss(&mut w, &mut seq),
        "nacks reach alice at her new port"
    );
    assert_eq!(quiet(&w), 1);
}

/// An answer the subscriber connection refuses (a client bug, a mangled frame) is followed by a
/// fresh offer: the offer's tracks forward nothing until an answer is taken. Refused
/// `MAX_ANSWERS_REFUSED` (3) times in a row, the router offers no more and reports the
/// participant to the core; an answer taken in between starts the count again.
#[test]
fn a_refused_subscriber_answer_is_followed_by_a_fresh_offer_up_to_three_in_a_row() {
    let mut w = World::new();
    let bob = w.join(2, "PA_bob");
    let bob_sid = w.clients[bob].sid.clone();
    w.needs_offer(bob);
    let refuse = |w: &mut World| {
        let latest = w.offers_for(&bob_sid).pop().expect("an offer");
        w.router.handle_command(
            w.now,
            Command::SubscriberAnswer(
                bob_sid.clone(),
                SessionDescription {
                    r#type: "answer".into(),
                    sdp: "v=0\r\nnot an answer\r\n".into(),
                    id: latest.id,
                    ..SessionDescription::default()
                },
            ),
        );
        w.exchange();
    };
    let first = w.offers_for(&bob_sid);
    refuse(&mut w);
    let offers = w.offers_for(&bob_sid);
    assert_eq!(offers.len(), 2, "a fresh offer after the refusal");
    assert_eq!(offers[1].id, first[0].id + 1);
    refuse(&mut w);
    assert_eq!(w.offers_for(&bob_sid).len(), 3, "and after the second");
    w.answer_latest(bob);
    w.run_until("bob's subscriber connection up", |w| {
        w.clients[0]
            .received
            .iter()
            .any(|e| matches!(e, MediaEvent::StateChanged(PeerState::Connected)))
    });
    assert_eq!(negotiations_refused(&w), Vec::<String>::new());

    // Taken once, two more refusals are not yet three in a row; the third is.
    w.needs_offer(bob);
    assert_eq!(w.offers_for(&bob_sid).len(), 4);
    for n in 1..=3 {
        refuse(&mut w);
        let expected = if n < 3 { 4 + n } else { 6 };
        assert_eq!(w.offers_for(&bob_sid).len(), expected, "after refusal {n}");
    }
    assert_eq!(negotiations_refused(&w), ["PA_bob"]);
    assert_eq!(w.router.stats().negotiations_refused, 1);
    // Its connection is not left blocked: the next change is offered, and the count starts
    // again from the report.
    w.needs_offer(bob);
    assert_eq!(w.offers_for(&bob_sid).len(), 7);
    refuse(&mut w);
    assert_eq!(w.offers_for(&bob_sid).len(), 8);
    assert_eq!(negotiations_refused(&w), ["PA_bob"]);
}

/// Reliable data after a resume: the client sends again what followed the `last_message_seq` it
/// was told, and its kept connection may deliver some of it twice. The router relays each
/// numbered packet once, and keeps the last number for the next resume.
#[test]
fn reliable_data_is_relayed_once_and_its_last_sequence_kept() {
    let (mut w, channel) = alice_with_a_reliable_channel_to_bob();
    let (alice, bob) = (0, 1);
    let (alice_sid, bob_sid) = (w.clients[alice].sid.clone(), w.clients[bob].sid.clone());

    // Sequence 2 comes twice, as a resume can bring it: first over the kept association, then
    // sent again by the client.
    for sequence in [1, 2, 2, 3] {
        let payload = format!("message {sequence}").into_bytes();
        send_user_data(&mut w, channel, sequence, payload);
        w.step();
    }
    let relayed = |w: &World| -> Vec<(u32, String)> {
        data_received(w, bob)
            .into_iter()
            .map(|p| (p.sequence, p.participant_sid))
            .collect()
    };
    w.run_until("bob receives three", |w| relayed(w).len() >= 3);
    for _ in 0..20 {
        w.step();
    }
    let from_alice = |sequence: u32| (sequence, "PA_alice".to_owned());
    assert_eq!(
        relayed(&w),
        vec![from_alice(1), from_alice(2), from_alice(3)]
    );
    assert_eq!(w.router.stats().data_repeats, 1);
    let sequences = w.router.reliable_sequences();
    assert_eq!(sequences.last(&alice_sid), 3, "what a resume reports");
    assert_eq!(sequences.last(&bob_sid), 0, "bob sent nothing");
    w.router
        .handle_command(w.now, Command::Left(alice_sid.clone()));
    assert_eq!(sequences.last(&alice_sid), 0, "forgotten with her");
}

/// Alice (client 0) with a reliable data channel on her publisher connection, and Bob (client 1),
/// whose subscriber connection has the router's, both open.
fn alice_with_a_reliable_channel_to_bob() -> (World, DataChannel) {
    let mut w = World::new();
    let alice = w.join(1, "PA_alice");
    let bob = w.join(2, "PA_bob");
    w.needs_offer(bob);
    w.answer_latest(bob);
    let channel = w.clients[alice]
        .publisher
        .create_data_channel("_reliable", true, None)
        .unwrap();
    w.negotiate_publisher(alice, 1);
    w.run_until("both reliable channels open", |w| {
        w.clients[0]
            .publisher_channels_open
            .contains(&"_reliable".to_owned())
            && w.clients[1].received.iter().any(
                |e| matches!(e, MediaEvent::DataChannelOpen { label, .. } if label == "_reliable"),
            )
    });
    (w, channel)
}

/// Client 0 sends a user packet numbered `sequence` with `payload` on `channel`.
fn send_user_data(w: &mut World, channel: DataChannel, sequence: u32, payload: Vec<u8>) {
    send_user_data_from(w, 0, channel, sequence, payload);
}

/// Client `i` sends a user packet numbered `sequence` with `payload` on `channel`.
fn send_user_data_from(
    w: &mut World,
    i: usize,
    channel: DataChannel,
    sequence: u32,
    payload: Vec<u8>,
) {
    let packet = DataPacket {
        sequence,
        value: Some(data_packet::Value::User(UserPacket {
            payload,
            ..UserPacket::default()
        })),
        ..DataPacket::default()
    };
    w.clients[i]
        .publisher
        .send_data(channel, packet.encode_to_vec().as_slice().into(), w.now)
        .unwrap();
}

/// The data packets client `i` received, in order.
fn data_received(w: &World, i: usize) -> Vec<DataPacket> {
    w.clients[i]
        .received
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Data { data, .. } => DataPacket::decode(&data[..]).ok(),
            _ => None,
        })
        .collect()
}

/// Bob's link goes quiet (nothing he sends arrives, nothing reaches him) while Alice sends 200
/// reliable data packets of 12 KB: the router queues a megabyte of them for him, not all 2.4 MB,
/// and counts the rest as backlogged. Once his link is back and his client has acknowledged the
/// queue, he has each queued packet once, in order, and Alice's next packets reach him again.
#[test]
fn data_for_a_receiver_that_acknowledges_nothing_queues_a_megabyte_at_most() {
    let (mut w, channel) = alice_with_a_reliable_channel_to_bob();
    let bob = 1;
    let send = |w: &mut World, sequence: u32| {
        send_user_data(w, channel, sequence, vec![sequence as u8; 12_000]);
    };
    let bob_link = w.clients[bob].subscriber_addr;
    w.cut.push(bob_link);
    for sequence in 1..=200 {
        send(&mut w, sequence);
        if sequence % 10 == 0 {
            w.step();
        }
    }
    let stats = w.router.stats();
    // About 1 MiB of 12 KB packets, each with its framing.
    assert!(
        (80..=95).contains(&stats.data_relayed),
        "{} queued",
        stats.data_relayed
    );
    assert_eq!(stats.data_relayed + stats.data_backlogged, 200);
    w.cut.clear();
    let received =
        |w: &World| -> Vec<u32> { data_received(w, bob).iter().map(|p| p.sequence).collect() };
    let queued = stats.data_relayed as usize;
    w.run_until("bob has the queue", |w| received(w).len() >= queued);
    for _ in 0..50 {
        w.step();
    }
    let got = received(&w);
    assert_eq!(got, (1..=queued as u32).collect::<Vec<_>>());
    send(&mut w, 201);
    w.exchange();
    w.run_until("bob has the next one", |w| received(w).last() == Some(&201));
}

/// Bob's link goes quiet while Alice floods the room with reliable data. In a room of three,
/// Alice may hold all of Bob's queue but Carol's reserve (two of the largest messages): Carol's
/// data still finds room, and reaches him once his link is back. (Before, Alice's flood took
/// all of his megabyte, 87 packets, and everything Carol sent him meanwhile was dropped.)
#[test]
fn one_senders_flood_leaves_room_in_a_receivers_queue_for_the_others() {
    let mut w = World::new();
    let (alice, bob, carol) = (
        w.join(1, "PA_alice"),
        w.join(2, "PA_bob"),
        w.join(3, "PA_carol"),
    );
    for i in [bob, carol] {
        w.needs_offer(i);
        w.answer_latest(i);
    }
    let mut channels = Vec::new();
    for (i, id) in [(alice, 1), (carol, 2)] {
        channels.push(
            w.clients[i]
                .publisher
                .create_data_channel("_reliable", true, None)
                .unwrap(),
        );
        w.negotiate_publisher(i, id);
    }
    let publishing = |w: &World, i: usize| {
        w.clients[i]
            .publisher_channels_open
            .contains(&"_reliable".to_owned())
    };
    let receiving = |w: &World, i: usize| {
        w.clients[i]
            .received
            .iter()
            .any(|e| matches!(e, MediaEvent::DataChannelOpen { label, .. } if label == "_reliable"))
    };
    w.run_until("the reliable channels open", |w| {
        publishing(w, alice) && publishing(w, carol) && receiving(w, bob) && receiving(w, carol)
    });
    let bob_link = w.clients[bob].subscriber_addr;
    w.cut.push(bob_link);
    let backlogged = w.router.stats().data_backlogged;
    for sequence in 1..=200 {
        send_user_data_from(&mut w, alice, channels[0], sequence, vec![7; 12_000]);
        if sequence % 10 == 0 {
            w.step();
        }
    }
    // A megabyte less 48 KiB of 12 KB packets queued for Bob; the rest of his copies dropped.
    let dropped = w.router.stats().data_backlogged - backlogged;
    assert_eq!(dropped, 200 - 82, "not queued");
    send_user_data_from(&mut w, carol, channels[1], 1, b"from carol".to_vec());
    w.step();
    assert_eq!(w.router.stats().data_backlogged - backlogged, dropped);
    w.cut.clear();
    let from_carol = |w: &World| {
        data_received(w, bob)
            .iter()
            .any(|p| p.participant_sid == "PA_carol" && p.sequence == 1)
    };
    w.run_until("bob has carol's packet", from_carol);
}

/// A client opens data channels beyond the three livekit-client opens, on its publisher
/// connection (another label, a second `_reliable`) and on its subscriber connection: the router
/// closes each as it opens, but for a second `_reliable`, which replaces the first (livekit-client
/// opens its channels again where Safari gave the first ones no id); the data it then sends on
/// it is relayed.
#[test]
fn data_channels_beyond_livekits_three_are_closed_as_they_open() {
    let (mut w, reliable) = alice_with_a_reliable_channel_to_bob();
    let (alice, bob) = (0, 1);
    let mut extra = Vec::new();
    for label in ["_lossy", "_data_track", "custom", "_reliable"] {
        let ordered = label != "_lossy";
        extra.push(
            w.clients[alice]
                .publisher
                .create_data_channel(label, ordered, (!ordered).then_some(0))
                .unwrap(),
        );
    }
    let on_subscriber = w.clients[bob]
        .subscriber
        .create_data_channel("_reliable", true, None)
        .unwrap();
    w.run_until("three channels closed", |w| {
        w.router.stats().data_channels_closed == 3
            && w.clients[0].publisher_channels_closed.len() == 2
            && w.clients[1].received.iter().any(
                |e| matches!(e, MediaEvent::DataChannelClosed { channel } if *channel == on_subscriber),
            )
    });
    for _ in 0..20 {
        w.step();
    }
    let closed = &w.clients[alice].publisher_channels_closed;
    assert!(
        closed.len() == 2 && closed.contains(&extra[2]) && closed.contains(&reliable),
        "the custom channel and the first _reliable: {closed:?}"
    );
    assert_eq!(w.router.stats().data_channels_closed, 3);
    send_user_data(&mut w, extra[3], 1, b"still here".to_vec());
    w.run_until("bob has it", |w| {
        data_received(w, bob).iter().any(|p| p.sequence == 1)
    });
}

/// The VP8 key frame flag of a packet from [`vp8`] (its one-byte descriptor, then the payload
/// header, whose lowest bit is 0 on a key frame).
fn is_keyframe(packet: &Packet) -> bool {
    packet.payload.get(1).is_some_and(|b| b & 1 == 0)
}

/// Client 0 (the publisher) sends VP8 packet `seq` on `local`; one step of time passes.
fn send_vp8(w: &mut World, local: LocalTrack, seq: &mut u16, keyframe: bool) {
    let packet = vp8(*seq, 3000 * u32::from(*seq), keyframe);
    w.clients[0]
        .publisher
        .write_rtp(
            local,
            packet,
            "video/VP8",
            consulta_media::Keep::Copy,
            w.now,
        )
        .unwrap();
    *seq = seq.wrapping_add(1);
    w.step();
}

/// Client 0 sends delta frames until it is asked for a key frame (20 at most), then the key
/// frame and five delta frames.
fn deltas_then_keyframe(w: &mut World, local: LocalTrack, seq: &mut u16) {
    w.clients[0].publisher_pli_seen = false;
    for _ in 0..20 {
        let asked = w.clients[0].publisher_pli_seen;
        send_vp8(w, local, seq, asked);
        if asked {
            break;
        }
    }
    for _ in 0..5 {
        send_vp8(w, local, seq, false);
    }
    for _ in 0..20 {
        w.step();
    }
}

/// A subscriber's video starts at a key frame it can decode: none is spent on it before its
/// connection is secured (`rtc` refuses the write) or before it answered the offer that carries
/// the track (its browser has no receiver for the SSRC yet). The router asks for the key frame
/// once the subscriber can take it.
#[test]
fn a_subscriber_starts_at_a_key_frame_it_can_use() {
    let (mut w, camera) = alice_with_a_camera_and_bob();
    let (alice, bob) = (0, 1);

    // Bob's first offer carries the camera. A key frame reaches the router as he answers, before
    // his connection is up; then delta frames, until the router asks for a key frame.
    w.subscribe(bob, alice, "TR_cam");
    w.needs_offer(bob);
    w.answer_latest(bob);
    let mut seq = 500u16;
    send_vp8(&mut w, camera, &mut seq, true);
    w.run_until("bob's subscriber connection up", |w| {
        w.clients[1]
            .received
            .iter()
            .any(|e| matches!(e, MediaEvent::StateChanged(PeerState::Connected)))
    });
    let bob_rtp = |w: &World, track: &str| -> Vec<Packet> {
        w.clients[1]
            .received
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Rtp(rtp) if rtp.tag.track_id == track => Some(rtp.packet.clone()),
                _ => None,
            })
            .collect()
    };
    deltas_then_keyframe(&mut w, camera, &mut seq);
    let got = bob_rtp(&w, "TR_cam");
    assert!(
        got.first().is_some_and(is_keyframe),
        "bob's camera starts at a key frame: {:?}",
        got.iter().map(is_keyframe).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 6, "the key frame and the five after it");

    // A screen share added while Bob is connected: its key frame comes while his offer is out.
    let screen = w.publish_video(alice, "screen", "cid-screen", "TR_screen", 0x5C2EE);
    w.negotiate_publisher(alice, 2);
    w.subscribe(bob, alice, "TR_screen");
    w.needs_offer(bob);
    for keyframe in [true, false, false] {
        send_vp8(&mut w, screen, &mut seq, keyframe);
    }
    w.answer_latest(bob);
    w.exchange();
    deltas_then_keyframe(&mut w, screen, &mut seq);
    let got = bob_rtp(&w, "TR_screen");
    assert!(
        got.first().is_some_and(is_keyframe),
        "bob's screen share starts at a key frame: {:?}",
        got.iter().map(is_keyframe).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 6);
    assert_eq!(
        w.router.stats().rtp_write_errors,
        0,
        "nothing written too early"
    );
}

/// The sequence numbers of the RTP packets client `i` received, in order.
fn rtp_sequences(w: &World, i: usize) -> Vec<u16> {
    w.clients[i]
        .received
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Rtp(rtp) => Some(rtp.packet.header.sequence_number),
            _ => None,
        })
        .collect()
}

/// Whether `datagram` is RTP (not RTCP: payload types 64-95 after the marker bit).
/// Whether `datagram` is a DTLS record (RFC 7983: a first byte from 20 to 63).
fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

/// The SSRC and sequence number of an RTP datagram (its header is in the clear).
fn ssrc_and_sequence(datagram: &[u8]) -> Option<(u32, u16)> {
    let header = datagram.get(..12)?;
    Some((
        u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
        u16::from_be_bytes([header[2], header[3]]),
    ))
}

fn is_rtp(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b >> 6 == 2)
        && datagram
            .get(1)
            .is_some_and(|b| !(64..96).contains(&(b & 0x7f)))
}

/// The copies of what one read of the socket brought are made once the read ends, track by
/// track in the order each track's first packet came, subscriber by subscriber: each
/// subscriber's copies of a frame leave together, in the order the packets came (one run to one
/// address, which the socket sends as one segmented message), and the caller can send between
/// subscribers.
#[test]
fn a_reads_copies_leave_subscriber_by_subscriber() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob_carol_and(0);
    let (alice, bob, carol) = (0, 1, 2);
    // A screen share, whose sid sorts after the camera's.
    let screen = w.publish_video(alice, "screen", "cid-screen", "TR_screen", 0x5C2EE);
    w.negotiate_publisher(alice, 2);
    for sub in [bob, carol] {
        w.subscribe(sub, alice, "TR_screen");
        w.needs_offer(sub);
        w.answer_latest(sub);
        w.exchange();
    }
    let mut screen_seq = 1000u16;
    deltas_then_keyframe(&mut w, screen, &mut screen_seq);
    let before = [
        w.clients[bob].received.len(),
        w.clients[carol].received.len(),
    ];

    // Read together: the screen's first packet, then the camera's frame of four with the
    // screen's second among them. Each payload is marked with its place in the read.
    let mut sent = Vec::new();
    for place in 0..6u8 {
        let on_screen = place.is_multiple_of(3);
        let (track, seq) = if on_screen {
            (screen, &mut screen_seq)
        } else {
            (camera, &mut seq)
        };
        let mut packet = vp8(*seq, 3000 * u32::from(*seq), false);
        let mut payload = packet.payload.to_vec();
        payload[2] = place;
        packet.payload = payload.into();
        sent.push(packet.payload.clone());
        w.clients[alice]
            .publisher
            .write_rtp(
                track,
                packet,
                "video/VP8",
                consulta_media::Keep::Copy,
                w.now,
            )
            .unwrap();
        *seq = seq.wrapping_add(1);
    }
    let from = w.clients[alice].publisher_addr;
    let mut read = Vec::new();
    while let Some(t) = w.clients[alice].publisher.poll_transmit() {
        read.push(t.contents);
    }
    assert_eq!(read.iter().filter(|d| is_rtp(d)).count(), 6);
    w.router.begin_read();
    for datagram in &read {
        w.router.handle_datagram(w.now, from, datagram);
    }
    let (bob_addr, carol_addr) = (
        w.clients[bob].subscriber_addr,
        w.clients[carol].subscriber_addr,
    );
    let mut copies = Vec::new();
    while let Some(t) = w.router.poll_transmit() {
        copies.push(t);
    }
    assert!(
        !copies
            .iter()
            .any(|t| [bob_addr, carol_addr].contains(&t.destination) && is_rtp(&t.contents)),
        "no copy is made while the read goes on"
    );

    // Copies until one datagram waits: one subscriber's of one track at a time, the screen's
    // first (its first packet came first).
    let mut runs = Vec::new();
    loop {
        let more = w.router.fan_out(w.now, 1);
        let mut run = Vec::new();
        while let Some(t) = w.router.poll_transmit() {
            if is_rtp(&t.contents) {
                run.push(t.destination);
            }
            copies.push(t);
        }
        runs.push(run);
        if !more {
            break;
        }
    }
    let runs: Vec<_> = runs.into_iter().filter(|r| !r.is_empty()).collect();
    assert_eq!(
        runs,
        vec![
            vec![bob_addr; 2],
            vec![carol_addr; 2],
            vec![bob_addr; 4],
            vec![carol_addr; 4]
        ],
        "one run per subscriber and track"
    );
    assert!(!w.router.fan_out(w.now, 1), "nothing is left");

    // Each opens its six whole: the screen's two, then the camera's four, each in order.
    let sfu: SocketAddr = SFU.parse().unwrap();
    for t in &copies {
        for c in &mut w.clients {
            if t.destination == c.subscriber_addr {
                let _ = c.subscriber.handle_receive(w.now, sfu, &t.contents);
            } else if t.destination == c.publisher_addr {
                let _ = c.publisher.handle_receive(w.now, sfu, &t.contents);
            }
        }
    }
    w.exchange();
    for (i, client) in [bob, carol].into_iter().enumerate() {
        let got: Vec<(String, Bytes)> = w.clients[client].received[before[i]..]
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Rtp(rtp) => {
                    Some((rtp.tag.track_id.clone(), rtp.packet.payload.clone()))
                }
                _ => None,
            })
            .collect();
        let want: Vec<(String, Bytes)> = [0, 3, 1, 2, 4, 5]
            .into_iter()
            .map(|place: usize| {
                let track = if place.is_multiple_of(3) {
                    "TR_screen"
                } else {
                    "TR_cam"
                };
                (track.to_owned(), sent[place].clone())
            })
            .collect();
        assert!(
            got == want,
            "client {client} got {:?}",
            got.iter().map(|(t, p)| (t, p.get(2))).collect::<Vec<_>>()
        );
    }
}

/// In a fan-out to a crowd (eight subscribers here), the NACK history keeps a copy's header fields
/// and the payload it shares with an earlier subscriber's copy, not its sealed datagram
/// (`Keep::Parts`): two of the camera's copies lost on the way to Carol, whose copies come after
/// Bob's, are sealed again when her connection asks for them, and reach her as they first left
/// (`SrtpWatch` counts a datagram sent again with the same bytes, and fails the test on an index
/// sealed over another plaintext). Bob, who lost nothing, gets every packet in order.
#[test]
fn a_fan_out_copy_lost_on_the_way_is_sent_again_as_it_left() {
    let (mut w, camera, mut seq) = alice_sending_her_camera_to_bob_carol_and(6);
    let (bob, carol) = (1, 2);
    let before = [rtp_sequences(&w, bob).len(), rtp_sequences(&w, carol).len()];
    let (resent, resealed) = (w.srtp.resent, w.router.stats().nack_answers_sealed_again);
    w.lose_to = Some((w.clients[carol].subscriber_addr, 5, 2));
    for _ in 0..30 {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    for _ in 0..50 {
        w.step();
    }
    let [bob_got, carol_got] = [bob, carol].map(|i| rtp_sequences(&w, i).split_off(before[i - 1]));
    let in_order = |got: &[u16]| got.windows(2).all(|p| p[1] == p[0].wrapping_add(1));
    assert_eq!(bob_got.len(), 30, "{bob_got:?}");
    assert!(in_order(&bob_got), "{bob_got:?}");
    assert_eq!(carol_got.len(), 30, "the lost two came late: {carol_got:?}");
    assert!(!in_order(&carol_got), "{carol_got:?}");
    let mut sorted = carol_got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, bob_got, "the same packets, none missing");
    assert_eq!(w.lose_to.map(|(_, _, lose)| lose), Some(0));
    let resealed = w.router.stats().nack_answers_sealed_again - resealed;
    assert!(
        resealed >= 2 && w.srtp.resent >= resent + 2 && w.srtp.unopened == 0,
        "sealed again {resealed}, sent again {}, not opened {}",
        w.srtp.resent - resent,
        w.srtp.unopened
    );
}

/// The transaction ID of a STUN binding request (RFC 5389 §6: type 0x0001, the magic cookie).
fn binding_request_id(datagram: &[u8]) -> Option<[u8; 12]> {
    let header = datagram.get(..20)?;
    (header[..2] == [0, 1] && header[4..8] == [0x21, 0x12, 0xA4, 0x42])
        .then(|| header[8..20].try_into().unwrap())
}

/// Client 0 (the client) and client 1 (a hostile participant) connect their publishers, each
/// with a camera; returns the client's camera and the ufrag of the forger's connection.
fn a_client_and_a_forger() -> (World, LocalTrack, String) {
    let mut w = World::new();
    let client = w.join(1, "PA_client");
    let camera = w.publish_video(client, "camera", "cid-cam", "TR_cam", 0xC1);
    w.negotiate_publisher(client, 1);
    w.run_until("the client connected", |w| w.clients[0].connected);
    let forger = w.join(2, "PA_forger");
    w.publish_video(forger, "camera", "cid-cam", "TR_forger", 0xF0);
    w.negotiate_publisher(forger, 1);
    w.run_until("the forger connected", |w| w.clients[1].connected);
    let ufrag = ufrag(&w.publisher_answer(forger).sdp);
    (w, camera, ufrag)
}

/// A STUN binding request with `attributes` (type, value) and no integrity, as a forger can make
/// without anyone's password.
fn forged_request(attributes: &[(u16, &[u8])], id: u8) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in attributes {
        body.extend_from_slice(&kind.to_be_bytes());
        body.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let mut message = vec![0, 1];
    message.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    message.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    message.extend_from_slice(&[id; 12]);
    message.extend_from_slice(&body);
    message
}

/// Client 0 sends 200 VP8 packets, `forge` running before each; returns how many its
/// connection received.
fn client_packets_received_while(
    w: &mut World,
    camera: LocalTrack,
    mut forge: impl FnMut(&mut World),
) -> u64 {
    let rtp_before = w.router.stats().rtp_in;
    let mut seq = 100u16;
    for _ in 0..200 {
        forge(w);
        send_vp8(w, camera, &mut seq, false);
    }
    w.router.stats().rtp_in - rtp_before
}

/// A participant answers every check its own connection sends it, with a present client's
/// address forged as the source (it sees those checks' transaction IDs, not the client's). The
/// client's media keeps reaching its connection, every packet of it.
#[test]
fn a_participant_answering_its_own_checks_from_a_clients_address_takes_nothing() {
    let (mut w, camera, _) = a_client_and_a_forger();
    let (client, forger) = (w.clients[0].publisher_addr, w.clients[1].publisher_addr);
    let mut forged = 0;
    let received = client_packets_received_while(&mut w, camera, |w| {
        for (_, id) in w.checks.iter().filter(|(to, _)| *to == forger) {
            // A success response header (0x0101) with the check's ID.
            let mut answer = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
            answer.extend_from_slice(id);
            w.router.handle_datagram(w.now, client, &answer);
            forged += 1;
        }
    });
    assert!(
        forged >= 100,
        "the forger saw its connection's checks: {forged}"
    );
    assert_eq!(
        received, 200,
        "every packet of the client's reached its connection"
    );
}

/// The client is also reachable at a second address (dual stack, a LAN and a public address).
/// A participant steers the client's connection to send there (a request without USERNAME
/// raising an ICE role conflict, which `rtc` answers before it checks the sender), and claims the
/// client's first address with requests naming its own connection. Neither takes anything.
#[test]
fn a_participant_steering_where_a_clients_connection_sends_takes_nothing() {
    let (mut w, camera, forger_ufrag) = a_client_and_a_forger();
    let client = w.clients[0].publisher_addr;
    let second: SocketAddr = "10.0.9.9:5000".parse().unwrap();
    // The client's own check from its second address (as its browser sends from every
    // candidate).
    let check = w.client0_check.clone();
    assert!(!check.is_empty(), "the client checked");
    w.router.handle_datagram(w.now, second, &check);
    w.exchange();
    // ICE-CONTROLLED with the largest tie-breaker, and a USERNAME naming the forger's connection.
    let conflict = forged_request(&[(0x8029, &[0xff; 8])], 0x43);
    let username = format!("{forger_ufrag}:zz");
    let claim = forged_request(&[(0x0006, username.as_bytes())], 0x44);
    let received = client_packets_received_while(&mut w, camera, |w| {
        w.router.handle_datagram(w.now, second, &conflict);
        w.router.handle_datagram(w.now, client, &claim);
    });
    assert_eq!(
        received, 200,
        "every packet of the client's reached its connection"
    );
}

/// How many RTP packets client `i` received.
fn rtp_received(w: &World, i: usize) -> usize {
    w.clients[i]
        .received
        .iter()
        .filter(|e| matches!(e, MediaEvent::Rtp(_)))
        .count()
}

/// Whether client `i`'s subscriber connection is up.
fn subscriber_connected(w: &World, i: usize) -> bool {
    w.clients[i]
        .received
        .iter()
        .any(|e| matches!(e, MediaEvent::StateChanged(PeerState::Connected)))
}

/// Client `sub` subscribes to client `publisher`'s `track`, answers the offer and connects its
/// subscriber connection.
fn subscribe_and_connect(w: &mut World, sub: usize, publisher: usize, track: &str) {
    w.subscribe(sub, publisher, track);
    w.needs_offer(sub);
    w.answer_latest(sub);
    w.run_until("the subscriber connection up", |w| {
        subscriber_connected(w, sub)
    });
}

/// Client 0 connects its publisher from 10.0.1.1:5000 and its subscriber from 10.0.1.1:5001,
/// then vanishes without a word: nothing more comes from it, and the router, not told, keeps its
/// connections for a resume (the core does for 15 s). Its NAT hands the same public ports to
/// client 1 at once, whose descriptions carry its host candidates or none; returns how long
/// client 1 took to connect both. The publisher connection's ICE is the client's to control, the
/// subscriber's the router's.
fn connect_from_a_vanished_clients_ports(with_candidates: bool) -> Duration {
    let mut w = World::new();
    w.join(1, "PA_first");
    let camera = w.publish_video(0, "camera", "cid-cam", "TR_first", 0xF1);
    w.negotiate_publisher(0, 1);
    w.needs_offer(0);
    w.answer_latest(0);
    w.run_until("the first client connected", |w| {
        w.clients[0].connected && subscriber_connected(w, 0)
    });
    // 3 s of its camera: consent checks answered, and receiver reports coming back.
    let mut seq = 1u16;
    for _ in 0..150 {
        send_vp8(&mut w, camera, &mut seq, false);
    }
    w.clients.remove(0);
    w.join(1, "PA_second");
    w.publish_video(0, "camera", "cid-cam", "TR_second", 0x5EC);
    let start = w.now;
    let edit = |sdp: String| {
        if with_candidates {
            return sdp;
        }
        sdp.lines()
            .filter(|l| !l.starts_with("a=candidate"))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    w.negotiate_publisher_with(0, 1, false, edit);
    w.needs_offer(0);
    w.answer_latest_with(0, edit);
    w.run_until("the second client connected", |w| {
        w.clients[0].connected && subscriber_connected(w, 0)
    });
    let took = w.now - start;
    assert_eq!(w.router.participant_count(), 2, "the first is still kept");
    // The first's connection keeps its DTLS and media (receiver reports here) to itself.
    let displaced = w.router.stats().displaced;
    w.run_until("the first's reports held back", move |w| {
        w.router.stats().displaced > displaced
    });
    took
}

/// The router checks the candidates the new client's descriptions carry: the answers come from
/// the ports, prove that client is there, and the ports are its connections' at once (0.4 s of
/// simulated time; the router's 15 s for the first client's resume before).
#[test]
fn a_client_given_a_vanished_clients_ports_connects_at_once() {
    let took = connect_from_a_vanished_clients_ports(true);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// Without candidates (a browser without a STUN server behind a NAT), the new client's own checks
/// reach its connections, which check the ports back: the same proof (1.4 s: the subscriber
/// connection, whose ICE the router controls, checks the new pair on its next round).
#[test]
fn a_client_given_a_vanished_clients_ports_without_candidates_connects_at_once() {
    let took = connect_from_a_vanished_clients_ports(false);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
