//! Two `MediaPeer`s connected in memory, in simulated time: no sockets, no sleeping. The server side
//! offers here (the reverse of the browser test), as an SFU does for a subscriber connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use consulta_media::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use consulta_media::rtp::{Header, Packet};
use consulta_media::{IncomingRtp, MediaEvent, MediaKind, MediaPeer, PeerState};

/// The RTP packets among `events`.
fn rtp_events(events: &[MediaEvent]) -> Vec<&IncomingRtp> {
    events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Rtp(rtp) => Some(rtp),
            _ => None,
        })
        .collect()
}

struct Side {
    peer: MediaPeer,
    addr: SocketAddr,
    events: Vec<MediaEvent>,
}

/// Both peers and one simulated clock.
struct Net {
    a: Side,
    b: Side,
    now: Instant,
    /// The DTLS datagrams the link loses: (from `a`, their indexes among the DTLS datagrams that
    /// side sent).
    lose: Option<(bool, std::ops::Range<usize>)>,
    /// DTLS datagrams sent by `a` and by `b` so far.
    dtls_sent: [usize; 2],
    /// The link's one-way delay (none: each datagram arrives as it is sent).
    delay: Duration,
    /// Another address every DTLS datagram also arrives from, as a forger on the path would send
    /// it (`exchange` fails if anything is sent there).
    spoof: Option<SocketAddr>,
    /// Datagrams on the way: when each arrives, whether `a` sent it, its bytes.
    in_flight: std::collections::VecDeque<(Instant, bool, bytes::Bytes)>,
}

/// Whether `datagram` is DTLS (RFC 7983: first byte 20 to 63).
fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let a_addr: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let b_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        Self {
            a: Side {
                peer: MediaPeer::new(a_addr, now).unwrap(),
                addr: a_addr,
                events: Vec::new(),
            },
            b: Side {
                peer: MediaPeer::new(b_addr, now).unwrap(),
                addr: b_addr,
                events: Vec::new(),
            },
            now,
            lose: None,
            dtls_sent: [0, 0],
            delay: Duration::ZERO,
            spoof: None,
            in_flight: std::collections::VecDeque::new(),
        }
    }

    /// Sends what both sides queued (lost or delayed as the link says), delivers what has arrived
    /// by `now`, and collects events; returns whether anything moved.
    fn exchange(&mut self) -> bool {
        let mut moved = false;
        loop {
            let mut any = false;
            for from_a in [true, false] {
                let (from, to) = if from_a {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                while let Some(t) = from.peer.poll_transmit() {
                    assert_eq!(t.destination, to.addr);
                    any = true;
                    let lost = is_dtls(&t.contents) && {
                        let count = &mut self.dtls_sent[usize::from(!from_a)];
                        *count += 1;
                        self.lose
                            .as_ref()
                            .is_some_and(|(a, lost)| *a == from_a && lost.contains(&(*count - 1)))
                    };
                    if lost {
                        continue;
                    }
                    if self.delay.is_zero() {
                        let _ = to.peer.handle_receive(self.now, from.addr, &t.contents);
                    } else {
                        self.in_flight
                            .push_back((self.now + self.delay, from_a, t.contents));
                    }
                }
            }
            while let Some((at, from_a, contents)) = self.in_flight.pop_front() {
                if at > self.now {
                    self.in_flight.push_front((at, from_a, contents));
                    break;
                }
                let (from, to) = if from_a {
                    (&self.a.addr, &mut self.b)
                } else {
                    (&self.b.addr, &mut self.a)
                };
                let _ = to.peer.handle_receive(self.now, *from, &contents);
                if let Some(spoof) = self.spoof.filter(|_| is_dtls(&contents)) {
                    let _ = to.peer.handle_receive(self.now, spoof, &contents);
                }
                any = true;
            }
            while let Some(e) = self.a.peer.poll_event() {
                self.a.events.push(e);
                any = true;
            }
            while let Some(e) = self.b.peer.poll_event() {
                self.b.events.push(e);
                any = true;
            }
            if !any {
                return moved;
            }
            moved = true;
        }
    }

    /// Exchanges, then jumps the clock to the next timer or arrival (at most `max_step` ahead),
    /// delivers what arrived by then and fires the timers due.
    fn step(&mut self, max_step: Duration) {
        self.exchange();
        let arrival = self.in_flight.front().map(|(at, _, _)| *at);
        let next = [
            self.a.peer.poll_timeout(),
            self.b.peer.poll_timeout(),
            arrival,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.now + max_step);
        self.now = next.clamp(self.now, self.now + max_step);
        // What arrived by now is read before the timers due now fire: in life a side's own work
        // on the flight it answers delays its resend timer a little, so a peer's repeat sent on
        // a timer started as early comes first. (The other order hides the DTLS stall of
        // `a_connection_comes_up_whichever_dtls_datagram_is_lost`.)
        self.exchange();
        let _ = self.a.peer.handle_timeout(self.now);
        let _ = self.b.peer.handle_timeout(self.now);
        self.exchange();
    }

    fn connected(side: &Side) -> bool {
        side.events
            .iter()
            .any(|e| matches!(e, MediaEvent::StateChanged(PeerState::Connected)))
    }

    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start < limit,
                "not done within {limit:?} (simulated)"
            );
            self.step(Duration::from_millis(50));
        }
        self.now - start
    }
}

fn vp8_packet(seq: u16, timestamp: u32, keyframe: bool) -> Packet {
    // VP8 payload descriptor (S=1, partition 0) followed by a frame header byte whose low bit tells
    // key (0) from inter (1) frames; the content is not decoded here.
    let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(&[0xAB; 200]);
    Packet {
        header: Header {
            version: 2,
            marker: true,
            payload_type: 1, // rewritten by write_rtp to the negotiated VP8 type
            sequence_number: seq,
            timestamp,
            ssrc: 7, // rewritten by write_rtp to the track's SSRC
            ..Default::default()
        },
        payload: payload.into(),
    }
}

#[test]
fn server_offer_connects_and_carries_rtp_tagged_with_mid_and_pli_back() {
    let mut net = Net::new();
    let track = net
        .a
        .peer
        .add_local_track(MediaKind::Video, "video/VP8", "stream-a", "video-a", 0x1111)
        .unwrap();
    let offer = net.a.peer.create_offer(net.now).unwrap();
    assert!(
        offer.contains("a=candidate:"),
        "offer carries the host candidate"
    );
    assert!(offer.contains("10.0.0.1 4000"), "{offer}");
    let answer = net.b.peer.accept_offer(offer, net.now).unwrap();
    net.a.peer.accept_answer(answer, net.now).unwrap();

    let to_connect = net.run_until(Duration::from_secs(10), |n| {
        Net::connected(&n.a) && Net::connected(&n.b)
    });
    eprintln!("connected after {to_connect:?} of simulated time");

    for i in 0..20u16 {
        let packet = vp8_packet(100 + i, 3000 * u32::from(i), i == 0);
        net.a
            .peer
            .write_rtp(
                track,
                packet,
                "video/VP8",
                consulta_media::Keep::Copy,
                net.now,
            )
            .unwrap();
        net.step(Duration::from_millis(33));
    }
    let received = rtp_events(&net.b.events);
    assert_eq!(received.len(), 20, "every packet arrives, decrypted");
    let first = received[0];
    assert_eq!(first.ssrc, 0x1111);
    assert_eq!(first.tag.mid.as_ref().map(|m| m.as_str()), Some("0"));
    assert_eq!(first.tag.rid, None);
    assert_eq!(first.tag.kind, Some(MediaKind::Video));
    assert_eq!(first.tag.mime_type.as_deref(), Some("video/VP8"));
    assert_eq!(first.packet.header.sequence_number, 100);
    assert_eq!(first.packet.payload.len(), 202);

    net.b.peer.request_keyframe(0x1111, net.now).unwrap();
    net.run_until(Duration::from_secs(2), |n| {
        n.a.events.iter().any(|e| match e {
            MediaEvent::Rtcp { packets, .. } => packets.iter().any(|p| {
                p.as_any()
                    .downcast_ref::<PictureLossIndication>()
                    .is_some_and(|pli| pli.media_ssrc == 0x1111)
            }),
            _ => false,
        })
    });
}

/// `a` offers a video track, `b` answers.
fn negotiate(net: &mut Net) {
    net.a
        .peer
        .add_local_track(MediaKind::Video, "video/VP8", "stream-a", "video-a", 0x1111)
        .unwrap();
    let offer = net.a.peer.create_offer(net.now).unwrap();
    let answer = net.b.peer.accept_offer(offer, net.now).unwrap();
    net.a.peer.accept_answer(answer, net.now).unwrap();
}

/// A lost DTLS flight, on either side, at any step of the handshake: the connection comes up all
/// the same, within a few seconds. (`rtc-dtls` stops its resend timer when the peer's repeat of
/// its own flight arrives, so before `MediaPeer` answered such repeats itself, losing the
/// server's second flight or the client's last one left both sides "connecting" for good.)
#[test]
fn a_connection_comes_up_whichever_dtls_datagram_is_lost() {
    // The handshake without loss: how many DTLS datagrams each side sends.
    let mut net = Net::new();
    negotiate(&mut net);
    net.run_until(Duration::from_secs(10), |n| {
        Net::connected(&n.a) && Net::connected(&n.b)
    });
    let sent = net.dtls_sent;
    assert!(
        sent.iter().all(|&n| n >= 2),
        "each side sends two flights or more: {sent:?}"
    );
    for (from_a, count) in [(true, sent[0]), (false, sent[1])] {
        for index in 0..count {
            let mut net = Net::new();
            net.lose = Some((from_a, index..index + 1));
            // A real link's delay: a repeat of the peer's flight then arrives with, or before,
            // this side's own resend timer (both run 1 s from the same exchange).
            net.delay = Duration::from_millis(20);
            // Each DTLS datagram comes again from elsewhere: a repeat, whose answer must still go
            // only where the connection sends.
            net.spoof = Some("10.0.0.9:6000".parse().unwrap());
            negotiate(&mut net);
            let start = net.now;
            while !(Net::connected(&net.a) && Net::connected(&net.b)) {
                assert!(
                    net.now - start < Duration::from_secs(3),
                    "losing DTLS datagram {index} of the {} (of {count}): not connected within 3 s \
                     (simulated)",
                    if from_a { "offerer" } else { "answerer" }
                );
                net.step(Duration::from_millis(50));
            }
            eprintln!(
                "losing DTLS datagram {index} of the {}: connected after {:?}",
                if from_a { "offerer" } else { "answerer" },
                net.now - start
            );
        }
    }
}

/// The echo logic without a browser: the client offers a sendrecv track, the server answers with its
/// own track and `Echo` sends every packet back on it, after asking the client for a keyframe.
#[test]
fn echo_returns_every_packet_on_its_own_ssrc_and_asks_for_a_keyframe() {
    use consulta_media::echo::Echo;

    let mut net = Net::new();
    let (client, server) = (0x2222, 0x3333);
    let client_track = net
        .b
        .peer
        .add_local_track(MediaKind::Video, "video/VP8", "client", "camera", client)
        .unwrap();
    let echo_track = net
        .a
        .peer
        .add_local_track(MediaKind::Video, "video/VP8", "echo", "echo-video", server)
        .unwrap();
    let offer = net.b.peer.create_offer(net.now).unwrap();
    let answer = net.a.peer.accept_offer(offer, net.now).unwrap();
    net.b.peer.accept_answer(answer, net.now).unwrap();
    let mut echo = Echo::new(echo_track, net.now);

    let feed = |net: &mut Net, echo: &mut Echo| {
        net.exchange();
        let now = net.now;
        let events: Vec<MediaEvent> = net.a.events.drain(..).collect();
        for event in events {
            echo.handle_event(&mut net.a.peer, event, now);
        }
        net.exchange();
    };
    let start = net.now;
    while !Net::connected(&net.b) {
        assert!(net.now - start < Duration::from_secs(10), "no connection");
        net.step(Duration::from_millis(50));
        feed(&mut net, &mut echo);
    }
    for i in 0..10u16 {
        let packet = vp8_packet(500 + i, 3000 * u32::from(i), i == 0);
        net.b
            .peer
            .write_rtp(
                client_track,
                packet,
                "video/VP8",
                consulta_media::Keep::Copy,
                net.now,
            )
            .unwrap();
        net.step(Duration::from_millis(33));
        feed(&mut net, &mut echo);
    }

    let stats = echo.stats().lock().unwrap().clone();
    assert_eq!(stats.rtp_received, 10);
    assert_eq!(stats.rtp_echoed, 10);
    assert_eq!(stats.echo_errors, 0);
    assert_eq!(stats.keyframe_requests, 1, "one PLI when the echo starts");
    assert_eq!(
        stats.streams,
        ["0/-/8738"],
        "mid 0, no rid, the client's SSRC"
    );

    let echoed: Vec<u16> = net
        .b
        .events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Rtp(rtp) if rtp.ssrc == server => Some(rtp.packet.header.sequence_number),
            _ => None,
        })
        .collect();
    assert_eq!(
        echoed,
        (500..510).collect::<Vec<_>>(),
        "in order, none lost"
    );
    let plis = net
        .b
        .events
        .iter()
        .filter(|e| match e {
            MediaEvent::Rtcp { packets, .. } => packets.iter().any(|p| {
                p.as_any()
                    .downcast_ref::<PictureLossIndication>()
                    .is_some_and(|pli| pli.media_ssrc == client)
            }),
            _ => false,
        })
        .count();
    assert_eq!(plis, 1, "the client got the echo's keyframe request");
}

/// A transceiver reused for a later track of another codec (a VP9 camera after a VP8 one left)
/// carries the new codec: every m-line offers all the SFU's video codecs, so the first answer
/// does not narrow the connection to VP8.
#[test]
fn a_reused_transceiver_offers_and_sends_the_new_tracks_codec() {
    let mut net = Net::new();
    let vp8 = net
        .a
        .peer
        .add_local_track(
            MediaKind::Video,
            "video/VP8",
            "first",
            "first-video",
            0x2222,
        )
        .unwrap();
    let offer = net.a.peer.create_offer(net.now).unwrap();
    assert!(offer.contains("VP8/90000"), "{offer}");
    assert!(
        offer.contains("VP9/90000"),
        "every video codec on offer: {offer}"
    );
    let answer = net.b.peer.accept_offer(offer, net.now).unwrap();
    net.a.peer.accept_answer(answer, net.now).unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        Net::connected(&n.a) && Net::connected(&n.b)
    });

    net.a.peer.remove_local_track(vp8).unwrap();
    let offer = net.a.peer.create_offer(net.now).unwrap();
    let answer = net.b.peer.accept_offer(offer, net.now).unwrap();
    net.a.peer.accept_answer(answer, net.now).unwrap();

    let vp9 = net
        .a
        .peer
        .add_local_track(
            MediaKind::Video,
            "video/VP9",
            "second",
            "second-video",
            0x3333,
        )
        .unwrap();
    let offer = net.a.peer.create_offer(net.now).unwrap();
    let video_m_lines = offer.matches("m=video").count();
    assert_eq!(video_m_lines, 1, "the m-line was reused: {offer}");
    assert!(offer.contains("VP9/90000"), "{offer}");
    let answer = net.b.peer.accept_offer(offer, net.now).unwrap();
    net.a.peer.accept_answer(answer, net.now).unwrap();
    net.b.events.clear();
    for i in 0..10u16 {
        let mut packet = vp8_packet(500 + i, 3000 * u32::from(i), i == 0);
        // A VP9 payload descriptor: B (start of frame) set, P (inter-picture) clear on the first.
        packet.payload = vec![if i == 0 { 0x08 } else { 0x48 }, 0, 0, 0].into();
        net.a
            .peer
            .write_rtp(
                vp9,
                packet,
                "video/VP9",
                consulta_media::Keep::Copy,
                net.now,
            )
            .unwrap();
        net.step(Duration::from_millis(33));
    }
    let received = rtp_events(&net.b.events);
    assert_eq!(received.len(), 10, "the VP9 track's packets arrive");
    assert_eq!(received[0].ssrc, 0x3333);
    assert_eq!(received[0].tag.mime_type.as_deref(), Some("video/VP9"));
}

/// No connection negotiates RTX unless asked (`MediaConfig::rtx`, which the router sets on its
/// publisher connections only: `register_codecs` in peer.rs says why; tests/it/rtx.rs has the
/// failing cases); asked, one that receives needs its own read path, which opens the repair
/// streams.
#[test]
fn a_connection_offers_rtx_only_when_asked() {
    use consulta_media::{MediaConfig, MediaDirection};

    let now = Instant::now();
    let addr: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    for direction in [
        MediaDirection::SendOnly,
        MediaDirection::ReceiveOnly,
        MediaDirection::Both,
    ] {
        let config = MediaConfig {
            direction,
            ..MediaConfig::default()
        };
        let mut peer = MediaPeer::with_config(addr, config, now).unwrap();
        peer.add_local_track(MediaKind::Video, "video/VP8", "s", "camera", 0x2223)
            .unwrap();
        let offer = peer.create_offer(now).unwrap();
        assert!(offer.contains("VP8/90000"), "{direction:?}: {offer}");
        assert!(!offer.contains("rtx/"), "{direction:?}: {offer}");
        assert!(!offer.contains("ssrc-group"), "{direction:?}: {offer}");
        // Asked for, RTX is offered for each video codec, but where the connection receives
        // without its own read path, which opens the repair streams.
        for own_read_path in [true, false] {
            let config = MediaConfig {
                rtx: true,
                own_read_path,
                ..config
            };
            let mut peer = MediaPeer::with_config(addr, config, now).unwrap();
            peer.add_local_track(MediaKind::Video, "video/VP8", "s", "camera", 0x2223)
                .unwrap();
            let offer = peer.create_offer(now).unwrap();
            let offered = offer.contains("rtx/90000") && offer.contains("apt=96");
            let expected = own_read_path || direction != MediaDirection::ReceiveOnly;
            assert_eq!(offered, expected, "{direction:?}, {own_read_path}: {offer}");
        }
    }
}

/// A peer that goes silent in the middle of the DTLS handshake: both sides' connections end
/// "failed", instead of "connecting" for good. The DTLS client gives up after sending its flight
/// eight times (`rtc-dtls`); the server, which stops sending (a HelloVerifyRequest is never sent
/// again; a repeat of the client's stops its timer), when nothing new came for 15 s.
#[test]
fn a_handshake_the_peer_abandons_ends_in_a_failed_connection() {
    let failed = |side: &Side| {
        side.events
            .iter()
            .any(|e| matches!(e, MediaEvent::StateChanged(PeerState::Failed)))
    };
    for from_a in [true, false] {
        let mut net = Net::new();
        // Everything after the first DTLS datagram of one side is lost.
        net.lose = Some((from_a, 1..usize::MAX));
        net.delay = Duration::from_millis(20);
        negotiate(&mut net);
        let start = net.now;
        let mut when = [None, None];
        while when.iter().any(Option::is_none) {
            assert!(
                net.now - start < Duration::from_secs(30),
                "the {} went silent: failed after {when:?} (simulated)",
                if from_a { "offerer" } else { "answerer" }
            );
            net.step(Duration::from_millis(100));
            for (side, at) in [&net.a, &net.b].into_iter().zip(&mut when) {
                if at.is_none() && failed(side) {
                    *at = Some(net.now - start);
                }
            }
        }
        eprintln!(
            "the {} went silent: the offerer's connection failed after {:?}, the answerer's after {:?}",
            if from_a { "offerer" } else { "answerer" },
            when[0].unwrap_or_default(),
            when[1].unwrap_or_default()
        );
        assert!(!Net::connected(&net.a) && !Net::connected(&net.b));
    }
}
