//! The tokio/axum shell: HTTP routes, WebSockets and timers around the sans-IO core.
//!
//! Implements spec `matrixrtc-livekit.md` §2.1 (endpoints, query parameters, validate semantics)
//! and §2.5's forcing of v0: `/rtc/v1` and `/rtc/v1/validate` answer 404 with CORS so
//! livekit-client ≥ 2.17 falls back to `/rtc`. The shell reads the clock, verifies tokens, owns
//! the sockets and one timer task, and hands everything else to [`Sfu`]. One mutex guards the
//! core; every call drains the core's outputs into per-connection channels before releasing it,
//! so frames leave in the order the core produced them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{SignalRequest, SignalResponse};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::auth::{self, ApiKeys, JoinGrant};
use crate::core::{JoinError, JoinOptions, LeaveAction, Output, Sfu, SfuConfig};
use crate::ids::{ConnId, RoomName};
use crate::media::{MediaEngine, MediaEvent};
use crate::signal::{self, MAX_REQUEST_BYTES, OwedSettings, RateLimiter};

/// Read buffer of a signalling WebSocket. tungstenite's default (128 KiB) is zero-filled on the
/// first read, so it was 128 KiB of resident memory per participant (heaptrack, S1 at 40 rooms);
/// signalling frames are small and a larger one (an SDP answer) grows the buffer while it lasts.
const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// Signalling frames queued for one client. A client that reads keeps this near empty; one that
/// stops reading is disconnected when it fills, rather than growing the queue without bound.
const OUTBOUND_QUEUE_FRAMES: usize = 1024;

/// What the shell needs to run.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// API keys accepted in tokens.
    pub keys: ApiKeys,
    /// Core tunables.
    pub core: SfuConfig,
    /// How long one signalling frame (or the closing handshake) may wait for the client's socket
    /// to take it before the client is dropped and the room told: a client that stops reading must
    /// not hold its task, or its queue, forever. Default 10 s.
    pub send_timeout: Duration,
    /// How many frames may wait for a client's socket. A client whose queue is full reads more
    /// slowly than its room changes: it is dropped at once and the room told. Default 1024.
    pub queue_frames: usize,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            keys: ApiKeys::default(),
            core: SfuConfig::default(),
            send_timeout: Duration::from_secs(10),
            queue_frames: OUTBOUND_QUEUE_FRAMES,
        }
    }
}

enum Outbound {
    Frame(Vec<u8>),
    Close,
}

struct Hub {
    core: Sfu<Box<dyn MediaEngine>>,
    routes: HashMap<ConnId, Route>,
}

/// Where a connection's frames go: its socket task's queue, and whether the hub gave up on it.
struct Route {
    tx: mpsc::Sender<Outbound>,
    /// Set when its queue was full: what is still queued is for a participant gone, so the
    /// socket task closes at its next frame instead of sending them.
    abandoned: Arc<AtomicBool>,
}

impl Hub {
    /// Moves everything the core produced into the connections' queues.
    fn pump(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { conn, message } => {
                    let Some(route) = self.routes.get(&conn) else {
                        continue;
                    };
                    let frame = Outbound::Frame(signal::encode_response(&message));
                    // A closed receiver means the socket task is already gone. A full queue means
                    // the client stopped reading: the participant goes at once (the others are
                    // told), and its socket task closes at its next frame. Before, the core
                    // learnt of it only once the task had sent what was queued, each frame
                    // taking up to the send timeout: hours of a participant kept in the room
                    // whose frames were all dropped (review helper-100).
                    if let Err(mpsc::error::TrySendError::Full(_)) = route.tx.try_send(frame) {
                        tracing::info!(%conn, "client is not reading its signalling, closing");
                        route.abandoned.store(true, Ordering::Relaxed);
                        self.routes.remove(&conn);
                        self.core.handle_kick(Instant::now(), conn);
                    }
                }
                Output::Close { conn } => {
                    if let Some(route) = self.routes.remove(&conn)
                        && route.tx.try_send(Outbound::Close).is_err()
                    {
                        // The queue is full: what waits in it is for a session ended (a
                        // participant removed, or resumed elsewhere), so the socket task closes
                        // at its next frame rather than sending them.
                        route.abandoned.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// A running SFU signalling node. Cheap to clone.
#[derive(Clone)]
pub struct SfuServer {
    hub: Arc<Mutex<Hub>>,
    keys: Arc<ApiKeys>,
    send_timeout: Duration,
    queue_frames: usize,
    /// Signalling sockets whose task is still running ([`SocketCount`]).
    sockets: Arc<watch::Sender<usize>>,
}

/// Counts one socket task for as long as it lives, so that [`SfuServer::shut_down`] can wait for
/// the last one to have sent its `leave` and closed.
struct SocketCount(Arc<watch::Sender<usize>>);

impl SocketCount {
    fn new(sockets: &Arc<watch::Sender<usize>>) -> Self {
        sockets.send_modify(|n| *n += 1);
        Self(Arc::clone(sockets))
    }
}

impl Drop for SocketCount {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Aborts a task when dropped: the timer of a server whose serving future is dropped (aborted)
/// must not run on, holding the core, forever.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for SfuServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuServer").finish_non_exhaustive()
    }
}

impl SfuServer {
    /// A node with no rooms, reading the clock once to anchor the core's wall-clock timestamps.
    pub fn new(mut config: ShellConfig, media: Box<dyn MediaEngine>) -> Self {
        if config.core.sid_seed == 0 {
            config.core.sid_seed = rand::random();
        }
        let mut core = Sfu::new(config.core, media, Instant::now(), unix_ms());
        core.set_signing_keys(config.keys.clone());
        Self {
            hub: Arc::new(Mutex::new(Hub {
                core,
                routes: HashMap::new(),
            })),
            keys: Arc::new(config.keys),
            send_timeout: config.send_timeout,
            queue_frames: config.queue_frames.max(1),
            sockets: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Ends every session for a shutdown ([`Sfu::shut_down`]): each client is sent a `leave` that
    /// has it join again, and its socket is closed; joins are refused from now on. Returns once
    /// every socket task has ended, or after the send timeout (a client that stopped reading).
    pub async fn shut_down(&self) {
        self.close_sessions();
        let mut sockets = self.sockets.subscribe();
        if timeout(self.send_timeout, sockets.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::info!(
                left = *sockets.borrow(),
                "shutting down with signalling sockets still open"
            );
        }
    }

    /// Signalling sockets open (or being upgraded).
    pub fn signalling_sockets(&self) -> usize {
        *self.sockets.borrow()
    }

    /// [`SfuServer::shut_down`] without waiting: the socket tasks send the `leave` and close on
    /// their own.
    pub fn close_sessions(&self) {
        let mut hub = self.lock();
        hub.core.shut_down(Instant::now());
        hub.pump();
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        // The core keeps no invariant across a panic that a later call could break further.
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a room (for the RTC auth service, which creates rooms for full-access users).
    pub fn create_room(&self, name: &str) -> Result<(), JoinError> {
        let name = RoomName::parse(name).ok_or(JoinError::InvalidRoom)?;
        self.lock().core.create_room(Instant::now(), name);
        Ok(())
    }

    /// Feeds an event from the media engine.
    pub fn handle_media_event(&self, event: MediaEvent) {
        let mut hub = self.lock();
        hub.core.handle_media_event(Instant::now(), event);
        hub.pump();
    }

    /// The routes: `/rtc`, `/rtc/validate`, `/rtc/v1`, `/rtc/v1/validate`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/rtc", get(get_rtc))
            .route("/rtc/validate", get(get_rtc_validate))
            .route("/rtc/v1", get(get_rtc_v1))
            .route("/rtc/v1/validate", get(get_rtc_v1))
            .with_state(self.clone())
    }

    /// Rooms open and participants in them.
    pub fn counts(&self) -> (usize, usize) {
        self.lock().core.counts()
    }

    /// Serves the routes on `listener` and runs the core's timer until the server stops.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_with(listener, Router::new(), std::future::pending())
            .await
    }

    /// Like [`serve`](Self::serve), with more routes (metrics, health) on the same listener, until
    /// `stop` completes: then no new connection is taken, and plain HTTP connections (a metrics
    /// scraper's kept-alive one) close once idle. Signalling sockets are not waited for; end
    /// them first with [`SfuServer::shut_down`].
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        extra: Router,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let _ticker = AbortOnDrop(tokio::spawn(self.clone().run_timer()));
        axum::serve(listener, self.router().merge(extra))
            .with_graceful_shutdown(stop)
            .await
    }

    async fn run_timer(self) {
        loop {
            let next = self.lock().core.poll_timeout();
            let now = Instant::now();
            let wait = next.map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(now).min(Duration::from_secs(1))
            });
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
            let mut hub = self.lock();
            hub.core.handle_timeout(Instant::now());
            hub.pump();
        }
    }

    /// Token and room checks shared by `/rtc` and `/rtc/validate`. Nothing is created.
    fn authorize(
        &self,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<JoinGrant, Refusal> {
        let token = query
            .get("access_token")
            .map(String::as_str)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "missing access token".to_owned()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let grant = auth::verify_join(token, &self.keys, now, None).map_err(|e| {
            tracing::info!(error = %e, "access token refused");
            Refusal(StatusCode::UNAUTHORIZED, e.to_string())
        })?;
        match self.lock().core.check_join(Instant::now(), &grant) {
            Ok(_) => Ok(grant),
            Err(JoinError::RoomNotFound) => Err(Refusal(
                StatusCode::NOT_FOUND,
                JoinError::RoomNotFound.to_string(),
            )),
            Err(JoinError::ShuttingDown) => Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                JoinError::ShuttingDown.to_string(),
            )),
            Err(JoinError::TooManyJoins) => Err(Refusal(
                StatusCode::TOO_MANY_REQUESTS,
                JoinError::TooManyJoins.to_string(),
            )),
            Err(e) => Err(Refusal(StatusCode::FORBIDDEN, e.to_string())),
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A refused `/rtc` or `/rtc/validate`: status and plain-text reason (livekit-client shows it).
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.0, &self.1)
    }
}

fn refuse(status: StatusCode, body: &str) -> Response {
    with_cors((status, body.to_owned()).into_response())
}

fn with_cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn flag(query: &HashMap<String, String>, name: &str, default: bool) -> bool {
    match query.get(name).map(String::as_str) {
        Some("1" | "true") => true,
        Some("0" | "false") => false,
        _ => default,
    }
}

/// `GET /rtc/validate`: what livekit-client fetches after a failed WebSocket to learn why.
async fn get_rtc_validate(
    State(server): State<SfuServer>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match server.authorize(&query, &headers) {
        Ok(_) => with_cors((StatusCode::OK, "success").into_response()),
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET /rtc/v1[/validate]`: single-PeerConnection signalling is not implemented; a 404 with
/// CORS (and without the "room does not exist" text) makes the client fall back to v0.
async fn get_rtc_v1() -> Response {
    refuse(StatusCode::NOT_FOUND, "v1 signalling is not supported")
}

/// `GET /rtc`: the v0 signalling WebSocket.
async fn get_rtc(
    State(server): State<SfuServer>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let grant = match server.authorize(&query, &headers) {
        Ok(grant) => grant,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(upgrade) = upgrade else {
        return refuse(StatusCode::NOT_FOUND, "not a WebSocket request");
    };
    // Counted from here, not from the socket task's start: a shutdown between the two must wait
    // for this client too, or it would exit before telling it.
    let counted = SocketCount::new(&server.sockets);
    let mut auto_subscribe = flag(&query, "auto_subscribe", true);
    let mut adaptive_stream = flag(&query, "adaptive_stream", false);
    let mut client_protocol = query
        .get("client_protocol")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // A resume names the session it had: `reconnect=1&sid=…`, or the same in a `join_request`.
    let mut resume =
        flag(&query, "reconnect", false).then(|| query.get("sid").cloned().unwrap_or_default());
    if let Some(param) = query.get("join_request") {
        match signal::decode_join_request(param) {
            Ok(join) => {
                if let Some(settings) = join.connection_settings {
                    auto_subscribe = settings.auto_subscribe;
                    adaptive_stream = settings.adaptive_stream;
                }
                if let Some(info) = join.client_info {
                    client_protocol = info.client_protocol;
                }
                if join.reconnect {
                    resume = Some(join.participant_sid);
                }
            }
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    let options = JoinOptions {
        auto_subscribe,
        adaptive_stream,
        protocol: query
            .get("protocol")
            .and_then(|p| p.parse().ok())
            .unwrap_or(crate::core::PROTOCOL_VERSION),
        client_protocol,
    };
    upgrade
        .max_message_size(MAX_REQUEST_BYTES)
        .max_frame_size(MAX_REQUEST_BYTES)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| run_socket(server, socket, grant, options, resume, counted))
}

fn leave_frame(reason: livekit_protocol::DisconnectReason, action: LeaveAction) -> Vec<u8> {
    signal::encode_response(&SignalResponse {
        message: Some(crate::core::leave(reason, action)),
    })
}

async fn run_socket(
    server: SfuServer,
    mut socket: WebSocket,
    grant: JoinGrant,
    options: JoinOptions,
    resume: Option<String>,
    _counted: SocketCount,
) {
    let send_timeout = server.send_timeout;
    let (tx, mut rx) = mpsc::channel(server.queue_frames);
    let abandoned = Arc::new(AtomicBool::new(false));
    let joined = {
        let mut hub = server.lock();
        let joined = match &resume {
            Some(sid) => hub.core.handle_resume(Instant::now(), &grant, sid),
            None => hub.core.handle_join(Instant::now(), grant, options),
        };
        // The video tracks it receives, whose settings its client sends at once.
        let joined = joined.map(|conn| (conn, hub.core.video_subscriptions(conn)));
        if let Ok((conn, _)) = &joined {
            hub.routes.insert(
                *conn,
                Route {
                    tx,
                    abandoned: Arc::clone(&abandoned),
                },
            );
        }
        hub.pump();
        joined
    };
    let (conn, received) = match joined {
        Ok(joined) => joined,
        Err(error) => {
            use livekit_protocol::DisconnectReason;
            let (reason, action) = match error {
                // Nothing to resume (it left or timed out): a full rejoin (spec §2.11).
                JoinError::NoSession => {
                    tracing::info!("nothing to resume; asking for a full rejoin");
                    (DisconnectReason::StateMismatch, LeaveAction::Reconnect)
                }
                JoinError::ShuttingDown => {
                    (DisconnectReason::ServerShutdown, LeaveAction::Reconnect)
                }
                error => {
                    tracing::info!(%error, "join refused after upgrade");
                    (DisconnectReason::JoinFailure, LeaveAction::Disconnect)
                }
            };
            let frame = leave_frame(reason, action);
            let _ = timeout(send_timeout, socket.send(Message::Binary(frame.into()))).await;
            let _ = timeout(send_timeout, socket.close()).await;
            return;
        }
    };
    let (mut sink, mut stream) = socket.split();
    // The settings its client sends at once for each video track it receives, beside the
    // budget the rest of its frames need.
    let mut budget = Budget {
        limiter: RateLimiter::default(),
        owed: OwedSettings::new(
            received.into_iter().take(MAX_TRACKS_OWED),
            SETTINGS_OWED_PER_TRACK,
            Instant::now() + SETTINGS_OWED_FOR,
        ),
    };
    // Whether the server gave up on the client (which then goes at once) rather than the socket
    // dropping (the participant stays for a resume until its ping timeout).
    let mut kicked = false;
    loop {
        tokio::select! {
            outbound = rx.recv() => match outbound {
                Some(Outbound::Frame(_)) if abandoned.load(Ordering::Relaxed) => {
                    kicked = true;
                    let _ = timeout(send_timeout, sink.close()).await;
                    break;
                }
                Some(Outbound::Frame(frame)) => {
                    let sent = timeout(send_timeout, sink.send(Message::Binary(frame.into())));
                    match sent.await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(%conn, %error, "signalling write failed");
                            // The client went. What it sent just before (a `leave`, with the
                            // connection reset right after by a client closing with unread
                            // frames) may still wait unread: without it the participant would
                            // stay for a resume until its ping timeout.
                            let left = read_what_is_left(&server, conn, &mut stream, &mut budget);
                            kicked = left.await.is_err();
                            break;
                        }
                        Err(_) => {
                            tracing::info!(%conn, "client is not reading its signalling (send timed out), closing");
                            kicked = true;
                            break;
                        }
                    }
                }
                Some(Outbound::Close) | None => {
                    // `None`: the hub dropped the route, its queue full.
                    kicked = true;
                    let _ = timeout(send_timeout, sink.close()).await;
                    break;
                }
            },
            inbound = stream.next() => match inbound {
                Some(Ok(Message::Binary(bytes))) => {
                    if server.handle_frame(conn, &mut budget, &bytes).is_err() {
                        kicked = true;
                        let _ = timeout(send_timeout, sink.close()).await;
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(error)) => {
                    tracing::debug!(%conn, %error, "signalling read failed");
                    break;
                }
                // Text (protobuf JSON) framing is not supported, and pings are answered by the
                // socket; each still takes a read (and an answer), so each counts.
                Some(Ok(_)) => {
                    if server.take_budget(conn, &mut budget).is_err() {
                        kicked = true;
                        let _ = timeout(send_timeout, sink.close()).await;
                        break;
                    }
                }
            },
        }
    }
    let mut hub = server.lock();
    hub.routes.remove(&conn);
    if kicked {
        hub.core.handle_kick(Instant::now(), conn);
    } else {
        hub.core.handle_disconnect(Instant::now(), conn);
    }
    hub.pump();
}

/// What a connection may send: its budget, and the settings it is owed beside it (one after a
/// resume, up to three after a join, per video track it receives, and one to spare; for its
/// first 30 s: a resume whose connections take 17 s to come back sends them then) for at most
/// 1024 tracks.
struct Budget {
    limiter: RateLimiter,
    owed: OwedSettings,
}

const MAX_TRACKS_OWED: usize = 1024;
const SETTINGS_OWED_PER_TRACK: u8 = 4;
const SETTINGS_OWED_FOR: Duration = Duration::from_secs(30);

/// How long a connection whose write failed is still read for what its client sent before going.
/// Frames already received are there at once; a client that is really gone sends nothing more.
const READ_AFTER_WRITE_FAILURE: Duration = Duration::from_millis(500);

/// Hands the core what `stream` still holds (within [`READ_AFTER_WRITE_FAILURE`]), until it ends;
/// an error if the client exceeded the rate limit meanwhile (it goes at once, as in the main loop).
async fn read_what_is_left(
    server: &SfuServer,
    conn: ConnId,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    budget: &mut Budget,
) -> Result<(), RateExceeded> {
    let deadline = tokio::time::Instant::now() + READ_AFTER_WRITE_FAILURE;
    loop {
        let message = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => {
                tracing::debug!(%conn, %error, "signalling read after a failed write failed");
                return Ok(());
            }
            Ok(None) | Err(_) => return Ok(()),
        };
        match message {
            Message::Binary(bytes) => server.handle_frame(conn, budget, &bytes)?,
            Message::Close(_) => return Ok(()),
            _ => server.take_budget(conn, budget)?,
        }
    }
}

/// A client sent more signalling frames than [`RateLimiter`] allows.
struct RateExceeded;

impl SfuServer {
    /// Decodes one binary signalling frame and hands it to the core, once it is paid for: a
    /// setting owed, or a token of the budget; an undecodable frame is skipped.
    fn handle_frame(
        &self,
        conn: ConnId,
        budget: &mut Budget,
        bytes: &[u8],
    ) -> Result<(), RateExceeded> {
        let request = signal::decode_request(bytes);
        let now = Instant::now();
        let owed = request
            .as_ref()
            .is_ok_and(|request| budget.owed.take(request, now));
        if !owed {
            Self::spent(conn, budget.limiter.check(now))?;
        }
        match request {
            Ok(request) => self.handle_request(conn, request),
            Err(e) => tracing::debug!(%conn, error = %e, "undecodable signal frame"),
        }
        Ok(())
    }

    /// Counts one frame from `conn` against its budget: an error once it sent too many.
    fn take_budget(&self, conn: ConnId, budget: &mut Budget) -> Result<(), RateExceeded> {
        let now = Instant::now();
        budget.owed.lapse(now);
        Self::spent(conn, budget.limiter.check(now))
    }

    /// `taken` as the connection's fate: past its budget, it goes.
    fn spent(conn: ConnId, taken: Result<(), signal::SignalError>) -> Result<(), RateExceeded> {
        if taken.is_err() {
            tracing::info!(%conn, "signal rate limit exceeded, closing");
            return Err(RateExceeded);
        }
        Ok(())
    }

    fn handle_request(&self, conn: ConnId, request: SignalRequest) {
        let mut hub = self.lock();
        hub.core.handle_request(Instant::now(), conn, request);
        hub.pump();
    }
}
