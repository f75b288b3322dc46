//! End-to-end tests of the signalling shell: a real server on 127.0.0.1:0, real WebSocket clients
//! speaking LiveKit protobuf, tokens minted here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consulta_sfu::auth::{self, ApiKeys, ApiSecret};
use consulta_sfu::signal;
use consulta_sfu::{SfuConfig, SfuServer, ShellConfig, SignallingOnly};
use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{
    AddTrackRequest, JoinResponse, ParticipantInfo, Ping, SignalRequest, TrackSource, TrackType,
    participant_info, signal_request, signal_response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const KEY: &str = "it-key";
const SECRET: &str = "it-secret-it-secret-it-secret-32";
const ROOM: &str = "consultation";

fn keys() -> ApiKeys {
    ApiKeys::new().with(KEY, ApiSecret::new(SECRET))
}

async fn start() -> SocketAddr {
    start_with(ShellConfig {
        keys: keys(),
        ..ShellConfig::default()
    })
    .await
}

async fn start_with(config: ShellConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(config, listener)
}

fn serve_on(config: ShellConfig, listener: tokio::net::TcpListener) -> SocketAddr {
    let server = SfuServer::new(config, Box::new(SignallingOnly));
    server.create_room(ROOM).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    addr
}

/// A server whose side of every connection has a 4 KiB send buffer (accepted sockets inherit
/// the listener's; Linux would otherwise let it grow to 4 MiB): a few frames fill it.
fn serve_with_small_send_buffers(config: ShellConfig) -> SocketAddr {
    let listening = tokio::net::TcpSocket::new_v4().unwrap();
    listening.set_send_buffer_size(4096).unwrap();
    listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    serve_on(config, listening.listen(64).unwrap())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(identity: &str, room: &str) -> String {
    let now = unix_now();
    let claims = auth::join_claims(KEY, identity, room, now, 600);
    auth::mint(&claims, &ApiSecret::new(SECRET)).unwrap()
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn connect(addr: SocketAddr, token: &str) -> Result<Self, tungstenite::Error> {
        let url = format!(
            "ws://{addr}/rtc?access_token={token}&auto_subscribe=1&sdk=js&version=2.21.0&protocol=16&adaptive_stream=1"
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws })
    }

    async fn join(addr: SocketAddr, identity: &str) -> (Self, JoinResponse) {
        let mut client = Self::connect(addr, &token(identity, ROOM)).await.unwrap();
        let join = client
            .recv_until(|m| match m {
                signal_response::Message::Join(j) => Some(j),
                _ => None,
            })
            .await;
        (client, join)
    }

    async fn send(&mut self, message: signal_request::Message) {
        let bytes = signal::encode_request(&SignalRequest {
            message: Some(message),
        });
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// The next signal message, or `None` once the server closed the socket.
    async fn recv(&mut self) -> Option<signal_response::Message> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("no frame within 5 s");
            match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    return signal::decode_response(&bytes).unwrap().message;
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn recv_until<T>(
        &mut self,
        mut pick: impl FnMut(signal_response::Message) -> Option<T>,
    ) -> T {
        loop {
            let message = self.recv().await.expect("socket closed while waiting");
            if let Some(found) = pick(message) {
                return found;
            }
        }
    }

    async fn next_update(&mut self) -> ParticipantInfo {
        self.recv_until(|m| match m {
            signal_response::Message::Update(u) => u.participants.into_iter().next(),
            _ => None,
        })
        .await
    }
}

/// A minimal HTTP/1.1 GET: status, headers (lower-cased names) and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn http_status(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn two_clients_join_see_each_other_publish_and_ping() {
    let addr = start().await;
    let (mut alice, alice_join) = Client::join(addr, "@alice:hs:DEV").await;
    assert_eq!(alice_join.room.as_ref().unwrap().name, ROOM);
    assert!(alice_join.other_participants.is_empty());
    assert!(!alice_join.server_version.is_empty());

    let (mut bob, bob_join) = Client::join(addr, "@bob:hs:DEV").await;
    assert_eq!(bob_join.other_participants.len(), 1);
    assert_eq!(bob_join.other_participants[0].identity, "@alice:hs:DEV");
    let bob_sid = bob_join.participant.unwrap().sid;
    let seen = alice.next_update().await;
    assert_eq!(seen.identity, "@bob:hs:DEV");
    assert_eq!(seen.sid, bob_sid);

    alice
        .send(signal_request::Message::AddTrack(AddTrackRequest {
            cid: "mic-1".into(),
            name: "microphone".into(),
            r#type: TrackType::Audio.into(),
            source: TrackSource::Microphone.into(),
            encryption: livekit_protocol::encryption::Type::Gcm.into(),
            ..AddTrackRequest::default()
        }))
        .await;
    let published = alice
        .recv_until(|m| match m {
            signal_response::Message::TrackPublished(t) => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(published.cid, "mic-1");
    let track = published.track.unwrap();
    let told = bob.next_update().await;
    assert_eq!(told.identity, "@alice:hs:DEV");
    assert_eq!(told.tracks.len(), 1);
    assert_eq!(told.tracks[0].sid, track.sid);
    assert_eq!(told.tracks[0].encryption, track.encryption);

    bob.send(signal_request::Message::PingReq(Ping {
        timestamp: 4242,
        rtt: 0,
    }))
    .await;
    let pong = bob
        .recv_until(|m| match m {
            signal_response::Message::PongResp(p) => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(pong.last_ping_timestamp, 4242);
    assert!(pong.timestamp > 0);

    // Garbage frames are dropped, not fatal.
    bob.ws
        .send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    bob.send(signal_request::Message::Ping(1)).await;
    let legacy = bob
        .recv_until(|m| match m {
            signal_response::Message::Pong(p) => Some(p),
            _ => None,
        })
        .await;
    assert!(legacy > 0);
}

#[tokio::test]
async fn tokens_for_another_room_or_badly_signed_are_refused() {
    let addr = start().await;
    let other = token("@eve:hs:DEV", "some-other-room");
    let (status, head, body) = http_get(addr, &format!("/rtc/validate?access_token={other}")).await;
    assert_eq!(status, 404);
    assert_eq!(body, "requested room does not exist");
    assert!(head.contains("access-control-allow-origin: *"));
    let refused = Client::connect(addr, &other).await.err().unwrap();
    assert_eq!(http_status(refused), 404);

    let good = token("@eve:hs:DEV", ROOM);
    let (status, head, body) = http_get(addr, &format!("/rtc/validate?access_token={good}")).await;
    assert_eq!((status, body.as_str()), (200, "success"));
    assert!(head.contains("access-control-allow-origin: *"));

    let forged = {
        let claims = auth::join_claims(KEY, "@eve:hs:DEV", ROOM, unix_now(), 600);
        auth::mint(&claims, &ApiSecret::new("not-the-secret")).unwrap()
    };
    let (status, head, _) = http_get(addr, &format!("/rtc/validate?access_token={forged}")).await;
    assert_eq!(status, 401);
    assert!(head.contains("access-control-allow-origin: *"));
    assert_eq!(
        http_status(Client::connect(addr, &forged).await.err().unwrap()),
        401
    );
    let (status, _, _) = http_get(addr, "/rtc/validate").await;
    assert_eq!(status, 401);

    // v1 is answered 404 with CORS and without the "room does not exist" text, so clients fall
    // back to v0.
    for path in ["/rtc/v1/validate", "/rtc/v1"] {
        let (status, head, body) = http_get(addr, &format!("{path}?access_token={good}")).await;
        assert_eq!(status, 404, "{path}");
        assert!(head.contains("access-control-allow-origin: *"), "{path}");
        assert!(!body.contains("requested room does not exist"), "{path}");
    }
}

/// An identity that joined and left as often as its budget allows is refused its next join with
/// 429 and the reason, at `/rtc/validate` (where livekit-client learns why a socket failed) and at
/// the WebSocket itself, before anything is created; another identity joins as before.
#[tokio::test]
async fn an_identity_past_its_join_budget_is_told_why_before_it_connects() {
    let addr = start().await;
    let (mut alice, _) = Client::join(addr, "@alice:hs:DEV").await;
    for _ in 0..consulta_sfu::core::JOIN_BURST {
        let (mut bob, _) = Client::join(addr, "@bob:hs:DEV").await;
        bob.send(signal_request::Message::Leave(
            livekit_protocol::LeaveRequest::default(),
        ))
        .await;
        while bob.recv().await.is_some() {}
    }
    let bob = token("@bob:hs:DEV", ROOM);
    let (status, head, body) = http_get(addr, &format!("/rtc/validate?access_token={bob}")).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        "too many joins for this identity; try again in a minute"
    );
    assert!(head.contains("access-control-allow-origin: *"));
    assert_eq!(
        http_status(Client::connect(addr, &bob).await.err().unwrap()),
        429
    );
    let (_, carol) = Client::join(addr, "@carol:hs:DEV").await;
    assert_eq!(carol.other_participants.len(), 1, "alice; bob is gone");
    alice.send(signal_request::Message::Ping(7)).await;
    alice
        .recv_until(|m| matches!(m, signal_response::Message::Pong(_)).then_some(()))
        .await;
}

#[tokio::test]
async fn duplicate_identity_kicks_the_first_session() {
    let addr = start().await;
    let (mut first, _) = Client::join(addr, "@alice:hs:DEV").await;
    let (_second, join) = Client::join(addr, "@alice:hs:DEV").await;
    assert!(join.other_participants.is_empty());
    let leave = first
        .recv_until(|m| match m {
            signal_response::Message::Leave(l) => Some(l),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.reason,
        livekit_protocol::DisconnectReason::DuplicateIdentity as i32
    );
    assert!(!leave.can_reconnect);
    assert!(first.recv().await.is_none(), "the first socket is closed");
}

/// A shell whose participants time out after 2 s without a ping.
async fn start_with_short_ping_timeout() -> SocketAddr {
    start_with(ShellConfig {
        keys: keys(),
        core: SfuConfig {
            ping_timeout: Duration::from_secs(2),
            ..SfuConfig::default()
        },
        ..ShellConfig::default()
    })
    .await
}

impl Client {
    /// The next participant update, pinging meanwhile so as not to time out.
    async fn next_update_pinging(&mut self) -> ParticipantInfo {
        loop {
            self.send(signal_request::Message::Ping(1)).await;
            let next = tokio::time::timeout(Duration::from_millis(300), self.next_update());
            if let Ok(update) = next.await {
                return update;
            }
        }
    }
}

/// Kept for a resume until its ping timeout (2 s here) and the grace after it
/// (`RESUME_GRACE`, 10 s) have passed.
#[tokio::test]
async fn closing_a_socket_tells_the_others_once_its_ping_timeout_passes() {
    let addr = start_with_short_ping_timeout().await;
    let (mut alice, _) = Client::join(addr, "@alice:hs:DEV").await;
    let (bob, bob_join) = Client::join(addr, "@bob:hs:DEV").await;
    let bob_sid = bob_join.participant.unwrap().sid;
    assert_eq!(alice.next_update().await.sid, bob_sid);
    let dropped = std::time::Instant::now();
    drop(bob);
    let gone = alice.next_update_pinging().await;
    // Not at once: kept for a resume until then.
    assert!(
        dropped.elapsed() >= consulta_sfu::core::RESUME_GRACE,
        "{:?}",
        dropped.elapsed()
    );
    assert_eq!(gone.sid, bob_sid);
    assert_eq!(gone.state, participant_info::State::Disconnected as i32);
    assert_eq!(
        gone.disconnect_reason,
        livekit_protocol::DisconnectReason::ConnectionTimeout as i32
    );
    assert!(gone.tracks.is_empty());
}

#[tokio::test]
async fn oversized_frames_close_only_that_connection() {
    let addr = start_with_short_ping_timeout().await;
    let (mut alice, _) = Client::join(addr, "@alice:hs:DEV").await;
    let (mut bob, bob_join) = Client::join(addr, "@bob:hs:DEV").await;
    assert_eq!(alice.next_update().await.identity, "@bob:hs:DEV");
    let huge = vec![0u8; signal::MAX_REQUEST_BYTES + 1];
    // The send itself may fail once the server hangs up; either way bob's session ends.
    let _ = bob.ws.send(Message::Binary(huge.into())).await;
    assert!(bob.recv().await.is_none());
    // A socket that failed: bob may resume until his ping timeout, then goes.
    let gone = alice.next_update_pinging().await;
    assert_eq!(gone.sid, bob_join.participant.unwrap().sid);
    assert_eq!(gone.state, participant_info::State::Disconnected as i32);
    // Alice is unaffected.
    alice.send(signal_request::Message::Ping(7)).await;
    alice
        .recv_until(|m| matches!(m, signal_response::Message::Pong(_)).then_some(()))
        .await;
}

/// A client sending frames faster than its budget (100 at once, 50 a second) is dropped at once,
/// not kept for a resume, and the room is told: whether its frames are requests (pings here) or
/// text frames, which the SFU does not read. The others are served throughout.
#[tokio::test]
async fn a_client_flooding_its_signalling_is_dropped_at_once_and_the_room_told() {
    let addr = start().await;
    let (mut alice, _) = Client::join(addr, "@alice:hs:DEV").await;
    for (identity, text) in [("@bob:hs:DEV", false), ("@carol:hs:DEV", true)] {
        let (mut flooder, join) = Client::join(addr, identity).await;
        let sid = join.participant.unwrap().sid;
        assert_eq!(alice.next_update().await.sid, sid);
        for n in 0..300 {
            let frame = if text {
                Message::Text(format!("{{\"ping\": {n}}}").into())
            } else {
                Message::Binary(
                    signal::encode_request(&SignalRequest {
                        message: Some(signal_request::Message::Ping(n)),
                    })
                    .into(),
                )
            };
            // Sends may fail once the server hung up.
            if flooder.ws.send(frame).await.is_err() {
                break;
            }
        }
        while flooder.recv().await.is_some() {}
        // Gone at once: well within the 5 s `next_update` waits, where a dropped socket is kept
        // for its ping timeout.
        let gone = alice.next_update().await;
        assert_eq!(gone.sid, sid, "{identity}");
        assert_eq!(gone.state, participant_info::State::Disconnected as i32);
    }
    alice.send(signal_request::Message::Ping(7)).await;
    alice
        .recv_until(|m| matches!(m, signal_response::Message::Pong(_)).then_some(()))
        .await;
}

impl Client {
    /// A participant whose every update is large (≈5 KB of metadata in its token), with a
    /// microphone to toggle: each toggle is an update sent to everyone. Returns the track's sid.
    async fn chatty(addr: SocketAddr) -> (Self, String) {
        let now = unix_now();
        let mut claims = auth::join_claims(KEY, "@chatty:hs:DEV", ROOM, now, 600);
        claims.metadata = "m".repeat(5_000);
        let big_token = auth::mint(&claims, &ApiSecret::new(SECRET)).unwrap();
        let mut chatty = Self::connect(addr, &big_token).await.unwrap();
        let track = chatty
            .publish(AddTrackRequest {
                cid: "mic-1".into(),
                name: "microphone".into(),
                r#type: TrackType::Audio.into(),
                source: TrackSource::Microphone.into(),
                ..AddTrackRequest::default()
            })
            .await;
        (chatty, track)
    }

    /// Publishes `add` and waits for its `track_published`: the track's sid.
    async fn publish(&mut self, add: AddTrackRequest) -> String {
        self.send(signal_request::Message::AddTrack(add)).await;
        self.recv_until(|m| match m {
            signal_response::Message::TrackPublished(t) => t.track.map(|t| t.sid),
            _ => None,
        })
        .await
    }

    async fn set_muted(&mut self, track: &str, muted: bool) {
        self.send(signal_request::Message::Mute(
            livekit_protocol::MuteTrackRequest {
                sid: track.to_owned(),
                muted,
            },
        ))
        .await;
    }

    /// A joined client whose socket has a 2 KiB receive buffer (a few unread updates fill it);
    /// with `reset_on_close`, dropping it resets the connection. Returns its participant sid.
    async fn with_small_buffer(
        addr: SocketAddr,
        identity: &str,
        reset_on_close: bool,
    ) -> (Self, String) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        if reset_on_close {
            socket.set_zero_linger().unwrap();
        }
        let stream = socket.connect(addr).await.unwrap();
        let url = format!(
            "ws://{addr}/rtc?access_token={}&auto_subscribe=1&sdk=js&version=2.21.0&protocol=16",
            token(identity, ROOM)
        );
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        let mut client = Self { ws };
        let sid = client
            .recv_until(|m| match m {
                signal_response::Message::Join(j) => j.participant.map(|p| p.sid),
                _ => None,
            })
            .await;
        (client, sid)
    }
}

/// A client that stops reading its signalling: once the frames for it no longer fit the socket's
/// buffers, a send waits out `send_timeout`, the client is dropped and the room is told. The
/// others are served throughout.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_room_told() {
    let send_timeout = Duration::from_secs(1);
    // Small socket buffers on both ends (the client's below), so that a few frames fill them.
    let addr = serve_with_small_send_buffers(ShellConfig {
        keys: keys(),
        send_timeout,
        ..ShellConfig::default()
    });
    // From the stalled client's join: its 15 s ping timeout runs from there too.
    let started = std::time::Instant::now();
    let (_stalled, stalled_sid) = Client::with_small_buffer(addr, "@stalled:hs:DEV", false).await;

    // Each of chatty's microphone toggles is a ≈5 KB update sent to everyone, the stalled client
    // included.
    let (mut chatty, track) = Client::chatty(addr).await;

    // Well under the ping timeout (15 s) and under the 10 s default send timeout, so only the
    // configured one can pass this.
    toggle_until_dropped(&mut chatty, &track, &stalled_sid, started, send_timeout * 4).await;
}

/// Toggles `chatty`'s microphone `track` (each toggle an update to everyone) until chatty hears
/// that `gone_sid` disconnected, which must be within `within` of `started`, without tracks;
/// chatty is still served then.
async fn toggle_until_dropped(
    chatty: &mut Client,
    track: &str,
    gone_sid: &str,
    started: std::time::Instant,
    within: Duration,
) {
    let gone = toggle_until_gone(chatty, track, gone_sid, started, within).await;
    eprintln!("dropped {:?} after joining", started.elapsed());
    assert!(gone.tracks.is_empty());
    chatty.send(signal_request::Message::Ping(9)).await;
    chatty
        .recv_until(|m| matches!(m, signal_response::Message::Pong(_)).then_some(()))
        .await;
}

/// [`toggle_until_dropped`]'s toggling: the info chatty is sent of `gone_sid` as it leaves.
async fn toggle_until_gone(
    chatty: &mut Client,
    track: &str,
    gone_sid: &str,
    started: std::time::Instant,
    within: Duration,
) -> ParticipantInfo {
    let mut muted = false;
    loop {
        assert!(
            started.elapsed() < within,
            "{gone_sid} was not dropped within {within:?}"
        );
        muted = !muted;
        chatty.set_muted(track, muted).await;
        // Read what chatty is sent (its own updates among them), looking for the departure; stay
        // under the 50 frames/s rate limit.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(40);
        while let Ok(Some(Ok(Message::Binary(bytes)))) =
            tokio::time::timeout_at(deadline, chatty.ws.next()).await
        {
            if let Some(signal_response::Message::Update(update)) =
                signal::decode_response(&bytes).unwrap().message
                && let Some(gone) = update.participants.into_iter().find(|p| {
                    p.sid == gone_sid && p.state == participant_info::State::Disconnected as i32
                })
            {
                return gone;
            }
        }
    }
}

/// A client whose queue of frames fills before a send times out (here: it does not read, and
/// the send timeout is longer than the test) is dropped at once and the room told, without
/// waiting for the frames queued for it to be sent. Before, the core heard of it only once they
/// were: for a client reading just under one frame per send timeout, hours of a participant
/// kept in the room with its frames all dropped (review helper-100).
#[tokio::test]
async fn a_client_whose_queue_fills_is_dropped_at_once_and_the_room_told() {
    let addr = serve_with_small_send_buffers(ShellConfig {
        keys: keys(),
        // Far longer than the test may take: only the full queue can drop it.
        send_timeout: Duration::from_secs(120),
        queue_frames: 8,
        ..ShellConfig::default()
    });
    let started = std::time::Instant::now();
    let (_slow, slow_sid) = Client::with_small_buffer(addr, "@slow:hs:DEV", false).await;
    let (mut chatty, track) = Client::chatty(addr).await;
    // Under the ping timeout (15 s) too.
    toggle_until_dropped(
        &mut chatty,
        &track,
        &slow_sid,
        started,
        Duration::from_secs(10),
    )
    .await;
}

/// A client that sends `leave` and closes its socket with frames unread resets the connection.
/// The server may be writing to it then (here: blocked on a full socket): the write fails, and
/// the `leave` waiting unread must still count, or the participant stays until its ping timeout
/// (15 s) and the room keeps its tracks. Found by the benchmark's churn (S5): about half the
/// leaving participants lingered, and the resident's subscriber offer grew to 143 m-lines.
#[tokio::test]
async fn a_leave_counts_when_the_server_was_writing_as_the_connection_reset() {
    // Small buffers on the server's side and on the leaving client's: a few updates fill them.
    let addr = serve_with_small_send_buffers(ShellConfig {
        keys: keys(),
        ..ShellConfig::default()
    });
    let (mut chatty, track) = Client::chatty(addr).await;

    // Closing sends a reset, as a socket closed with unread data does.
    let (mut leaving, leaving_sid) = Client::with_small_buffer(addr, "@leaving:hs:DEV", true).await;
    assert_eq!(chatty.next_update().await.sid, leaving_sid);

    // Each toggle sends the leaving client a ≈5 KB update it does not read: after a few, the
    // server's write to it waits for room in the socket (well within the 10 s send timeout).
    let mut muted = false;
    for _ in 0..12 {
        muted = !muted;
        chatty.set_muted(&track, muted).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    leaving
        .send(signal_request::Message::Leave(
            livekit_protocol::LeaveRequest::default(),
        ))
        .await;
    let left = std::time::Instant::now();
    drop(leaving);

    let gone = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let update = chatty.next_update().await;
            if update.sid == leaving_sid
                && update.state == participant_info::State::Disconnected as i32
            {
                return update;
            }
        }
    })
    .await
    .expect("the leave was lost: the participant stays for a resume until its ping timeout");
    eprintln!("departure told {:?} after the leave", left.elapsed());
    assert_eq!(
        gone.disconnect_reason,
        livekit_protocol::DisconnectReason::ClientInitiated as i32
    );
    assert!(gone.tracks.is_empty());
}

#[tokio::test]
async fn a_dropped_socket_resumes_its_session() {
    let addr = start_with_short_ping_timeout().await;
    let (alice, alice_join) = Client::join(addr, "@alice:hs:DEV").await;
    let alice_sid = alice_join.participant.unwrap().sid;
    let (mut bob, _) = Client::join(addr, "@bob:hs:DEV").await;
    drop(alice);
    let url = format!(
        "ws://{addr}/rtc?access_token={}&reconnect=1&sid={alice_sid}&auto_subscribe=1&protocol=16",
        token("@alice:hs:DEV", ROOM)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut alice = Client { ws };
    match alice.recv().await {
        Some(signal_response::Message::Reconnect(reconnect)) => {
            assert_eq!(
                reconnect.client_configuration.unwrap().resume_connection,
                livekit_protocol::ClientConfigSetting::Enabled as i32
            );
        }
        other => panic!("expected a reconnect response, got {other:?}"),
    }
    // Everyone as they are now, herself first (her client sets a mute lost with the socket
    // again from it).
    let everyone: Vec<(String, String)> = alice
        .recv_until(|m| match m {
            signal_response::Message::Update(u) => Some(u.participants),
            _ => None,
        })
        .await
        .into_iter()
        .map(|p| (p.identity, p.sid))
        .collect();
    assert_eq!(everyone.len(), 2, "{everyone:?}");
    assert_eq!(everyone[0], ("@alice:hs:DEV".to_owned(), alice_sid.clone()));
    assert_eq!(everyone[1].0, "@bob:hs:DEV");
    // Past the ping timeout of the dropped socket, bob has heard nothing of her going: she is
    // the same participant, pinging on her new connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        alice.send(signal_request::Message::Ping(1)).await;
        bob.send(signal_request::Message::Ping(1)).await;
        if let Ok(update) =
            tokio::time::timeout(Duration::from_millis(300), bob.next_update()).await
        {
            panic!("bob was told of alice: {update:?}");
        }
    }
}

/// After a resume livekit-client sends a `track_setting` for each video track it receives, all
/// at once (`updateSubscriptions`), on top of its sync state, candidates and pings. In a room of
/// 96 video tracks that is past the ordinary burst of 100 frames, which used to close the
/// resumed connection; settings for the tracks received are now owed beside it, a few each. A
/// flood of settings past them is still dropped.
#[tokio::test]
async fn a_resume_in_a_room_of_many_cameras_may_set_each_one() {
    let addr = start().await;
    let mut publishers = Vec::new();
    let mut cameras = Vec::new();
    for n in 0..12 {
        let (mut publisher, _) = Client::join(addr, &format!("@doctor{n}:hs:DEV")).await;
        for cid in 0..8 {
            let sid = publisher
                .publish(AddTrackRequest {
                    cid: format!("cam-{cid}"),
                    name: "camera".into(),
                    r#type: TrackType::Video.into(),
                    source: TrackSource::Camera.into(),
                    width: 640,
                    height: 360,
                    ..AddTrackRequest::default()
                })
                .await;
            cameras.push(sid);
        }
        publishers.push(publisher);
    }
    assert_eq!(cameras.len(), 96);
    let (alice, join) = Client::join(addr, "@alice:hs:DEV").await;
    let alice_sid = join.participant.unwrap().sid;
    drop(alice);
    let resume = || {
        format!(
            "ws://{addr}/rtc?access_token={}&reconnect=1&sid={alice_sid}&auto_subscribe=1&protocol=16",
            token("@alice:hs:DEV", ROOM)
        )
    };
    let (ws, _) = tokio_tungstenite::connect_async(resume()).await.unwrap();
    let mut alice = Client { ws };
    alice
        .recv_until(|m| matches!(m, signal_response::Message::Reconnect(_)).then_some(()))
        .await;
    // What the client sends at once: its sync state, a candidate or two, a ping, then a
    // setting per camera; and pings while the answer comes.
    let setting = |sid: &String| {
        signal_request::Message::TrackSetting(livekit_protocol::UpdateTrackSettings {
            track_sids: vec![sid.clone()],
            width: 320,
            height: 180,
            ..livekit_protocol::UpdateTrackSettings::default()
        })
    };
    alice
        .send(signal_request::Message::SyncState(
            livekit_protocol::SyncState::default(),
        ))
        .await;
    // Fifty pings: without what is owed, the 148 frames would pass the burst by 48, about a
    // second of the budget's refill if read at once.
    for n in 0..50 {
        alice.send(signal_request::Message::Ping(n)).await;
    }
    for sid in &cameras {
        alice.send(setting(sid)).await;
    }
    alice.send(signal_request::Message::Ping(99)).await;
    let pong = alice
        .recv_until(|m| match m {
            signal_response::Message::Pong(at) => Some(at),
            _ => None,
        })
        .await;
    assert!(pong > 0);
    // Every frame was read: the last ping is answered, on a connection still open.
    let mut pongs = 1;
    while pongs < 51 {
        match alice.recv().await {
            Some(signal_response::Message::Pong(_)) => pongs += 1,
            Some(_) => {}
            None => panic!("the resumed connection was closed after {pongs} pongs"),
        }
    }
    // What is owed runs out (four settings a camera): a flood of settings past it and the
    // burst goes at once, and the room is told.
    for n in 0..1_000 {
        let bytes = signal::encode_request(&SignalRequest {
            message: Some(setting(&cameras[n % cameras.len()])),
        });
        if alice.ws.send(Message::Binary(bytes.into())).await.is_err() {
            break;
        }
    }
    while alice.recv().await.is_some() {}
    let gone = publishers[0]
        .recv_until(|m| match m {
            signal_response::Message::Update(u) => u.participants.into_iter().find(|p| {
                p.sid == alice_sid && p.state == participant_info::State::Disconnected as i32
            }),
            _ => None,
        })
        .await;
    assert_eq!(gone.identity, "@alice:hs:DEV");
}

#[tokio::test]
async fn resuming_an_unknown_session_is_told_to_rejoin() {
    let addr = start().await;
    let url = format!(
        "ws://{addr}/rtc?access_token={}&reconnect=1&sid=PA_old",
        token("@alice:hs:DEV", ROOM)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut client = Client { ws };
    match client.recv().await {
        Some(signal_response::Message::Leave(leave)) => {
            assert!(leave.can_reconnect);
            assert_eq!(
                leave.action,
                livekit_protocol::leave_request::Action::Reconnect as i32
            );
        }
        other => panic!("expected leave, got {other:?}"),
    }
}

#[tokio::test]
async fn connected_clients_are_sent_renewed_tokens_that_join_again() {
    let addr = start_with(ShellConfig {
        keys: keys(),
        core: SfuConfig {
            token_refresh_interval: Duration::from_secs(1),
            ..SfuConfig::default()
        },
        ..ShellConfig::default()
    })
    .await;
    let (mut alice, _) = Client::join(addr, "alice").await;
    let renewed = alice
        .recv_until(|m| match m {
            signal_response::Message::RefreshToken(token) => Some(token),
            _ => None,
        })
        .await;
    let now = unix_now();
    let grant = auth::verify_join(&renewed, &keys(), now, Some(ROOM)).unwrap();
    assert_eq!(grant.identity, "alice");
    assert_eq!(grant.api_key, KEY);
    // What a reconnect does with it: a new session under the same identity, which replaces
    // the old one.
    let mut again = Client::connect(addr, &renewed).await.unwrap();
    let join = again
        .recv_until(|m| match m {
            signal_response::Message::Join(j) => Some(j),
            _ => None,
        })
        .await;
    assert_eq!(join.participant.unwrap().identity, "alice");
}

/// A shutdown: the joined client is told to join again (`leave`, SERVER_SHUTDOWN, RECONNECT) and
/// its socket closed; `shut_down` returns once it is; newcomers are refused with 503 while the
/// listener still answers.
#[tokio::test]
async fn a_shutdown_tells_clients_to_join_again_and_refuses_newcomers() {
    use livekit_protocol::{DisconnectReason, leave_request};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = SfuServer::new(
        ShellConfig {
            keys: keys(),
            ..ShellConfig::default()
        },
        Box::new(SignallingOnly),
    );
    server.create_room(ROOM).unwrap();
    tokio::spawn(server.clone().serve(listener));
    let (mut alice, _) = Client::join(addr, "@alice:hs:DEV").await;

    assert_eq!(server.signalling_sockets(), 1);
    tokio::time::timeout(Duration::from_secs(5), server.shut_down())
        .await
        .expect("returns once the socket is closed, well before the send timeout");
    assert_eq!(server.signalling_sockets(), 0, "it waited for the socket");
    let leave = alice
        .recv_until(|m| match m {
            signal_response::Message::Leave(leave) => Some(leave),
            _ => None,
        })
        .await;
    assert!(leave.can_reconnect);
    assert_eq!(leave.reason, DisconnectReason::ServerShutdown as i32);
    assert_eq!(leave.action, leave_request::Action::Reconnect as i32);
    assert_eq!(alice.recv().await, None, "then the socket closes");

    let good = token("@bob:hs:DEV", ROOM);
    let (status, head, body) = http_get(addr, &format!("/rtc/validate?access_token={good}")).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "the server is shutting down")
    );
    assert!(head.contains("access-control-allow-origin: *"));
    assert_eq!(
        http_status(Client::connect(addr, &good).await.err().unwrap()),
        503
    );
}
