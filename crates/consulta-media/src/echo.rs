//! The echo server used by the browser end-to-end test: `POST /offer` takes a browser's SDP offer
//! (one sendrecv video track) and answers it; every video RTP packet the browser sends is written
//! back to it on the server's own video track in the same peer connection.
//!
//! [`Echo`] is the sans-IO part (what to do with each [`MediaEvent`]); [`EchoServer`] is the shell:
//! an axum app that serves the test page, answers offers, and runs one [`shell::drive`] task per
//! peer connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::peer::{
    Error, LocalTrack, MediaConfig, MediaEvent, MediaKind, MediaPeer, PeerState, RtcpDelivery,
    SrtpProfiles,
};
use crate::shell;

/// Keyframe requests towards the browser are throttled to one per second (the receiving browser
/// asks again on its own if it still lacks one).
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// The SSRC of the server's echo track (one per peer connection, so a constant will do).
const ECHO_SSRC: u32 = 0x00EC_40EC;

/// What one echo session saw, for the test to assert on and the docs to quote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EchoStats {
    /// Video RTP packets received from the browser.
    pub rtp_received: u64,
    /// Of those, written back on the echo track.
    pub rtp_echoed: u64,
    /// Writes the stack refused.
    pub echo_errors: u64,
    /// RTCP PLIs sent to the browser's sender.
    pub keyframe_requests: u64,
    /// RTCP compound packets received (the echo server asks for all of them).
    pub rtcp_received: u64,
    /// Keyframe requests (PLI/FIR) the browser's receiver sent about the echo track.
    pub keyframe_requests_from_browser: u64,
    /// Milliseconds from applying the offer to the connection being up (ICE + DTLS).
    pub connected_after_ms: Option<f64>,
    /// Milliseconds from applying the offer to the first RTP packet.
    pub first_rtp_after_ms: Option<f64>,
    /// Every (mid, rid, ssrc) seen on incoming RTP, as `mid/rid/ssrc`.
    pub streams: Vec<String>,
    /// The last connection state.
    pub state: Option<String>,
}

/// The echo logic for one peer connection, sans-IO.
#[derive(Debug)]
pub struct Echo {
    track: LocalTrack,
    started: Instant,
    /// The incoming stream being echoed: the first video SSRC seen. With simulcast the other layers
    /// are counted but not forwarded (one layer, one SSRC out, so the browser can decode it).
    source: Option<u32>,
    last_keyframe_request: HashMap<u32, Instant>,
    stats: Arc<Mutex<EchoStats>>,
}

fn lock(stats: &Mutex<EchoStats>) -> MutexGuard<'_, EchoStats> {
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Echo {
    /// Echo on `track`; `started` is when the offer was applied.
    pub fn new(track: LocalTrack, started: Instant) -> Self {
        Self {
            track,
            started,
            source: None,
            last_keyframe_request: HashMap::new(),
            stats: Arc::default(),
        }
    }

    /// The session's counters (shared with whoever asks).
    pub fn stats(&self) -> Arc<Mutex<EchoStats>> {
        Arc::clone(&self.stats)
    }

    fn ms_since_start(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }

    fn request_keyframe(&mut self, peer: &mut MediaPeer, ssrc: u32, now: Instant) {
        let due = self
            .last_keyframe_request
            .get(&ssrc)
            .is_none_or(|last| now.saturating_duration_since(*last) >= KEYFRAME_INTERVAL);
        if !due {
            return;
        }
        match peer.request_keyframe(ssrc, now) {
            Ok(()) => {
                self.last_keyframe_request.insert(ssrc, now);
                lock(&self.stats).keyframe_requests += 1;
            }
            Err(error) => tracing::debug!(%error, ssrc, "keyframe request failed"),
        }
    }

    /// Handles one event from the peer connection.
    pub fn handle_event(&mut self, peer: &mut MediaPeer, event: MediaEvent, now: Instant) {
        match event {
            MediaEvent::StateChanged(state) => {
                let since = self.ms_since_start(now);
                let mut stats = lock(&self.stats);
                if state == PeerState::Connected && stats.connected_after_ms.is_none() {
                    stats.connected_after_ms = Some(since);
                }
                stats.state = Some(format!("{state:?}"));
            }
            MediaEvent::TrackOpened(track) => {
                tracing::debug!(?track, "remote track opened");
                if track.kind == Some(MediaKind::Video) && track.ssrc != 0 && self.source.is_none()
                {
                    // The echo starts now: ask for a keyframe so the browser can decode at once.
                    self.source = Some(track.ssrc);
                    self.request_keyframe(peer, track.ssrc, now);
                }
            }
            MediaEvent::Rtp(rtp) => {
                if rtp.tag.kind != Some(MediaKind::Video) {
                    return;
                }
                let since = self.ms_since_start(now);
                {
                    let mut stats = lock(&self.stats);
                    stats.rtp_received += 1;
                    stats.first_rtp_after_ms.get_or_insert(since);
                    let stream = format!(
                        "{}/{}/{}",
                        rtp.tag.mid.as_ref().map_or("-", |m| m.as_str()),
                        rtp.tag.rid.as_ref().map_or("-", |r| r.as_str()),
                        rtp.ssrc
                    );
                    if !stats.streams.contains(&stream) {
                        stats.streams.push(stream);
                    }
                }
                let source = *self.source.get_or_insert(rtp.ssrc);
                if source != rtp.ssrc {
                    return;
                }
                if !self.last_keyframe_request.contains_key(&rtp.ssrc) {
                    self.request_keyframe(peer, rtp.ssrc, now);
                }
                let Some(mime) = rtp.tag.mime_type.clone() else {
                    lock(&self.stats).echo_errors += 1;
                    return;
                };
                match peer.write_rtp(self.track, rtp.packet, &mime, crate::Keep::Copy, now) {
                    Ok(()) => lock(&self.stats).rtp_echoed += 1,
                    Err(error) => {
                        tracing::debug!(%error, "echo write failed");
                        lock(&self.stats).echo_errors += 1;
                    }
                }
            }
            MediaEvent::Rtcp { packets, .. } => {
                lock(&self.stats).rtcp_received += 1;
                let wants_keyframe = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.downcast_ref::<PictureLossIndication>()
                        .is_some_and(|pli| pli.media_ssrc == self.track.ssrc())
                        || any
                            .downcast_ref::<FullIntraRequest>()
                            .is_some_and(|fir| fir.fir.iter().any(|e| e.ssrc == self.track.ssrc()))
                });
                if wants_keyframe {
                    lock(&self.stats).keyframe_requests_from_browser += 1;
                    // The echoed stream's keyframes come from the browser's own sender.
                    if let Some(source) = self.source {
                        self.request_keyframe(peer, source, now);
                    }
                }
            }
            MediaEvent::DataChannelOpen { .. }
            | MediaEvent::DataChannelClosed { .. }
            | MediaEvent::Data { .. }
            | MediaEvent::TargetBitrate(_) => {}
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    udp_ip: std::net::IpAddr,
    sessions: Arc<Mutex<Vec<Arc<Mutex<EchoStats>>>>>,
    stop: watch::Receiver<bool>,
}

/// The echo server: HTTP on a TCP listener, one UDP socket per peer connection on the same IP.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    sessions: Arc<Mutex<Vec<Arc<Mutex<EchoStats>>>>>,
    stop: watch::Sender<bool>,
}

impl EchoServer {
    /// Serves on `listener`; media sockets bind to the listener's IP with an ephemeral port.
    pub fn start(listener: TcpListener) -> Result<Self, Error> {
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let sessions = Arc::default();
        let state = AppState {
            udp_ip: addr.ip(),
            sessions: Arc::clone(&sessions),
            stop: stop_rx.clone(),
        };
        let mut shutdown = stop_rx;
        tokio::spawn(async move {
            let serve = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "echo http server stopped");
            }
        });
        Ok(Self {
            addr,
            sessions,
            stop: stop_tx,
        })
    }

    /// Where the HTTP side listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of every session's counters, in the order the offers came.
    pub fn stats(&self) -> Vec<EchoStats> {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.iter().map(|s| lock(s).clone()).collect()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(get_page))
        .route("/offer", post(post_offer))
        .route("/stats", get(get_stats))
        .with_state(state)
}

async fn get_page() -> Html<&'static str> {
    Html(include_str!("echo_page.html"))
}

async fn get_stats(State(state): State<AppState>) -> Response {
    let sessions = state
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let all: Vec<EchoStats> = sessions.iter().map(|s| lock(s).clone()).collect();
    axum::Json(all).into_response()
}

async fn post_offer(State(state): State<AppState>, offer: String) -> Response {
    match start_echo(&state, offer).await {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/sdp")], answer).into_response(),
        Err(error) => {
            tracing::info!(%error, "offer refused");
            (StatusCode::BAD_REQUEST, "offer refused\n").into_response()
        }
    }
}

async fn start_echo(state: &AppState, offer: String) -> Result<String, Error> {
    let socket = UdpSocket::bind(SocketAddr::new(state.udp_ip, 0)).await?;
    let now = Instant::now();
    // All RTCP, so the stats show what the browser reports; the echo acts only on PLI/FIR. The
    // connection takes the browser's media and negotiates no RTX, so AES-CM, as the SFU's
    // publisher connections whose client offers no RTX (`SrtpProfiles`).
    let config = MediaConfig {
        rtcp_delivery: RtcpDelivery::All,
        srtp: SrtpProfiles::AesCmSha1,
        ..MediaConfig::default()
    };
    let mut peer = MediaPeer::with_config(socket.local_addr()?, config, now)?;
    let track = peer.add_local_track(
        MediaKind::Video,
        "video/VP8",
        "consulta-echo",
        "echo-video",
        ECHO_SSRC,
    )?;
    let answer = peer.accept_offer(offer, now)?;
    let mut echo = Echo::new(track, now);
    state
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(echo.stats());
    let stop = state.stop.clone();
    tokio::spawn(async move {
        let result = shell::drive(peer, socket, stop, |peer, event, now| {
            echo.handle_event(peer, event, now);
            Ok(())
        })
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "echo session ended with an error");
        }
    });
    Ok(answer)
}
