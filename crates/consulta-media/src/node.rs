//! A whole SFU node: the signalling server of `consulta-sfu` with the [`engine`](crate::engine)
//! behind it, on one TCP listener (HTTP/WebSocket) and one UDP socket (all media).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use consulta_sfu::shell::{SfuServer, ShellConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use axum::routing::get;

use crate::engine::{self, Router, RouterStats, RtcEngine};
use crate::peer::{Error, MediaConfig};

/// Kernel buffer asked for on the media socket, each way. One socket carries every participant's
/// media: with Linux's default (≈208 KiB) a few milliseconds without CPU (another process, a burst
/// of keyframes) overflow it and the kernel drops datagrams (`RcvbufErrors` in /proc/net/snmp).
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max`.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Sends every IPv4 datagram of `udp` with the don't-fragment bit, ignoring the path MTU that
/// ICMP reports (`IP_PMTUDISC_PROBE`): media is never cut into fragments, which a receiver loses
/// whole when one fragment is lost and which NATs often drop, and a packet too large for a hop is
/// dropped there (media packets stay under 1 300 bytes). `IP_PMTUDISC_DO` would also refuse to
/// send what exceeds a path MTU learnt from ICMP, which anyone can forge for a client's address
/// (down to 552 bytes for ten minutes by Linux's defaults): that client's video would stop.
/// Linux gives a datagram that may not be fragmented the IP identification 0; without the bit it
/// draws one per datagram from a hash table shared by all CPUs, 1.6 % of the node's time
/// forwarding 1:1 rooms (docs/benchmarks.md, "Own SRTP").
/// On an IPv6 socket the same holds for IPv6 (`IPV6_PMTUDISC_PROBE`; the kernel does not
/// fragment then, and a Packet Too Big message, as forgeable, does not shrink what it sends),
/// and for IPv4 where the socket is dual-stack.
fn set_dont_fragment(udp: &impl std::os::fd::AsRawFd, ipv6: bool) -> std::io::Result<()> {
    use nix::libc;
    let ipv4 = set_int_option(
        udp,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    if !ipv6 {
        return ipv4;
    }
    if let Err(error) = ipv4 {
        // An IPv6-only socket has no IPv4 side.
        tracing::debug!(%error, "no IPv4 don't-fragment bit on the IPv6 media socket");
    }
    set_int_option(
        udp,
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        libc::IPV6_PMTUDISC_PROBE,
    )
}

/// Sets an int-valued option (`level`, `name`) of `socket`, one that neither socket2 nor nix
/// offers.
pub(crate) fn set_int_option(
    socket: &impl std::os::fd::AsRawFd,
    level: nix::libc::c_int,
    name: nix::libc::c_int,
    value: nix::libc::c_int,
) -> std::io::Result<()> {
    use nix::libc;
    #[allow(
        unsafe_code,
        reason = "setsockopt with an int option on a socket this node owns; neither socket2 nor \
                  nix offers the options it is used for"
    )]
    // SAFETY: the descriptor is open for the borrow of `socket`; the option value is a live
    // c_int whose size is the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An int-valued option (`level`, `name`) of `socket`.
pub(crate) fn int_option(
    socket: &impl std::os::fd::AsRawFd,
    level: nix::libc::c_int,
    name: nix::libc::c_int,
) -> std::io::Result<nix::libc::c_int> {
    use nix::libc;
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    #[allow(
        unsafe_code,
        reason = "getsockopt of an int option on a socket this node owns; neither socket2 nor nix \
                  offers the options it is used for"
    )]
    // SAFETY: the descriptor is open for the borrow of `socket`; the kernel writes at most `len`
    // bytes into `value`, which is that long and lives across the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What a node needs.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Keys and core tunables of the signalling side.
    pub shell: ShellConfig,
    /// The address advertised to clients as the media candidate (the public IP behind NAT); by
    /// default the UDP socket's own address.
    pub advertised_ip: Option<IpAddr>,
    /// Peer connection settings.
    pub media: MediaConfig,
}

/// What [`SfuNode::ended`] names, in the order of `SfuNode::tasks`.
const TASKS: [&str; 2] = ["media loop", "signalling server"];

/// A running node. Dropping it stops the media loop and the HTTP server.
#[derive(Debug)]
pub struct SfuNode {
    server: SfuServer,
    http_addr: SocketAddr,
    udp_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Has the HTTP server stop taking connections ([`SfuNode::shut_down`]).
    closing: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SfuNode {
    /// Starts serving signalling on `listener` and media on `udp`.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        udp: UdpSocket,
    ) -> Result<Self, Error> {
        let http_addr = listener.local_addr()?;
        let socket = socket2::SockRef::from(&udp);
        if let Err(error) = socket
            .set_recv_buffer_size(UDP_BUFFER_BYTES)
            .and_then(|()| socket.set_send_buffer_size(UDP_BUFFER_BYTES))
        {
            tracing::warn!(%error, "could not enlarge the media socket's buffers");
        }
        // Linux caps the request at `net.core.rmem_max` without an error (and reports double
        // what it grants, for its own bookkeeping).
        if let Ok(granted) = socket.recv_buffer_size()
            && granted < UDP_BUFFER_BYTES
        {
            tracing::warn!(
                granted_kib = granted / 1024,
                asked_kib = UDP_BUFFER_BYTES / 1024,
                "the kernel gave the media socket a smaller receive buffer than asked: raise \
                 net.core.rmem_max (docs/DEPLOYMENT.md), or bursts may be dropped"
            );
        }
        let udp_addr = udp.local_addr()?;
        if let Err(error) = set_dont_fragment(&udp, udp_addr.is_ipv6()) {
            tracing::warn!(%error, "could not set the don't-fragment bit on the media socket");
        }
        let advertised = SocketAddr::new(
            config.advertised_ip.unwrap_or(udp_addr.ip()),
            udp_addr.port(),
        );
        let router = Router::new(advertised, config.media);
        let (engine, commands) = RtcEngine::new(router.reliable_sequences());
        let server = SfuServer::new(config.shell, Box::new(engine));
        let (stop, stopped) = watch::channel(false);
        // Apart from `stop`, so that a media loop's end is never mistaken for the server's.
        let closing = watch::Sender::new(false);
        let (stats_tx, stats) = watch::channel(RouterStats::default());
        let events_to = server.clone();
        let media = tokio::spawn(async move {
            let result = engine::run(router, udp, commands, stopped, stats_tx, move |event| {
                events_to.handle_media_event(event);
            })
            .await;
            if let Err(error) = result {
                tracing::error!(%error, "media loop stopped");
            }
        });
        let http = tokio::spawn({
            let server = server.clone();
            let mut closing = closing.subscribe();
            async move {
                let metrics = {
                    let server = server.clone();
                    axum::Router::new().route(
                        "/metrics",
                        get(move || {
                            let text = metrics_text(
                                server.counts(),
                                server.signalling_sockets(),
                                &stats.borrow(),
                            );
                            async move {
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4",
                                    )],
                                    text,
                                )
                            }
                        }),
                    )
                };
                let stop = async move {
                    let _ = closing.wait_for(|closing| *closing).await;
                };
                if let Err(error) = server.serve_with(listener, metrics, stop).await {
                    tracing::error!(%error, "signalling server stopped");
                }
            }
        });
        tracing::info!(%http_addr, %udp_addr, %advertised, "sfu node started");
        Ok(Self {
            server,
            http_addr,
            udp_addr,
            stop,
            closing,
            tasks: vec![media, http],
        })
    }

    /// Waits until the media loop or the signalling server ends, which only a fault makes either
    /// do while the node lives (a socket error, a panic), and says which. A service should exit
    /// then, for its manager to restart it: a node without one of them would accept calls it
    /// cannot carry.
    pub async fn ended(&mut self) -> &'static str {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (_, index, _) = futures_util::future::select_all(self.tasks.iter_mut()).await;
        TASKS.get(index).copied().unwrap_or("node")
    }

    /// Stops the node for a restart: every client is told to join again and its signalling socket
    /// closed ([`SfuServer::shut_down`], bounded by the send timeout), then media and HTTP stop
    /// (kept-alive HTTP connections close once idle, within a second). Dropping the node instead
    /// sends the same `leave`s without waiting, and cuts everything else at once.
    pub async fn shut_down(mut self) {
        self.server.shut_down().await;
        let _ = self.stop.send(true);
        let _ = self.closing.send(true);
        let tasks = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(Duration::from_secs(1), tasks)
            .await
            .is_err()
        {
            tracing::info!("sfu node: HTTP connections still open at shutdown, cut");
        }
    }

    /// The signalling server (to create rooms).
    pub fn server(&self) -> &SfuServer {
        &self.server
    }

    /// Where signalling listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where media arrives.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }
}

/// The Prometheus text exposition of the node's gauges and counters.
pub fn metrics_text(
    (rooms, participants): (usize, usize),
    signalling_sockets: usize,
    stats: &RouterStats,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP consulta_sfu_{name} {help}\n# TYPE consulta_sfu_{name} {kind}\nconsulta_sfu_{name} {value}\n"
        ));
    };
    metric("rooms", "gauge", "Rooms open.", rooms as u64);
    metric(
        "participants",
        "gauge",
        "Participants in rooms.",
        participants as u64,
    );
    metric(
        "signalling_sockets",
        "gauge",
        "Signalling WebSockets open.",
        signalling_sockets as u64,
    );
    metric(
        "datagrams_in_total",
        "counter",
        "UDP datagrams received.",
        stats.datagrams_in,
    );
    metric(
        "datagrams_out_total",
        "counter",
        "UDP datagrams sent.",
        stats.datagrams_out,
    );
    metric(
        "datagrams_send_errors_total",
        "counter",
        "UDP datagrams the socket refused to send.",
        stats.send_errors,
    );
    metric(
        "datagrams_unrouted_total",
        "counter",
        "UDP datagrams no connection claimed.",
        stats.datagrams_unrouted,
    );
    metric(
        "datagrams_displaced_total",
        "counter",
        "UDP datagrams (not STUN) not sent to an address another connection's client answered from.",
        stats.displaced,
    );
    metric(
        "bytes_in_total",
        "counter",
        "UDP bytes received.",
        stats.bytes_in,
    );
    metric(
        "bytes_out_total",
        "counter",
        "UDP bytes sent.",
        stats.bytes_out,
    );
    metric(
        "rtp_packets_in_total",
        "counter",
        "RTP packets received from publishers.",
        stats.rtp_in,
    );
    metric(
        "rtp_packets_lost_in_total",
        "counter",
        "RTP packets publishers sent that did not arrive, counted once 128 newer ones came (a late or retransmitted packet is not loss).",
        stats.rtp_lost_in,
    );
    metric(
        "rtp_packets_late_in_total",
        "counter",
        "RTP packets from publishers that came after a newer one and filled its gap (reordered, or repaired by retransmission).",
        stats.rtp_late_in,
    );
    metric(
        "rtp_retransmissions_in_total",
        "counter",
        "RTX packets (RFC 4588) received from publishers: retransmissions on a repair stream, and the bandwidth probes browsers send there.",
        stats.rtx_in,
    );
    metric(
        "rtp_retransmissions_unwrapped_total",
        "counter",
        "Of the RTX packets received, those unwrapped onto the stream they repair with a packet it had not had (a copy of a packet that came already, as browsers send to probe the link, is not counted).",
        stats.rtx_unwrapped,
    );
    metric(
        "publisher_connections_gcm_total",
        "counter",
        "Publisher connections made under SRTP with AES-GCM, because their client's offer resends lost video on RTX streams; the others use AES-CM with HMAC-SHA1.",
        stats.publishers_gcm,
    );
    metric(
        "rtp_packets_opened_here_total",
        "counter",
        "Of the RTP packets received from publishers, those the SFU opened itself (its own read path, which takes a video stream over once rtc has opened its first packets).",
        stats.rtp_opened_here,
    );
    metric(
        "rtcp_feedback_opened_here_total",
        "counter",
        "Datagrams of transport-wide feedback from subscribers that the SFU opened and read itself (its own write path's estimator), without rtc's handlers.",
        stats.feedback_opened_here,
    );
    metric(
        "rtp_packets_forwarded_total",
        "counter",
        "RTP packets written to subscribers.",
        stats.rtp_forwarded,
    );
    metric(
        "rtp_packets_sealed_here_total",
        "counter",
        "Of the RTP packets written to subscribers, those the SFU numbered and sealed itself (its own write path; the rest went through rtc after a failed key check).",
        stats.rtp_sealed_here,
    );
    metric(
        "rtp_nack_answers_sealed_again_total",
        "counter",
        "NACK answers to subscribers sealed again from the header fields and the payload their history kept where other subscribers share it (the same bytes as the datagram that left, checked by its tag), rather than sent from a copy.",
        stats.nack_answers_sealed_again,
    );
    metric(
        "rtp_write_errors_total",
        "counter",
        "RTP packets a subscriber connection refused.",
        stats.rtp_write_errors,
    );
    metric(
        "plis_sent_total",
        "counter",
        "Keyframe requests sent to publishers.",
        stats.keyframe_requests,
    );
    metric(
        "plis_received_total",
        "counter",
        "Picture loss indications (PLI) received from subscribers.",
        stats.plis_in,
    );
    metric(
        "firs_received_total",
        "counter",
        "Full intra requests (FIR) received from subscribers.",
        stats.firs_in,
    );
    metric(
        "nacks_received_total",
        "counter",
        "NACK packets received from subscribers.",
        stats.nacks_in,
    );
    metric(
        "nacks_sent_total",
        "counter",
        "NACK packets sent to publishers for the video packets missing when asked for.",
        stats.nacks_out,
    );
    metric(
        "nack_asks_sent_total",
        "counter",
        "Video packets those NACKs asked publishers for, each ask counted: up to 10 per packet, paced by the publisher's round trip.",
        stats.nack_asks_out,
    );
    metric(
        "bandwidth_estimates_total",
        "counter",
        "Bandwidth estimates (GCC over TWCC feedback) for subscriber connections.",
        stats.bandwidth_estimates,
    );
    metric(
        "layer_caps_lowered_total",
        "counter",
        "Times a subscriber's estimated bandwidth lowered the simulcast layer it may receive.",
        stats.layer_caps_lowered,
    );
    metric(
        "streams_paused_total",
        "counter",
        "Times a subscriber's estimated bandwidth paused a video track it receives (not even the lowest layer fitted).",
        stats.streams_paused,
    );
    metric(
        "resumes_total",
        "counter",
        "Signalling connections resumed (the session kept): after a drop, or asked for by the SFU when a publisher connection went quiet.",
        stats.resumes,
    );
    metric(
        "publisher_connections_quiet_total",
        "counter",
        "Publisher connections that heard nothing from their client's address for 5 s; a client whose signalling is up is asked to resume, restarting their ICE.",
        stats.publishers_quiet,
    );
    metric(
        "handshakes_failed_total",
        "counter",
        "Peer connections whose DTLS handshake gave up: the client did not answer a flight sent eight times (over 8 s), or sent nothing new for 15 s. The client is asked to join again.",
        stats.handshakes_failed,
    );
    metric(
        "subscriber_offers_unanswered_total",
        "counter",
        "Subscriber offers left unanswered for 15 s (the client could not apply them, and every later change of its subscriber connection waits behind them). The client is asked to join again.",
        stats.offers_unanswered,
    );
    metric(
        "tracks_never_offered_total",
        "counter",
        "Published tracks no publisher offer carried within 30 s of add_track (the client gave the publication up, for example when track_published went to a dead socket): ended, so that the others do not keep a track that never carries media.",
        stats.tracks_never_offered,
    );
    metric(
        "negotiations_refused_total",
        "counter",
        "Publisher offers the SFU refused (past its limit on media sections, or not applicable), and subscriber answers refused 3 times in a row. The client is asked to join again; if the session it joins with is refused too within 2 minutes, that session is ended (MEDIA_FAILURE).",
        stats.negotiations_refused,
    );
    metric(
        "subscriber_outages_total",
        "counter",
        "Subscriber connections heard from again after media sent to them went unanswered for 1 s or more (an outage: the loss reported for it is not taken for congestion). Needs transport-wide feedback (bandwidth estimation on).",
        stats.subscriber_outages,
    );
    metric(
        "loss_reports_net_of_skipped_total",
        "counter",
        "Receiver report blocks whose loss was taken net of sequence numbers the SFU never sent (lost before it, on the publisher's side) or of those the link lost just before the stream stopped flowing (paused for bandwidth, switched off, muted; reported once it resumed).",
        stats.reports_net_of_skipped,
    );
    metric(
        "loss_reports_carried_total",
        "counter",
        "Receiver report blocks that left a sample carried: net of the numbers the SFU never sent or sent before a pause, fewer than 16 packets sent in their interval, with any carried in (a publisher's outage skips hundreds of numbers); too few to weigh alone, they are pooled with the stream's next block (for up to 3 s).",
        stats.loss_reports_carried,
    );
    metric(
        "loss_before_sfu_packets_total",
        "counter",
        "Packets subscribers' receiver reports counted lost that were lost before the SFU (numbers it never sent), left out of their loss.",
        stats.loss_before_sfu,
    );
    metric(
        "loss_before_pause_packets_total",
        "counter",
        "Packets subscribers' receiver reports counted lost once a stream flowed again that the link had lost just before it stopped (paused for bandwidth, switched off, muted), left out of their loss.",
        stats.loss_before_pause,
    );
    metric(
        "data_packets_relayed_total",
        "counter",
        "Data packets relayed (per receiver).",
        stats.data_relayed,
    );
    metric(
        "data_packets_dropped_total",
        "counter",
        "Data packets dropped.",
        stats.data_dropped,
    );
    metric(
        "data_packets_backlogged_total",
        "counter",
        "Data packets not relayed to a receiver whose data channel had a megabyte unacknowledged, or as much from their sender as its share of that (per receiver).",
        stats.data_backlogged,
    );
    metric(
        "data_channels_closed_total",
        "counter",
        "Data channels closed: a client's beyond the three livekit-client opens on its publisher connection (one of those opened again replaces the one before), and any on its subscriber connection.",
        stats.data_channels_closed,
    );
    metric(
        "data_packets_repeated_total",
        "counter",
        "Reliable data packets not relayed because they were numbered at or below the last one relayed from their sender (sent again after a resume, or out of order).",
        stats.data_repeats,
    );
    out
}

impl Drop for SfuNode {
    fn drop(&mut self) {
        self.server.close_sessions();
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_node_says_when_its_media_loop_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut node = SfuNode::start(NodeConfig::default(), listener, udp)
            .await
            .unwrap();
        let running = tokio::time::timeout(Duration::from_millis(300), node.ended()).await;
        assert!(running.is_err(), "nothing ended while the node runs");
        // What a fault does to the loop: it returns.
        node.stop.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), node.ended())
            .await
            .expect("the end is noticed");
        assert_eq!(ended, "media loop");
    }

    /// A shutdown (a restart, a deploy) tells each client to join again, closes its socket and
    /// leaves no task behind: not the sockets', the HTTP connections', the
    /// media loop, nor the signalling timer.
    #[tokio::test]
    async fn a_shutdown_tells_clients_to_join_again_and_leaves_no_task_behind() {
        use consulta_sfu::auth::{self, ApiKeys, ApiSecret};
        use futures_util::StreamExt;
        use livekit_protocol::{DisconnectReason, leave_request, signal_response};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::Message;

        let alive = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = alive();
        let secret = ApiSecret::new("node-test-secret-node-test-secret");
        let mut config = NodeConfig::default();
        config.shell.keys = ApiKeys::new().with("key", secret.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let node = SfuNode::start(config, listener, udp).await.unwrap();
        node.server().create_room("consultation").unwrap();
        let addr = node.http_addr();
        let url = |identity: &str| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = auth::join_claims("key", identity, "consultation", now, 600);
            let token = auth::mint(&claims, &secret).unwrap();
            format!("ws://{addr}/rtc?access_token={token}")
        };
        let (mut alice, _) = tokio_tungstenite::connect_async(url("alice"))
            .await
            .unwrap();
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(5), alice.next()).await;
            match frame.expect("a frame within 5 s") {
                Some(Ok(Message::Binary(bytes))) => {
                    consulta_sfu::signal::decode_response(&bytes)
                        .unwrap()
                        .message
                }
                _ => None,
            }
        };
        let joined = next().await;
        assert!(matches!(joined, Some(signal_response::Message::Join(_))));
        // A metrics scraper keeps its HTTP connection open.
        let mut scraper = tokio::net::TcpStream::connect(addr).await.unwrap();
        scraper
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: sfu\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        scraper.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");

        let server = node.server().clone();
        tokio::time::timeout(Duration::from_secs(5), node.shut_down())
            .await
            .expect("the shutdown does not wait for the send timeout");
        let leave = loop {
            match next().await {
                Some(signal_response::Message::Leave(leave)) => break leave,
                Some(_) => {}
                None => panic!("closed without a leave"),
            }
        };
        assert!(leave.can_reconnect);
        assert_eq!(leave.reason, DisconnectReason::ServerShutdown as i32);
        assert_eq!(leave.action, leave_request::Action::Reconnect as i32);
        assert_eq!(next().await, None, "then the socket closes");
        assert_eq!(server.counts(), (0, 0));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while alive() > before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(alive(), before, "tasks left running after the shutdown");
    }

    /// IPv4, IPv6 and dual-stack media sockets all send with the don't-fragment bit and ignore
    /// the path MTU that ICMP reports, for each IP version they carry.
    #[test]
    fn media_sockets_never_fragment_over_either_ip_version() {
        use nix::libc;
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_dont_fragment(&v4, false).unwrap();
        assert_eq!(
            int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(),
            libc::IP_PMTUDISC_PROBE
        );
        let dual = std::net::UdpSocket::bind("[::]:0").unwrap();
        let v6_only = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        v6_only.set_only_v6(true).unwrap();
        v6_only
            .bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        set_dont_fragment(&dual, true).unwrap();
        set_dont_fragment(&v6_only, true).unwrap();
        for ipv6 in [
            int_option(&dual, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            int_option(&v6_only, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        ] {
            assert_eq!(ipv6.unwrap(), libc::IPV6_PMTUDISC_PROBE);
        }
        assert_eq!(
            int_option(&dual, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(),
            libc::IP_PMTUDISC_PROBE,
            "the dual-stack socket's IPv4 side too"
        );
    }
}
