//! Janus (Debian `janus`, its VideoRoom plugin) as a second server under test, driven by the same
//! synthetic participants (`sfu-performance.md`: "measure it side by side").
//!
//! The server runs with a configuration written for the run: only the VideoRoom plugin and the
//! WebSocket transport on loopback, alphanumeric room and feed ids, ICE on the namespace's veth
//! (below). A participant
//! speaks the Janus API over WebSocket (subprotocol `janus-protocol`): it creates a session and two
//! handles, creates its room if nobody has yet, joins it as a participant (so that it hears of
//! publishers), publishes with its own offer when it has tracks, and subscribes its second handle
//! to every other feed (Janus offers, the participant answers with `start`). Both sides put their
//! ICE candidates in the SDP (`trickle: false`; Janus half-trickles).
//!
//! Janus gathers candidates on non-loopback interfaces only. So that nothing listens outside this
//! machine, a run with `--janus` re-executes itself in a private network namespace (`unshare -n`,
//! which needs root) holding `lo` and a veth pair: Janus and the participants talking to it use
//! the veth's address, which only exists inside the namespace.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::client::{Peers, Signalling, Spec, Ws};

/// The plugin every handle attaches to.
const VIDEOROOM: &str = "janus.plugin.videoroom";
/// VideoRoom's "room already exists": another participant of the room created it first.
const ROOM_EXISTS: i64 = 427;
/// The namespace's veth interface and its address (see the module documentation).
const NET_DEVICE: &str = "cbench0";
pub const NET_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 213, 0, 1);
/// Set in the re-executed benchmark, inside the namespace.
const IN_NAMESPACE: &str = "CONSULTA_BENCH_NETNS";

/// Re-runs this benchmark (with the same arguments) in a private network namespace set up for
/// Janus, and returns its exit status; `None` when already inside it.
pub fn reexec_in_namespace() -> anyhow::Result<Option<std::process::ExitStatus>> {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return Ok(None);
    }
    let script = format!(
        "set -e; ip link set lo up; ip link add {NET_DEVICE} type veth peer name {NET_DEVICE}p; \
         ip addr add {NET_IP}/24 dev {NET_DEVICE}; ip link set {NET_DEVICE} up; \
         ip link set {NET_DEVICE}p up; exec \"$0\" \"$@\""
    );
    let status = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", &script])
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(IN_NAMESPACE, "1")
        .status()
        .context("unshare -n (--janus needs root to make a private network namespace)")?;
    Ok(Some(status))
}

/// Janus's installed plugins and transports (Debian's layout).
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// A running Janus, killed (and its configuration removed) on drop.
pub struct JanusServer {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl JanusServer {
    /// Starts `janus` (under `taskset -c core` unless `core` is `None`) with a configuration for
    /// this run, and waits until its WebSocket port accepts connections.
    pub fn start(program: &str, core: Option<u32>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("consulta-bench-janus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["plugins", "transports", "none"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Only the two modules the benchmark uses are loaded: the folders hold links to them.
        for (sub, file) in [
            ("plugins", "libjanus_videoroom.so"),
            ("transports", "libjanus_websockets.so"),
        ] {
            let target = PathBuf::from(JANUS_LIB).join(sub).join(file);
            std::os::unix::fs::symlink(&target, dir.join(sub).join(file))
                .with_context(|| format!("linking {}", target.display()))?;
        }
        let d = dir.display();
        std::fs::write(
            dir.join("janus.jcfg"),
            format!(
                "general: {{\n  configs_folder = \"{d}\"\n  plugins_folder = \"{d}/plugins\"\n  \
                 transports_folder = \"{d}/transports\"\n  events_folder = \"{d}/none\"\n  \
                 loggers_folder = \"{d}/none\"\n  debug_level = 2\n  session_timeout = 120\n}}\n\
                 media: {{ rtp_port_range = \"20000-40000\" }}\n\
                 nat: {{ ice_enforce_list = \"{NET_DEVICE}\" }}\n"
            ),
        )?;
        std::fs::write(
            dir.join("janus.plugin.videoroom.jcfg"),
            "general: { string_ids = true }\n",
        )?;
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            format!(
                "general: {{ json = \"plain\" ws = true ws_port = {port} ws_ip = \"127.0.0.1\" }}\n\
                 admin: {{ admin_ws = false }}\n"
            ),
        )?;
        let mut command = match core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string(), program]);
                c
            }
            None => Command::new(program),
        };
        let log = std::fs::File::create(dir.join("janus.log"))?;
        let child = command
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .arg("-o")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program} (Debian package `janus`)"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Self { child, dir, addr };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if started.elapsed() > Duration::from_secs(15) {
                bail!(
                    "janus did not open {addr} within 15 s (log: {})",
                    server.dir.join("janus.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value at a JSON pointer (`/plugindata/data`), or null.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

/// One participant's Janus session.
pub struct Janus {
    session: u64,
    publisher: u64,
    subscriber: u64,
    identity: String,
    room: String,
    next_transaction: u64,
    /// Feeds asked for (or being asked for) on the subscriber handle.
    subscribed: HashSet<String>,
    /// Feeds announced but not yet asked for.
    pending: Vec<String>,
    /// The subscriber handle has joined (later feeds are added with `subscribe`).
    subscriber_joined: bool,
    /// An offer from Janus is awaited on the subscriber handle.
    negotiating: bool,
}

impl Janus {
    fn transaction(&mut self) -> String {
        self.next_transaction += 1;
        format!("t{}", self.next_transaction)
    }

    async fn send(ws: &mut Ws, message: &Value) -> anyhow::Result<()> {
        ws.send(Message::Text(message.to_string().into()))
            .await
            .context("janus send")
    }

    /// Sends a request and waits for its answer (only used before media starts).
    async fn call(ws: &mut Ws, message: Value, transaction: &str) -> anyhow::Result<Value> {
        let mut message = message;
        if let Some(fields) = message.as_object_mut() {
            fields.insert("transaction".to_owned(), json!(transaction));
        }
        Self::send(ws, &message).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .context("no answer from janus within 10 s")?;
            let Some(Ok(Message::Text(text))) = frame else {
                match frame {
                    Some(Ok(_)) => continue,
                    _ => bail!("janus closed the connection"),
                }
            };
            let reply: Value = serde_json::from_str(&text).context("janus reply")?;
            if at(&reply, "/transaction") != transaction || at(&reply, "/janus") == "ack" {
                continue;
            }
            if at(&reply, "/janus") == "error" {
                bail!("janus: {}", at(&reply, "/error"));
            }
            return Ok(reply);
        }
    }

    /// A `message` request to `handle` with `body` (and an SDP).
    async fn message(
        &mut self,
        ws: &mut Ws,
        handle: u64,
        body: Value,
        jsep: Option<(&str, String)>,
    ) -> anyhow::Result<()> {
        let mut message = json!({
            "janus": "message",
            "session_id": self.session,
            "handle_id": handle,
            "transaction": self.transaction(),
            "body": body,
        });
        if let (Some((kind, sdp)), Some(fields)) = (jsep, message.as_object_mut()) {
            fields.insert(
                "jsep".to_owned(),
                json!({ "type": kind, "sdp": sdp, "trickle": false }),
            );
        }
        Self::send(ws, &message).await
    }

    /// Notes the feeds of a `publishers` list that are not ours and not yet asked for.
    fn learn_feeds(&mut self, data: &Value) {
        for publisher in at(data, "/publishers").as_array().into_iter().flatten() {
            let id = match at(publisher, "/id") {
                Value::String(id) => id.clone(),
                other => other.to_string(),
            };
            if id != self.identity && self.subscribed.insert(id.clone()) {
                self.pending.push(id);
            }
        }
    }

    /// Asks for the pending feeds unless an offer is already on its way.
    async fn subscribe_pending(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        if self.negotiating || self.pending.is_empty() {
            return Ok(());
        }
        let streams: Vec<Value> = self
            .pending
            .drain(..)
            .map(|feed| json!({ "feed": feed }))
            .collect();
        let body = if self.subscriber_joined {
            json!({ "request": "subscribe", "streams": streams })
        } else {
            self.subscriber_joined = true;
            json!({ "request": "join", "ptype": "subscriber", "room": self.room, "streams": streams })
        };
        self.negotiating = true;
        let handle = self.subscriber;
        self.message(ws, handle, body, None).await
    }
}

impl Signalling for Janus {
    async fn open(spec: &Spec, _peers: &mut Peers) -> anyhow::Result<(Self, Ws)> {
        let mut request = format!("ws://{}/", spec.http).into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let mut ws = crate::client::connect(request)
            .await
            .context("janus connect")?;
        let created = Self::call(&mut ws, json!({ "janus": "create" }), "create").await?;
        let session = at(&created, "/data/id")
            .as_u64()
            .context("janus session id")?;
        let mut handles = [0u64; 2];
        for (handle, transaction) in handles.iter_mut().zip(["attach-pub", "attach-sub"]) {
            let attached = Self::call(
                &mut ws,
                json!({ "janus": "attach", "session_id": session, "plugin": VIDEOROOM }),
                transaction,
            )
            .await?;
            *handle = at(&attached, "/data/id")
                .as_u64()
                .context("janus handle id")?;
        }
        let [publisher, subscriber] = handles;
        // The room's first participant creates it; the others find it there.
        let created = Self::call(
            &mut ws,
            json!({
                "janus": "message",
                "session_id": session,
                "handle_id": publisher,
                "body": {
                    "request": "create",
                    "room": spec.room,
                    "publishers": 1000,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "bitrate": 0,
                    "notify_joining": false,
                },
            }),
            "create-room",
        )
        .await?;
        let data = at(&created, "/plugindata/data");
        if at(data, "/videoroom") != "created"
            && at(data, "/error_code").as_i64() != Some(ROOM_EXISTS)
        {
            bail!("janus room {}: {data}", spec.room);
        }
        let mut janus = Self {
            session,
            publisher,
            subscriber,
            identity: spec.identity.clone(),
            room: spec.room.clone(),
            next_transaction: 0,
            subscribed: HashSet::new(),
            pending: Vec::new(),
            subscriber_joined: false,
            negotiating: false,
        };
        let body = json!({
            "request": "join",
            "ptype": "publisher",
            "room": spec.room,
            "id": spec.identity,
            "display": spec.identity,
        });
        janus.message(&mut ws, publisher, body, None).await?;
        Ok((janus, ws))
    }

    async fn frame(
        &mut self,
        ws: &mut Ws,
        frame: Message,
        peers: &mut Peers,
    ) -> anyhow::Result<()> {
        let Message::Text(text) = frame else {
            return Ok(());
        };
        let event: Value = serde_json::from_str(&text).context("janus event")?;
        match at(&event, "/janus").as_str() {
            Some("event") => {}
            Some("hangup") => bail!("janus hung up: {}", at(&event, "/reason")),
            Some("timeout") => bail!("janus session timed out"),
            Some("error") => bail!("janus: {}", at(&event, "/error")),
            _ => return Ok(()),
        }
        let data = at(&event, "/plugindata/data");
        if data.get("error").is_some() {
            bail!("janus videoroom: {data}");
        }
        let now = Instant::now();
        let sender = at(&event, "/sender").as_u64();
        let sdp = at(&event, "/jsep/sdp").as_str().map(str::to_owned);
        if sender == Some(self.publisher) {
            if at(data, "/videoroom") == "joined" {
                peers.progress.joined = true;
            }
            if at(data, "/videoroom") == "joined" && !peers.tracks.is_empty() {
                let offer = peers.publisher.create_offer(now)?;
                let handle = self.publisher;
                self.message(
                    ws,
                    handle,
                    json!({ "request": "publish", "audio": true, "video": true }),
                    Some(("offer", offer)),
                )
                .await?;
            }
            if let Some(answer) = sdp {
                peers.publisher.accept_answer(answer, now)?;
                peers.progress.answered = true;
            }
            self.learn_feeds(data);
        } else if sender == Some(self.subscriber)
            && sdp.is_none()
            && matches!(
                at(data, "/videoroom").as_str(),
                Some("attached" | "updated")
            )
        {
            // Janus took the request but has nothing to renegotiate.
            self.negotiating = false;
        } else if sender == Some(self.subscriber)
            && let Some(offer) = sdp
        {
            let answer = peers.answer_subscriber(offer, now)?;
            let handle = self.subscriber;
            self.message(
                ws,
                handle,
                json!({ "request": "start" }),
                Some(("answer", answer)),
            )
            .await?;
            self.negotiating = false;
        }
        self.subscribe_pending(ws).await
    }

    async fn keepalive(&mut self, ws: &mut Ws, _elapsed: Duration) -> anyhow::Result<()> {
        let message = json!({
            "janus": "keepalive",
            "session_id": self.session,
            "transaction": self.transaction(),
        });
        Self::send(ws, &message).await
    }

    async fn leave(&mut self, ws: &mut Ws) {
        let message = json!({
            "janus": "destroy",
            "session_id": self.session,
            "transaction": self.transaction(),
        });
        let _ = Self::send(ws, &message).await;
    }
}
