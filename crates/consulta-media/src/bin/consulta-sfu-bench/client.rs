//! One synthetic participant: two `rtc` peer connections (ICE, DTLS, SRTP-GCM) on their own UDP
//! sockets, the publisher sending paced RTP and the subscriber a sink, and the signalling of the
//! server under test: LiveKit v0 over WebSocket as livekit-client speaks it (join, `add_track` per
//! track with the msid track id as `cid`, publisher offer, answers to the subscriber offers, pings,
//! `leave`) or Janus's VideoRoom API (`janus`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use consulta_media::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use consulta_media::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use consulta_media::rtp::{Header, Packet};
use consulta_media::{
    LocalTrack, MediaConfig, MediaDirection, MediaEvent, MediaKind, MediaPeer, PeerState,
};
use consulta_sfu::signal;
use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{
    AddTrackRequest, LeaveRequest, Ping, SessionDescription, SignalRequest, TrackSource, TrackType,
    signal_request, signal_response,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::media::{OutPacket, Progress, Recorder, Source};
use crate::stamp::Received;

const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a leaving participant waits for the server to end the signalling socket.
const CLOSING_HANDSHAKE_LIMIT: Duration = Duration::from_secs(2);
/// Datagrams read per wake-up.
const RECV_BATCH: usize = 64;

/// The signalling of the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// LiveKit v0 (the Consulta SFU).
    LiveKit,
    /// Janus's VideoRoom plugin over its WebSocket API.
    Janus,
}

/// Who this participant is and what it does.
#[derive(Debug, Clone)]
pub struct Spec {
    pub dialect: Dialect,
    /// The server's signalling address (HTTP/WebSocket).
    pub http: SocketAddr,
    /// LiveKit access token (LiveKit only).
    pub token: String,
    pub room: String,
    pub identity: String,
    /// The address its UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Its sink id in the recorder.
    pub sink: u32,
    /// Stream ids of its audio and video, when it publishes.
    pub publish: Option<(u32, u32)>,
    /// Leave as soon as it both sends (publisher connected) and receives media (churn).
    pub leave_after_media: bool,
    /// `auto_subscribe` in the join URL.
    pub auto_subscribe: bool,
    /// Its video leaves paced, as a browser's does (`--pace-video`).
    pub pace_video: bool,
}

/// How it went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// From the WebSocket connect to the first media packet received.
    pub first_media: Option<Duration>,
    /// The most m-lines a subscriber offer had, and that offer's size in bytes.
    pub largest_offer: (usize, usize),
}

pub struct Track {
    pub local: LocalTrack,
    pub mime: &'static str,
    pub source: Source,
}

/// The participant's two peer connections and what it publishes, for the signalling to drive.
pub struct Peers {
    pub publisher: MediaPeer,
    pub subscriber: MediaPeer,
    pub tracks: Vec<Track>,
    /// The most m-lines a subscriber offer had, and that offer's size in bytes.
    pub largest_offer: (usize, usize),
    /// How far the set-up got, copied to the recorder when it changes.
    pub progress: Progress,
}

impl Peers {
    /// Applies a subscriber offer from the server and returns the answer.
    pub fn answer_subscriber(&mut self, offer: String, now: Instant) -> anyhow::Result<String> {
        let mlines = offer.matches("\nm=").count();
        self.largest_offer = self.largest_offer.max((mlines, offer.len()));
        self.progress.offers += 1;
        self.progress.offer_mlines = mlines;
        Ok(self.subscriber.accept_offer(offer, now)?)
    }
}

/// One server's signalling, driven by [`run`]'s loop. (Futures are polled on one thread only.)
#[allow(
    async_fn_in_trait,
    reason = "used on a LocalSet, never sent across threads"
)]
pub trait Signalling {
    /// Opens the signalling WebSocket and does what comes before media (join, room set-up).
    async fn open(spec: &Spec, peers: &mut Peers) -> anyhow::Result<(Self, Ws)>
    where
        Self: Sized;
    /// Handles one frame from the server.
    async fn frame(&mut self, ws: &mut Ws, frame: Message, peers: &mut Peers)
    -> anyhow::Result<()>;
    /// Keeps the session alive (pings); `elapsed` is the time since the participant started.
    async fn keepalive(&mut self, ws: &mut Ws, elapsed: Duration) -> anyhow::Result<()>;
    /// Says goodbye.
    async fn leave(&mut self, ws: &mut Ws);
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How much a signalling socket reads at a time. tungstenite 0.29 zero-fills its read buffer up
/// to this size before every read, also one that finds nothing (`FrameCodec::read_in`), and a
/// participant's task polls its signalling socket at every wake-up for media. At the default
/// 128 KiB that zeroing was 38 % of the generator's CPU (`perf record -p <bench>` at S1 80 rooms),
/// and the generator ran out of its core at half the load. A longer frame still arrives whole:
/// its length is reserved when its header is read.
const SIGNAL_READ_BYTES: usize = 4 * 1024;

/// Opens a signalling WebSocket to `request`.
pub async fn connect(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> anyhow::Result<Ws> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(SIGNAL_READ_BYTES);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .context("signalling connect")?;
    Ok(ws)
}

async fn send_livekit(ws: &mut Ws, message: signal_request::Message) -> anyhow::Result<()> {
    let bytes = signal::encode_request(&SignalRequest {
        message: Some(message),
    });
    ws.send(Message::Binary(bytes.into()))
        .await
        .context("signalling send")
}

/// A client socket with a receive buffer large enough that the generator's own scheduling
/// hiccups do not show up as SFU loss.
pub async fn bind(ip: IpAddr) -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20)?;
    Ok(socket)
}

async fn flush(pc: &mut MediaPeer, socket: &UdpSocket) {
    while let Some(t) = pc.poll_transmit() {
        if let Err(error) = socket.send_to(&t.contents, t.destination).await {
            tracing::debug!(%error, "udp send failed");
        }
    }
}

fn receive(pc: &mut MediaPeer, socket: &UdpSocket, first: (usize, SocketAddr), buf: &mut [u8]) {
    let now = Instant::now();
    let (len, from) = first;
    let _ = pc.handle_receive(now, from, buf.get(..len).unwrap_or_default());
    for _ in 1..RECV_BATCH {
        match socket.try_recv_from(buf) {
            Ok((len, from)) => {
                let _ = pc.handle_receive(now, from, buf.get(..len).unwrap_or_default());
            }
            Err(_) => break,
        }
    }
}

/// The subscriber's datagrams: each one's events are taken out as soon as it is handled, paired
/// with when the kernel received it ([`crate::stamp`]).
fn receive_stamped(
    pc: &mut MediaPeer,
    socket: &UdpSocket,
    first: Received,
    buf: &mut [u8],
    events: &mut VecDeque<(MediaEvent, Option<Duration>)>,
) {
    let now = Instant::now();
    let mut next = Some(first);
    let mut read = 0;
    while let Some(received) = next {
        let datagram = buf.get(..received.len).unwrap_or_default();
        let _ = pc.handle_receive(now, received.from, datagram);
        while let Some(event) = pc.poll_event() {
            events.push_back((event, received.arrived));
        }
        read += 1;
        next = if read < RECV_BATCH {
            crate::stamp::try_recv(socket, buf).ok()
        } else {
            None
        };
    }
}

/// Whether the compound packet asks for a keyframe of the stream `ssrc` (PLI or FIR).
fn asks_keyframe_of(ssrc: u32, packets: &[Box<dyn consulta_media::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.downcast_ref::<PictureLossIndication>()
            .is_some_and(|pli| pli.media_ssrc == ssrc)
            || any
                .downcast_ref::<FullIntraRequest>()
                .is_some_and(|fir| fir.fir.iter().any(|e| e.ssrc == ssrc))
    })
}

/// Runs the participant until `stop` (or, with `leave_after_media`, until media flowed both ways).
pub async fn run(
    spec: Spec,
    recorder: Rc<RefCell<Recorder>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    match spec.dialect {
        Dialect::LiveKit => run_with::<LiveKit>(spec, recorder, stop).await,
        Dialect::Janus => run_with::<crate::janus::Janus>(spec, recorder, stop).await,
    }
}

/// A participant's connections each carry media one way, as a browser's do.
fn one_way(direction: MediaDirection) -> MediaConfig {
    MediaConfig {
        direction,
        // The synthetic publisher sends its fixed schedule whatever the path carries, so it has no
        // use for an estimate; the node still estimates towards every subscriber, which answers
        // with TWCC feedback as a browser does.
        congestion_control: false,
        // The publisher offers RTX, as browsers do (a node then takes its media under AES-GCM);
        // it resends on the stream's own SSRC all the same, with the bytes it first sent.
        rtx: direction == MediaDirection::SendOnly,
        ..MediaConfig::default()
    }
}

async fn run_with<S: Signalling>(
    spec: Spec,
    recorder: Rc<RefCell<Recorder>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let pub_socket = bind(spec.bind_ip).await?;
    let sub_socket = bind(spec.bind_ip).await?;
    crate::stamp::enable(&sub_socket)?;
    let mut sub_events: VecDeque<(MediaEvent, Option<Duration>)> = VecDeque::new();
    let now = Instant::now();
    let mut peers = Peers {
        publisher: MediaPeer::with_config(
            pub_socket.local_addr()?,
            one_way(MediaDirection::SendOnly),
            now,
        )?,
        subscriber: MediaPeer::with_config(
            sub_socket.local_addr()?,
            one_way(MediaDirection::ReceiveOnly),
            now,
        )?,
        tracks: Vec::new(),
        largest_offer: (0, 0),
        progress: Progress {
            publish: spec.publish,
            ports: (
                pub_socket.local_addr()?.port(),
                sub_socket.local_addr()?.port(),
            ),
            ..Progress::default()
        },
    };
    let mut noted = Progress::default();
    if let Some((audio, video)) = spec.publish {
        let stream_id = format!("bench-{}", spec.sink);
        for (kind, stream, mime) in [
            (MediaKind::Audio, audio, "audio/opus"),
            (MediaKind::Video, video, "video/VP8"),
        ] {
            let cid = format!("TR_bench{stream}");
            let local = peers.publisher.add_local_track(
                kind,
                mime,
                &stream_id,
                &cid,
                rand::random::<u32>() | 1,
            )?;
            let source = match kind {
                MediaKind::Audio => Source::audio(stream, now),
                MediaKind::Video if spec.pace_video => Source::paced_video(stream, now),
                MediaKind::Video => Source::video(stream, now),
            };
            peers.tracks.push(Track {
                local,
                mime,
                source,
            });
        }
    }
    let (mut signalling, mut ws) = S::open(&spec, &mut peers).await?;

    let mut sending = false;
    let mut first_media: Option<Duration> = None;
    let mut next_ping = Instant::now() + PING_INTERVAL;
    let mut pub_buf = vec![0u8; 2048];
    let mut sub_buf = vec![0u8; 2048];
    let mut out: Vec<OutPacket> = Vec::new();

    loop {
        // Events out of both peer connections.
        while let Some(event) = peers.publisher.poll_event() {
            if let MediaEvent::StateChanged(state) = event {
                peers.progress.publisher = Some(state);
            }
            match event {
                MediaEvent::StateChanged(PeerState::Connected) => sending = true,
                MediaEvent::StateChanged(PeerState::Failed | PeerState::Closed) => {
                    bail!("publisher connection failed")
                }
                MediaEvent::Rtcp { packets, .. } => {
                    for t in peers.tracks.iter_mut().filter(|t| t.source.is_video()) {
                        if asks_keyframe_of(t.local.ssrc(), &packets) {
                            t.source.request_keyframe();
                            recorder.borrow_mut().keyframe_requests += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some((event, arrived)) = sub_events
            .pop_front()
            .or_else(|| Some((peers.subscriber.poll_event()?, None)))
        {
            match event {
                MediaEvent::Rtp(rtp) => {
                    let payload = &rtp.packet.payload;
                    // RTP header + payload + GCM tag.
                    let wire = 12 + payload.len() + 16;
                    recorder
                        .borrow_mut()
                        .record(spec.sink, payload, wire, Instant::now(), arrived);
                    if first_media.is_none() {
                        first_media = Some(started.elapsed());
                    }
                }
                MediaEvent::StateChanged(PeerState::Failed) => {
                    bail!("subscriber connection failed")
                }
                MediaEvent::StateChanged(state) => peers.progress.subscriber = Some(state),
                MediaEvent::TrackOpened(_) => peers.progress.tracks_opened += 1,
                _ => {}
            }
        }
        peers.progress.publisher_ice = peers.publisher.ice_connected();
        peers.progress.subscriber_ice = peers.subscriber.ice_connected();
        if peers.progress != noted {
            noted = peers.progress;
            recorder.borrow_mut().progress.insert(spec.sink, noted);
        }
        flush(&mut peers.publisher, &pub_socket).await;
        flush(&mut peers.subscriber, &sub_socket).await;

        let done =
            spec.leave_after_media && first_media.is_some() && (sending || peers.tracks.is_empty());
        if done || *stop.borrow() {
            signalling.leave(&mut ws).await;
            let _ = peers.publisher.close();
            let _ = peers.subscriber.close();
            flush(&mut peers.publisher, &pub_socket).await;
            flush(&mut peers.subscriber, &sub_socket).await;
            let _ = ws.close(None).await;
            // The closing handshake, as a browser does it: the server's close, or the end of the
            // socket. Dropping the socket with frames unread would reset the connection, and a
            // reset throws away what is still in the send queue, the `leave` among it when
            // Nagle's algorithm held it back.
            let closing = async { while let Some(Ok(_)) = ws.next().await {} };
            let _ = tokio::time::timeout(CLOSING_HANDSHAKE_LIMIT, closing).await;
            return Ok(Outcome {
                first_media,
                largest_offer: peers.largest_offer,
            });
        }

        let mut deadline = next_ping;
        for t in [
            peers.publisher.poll_timeout(),
            peers.subscriber.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            deadline = deadline.min(t);
        }
        if sending {
            for t in &peers.tracks {
                deadline = deadline.min(t.source.due());
            }
        }

        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_)) | Err(_)) | None => bail!("signalling closed"),
                Some(Ok(frame)) => signalling.frame(&mut ws, frame, &mut peers).await?,
            },
            received = pub_socket.recv_from(&mut pub_buf) => {
                receive(&mut peers.publisher, &pub_socket, received?, &mut pub_buf);
            }
            received = crate::stamp::recv(&sub_socket, &mut sub_buf) => {
                receive_stamped(
                    &mut peers.subscriber,
                    &sub_socket,
                    received?,
                    &mut sub_buf,
                    &mut sub_events,
                );
            }
            _ = stop.changed() => {}
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                recorder.borrow_mut().record_lag(deadline, now);
                for pc in [&mut peers.publisher, &mut peers.subscriber] {
                    if pc.poll_timeout().is_some_and(|t| t <= now) {
                        let _ = pc.handle_timeout(now);
                    }
                }
                if now >= next_ping {
                    next_ping = now + PING_INTERVAL;
                    signalling.keepalive(&mut ws, started.elapsed()).await?;
                }
                if sending {
                    let sent_ns = recorder.borrow().ns(now);
                    for t in &mut peers.tracks {
                        if t.source.due() > now {
                            continue;
                        }
                        out.clear();
                        t.source.poll(now, sent_ns, &mut out);
                        for p in out.drain(..) {
                            let packet = Packet {
                                header: Header {
                                    version: 2,
                                    marker: p.marker,
                                    sequence_number: p.sequence_number,
                                    timestamp: p.timestamp,
                                    ..Header::default()
                                },
                                payload: p.payload,
                            };
                            peers.publisher.write_rtp(t.local, packet, t.mime, consulta_media::Keep::Copy, now)?;
                        }
                    }
                }
            }
        }
    }
}

/// LiveKit v0 signalling, as livekit-client speaks it.
struct LiveKit {
    /// `track_published` answers received.
    published: usize,
    offered: bool,
}

impl Signalling for LiveKit {
    async fn open(spec: &Spec, _peers: &mut Peers) -> anyhow::Result<(Self, Ws)> {
        let url = format!(
            "ws://{}/rtc?access_token={}&auto_subscribe={}&sdk=js&version=2.23.0&protocol=16&adaptive_stream=0",
            spec.http,
            spec.token,
            u8::from(spec.auto_subscribe)
        );
        let ws = connect(url).await?;
        Ok((
            Self {
                published: 0,
                offered: false,
            },
            ws,
        ))
    }

    async fn frame(
        &mut self,
        ws: &mut Ws,
        frame: Message,
        peers: &mut Peers,
    ) -> anyhow::Result<()> {
        let Message::Binary(bytes) = frame else {
            return Ok(());
        };
        let Ok(response) = signal::decode_response(&bytes) else {
            return Ok(());
        };
        let now = Instant::now();
        use signal_response::Message as M;
        match response.message {
            Some(M::Join(_)) => {
                peers.progress.joined = true;
                for t in &peers.tracks {
                    let video = t.source.is_video();
                    let cid = format!("TR_bench{}", t.source.stream);
                    send_livekit(
                        ws,
                        signal_request::Message::AddTrack(AddTrackRequest {
                            cid,
                            name: if video { "camera" } else { "microphone" }.to_owned(),
                            r#type: if video {
                                TrackType::Video
                            } else {
                                TrackType::Audio
                            }
                            .into(),
                            source: if video {
                                TrackSource::Camera
                            } else {
                                TrackSource::Microphone
                            }
                            .into(),
                            width: if video { 640 } else { 0 },
                            height: if video { 360 } else { 0 },
                            ..AddTrackRequest::default()
                        }),
                    )
                    .await?;
                }
            }
            Some(M::TrackPublished(_)) => {
                self.published += 1;
                peers.progress.published = self.published;
                if self.published == peers.tracks.len() && !self.offered {
                    self.offered = true;
                    let sdp = peers.publisher.create_offer(now)?;
                    send_livekit(
                        ws,
                        signal_request::Message::Offer(SessionDescription {
                            r#type: "offer".to_owned(),
                            sdp,
                            id: 1,
                            ..SessionDescription::default()
                        }),
                    )
                    .await?;
                }
            }
            Some(M::Answer(answer)) => {
                peers.publisher.accept_answer(answer.sdp, now)?;
                peers.progress.answered = true;
            }
            Some(M::Offer(offer)) => {
                let sdp = peers.answer_subscriber(offer.sdp, now)?;
                send_livekit(
                    ws,
                    signal_request::Message::Answer(SessionDescription {
                        r#type: "answer".to_owned(),
                        sdp,
                        id: offer.id,
                        ..SessionDescription::default()
                    }),
                )
                .await?;
            }
            Some(M::Trickle(trickle)) => {
                let pc = if trickle.target == 1 {
                    &mut peers.subscriber
                } else {
                    &mut peers.publisher
                };
                let _ = pc.add_remote_candidate(&trickle.candidate_init);
            }
            Some(M::Leave(_)) => bail!("the server asked us to leave"),
            _ => {}
        }
        Ok(())
    }

    async fn keepalive(&mut self, ws: &mut Ws, elapsed: Duration) -> anyhow::Result<()> {
        send_livekit(
            ws,
            signal_request::Message::PingReq(Ping {
                timestamp: i64::try_from(elapsed.as_millis()).unwrap_or(0),
                rtt: 0,
            }),
        )
        .await
    }

    async fn leave(&mut self, ws: &mut Ws) {
        let _ = send_livekit(
            ws,
            signal_request::Message::Leave(LeaveRequest {
                can_reconnect: false,
                reason: livekit_protocol::DisconnectReason::ClientInitiated.into(),
                ..LeaveRequest::default()
            }),
        )
        .await;
    }
}
