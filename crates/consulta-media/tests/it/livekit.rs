//! The real livekit-client (npm, pinned) in headless Chromium against a whole Consulta SFU node:
//! two participants publish camera (simulcast, the SDK default) and microphone and each decodes
//! the other; mute/unmute is seen; a third participant joins and leaves; a screen share with its
//! sound and a data packet arrive; a token for another room is refused. Fails, never skips, when
//! the browser or the Node modules are missing: `tests/run` installs both.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consulta_media::node::{NodeConfig, SfuNode};
use consulta_media::peer::MediaConfig;
use consulta_sfu::auth::{ApiKeys, ApiSecret, Claims, VideoGrant, mint};
use consulta_sfu::shell::ShellConfig;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";
const KEY: &str = "consulta-test";
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

fn token(identity: &str, room: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: KEY.to_owned(),
        sub: identity.to_owned(),
        exp: Some(now + 600),
        nbf: Some(now - 10),
        name: identity.to_owned(),
        video: VideoGrant {
            room_join: true,
            room: room.to_owned(),
            ..VideoGrant::default()
        },
        ..Claims::default()
    };
    mint(&claims, &ApiSecret::new(SECRET)).unwrap()
}

async fn get_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: sfu\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// The node's `/metrics` once its counters were published (about once a second).
async fn settled_metrics(node: &SfuNode) -> String {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    get_metrics(node.http_addr()).await
}

/// One `consulta_sfu_*` value from a `/metrics` text.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("consulta_sfu_{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
}

/// Packets of Alice's video Bob received and lost over the "loss" scenario's window.
fn loss_window(result: &Value) -> (i64, i64) {
    let (start, end) = (
        &result["loss_window"]["start"],
        &result["loss_window"]["end"],
    );
    let count = |v: &Value, key: &str| v[key].as_i64().unwrap_or(0);
    (
        count(end, "packetsReceived") - count(start, "packetsReceived"),
        count(end, "packetsLost") - count(start, "packetsLost"),
    )
}

fn frames(v: &Value) -> u64 {
    v["framesDecoded"].as_u64().unwrap_or(0)
}

/// Puts the bandwidth allocator's decisions and the receiver reports behind them in the output
/// of a test that fails (libtest shows a passing test's output only with `--nocapture`): a rare
/// bad outcome of a bandwidth test can then be traced from the CI log alone.
fn log_bandwidth_decisions() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "consulta_media::bandwidth=debug,consulta_sfu::bandwidth=debug",
        ))
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// The kinds of the events a page recorded (`result[who]`), in order.
fn event_kinds(result: &Value, who: &str) -> Vec<String> {
    result[who]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// A node on `listener` and `udp` with the room `consultation`.
async fn start_node(config: NodeConfig, listener: TcpListener, udp: UdpSocket) -> SfuNode {
    let node = SfuNode::start(config, listener, udp).await.unwrap();
    node.server().create_room("consultation").unwrap();
    node
}

/// Starts a node with the room `consultation`, runs tests/browser/livekit.mjs in `mode` against it
/// and returns the node (for its metrics) and what the pages saw.
async fn run_scenario(mode: &str) -> (SfuNode, Value) {
    run_scenario_with(mode, MediaConfig::default()).await
}

async fn run_scenario_with(mode: &str, media: MediaConfig) -> (SfuNode, Value) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run tests/run, or apt-get install chromium"
    );
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/livekit-client/package.json")
            .exists(),
        "tests/browser/node_modules is missing: run tests/run, or `npm ci` in tests/browser"
    );
    // The `nat` scenario puts a NAT between the pages and the node, which advertises the NAT's
    // address as its own.
    let behind_nat = mode == "nat" || mode == "hiccup";
    let config = NodeConfig {
        shell: ShellConfig {
            keys: ApiKeys::new().with(KEY, ApiSecret::new(SECRET)),
            ..ShellConfig::default()
        },
        media,
        advertised_ip: behind_nat.then_some(Nat::PUBLIC),
    };
    let browser = crate::CPU_HEAVY.lock().await;
    let mut node = start_node(
        config.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let nat = if behind_nat {
        Some(Nat::start(node.udp_addr()).await)
    } else {
        None
    };

    let scenario = serde_json::json!({
        "tokens": {
            "alice": token("alice", "consultation"),
            "bob": token("bob", "consultation"),
            "carol": token("carol", "consultation"),
            "dave": token("dave", "consultation"),
            "stranger": token("stranger", "another-room"),
        },
        "mode": mode,
    });
    let scenario_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(scenario_file.path(), scenario.to_string()).unwrap();
    let url = format!("ws://{}", node.http_addr());
    let mut child = Command::new("node")
        .arg(dir.join("livekit.mjs"))
        .arg(&url)
        .arg(scenario_file.path())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env("CONSULTA_CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdout = String::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            // The scenario asks for the node to be shut down and a new one started in its place
            // (same addresses, the room created again), as a deploy does.
            if line == "LIVEKIT_RESTART" {
                let (http, udp) = (node.http_addr(), node.udp_addr());
                node.shut_down().await;
                node = start_node(
                    config.clone(),
                    TcpListener::bind(http).await.unwrap(),
                    UdpSocket::bind(udp).await.unwrap(),
                )
                .await;
                stdin.write_all(b"restarted\n").await.unwrap();
            }
            // The scenario asks the NAT to give every client a new port.
            if line == "LIVEKIT_NAT_REBIND" {
                nat.as_ref().expect("a NAT").rebind();
                stdin.write_all(b"rebound\n").await.unwrap();
            }
            // The scenario cuts the network under some clients' ports, or mends it.
            let cut = if let Some(ports) = line.strip_prefix("LIVEKIT_NAT_CUT ") {
                Some(ports.split(',').filter_map(|p| p.parse().ok()).collect())
            } else {
                (line == "LIVEKIT_NAT_MEND").then(HashSet::new)
            };
            if let Some(cut) = cut {
                *nat.as_ref().expect("a NAT").cut.lock().unwrap() = cut;
                stdin.write_all(b"done\n").await.unwrap();
            }
        }
        node
    };
    let Ok(node) = tokio::time::timeout(Duration::from_secs(240), run).await else {
        let _ = child.kill().await;
        let stderr = stderr.await.unwrap_or_default();
        panic!("browser run timed out:\n{stdout}\n{stderr}");
    };
    let status = child.wait().await.unwrap();
    let stderr = stderr.await.unwrap();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LIVEKIT_RESULT "))
        .unwrap_or_else(|| panic!("no LIVEKIT_RESULT line ({status}):\n{stdout}\n{stderr}"));
    let result: Value = serde_json::from_str(line).unwrap();
    eprintln!("{result:#}");
    assert!(
        result["error"].is_null(),
        "scenario failed after steps {}: {}\n{stderr}",
        result["steps"],
        result["error"]
    );
    drop(browser);
    (node, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_two_participants_see_and_hear_each_other() {
    let (node, result) = run_scenario("full").await;

    // Media both ways: video decoded and audio received, from each other.
    for (who, other) in [("alice_sees_bob", "bob"), ("bob_sees_alice", "alice")] {
        let seen = &result[who];
        assert!(
            frames(&seen["video"]) >= 30,
            "{who}: {other}'s video: {seen}"
        );
        assert!(
            seen["audio"]["packetsReceived"].as_u64().unwrap_or(0) >= 50,
            "{who}: {other}'s audio: {seen}"
        );
        assert!(
            seen["audio"]["totalSamplesReceived"].as_u64().unwrap_or(0) > 0,
            "{who}: {other}'s audio decoded: {seen}"
        );
    }
    // RTCP reports from the SFU: receiver reports about Alice's microphone on her publisher
    // connection, sender reports (for lip sync) about her audio on Bob's subscriber connection.
    // None about her camera: without them her browser keeps tagging its layers with `mid` and
    // `rid`, which `rtc` needs again after each renegotiation (`feedback::VideoReportFilter`).
    eprintln!(
        "reports: alice's microphone {} (round trip {}), camera {}, bob's sender reports {}",
        result["alice_microphone_reports"],
        result["alice_microphone_round_trip"],
        result["alice_camera_reports"],
        result["bob_sender_reports"]
    );
    assert!(
        result["alice_microphone_reports"].as_u64().unwrap_or(0) >= 1,
        "receiver reports about her microphone reached alice: {result}"
    );
    // Their LSR and DLSR (the SFU's own receiver reports, `receive::ReceiveFeedback`) echo her
    // sender reports: her browser measures the round trip from them, a few ms on loopback.
    let round_trip = &result["alice_microphone_round_trip"];
    assert!(
        round_trip["measurements"].as_u64().unwrap_or(0) >= 1
            && round_trip["rtt"]
                .as_f64()
                .is_some_and(|rtt| (0.0..0.5).contains(&rtt)),
        "alice's browser measured the round trip from the SFU's receiver reports: {round_trip}"
    );
    assert_eq!(
        result["alice_camera_reports"]["receiverReports"], 0,
        "and none about her camera: {}",
        result["alice_camera_reports"]
    );
    assert!(
        result["bob_sender_reports"]["audio"].as_u64().unwrap_or(0) >= 1,
        "sender reports reached bob: {}",
        result["bob_sender_reports"]
    );

    // Simulcast was on for the cameras (the SDK default).
    let simulcast = result["alice_published"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["source"] == "camera" && p["simulcast"] == true);
    assert!(
        simulcast,
        "camera published with simulcast: {}",
        result["alice_published"]
    );

    // Simulcast: the layer follows the size of the tile (640×360 → h, 1280×720 → f, 160×90 → q),
    // switching on keyframes without breaking the decoder.
    let widths: Vec<u64> = result["layer_widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap_or(0))
        .collect();
    // The widths Alice's layers had (640, 1280 and 320 as a rule): Chromium on a loaded machine
    // may send a layer smaller, and may leave `f` out, saying the CPU limits it; Bob then gets `h`.
    // A layer counts as sent at a step when it encoded frames since the step before.
    let layer = |step: usize, rid: &str| -> Option<&Value> {
        result["alice_sends"][step]
            .as_array()?
            .iter()
            .find(|o| o["rid"] == rid)
    };
    let encoded = |step: usize, rid: &str| {
        layer(step, rid).map_or(0, |o| o["framesEncoded"].as_u64().unwrap_or(0))
    };
    let sent = |step: usize, rid: &str| -> Option<u64> {
        let before = step.checked_sub(1).map_or(0, |b| encoded(b, rid));
        (encoded(step, rid) > before).then(|| layer(step, rid)?["width"].as_u64())?
    };
    let cpu_limited = |step: usize| {
        result["alice_sends"][step]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["limitation"] == "cpu")
    };
    let expected: Vec<u64> = [("h", 640), ("f", 1280), ("q", 320), ("h", 640)]
        .into_iter()
        .enumerate()
        .map(|(step, (rid, nominal))| match (rid, sent(step, rid)) {
            (_, Some(width)) => width,
            ("f", None) if cpu_limited(step) => {
                eprintln!("alice sent no f, limited by her CPU: bob gets h");
                sent(step, "h").unwrap_or(640)
            }
            _ => nominal,
        })
        .collect();
    assert_eq!(
        widths, expected,
        "layers seen by bob, of those alice sent: {}",
        result["alice_sends"]
    );
    // Dynacast: Alice's browser encodes only the layers someone receives. All three while Bob
    // shows her large; only `q` once his tile is small; `q` and `h` again when it is medium.
    assert_eq!(result["alice_layers_large"], "f,h,q", "{result}");
    assert_eq!(result["alice_layers_small"], "q", "{result}");
    assert_eq!(result["alice_layers_medium"], "h,q", "{result}");
    assert_eq!(result["alice_layers_after_unmute"], "h,q", "{result}");
    let lost_after_switches = result["bob_sees_alice_after_switches"]["packetsLost"].clone();

    let bob_events = result["bob_events"].as_array().unwrap();
    assert!(
        bob_events.iter().any(|e| e["kind"] == "speakers"
            && e["identities"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i == "alice"))),
        "bob saw alice speaking (speakers_changed from audio levels)"
    );
    let seen = |kind: &str, identity: &str| {
        bob_events
            .iter()
            .any(|e| e["kind"] == kind && e["identity"] == identity)
    };
    assert!(seen("muted", "alice"), "bob saw alice mute");
    assert!(seen("unmuted", "alice"), "bob saw alice unmute");
    assert!(
        result["bob_frames_after_unmute"].as_u64().unwrap_or(0) >= 30,
        "video resumed after unmute"
    );

    assert!(
        frames(&result["carol_sees"]["alice"]) >= 15,
        "carol decodes alice"
    );
    assert!(
        frames(&result["carol_sees"]["bob"]) >= 15,
        "carol decodes bob"
    );
    // Dave, who came after Carol left, is seen and heard by Alice on the SSRC Carol's camera had:
    // the SFU reuses a departed track's SSRC, continuing its numbering.
    assert!(
        frames(&result["alice_sees_carol"]) >= 15,
        "alice decodes carol: {}",
        result["alice_sees_carol"]
    );
    let dave = &result["alice_sees_dave"];
    assert!(frames(&dave["video"]) >= 30, "alice decodes dave: {dave}");
    assert!(
        dave["audio"]["packetsReceived"].as_u64().unwrap_or(0) >= 50,
        "alice hears dave: {dave}"
    );
    assert_eq!(
        dave["video"]["ssrc"], result["alice_sees_carol"]["ssrc"],
        "dave's video came on the SSRC carol's had"
    );
    let alice_events = result["alice_events"].as_array().unwrap();
    for kind in ["participant_connected", "participant_disconnected"] {
        assert!(
            alice_events
                .iter()
                .any(|e| e["kind"] == kind && e["identity"] == "carol"),
            "alice saw carol: {kind}"
        );
    }

    assert!(
        frames(&result["bob_sees_screen"]) >= 15,
        "bob decodes alice's screen share: {}",
        result["bob_sees_screen"]
    );
    // The share's sound is a track of its own (another SSRC), decoded beside her microphone.
    // (Not its energy: Chromium leaves `totalAudioEnergy` at 0 for a track only muted elements
    // play, as a direct PeerConnection pair showed for both a microphone and a tone.)
    let (share, voice) = (
        &result["bob_hears_screen"],
        &result["bob_hears_alice_during_share"],
    );
    let decoded = share["totalSamplesReceived"].as_u64().unwrap_or(0);
    let concealed = share["concealedSamples"].as_u64().unwrap_or(u64::MAX);
    assert!(
        share["packetsReceived"].as_u64().unwrap_or(0) >= 100 && concealed * 10 < decoded,
        "bob hears alice's shared sound: {share}"
    );
    assert!(
        share["ssrc"].as_u64().is_some() && share["ssrc"] != voice["ssrc"],
        "the shared sound is not her voice: {share} / {voice}"
    );
    // livekit-client's unpublishTrack only renegotiates: the SFU tells Bob from the offer.
    assert_eq!(
        result["bob_saw_share_end"], true,
        "bob was told alice stopped sharing"
    );
    assert_eq!(
        result["bob_saw_share_audio_end"], true,
        "bob was told her shared sound ended with the share"
    );
    assert_eq!(
        result["bob_shares_after_end"], 0,
        "no stale share publication is left on bob's side"
    );
    assert!(
        frames(&result["bob_sees_second_screen"]) >= 15,
        "bob decodes alice's second share: {}",
        result["bob_sees_second_screen"]
    );
    // Renegotiating her publisher connection for the share left her camera running. Without
    // `feedback::VideoReportFilter` it froze for good: 0 frames in these 4 s.
    let camera = result["bob_camera_frames_during_share"]
        .as_i64()
        .unwrap_or(0);
    let share = &result["alice_camera_made_during_share"];
    let made = made_between(&share["start"], &share["end"]);
    assert!(
        kept_decoding(camera, made, 4, 50),
        "alice's camera went on beside her share: {camera} frames in 4 s of {made} made"
    );
    assert!(
        bob_events.iter().any(|e| e["kind"] == "data"
            && e["from"] == "alice"
            && e["text"] == "hello from alice"),
        "bob received alice's data packet, stamped with her identity"
    );

    // The node's own counters saw the same traffic (published about once a second).
    let metrics = settled_metrics(&node).await;
    let value = |name: &str| metric(&metrics, name);
    assert!(value("rtp_packets_forwarded_total") > 500, "{metrics}");
    assert!(value("rtp_packets_in_total") > 500, "{metrics}");
    assert!(value("plis_sent_total") > 0, "{metrics}");
    assert!(value("data_packets_relayed_total") >= 1, "{metrics}");
    assert_eq!(value("rooms"), 1, "{metrics}");
    // Nothing here went quiet: Chromium answers what it receives with transport-wide feedback
    // many times a second, so no silence of a second (an outage) was seen. One is allowed for a
    // stall of a loaded machine (2 cores, two browsers, the node).
    eprintln!("outages seen: {}", value("subscriber_outages_total"));
    assert!(value("subscriber_outages_total") <= 1, "{metrics}");
    // Sequence numbers stayed continuous across the three switches: a broken mapping shows up
    // as hundreds of "lost" packets. (A loaded machine drops a few datagrams on loopback; those
    // the SFU also counts as lost on the way in.)
    let received = result["bob_sees_alice_after_switches"]["packetsReceived"]
        .as_u64()
        .unwrap();
    let lost = lost_after_switches.as_i64().unwrap();
    assert!(
        lost >= 0 && (lost as u64) * 100 <= received,
        "more than 1 % lost across layer switches: {}",
        result["bob_sees_alice_after_switches"]
    );

    assert_eq!(
        result["stranger"]["joined"], false,
        "{}",
        result["stranger"]
    );
    assert!(
        result["stranger"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("room does not exist"),
        "the refusal says why: {}",
        result["stranger"]
    );
}

/// Element Call's default: per-participant end-to-end encryption. The SFU forwards ciphertext it
/// cannot read; the receivers can only decode the frames if nothing but the RTP headers (and the
/// clear VP8 payload descriptor) was touched, and they decrypt only because the SFU copied
/// `encryption` into the TrackInfo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_end_to_end_encrypted_media_passes_through() {
    let (_node, result) = run_scenario("e2ee").await;
    assert_eq!(result["e2ee_enabled"], true, "E2EE was on");
    for (who, other) in [("alice_sees_bob", "bob"), ("bob_sees_alice", "alice")] {
        let seen = &result[who];
        assert!(
            frames(&seen["video"]) >= 30,
            "{who}: {other}'s video: {seen}"
        );
        assert_eq!(seen["video"]["encrypted"], true, "{who}: {seen}");
        assert_eq!(seen["audio"]["encrypted"], true, "{who}: {seen}");
        assert!(
            seen["audio"]["totalSamplesReceived"].as_u64().unwrap_or(0) > 0,
            "{who}: {other}'s audio decoded: {seen}"
        );
    }
    for who in ["alice_events", "bob_events"] {
        let errors: Vec<&Value> = result[who]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "encryption_error")
            .collect();
        assert!(errors.is_empty(), "{who}: {errors:?}");
    }
}

/// ICE restarted on both of Alice's connections: every ufrag changed (`ufrags_before`,
/// `ufrags_after`).
fn assert_ice_restarted(result: &Value) {
    let (before, after) = (&result["ufrags_before"], &result["ufrags_after"]);
    for pc in ["publisher", "subscriber"] {
        for end in ["local", "remote"] {
            let (old, new) = (&before[pc][end], &after[pc][end]);
            assert!(
                old.as_str().is_some_and(|u| !u.is_empty()) && old != new,
                "{pc} {end} ufrag restarted: {before} → {after}"
            );
        }
    }
}

/// Video flowed both ways again (10 frames each way) within `within_ms` of the event the scenario
/// times from (`{event}_flowing`, `{event}_to_video_ms`), then was decoded both ways over an 8 s
/// window (`{event}_window`: `start`, `end`): two thirds of the frames the other's camera made
/// meanwhile, and 5 a second at least (see [`kept_decoding`]).
fn assert_call_goes_on(result: &Value, event: &str, within_ms: u64) {
    let window = &result[format!("{event}_window")];
    assert!(
        result[format!("{event}_flowing")] == true
            && result[format!("{event}_to_video_ms")]
                .as_u64()
                .is_some_and(|ms| ms <= within_ms),
        "video back both ways within {within_ms} ms of the {event}: {window}"
    );
    eprintln!("frames decoded over 8 s: {window}");
    for (way, camera) in [
        ("alice_sees_bob", "bob_encoded"),
        ("bob_sees_alice", "alice_encoded"),
    ] {
        let decoded =
            window["end"][way].as_i64().unwrap_or(0) - window["start"][way].as_i64().unwrap_or(0);
        let made = made_between(&window["start"][camera], &window["end"][camera]);
        assert!(
            kept_decoding(decoded, made, 8, 66),
            "{way}: {decoded} frames decoded in 8 s of {made} made: {window}"
        );
    }
}

/// Whether `decoded` frames over `secs` seconds, of the `made` the camera encoded meanwhile,
/// show video that kept going on its way to the subscriber: `percent` of them, and 5 a second at
/// least. Against the camera's count, not a fixed rate: a loaded machine has Chromium's camera
/// encode ≈11 frames a second instead of 20. A freeze between the SFU and the subscriber leaves
/// far fewer; a camera the publisher's browser stopped encoding lowers `made` too, and only the
/// floor is left against it (dynacast's stops are checked by the two-participant test).
fn kept_decoding(decoded: i64, made: i64, secs: i64, percent: i64) -> bool {
    decoded * 100 >= made * percent && decoded >= 5 * secs
}

/// The frames a camera encoded between two of the page's counts (`encoded` in livekit.mjs: per
/// simulcast layer): its busiest layer's, every layer running at the camera's frame rate. Each
/// layer's own difference, so that one paused meanwhile counts for nothing.
fn made_between(start: &Value, end: &Value) -> i64 {
    end.as_object()
        .into_iter()
        .flatten()
        .map(|(layer, n)| n.as_i64().unwrap_or(0) - start[layer].as_i64().unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// A NAT, as a carrier's is, in front of every page: the node advertises [`Nat::PUBLIC`] with its
/// own port, where the NAT takes each client's datagrams and sends them on to the node from a
/// port of its own per client address (on `127.0.0.3`), and what the node sends to that port back
/// to the client. [`Nat::rebind`] forgets every mapping, so that each client goes on from a new
/// port, as a NAT does when its mapping times out or the carrier moves the phone. Nothing crosses
/// it to or from a client whose NAT port is in [`Nat::cut`] (the network under that client is
/// gone).
struct Nat {
    rebind: tokio::sync::mpsc::UnboundedSender<()>,
    cut: Arc<Mutex<HashSet<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Nat {
    const PUBLIC: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    async fn start(node: std::net::SocketAddr) -> Self {
        let public = Arc::new(
            UdpSocket::bind((Self::PUBLIC, node.port()))
                .await
                .expect("the NAT takes the node's port on 127.0.0.2"),
        );
        let (rebind, mut rebinds) = tokio::sync::mpsc::unbounded_channel();
        let cut = Arc::new(Mutex::new(HashSet::new()));
        let cut_here = cut.clone();
        let task = tokio::spawn(async move {
            // Client address → the NAT's socket for it, and the task relaying the node's answers.
            let mut mappings: HashMap<_, (Arc<UdpSocket>, tokio::task::JoinHandle<()>)> =
                HashMap::new();
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    received = public.recv_from(&mut buf) => {
                        let Ok((n, client)) = received else { continue };
                        let outside = match mappings.entry(client) {
                            Entry::Occupied(mapping) => mapping.get().0.clone(),
                            Entry::Vacant(slot) => {
                                let outside =
                                    Arc::new(UdpSocket::bind("127.0.0.3:0").await.unwrap());
                                let back = tokio::spawn(Self::answer(
                                    outside.clone(),
                                    public.clone(),
                                    node,
                                    client,
                                    cut_here.clone(),
                                ));
                                slot.insert((outside.clone(), back));
                                outside
                            }
                        };
                        if !Self::is_cut(&cut_here, &outside) {
                            let _ = outside.send_to(&buf[..n], node).await;
                        }
                    }
                    Some(()) = rebinds.recv() => {
                        for (_, (_, back)) in mappings.drain() {
                            back.abort();
                        }
                    }
                }
            }
        });
        Self { rebind, cut, task }
    }

    /// Relays what `node` sends to the NAT's `outside` port back to `client`, from `public`.
    async fn answer(
        outside: Arc<UdpSocket>,
        public: Arc<UdpSocket>,
        node: std::net::SocketAddr,
        client: std::net::SocketAddr,
        cut: Arc<Mutex<HashSet<u16>>>,
    ) {
        let mut buf = vec![0u8; 2048];
        loop {
            if let Ok((n, sender)) = outside.recv_from(&mut buf).await
                && sender == node
                && !Self::is_cut(&cut, &outside)
            {
                let _ = public.send_to(&buf[..n], client).await;
            }
        }
    }

    /// Whether the network under the client that `outside` serves is cut. A page knows its NAT
    /// port (the node's checks tell it: its selected local candidate), not its own address.
    fn is_cut(cut: &Mutex<HashSet<u16>>, outside: &UdpSocket) -> bool {
        outside
            .local_addr()
            .is_ok_and(|a| cut.lock().unwrap().contains(&a.port()))
    }

    fn rebind(&self) {
        self.rebind.send(()).expect("the NAT runs");
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Alice lets Bob receive only her microphone (livekit-client's
/// `setTrackSubscriptionPermissions`, sent as `subscription_permission`), then everyone again.
/// Bob's client is told (`subscription_permission_update`): her camera leaves his connection
/// while her voice goes on, and comes back, decoding, when she allows everyone. Nothing of
/// Bob's to her changes. Then her microphone's processing changes (a noise filter on): her client
/// sends `update_audio_track`, and Bob's view of the track's features follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_publisher_chooses_who_receives_her_tracks_and_updates_their_features() {
    let (_node, result) = run_scenario("permission").await;
    let permissions: Vec<(String, String)> = result["bob_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "permission" && e["identity"] == "alice")
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("source"), field("status"))
        })
        .collect();
    eprintln!("bob told of alice's permissions: {permissions:?}");
    let camera = |status: &str| ("camera".to_owned(), status.to_owned());
    assert_eq!(
        permissions,
        [camera("not_allowed"), camera("allowed")],
        "the camera refused then allowed, the microphone never refused"
    );
    let unsubscribed = result["bob_events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| {
            e["kind"] == "unsubscribed" && e["identity"] == "alice" && e["source"] == "camera"
        });
    assert!(
        unsubscribed,
        "the camera left bob's connection: {}",
        result["bob_events"]
    );
    assert_eq!(result["camera_revoked"]["subscribed"], false);
    assert!(
        result["camera_while_revoked"]["framesDecoded"].is_null(),
        "no camera track while refused: {}",
        result["camera_while_revoked"]
    );
    let heard = result["heard_while_revoked"].as_u64().unwrap_or(0);
    assert!(
        heard >= 100,
        "bob heard alice while her camera was refused him: {heard} packets in 3 s"
    );
    assert!(
        frames(&result["camera_granted"]) >= 15,
        "her camera back once allowed: {}",
        result["camera_granted"]
    );
    assert!(
        frames(&result["alice_sees_bob"]) >= 15,
        "{}",
        result["alice_sees_bob"]
    );
    // AudioTrackFeature.TF_ENHANCED_NOISE_CANCELLATION: absent at publish, present once her
    // client says the filter is on, the rest of her microphone's features kept.
    let features = |key: &str| -> Vec<u64> {
        let list = result[key].as_array();
        let list = list.unwrap_or_else(|| panic!("{key}: {}", result[key]));
        list.iter().filter_map(Value::as_u64).collect()
    };
    let (before, after) = (
        features("mic_features_before"),
        features("mic_features_after"),
    );
    eprintln!("alice's microphone features as bob sees them: {before:?} -> {after:?}");
    assert!(
        !before.contains(&5) && after.contains(&5),
        "{before:?} -> {after:?}"
    );
    assert!(
        before.iter().all(|f| after.contains(f)),
        "{before:?} -> {after:?}"
    );
}

/// The network under one client goes for 2 s, too short for ICE to call the path lost: first
/// Bob's, then Alice's (a Wi-Fi hand-over, a lift). When it is back, the first receiver reports
/// count what was sent into the gap as lost, both the client's own (the SFU sent into its outage)
/// and the other's (its publisher's outage, whose gap the SFU passed on). Neither is congestion:
/// each side goes on at the layer it had. Before, one of them was held a layer down (640 → 320
/// pixels wide) for 8-9 s after each gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_video_is_not_held_down_after_a_short_network_gap() {
    log_bandwidth_decisions();
    let (node, result) = run_scenario("hiccup").await;
    let metrics = settled_metrics(&node).await;
    let hiccups = result["hiccups"].as_array().expect("hiccups");
    assert_eq!(hiccups.len(), 2, "{result}");
    for hiccup in hiccups {
        let who = hiccup["who"].as_str().unwrap_or_default();
        // Both of the client's connections were cut, not one.
        let ports: HashSet<u64> = hiccup["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        assert_eq!(ports.len(), 2, "{who}'s two NAT ports: {}", hiccup["ports"]);
        let samples = |key: &str| hiccup[key].as_array().cloned().unwrap_or_default();
        let (before, after) = (samples("before"), samples("after"));
        for view in ["alice_sees_bob", "bob_sees_alice"] {
            let widths = |s: &[Value]| -> Vec<i64> {
                s.iter()
                    .map(|v| v[view]["width"].as_i64().unwrap_or(0))
                    .collect()
            };
            let frames_in = |s: &[Value]| {
                let at =
                    |v: Option<&Value>| v.map_or(0, |v| v[view]["frames"].as_i64().unwrap_or(0));
                at(s.last()) - at(s.first())
            };
            let (was, is) = (widths(&before), widths(&after));
            eprintln!(
                "{who}'s network gone 2 s: {view} {was:?} before, {is:?} after ({} frames in {} ms)",
                frames_in(&after),
                after.last().map_or(0, |v| v["at"].as_i64().unwrap_or(0))
            );
            // The width most samples had before (the browsers' own adaptation may move one).
            let width = was
                .iter()
                .copied()
                .max_by_key(|w| was.iter().filter(|x| *x == w).count())
                .unwrap_or(0);
            assert!(
                width > 0 && was.iter().filter(|w| **w == width).count() >= 4,
                "{view} steady before: {was:?}"
            );
            // Samples are 0.5 s apart: the browsers' own adaptation may take a layer down for a
            // moment; the SFU's hold took it down for 8-9 s (16-18 samples).
            let lower = is.iter().filter(|w| **w < width).count();
            assert!(
                lower <= 3,
                "{view} kept its layer after {who}'s network came back: {was:?} → {is:?}"
            );
            // What the watched camera (the other page's) encoded over the same samples.
            let made = match (after.first(), after.last()) {
                (Some(first), Some(last)) => {
                    made_between(&first[view]["made"], &last[view]["made"])
                }
                _ => 0,
            };
            assert!(
                kept_decoding(frames_in(&after), made, 10, 66),
                "{view} kept decoding over 10 s, of {made} frames made: {after:?}"
            );
        }
    }
    // Each client's own outage was seen as one.
    eprintln!(
        "outages {}, reports netted {} ({} packets lost before the SFU, {} carried)",
        metric(&metrics, "subscriber_outages_total"),
        metric(&metrics, "loss_reports_net_of_skipped_total"),
        metric(&metrics, "loss_before_sfu_packets_total"),
        metric(&metrics, "loss_reports_carried_total")
    );
    assert!(
        metric(&metrics, "subscriber_outages_total") >= 2,
        "{metrics}"
    );
    // How many reports were taken net of the publisher's gap is not asserted here: the router
    // test `numbers_the_publisher_never_sent_are_netted_out_of_the_subscribers_reports` checks
    // the exact count. With Chromium it may be none: with a busy loop on the other core, one run
    // had no number of either publisher's missing at the SFU after the gaps (0 packets lost
    // before the SFU: repaired, or never sent), and after a gap the forwarder may start a new
    // mapping at a key frame, its numbering continuous. Had a gap passed on been taken for
    // congestion, the widths above would show the hold.
}

/// Both clients' NAT gives them new ports mid-call (common on mobile carriers). The node hears
/// nothing more at the old ones: on each subscriber connection it restarts ICE itself, and it asks
/// each client to resume (`leave`, RESUME), which restarts the publisher connection's ICE, the
/// client's to restart. The call goes on both ways, and a newcomer gets both cameras, which
/// takes the node's key-frame requests reaching the publishers at their new ports. The pages
/// signal no candidates of their own here, so that every datagram crosses the NAT (their host
/// addresses are reachable on this machine, as a NATed phone's are not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_media_survives_a_nat_giving_new_ports() {
    log_bandwidth_decisions();
    let (node, result) = run_scenario("nat").await;
    let metrics = settled_metrics(&node).await;
    for who in ["alice", "bob"] {
        let events = event_kinds(&result, &format!("{who}_events"));
        eprintln!("{who}'s events: {events:?}");
        assert!(
            events.iter().any(|k| k == "resumed") && !events.iter().any(|k| k == "restarting"),
            "{who}'s client was asked to resume, and did: {events:?}"
        );
    }
    eprintln!(
        "ice ufrags: {} → {}; resumed {} ms after the new ports, video flowing both ways after {} ms",
        result["ufrags_before"],
        result["ufrags_after"],
        result["rebind_to_resume_ms"],
        result["rebind_to_video_ms"]
    );
    assert_ice_restarted(&result);
    // Video again both ways soon after the new ports (measured 7.4-7.9 s), then for 8 s.
    assert_call_goes_on(&result, "rebind", 20_000);
    for (who, stats) in [
        ("alice", &result["carol_sees_alice"]),
        ("bob", &result["carol_sees_bob"]),
    ] {
        assert!(
            frames(stats) >= 30,
            "carol, joining after the new ports, sees {who}: {stats}"
        );
    }
    assert!(
        metric(&metrics, "publisher_connections_quiet_total") >= 2,
        "{metrics}"
    );
    assert!(metric(&metrics, "resumes_total") >= 2, "{metrics}");
}

/// A dropped signalling socket (livekit-client's own simulation: it closes the WebSocket and
/// reconnects): Alice's client resumes the same session instead of joining afresh. The SFU keeps
/// her while her socket is gone, answers her `reconnect=1` join with a `reconnect` response, and
/// both her PeerConnections restart ICE (she offers the publisher's restart, the SFU the
/// subscriber's). Neither side sees the other leave, and video flows both ways afterwards on the
/// restarted paths. Before, the SFU told every client not to resume, and a dropped socket cost a
/// full rejoin: both sides saw the other leave and come back, and every track was published and
/// subscribed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_dropped_signalling_socket_resumes_the_session() {
    let (node, result) = run_scenario_with("resume", MediaConfig::default()).await;
    let metrics = settled_metrics(&node).await;
    let alice = event_kinds(&result, "alice_events");
    eprintln!("alice's events: {alice:?}");
    assert!(
        alice.iter().any(|k| k == "resumed") && alice.iter().any(|k| k == "reconnected"),
        "alice's client resumed: {alice:?}"
    );
    assert!(
        !alice.iter().any(|k| k == "restarting"),
        "and did not join afresh: {alice:?}"
    );
    assert_eq!(
        result["alice_sid_after"], result["alice_sid"],
        "the same session"
    );
    for (who, other) in [("alice_events", "bob"), ("bob_events", "alice")] {
        let left = result[who]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["kind"] == "participant_disconnected" && e["identity"] == other);
        assert!(!left, "{who}: {other} never left: {}", result[who]);
    }
    // ICE restarted on both of her connections: every ufrag changed.
    let (before, after) = (&result["ufrags_before"], &result["ufrags_after"]);
    eprintln!("ice ufrags: {before} → {after}");
    assert_ice_restarted(&result);
    // And the call goes on over the new paths, both ways: video again (10 frames each way)
    // soon after the restarts, then for 8 s.
    eprintln!(
        "video flowing both ways {} ms after the subscriber's restart",
        result["resume_to_video_ms"]
    );
    assert_call_goes_on(&result, "resume", 10_000);
    assert!(metric(&metrics, "resumes_total") >= 1, "{metrics}");
    // Reliable data: what Alice sent before the drop, and what her client held back while it
    // resumed (sent again from the `last_message_seq` the SFU reported), reach Bob once each.
    assert!(
        result["alice_held_back"].as_u64().is_some_and(|n| n >= 1),
        "alice's client held a send back during the resume: {}",
        result["alice_held_back"]
    );
    let received = |text: &str| {
        result["bob_events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "data" && e["from"] == "alice" && e["text"] == text)
            .count()
    };
    for text in ["sent before the drop", "sent while resuming"] {
        assert_eq!(
            received(text),
            1,
            "bob got {text:?} once: {}",
            result["bob_events"]
        );
    }
}

/// A restart (a deploy): the node is shut down mid-call and a new one comes up on the same
/// address. Each client is told to join again (`leave`, SERVER_SHUTDOWN, RECONNECT), does so at
/// once in a new session without first trying a resume, and the call goes on: both hear each
/// other again, and see each other: each client captures its camera again and publishes it anew.
/// Bob runs in a Chromium of his own (livekit.mjs says why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_rejoins_a_restarted_node_and_the_call_goes_on() {
    let (_node, result) = run_scenario("restart").await;
    let mut alice = event_kinds(&result, "alice_events");
    alice.retain(|k| k != "camera");
    let frames = |v: &Value| v["framesDecoded"].as_u64().unwrap_or(0);
    eprintln!(
        "alice's events: {alice:?}; both rejoined {} ms after the new node was up; audio back \
         after {} ms; video frames after the rejoin: alice sees bob {}, bob sees alice {} ({} ms)",
        result["restart_ms"],
        result["restart_to_audio_ms"],
        frames(&result["alice_sees_bob_after"]),
        frames(&result["bob_sees_alice_after"]),
        result["restart_to_video_ms"],
    );
    assert!(
        alice.iter().any(|k| k == "restarting") && alice.iter().any(|k| k == "restarted"),
        "alice's client joined afresh at once: {alice:?}"
    );
    // Told to join again, it does not first try to resume a session the new node never had
    // (which a socket closed without a `leave` makes it do).
    assert!(
        !alice.iter().any(|k| k == "resuming" || k == "disconnected"),
        "no resume tried, and it never gave up: {alice:?}"
    );
    assert_ne!(
        result["alice_sid_after"], result["alice_sid"],
        "a new session"
    );
    for (way, stats) in [
        ("alice hears bob", &result["alice_hears_bob_after"]),
        ("bob hears alice", &result["bob_hears_alice_after"]),
    ] {
        let packets = stats["packetsReceived"].as_u64().unwrap_or(0);
        assert!(packets >= 100, "{way} after the restart: {stats}");
    }
    // Each client captured its camera again and published it on its new connection.
    for (way, stats, publisher) in [
        ("alice sees bob", &result["alice_sees_bob_after"], "bob"),
        ("bob sees alice", &result["bob_sees_alice_after"], "alice"),
    ] {
        assert!(
            frames(stats) >= 30,
            "{way} after the restart: {stats}\n{publisher}'s camera: {}\nprobe: {}\ncapture: {:?}",
            result[format!("{publisher}_camera_after")],
            result[format!("{publisher}_camera_probe")],
            camera_log(&result, publisher),
        );
    }
}

/// What a page's `watchCamera` recorded: when, and the camera track's capture then.
fn camera_log(result: &Value, who: &str) -> Vec<String> {
    let events = result[format!("{who}_events")].as_array();
    events
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "camera" || e["kind"] == "restarting" || e["kind"] == "restarted")
        .map(|e| {
            format!(
                "{} {} {}",
                e["at"],
                e["kind"],
                e["now"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Loss repaired both ways: the SFU drops every 25th RTP datagram it receives and every 25th it
/// sends (4 % each way, 8 % end to end). The SFU asks Alice's Chromium for what it missed (NACK)
/// and forwards her retransmissions; Bob's Chromium asks the SFU for what it missed, and the SFU
/// answers from its send history. Without either repair Bob would lose ≈4-8 % of Alice's video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_loss_is_repaired_both_ways_with_nacks() {
    let metrics = loss_is_repaired(MediaConfig::default()).await;
    // On the SFU's own write path (`MediaConfig::own_write_path`): Chromium opens what the SFU
    // numbered and sealed itself, and its NACKs are answered with the datagrams as they left.
    let (sealed, forwarded) = (
        metric(&metrics, "rtp_packets_sealed_here_total"),
        metric(&metrics, "rtp_packets_forwarded_total"),
    );
    assert!(
        sealed > 0 && sealed == forwarded,
        "every forwarded packet sealed by the SFU: {sealed} of {forwarded}"
    );
    // And on its own read path (`MediaConfig::own_read_path`): Alice's video, but for each
    // stream's first packets and what came while it was being handed over, was opened by the
    // SFU, whose own NACKs and transport-wide feedback went back to her.
    let (opened, received) = (
        metric(&metrics, "rtp_packets_opened_here_total"),
        metric(&metrics, "rtp_packets_in_total"),
    );
    assert!(
        opened * 10 > received * 6,
        "most of what Alice sent (her video) opened by the SFU: {opened} of {received}"
    );
    // Both publishers' offers resend on RTX, so their connections took AES-GCM; Alice's repairs
    // came on her layers' repair streams, which the own read path opened and the router
    // unwrapped onto the layers they repair.
    assert_eq!(
        metric(&metrics, "publisher_connections_gcm_total"),
        2,
        "{metrics}"
    );
    let unwrapped = metric(&metrics, "rtp_retransmissions_unwrapped_total");
    assert!(unwrapped >= 5, "alice's repairs came as RTX: {metrics}");
}

/// The same on `rtc`'s write and read paths (what a connection whose keys were refused keeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_loss_is_repaired_both_ways_on_rtcs_paths() {
    let metrics = loss_is_repaired(MediaConfig {
        own_write_path: false,
        own_read_path: false,
        ..MediaConfig::default()
    })
    .await;
    assert_eq!(metric(&metrics, "rtp_packets_sealed_here_total"), 0);
    assert_eq!(metric(&metrics, "rtp_packets_opened_here_total"), 0);
    // No RTX without the own read path (`rtc` drops a simulcast layer's repairs): AES-CM, and
    // Alice resent on her layers' own SSRCs.
    assert_eq!(metric(&metrics, "publisher_connections_gcm_total"), 0);
    assert_eq!(metric(&metrics, "rtp_retransmissions_in_total"), 0);
}

/// [`livekit_client_loss_is_repaired_both_ways_with_nacks`] with `media` (its drop rate set
/// here); returns the node's metrics.
async fn loss_is_repaired(media: MediaConfig) -> String {
    let media = MediaConfig {
        drop_rtp_every: 25,
        ..media
    };
    let (node, result) = run_scenario_with("loss", media).await;
    let metrics = settled_metrics(&node).await;
    let value = |name: &str| metric(&metrics, name);
    let (start, end) = (
        &result["loss_window"]["start"],
        &result["loss_window"]["end"],
    );
    let count = |v: &Value, key: &str| v[key].as_i64().unwrap_or(0);
    let (received, lost) = loss_window(&result);
    eprintln!(
        "bob: {received} received, {lost} lost in the window; SFU: {} NACKs in, {} NACKs out asking {} times, {} lost in, {} late in, {} RTX in, {} unwrapped; alice {}",
        value("nacks_received_total"),
        value("nacks_sent_total"),
        value("nack_asks_sent_total"),
        value("rtp_packets_lost_in_total"),
        value("rtp_packets_late_in_total"),
        value("rtp_retransmissions_in_total"),
        value("rtp_retransmissions_unwrapped_total"),
        result["alice_camera_sent"],
    );
    assert!(received > 300, "alice's video kept flowing to bob: {end}");
    // Downstream: bob NACKed the SFU's drops, and they were resent.
    assert!(count(end, "nackCount") >= 5, "bob sent NACKs: {end}");
    assert!(value("nacks_received_total") >= 5, "{metrics}");
    // Upstream: the SFU NACKed alice and she resent (on RTX, on the own read path; on the
    // packets' own SSRC without it), bounded: at most a few resends per packet the SFU dropped.
    let sent = &result["alice_camera_sent"];
    assert!(
        count(sent, "nackCount") >= 5,
        "the SFU NACKed alice: {sent}"
    );
    let resent = count(sent, "retransmittedPacketsSent");
    // Each of her resends answered one of the SFU's asks (Bob's are counted there too).
    let (nacks_out, asks_out) = (value("nacks_sent_total"), value("nack_asks_sent_total"));
    assert!(
        nacks_out >= 5 && asks_out >= nacks_out.max(u64::try_from(resent).unwrap_or(0)),
        "{sent} {metrics}"
    );
    assert!(resent >= 5, "alice resent: {sent}");
    // Her resends filled their gaps: counted late, not lost (measured: 50 late, 110 lost, most
    // of those audio, which is not NACKed).
    assert!(value("rtp_packets_late_in_total") >= 3, "{metrics}");
    assert!(
        resent * 100 < count(sent, "packetsSent") * 12,
        "no retransmission storm (4 % dropped): {sent}"
    );
    // What is left after repair: less than either leg alone drops (4 %), so neither leg went
    // unrepaired; ≈8 % without repair. Measured: 0-1 of ≈350 packets when Chromium's estimate
    // settles low, 35 of 1 112 (3.1 %) in one run of the whole suite where it stayed at ≈140
    // packets/s.
    assert!(
        lost * 100 < received * 4,
        "bob lost {lost} of {received} of alice's video packets in 8 s despite repair (≥ 4 %)"
    );
    // And kept decoding: two thirds of the frames Alice's camera made meanwhile at least (a
    // layer's; they all run at her frame rate), and 5 fps. Measured alone, with the SFU's first
    // NACK sent as the gap shows: 154 and 156 of 160 on the own paths, 143 and 146 of 161 on
    // `rtc`'s. When the first NACK waited for a 100 ms tick, Bob's jitter buffer had often given
    // the frame up by the time its repair came: 108 and 116 alone on `rtc`'s paths, 95 of 160 in
    // one CI run. Against a fixed count, this failed once under the whole suite's load, when her
    // camera made ≈11 frames a second (87 decoded where 100 were asked).
    let before = &result["alice_camera_sent_before"];
    let encoded = made_between(&before["framesEncoded"], &sent["framesEncoded"]);
    let decoded = i64::try_from(frames(end).saturating_sub(frames(start))).unwrap_or(0);
    eprintln!("bob decoded {decoded} frames; alice encoded {encoded} per layer");
    assert!(
        kept_decoding(decoded, encoded, 8, 66),
        "bob decoded {decoded} frames of alice's in 8 s, of {encoded} per layer she encoded: \
         {before} → {sent}; {start} → {end}"
    );
    metrics
}

/// A weak downlink: the SFU polices what it sends each subscriber to 600 kbit/s, which carries
/// Alice's 360p layer (≈350–400 kbit/s with her audio) but not her 720p one (≈750–950 kbit/s).
/// Bob shows her large, so his tile asks for 720p; the SFU's estimate of his downlink (GCC over
/// his browser's transport-wide feedback) must bring him down to a layer that fits, on which her
/// video keeps decoding. It then tries the next layer up now and then (with a wait that doubles
/// each time the link fails it), so some samples show 720p. Without the estimate he gets 720p
/// throughout, of which the policer drops a third or more, and the picture freezes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_weak_downlink_gets_a_layer_that_fits() {
    log_bandwidth_decisions();
    let media = MediaConfig {
        police_downlink_bps: 600_000,
        ..MediaConfig::default()
    };
    let (node, result) = run_scenario_with("downlink", media).await;
    let metrics = settled_metrics(&node).await;
    let value = |name: &str| metric(&metrics, name);
    let samples = result["downlink_samples"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "alice sends {} then {}; SFU: {} estimates, {} caps lowered",
        result["alice_camera_rates"],
        result["alice_camera_rates_after"],
        value("bandwidth_estimates_total"),
        value("layer_caps_lowered_total"),
    );
    for s in &samples {
        eprintln!("{s}");
    }
    assert!(
        samples.len() >= 20,
        "24 s of samples, one a second: {result}"
    );
    let field = |s: &Value, key: &str| s[key].as_i64().unwrap_or(0);
    // The last 12 s, once the estimate has had time to fall.
    let last = &samples[samples.len() - 12..];
    let top = last.iter().filter(|s| field(s, "width") >= 1280).count();
    assert!(
        top <= 5,
        "bob was kept on 720p in {top} of the last 12 samples: {last:?}"
    );
    assert!(
        last.iter().all(|s| field(s, "width") > 0),
        "bob always had a picture: {last:?}"
    );
    // The layer the link carries is 360p: a failed try at 720p falls back to it, not below.
    // (Before the allocator's floor believed reports without loss, 1 run in 10 sat on 180p for
    // the whole of the last 12 s.)
    let below = last.iter().filter(|s| field(s, "width") < 640).count();
    assert!(
        below <= 3,
        "bob fell below 360p in {below} of the last 12 samples: {last:?}"
    );
    let (first, end) = (&last[0], &last[last.len() - 1]);
    let decoded = field(end, "frames") - field(first, "frames");
    let made = made_between(&first["made"], &end["made"]);
    // Half: a failed try at 720p may freeze the picture for a second or two (below).
    assert!(
        kept_decoding(decoded, made, 11, 50),
        "alice's video kept decoding on bob's weak link: {decoded} frames in 11 s of {made} made"
    );
    // A failed try at 720p may freeze the picture for a second or two; never for three.
    let stalls = last
        .windows(4)
        .filter(|w| field(&w[3], "frames") == field(&w[0], "frames"))
        .count();
    assert_eq!(stalls, 0, "no 3 s freeze: {last:?}");
    assert!(value("bandwidth_estimates_total") >= 10, "{metrics}");
    // From Bob's browser's transport-wide feedback, which the SFU's own write path opened and
    // read itself (about ten datagrams a second over the test's 24 s and more).
    assert!(value("rtcp_feedback_opened_here_total") >= 100, "{metrics}");
    assert!(value("layer_caps_lowered_total") >= 1, "{metrics}");
}

/// Runs the page's scenario `mode` with every subscriber connection's downlink policed to
/// 150 kbit/s (for `policed_for`, or throughout): the node, what Bob sampled of Alice's media
/// each second (printed), and the whole result.
async fn run_starved(mode: &str, policed_for: Option<Duration>) -> (SfuNode, Vec<Value>, Value) {
    run_starved_with(
        mode,
        MediaConfig {
            police_downlink_for: policed_for,
            ..MediaConfig::default()
        },
    )
    .await
}

/// [`run_starved`] with `media`'s other fault injection.
async fn run_starved_with(mode: &str, media: MediaConfig) -> (SfuNode, Vec<Value>, Value) {
    log_bandwidth_decisions();
    let media = MediaConfig {
        police_downlink_bps: 150_000,
        ..media
    };
    let (node, result) = run_scenario_with(mode, media).await;
    let samples = result["starved_samples"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in &samples {
        eprintln!("{s}");
    }
    (node, samples, result)
}

/// [`run_starved_with`] `mode` on a link policed to 150 kbit/s for 20 s, then losing one RTP
/// packet in 25 for good.
async fn run_starved_lossy(mode: &str) -> (SfuNode, Vec<Value>, Value) {
    run_starved_with(
        mode,
        MediaConfig {
            police_downlink_for: Some(Duration::from_secs(20)),
            drop_downlink_every: 25,
            ..MediaConfig::default()
        },
    )
    .await
}

/// A downlink too weak for any video: for the first 20 s of each subscriber connection the SFU
/// polices what it sends to 150 kbit/s, less than Alice's audio (≈50–70 kbit/s on the wire) and her
/// smallest layer (≈150 kbit/s) need together. Sent anyway, the video would take a third of the
/// audio down with it. Her camera must pause for Bob, and his livekit-client be told
/// (`stream_state_update`, which it shows as the track's `streamState`), so that her voice gets
/// through whole; when the link recovers, her video must come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_link_too_weak_for_video_keeps_the_voice_and_is_told() {
    let (node, samples, result) = run_starved("starved", Some(Duration::from_secs(20))).await;
    let metrics = settled_metrics(&node).await;
    let value = |name: &str| metric(&metrics, name);
    eprintln!(
        "SFU: {} streams paused, {} caps lowered",
        value("streams_paused_total"),
        value("layer_caps_lowered_total"),
    );
    let field = |s: &Value, key: &str| s[key].as_i64().unwrap_or(0);
    let paused = |s: &Value| s["state"] == "paused";
    // Paused soon: the estimate falls within seconds on a third lost.
    let first = samples.iter().position(paused);
    assert!(
        first.is_some_and(|i| i <= 15),
        "alice's video paused for bob within 15 s: {samples:?}"
    );
    let changes: Vec<(i64, String)> = result["bob_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["kind"] == "stream_state" && e["identity"] == "alice" && e["source"] == "camera"
        })
        .map(|e| (field(e, "at"), e["state"].as_str().unwrap_or("").to_owned()))
        .collect();
    eprintln!("stream states of alice's camera at bob: {changes:?}");
    let told = |state: &str| changes.iter().any(|(_, s)| s == state);
    assert!(
        told("paused") && told("active"),
        "livekit-client told of the pause and the resume: {}",
        result["bob_events"]
    );
    // While paused, her voice gets through whole: every second paused throughout (a try at the
    // lowest layer may start and fail between two samples), from a pause's second second on.
    // The first still carries the overload that caused the pause: the policer's bucket refills
    // and Chromium counts a packet lost only once a later one shows the gap (a CI run on
    // 2026-12-03: 7 of the 9 losses of a 9 s pause came in its first second).
    let paused_throughout = |w: &[Value]| {
        let (from, to) = (field(&w[0], "wall"), field(&w[1], "wall"));
        paused(&w[0])
            && paused(&w[1])
            && !changes
                .iter()
                .any(|(at, _)| (from - 1000..=to).contains(at))
    };
    let (mut seconds, mut received, mut lost) = (0, 0, 0);
    for pair in samples.windows(2).filter(|w| paused_throughout(w)) {
        seconds += 1;
        received += field(&pair[1], "audio_received") - field(&pair[0], "audio_received");
        lost += field(&pair[1], "audio_lost") - field(&pair[0], "audio_lost");
    }
    eprintln!("paused {seconds} s: {received} audio packets received, {lost} lost");
    assert!(seconds >= 5, "paused for at least 5 s: {samples:?}");
    assert!(
        received >= 40 * seconds,
        "alice's audio kept flowing (50 packets/s): {received} in {seconds} s"
    );
    // Measured: 0–8 of 754–1 156 in 10 runs (0–0.7 %). With the video sent anyway instead (the
    // lowest layer never paused), 55 of 936 (5.9 %) were lost while the link was policed, and
    // her picture froze all the same.
    assert!(
        lost * 50 <= received,
        "at most 2 % of her audio lost while her video was paused: {lost} of {received}"
    );
    // The link recovered (the policer stops after 20 s): the video is back, decoding.
    let tail = &samples[samples.len().saturating_sub(8)..];
    assert!(
        tail.len() == 8 && !tail.iter().any(paused),
        "alice's video resumed for 8 s once bob's link recovered: {samples:?}"
    );
    let decoded = field(&tail[7], "frames") - field(&tail[0], "frames");
    let made = made_between(&tail[0]["made"], &tail[7]["made"]);
    // From the first second back, with the key frame and layer switches that follow a pause.
    assert!(
        kept_decoding(decoded, made, 7, 40),
        "and decodes again: {decoded} frames in 7 s of {made} made"
    );
    assert!(value("streams_paused_total") >= 1, "{metrics}");
}

/// A paused video must come back on a link that recovers only in part: policed to 150 kbit/s for
/// 20 s, as in [`livekit_client_a_link_too_weak_for_video_keeps_the_voice_and_is_told`], and
/// then losing one packet in 25 (4 %) for good, as a mobile link at the edge of its cell does.
/// GCC holds its estimate while loss stays between 2 and 10 % ("between the two thresholds
/// nothing happens", `rtc-interceptor` 0.21.1 `gcc/loss.rs`), so the estimate the heavy loss drove
/// below Alice's smallest layer never rises again, and her video stayed paused for Bob for the
/// rest of the call (all 80 s of a run without the probe). The lowest layer must be tried after
/// the hold whatever the estimate, and kept while what Bob's reports say of it (after the SFU's
/// repairs) stays under 10 % lost: the run goes on for 60 s at least, and its last 20 s must
/// show her video (tried at 12 s and given up under the policer, then back from 29 s to the
/// end in a run here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_paused_video_comes_back_on_a_link_that_keeps_losing_a_little() {
    let (node, samples, _) = run_starved_lossy("starved_lossy").await;
    let metrics = settled_metrics(&node).await;
    let paused = |s: &Value| s["state"] == "paused";
    let states: Vec<&str> = samples
        .iter()
        .map(|s| s["state"].as_str().unwrap_or(""))
        .collect();
    assert!(
        samples.iter().take(16).any(paused),
        "alice's video paused for bob within 15 s: {states:?}"
    );
    let tail = &samples[samples.len().saturating_sub(20)..];
    assert!(
        tail.len() == 20 && !tail.iter().any(paused),
        "alice's video resumed for 20 s on bob's lossy link; states second by second: {states:?}"
    );
    let field = |s: &Value, key: &str| s[key].as_i64().unwrap_or(0);
    let decoded = field(&tail[19], "frames") - field(&tail[0], "frames");
    let made = made_between(&tail[0]["made"], &tail[19]["made"]);
    // Half: the link keeps losing a little.
    assert!(
        kept_decoding(decoded, made, 19, 50),
        "and decodes: {decoded} frames in 19 s of {made} made"
    );
    assert!(metric(&metrics, "streams_paused_total") >= 1, "{metrics}");
}

/// [`livekit_client_a_paused_video_comes_back_on_a_link_that_keeps_losing_a_little`] in a group:
/// Carol publishes her camera too, and Bob receives both on the same link, policed to 150 kbit/s
/// for 20 s and then losing one packet in 25 for good. GCC's estimate stays where the heavy loss
/// left it, below what even one camera's lowest layer needs beside the audio, so each camera
/// comes back only as the probe takes it in: one after the hold, the other a hold after that.
/// Before the probe took in more than one track, the second stayed paused for the rest of the
/// call. Both must be back, decoding, for the run's last 20 s (the run ends once they have been,
/// and 60 s after its start at the earliest).
///
/// The first runs found the second camera given up again at its first report, which stated
/// 72 % lost: the tail of packets the policer took just before the pause, counted by the
/// browser only when the stream resumed (`SkippedNumbers::handle_paused`), and its NACKs for
/// them answered with a burst of resends from before the pause (`MediaPeer::forget_sent`). Back at
/// 84–145 s then (one run in three not at all within 150 s); at 21–37 s once both were fixed (two
/// runs, each over in 68–70 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_two_paused_cameras_come_back_on_a_link_that_keeps_losing_a_little() {
    let (node, samples, _) = run_starved_lossy("starved_lossy_group").await;
    let metrics = settled_metrics(&node).await;
    let states = |key: &str| -> Vec<String> {
        samples
            .iter()
            .map(|s| s[key].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (alice, carol) = (states("state"), states("carol_state"));
    eprintln!("alice's camera at bob: {alice:?}\ncarol's camera at bob: {carol:?}");
    let paused_early = |states: &[String]| states.iter().take(16).any(|s| s == "paused");
    assert!(
        paused_early(&alice) && paused_early(&carol),
        "both cameras paused for bob within 15 s"
    );
    let tail = &samples[samples.len().saturating_sub(20)..];
    let active = |key: &str| tail.iter().all(|s| s[key] == "active");
    assert!(
        tail.len() == 20 && active("state") && active("carol_state"),
        "both cameras back for the last 20 s on bob's lossy link"
    );
    let field = |s: &Value, key: &str| s[key].as_i64().unwrap_or(0);
    for (key, camera) in [("frames", "made"), ("carol_frames", "carol_made")] {
        let decoded = field(&tail[19], key) - field(&tail[0], key);
        let made = made_between(&tail[0][camera], &tail[19][camera]);
        assert!(
            kept_decoding(decoded, made, 19, 50),
            "{key}: {decoded} decoded in 19 s of {made} made"
        );
    }
    assert!(metric(&metrics, "streams_paused_total") >= 2, "{metrics}");
}

/// A paused video must come back when the link recovers even if nothing else reaches the
/// subscriber meanwhile: Alice mutes her microphone once her camera is paused for Bob (policed to
/// 150 kbit/s for 20 s), so no audio of hers reaches him either. The SFU's estimate only moves
/// with feedback on what it sends; counting her muted microphone as audio he receives, it sent
/// him nothing at all, heard nothing back, and kept her camera paused for good (review
/// helper-70: paused from 4 s to the end of an 80 s run). A subscriber receiving no audio keeps
/// the lowest layer of its largest tile, the probe that tells when the link has recovered: her
/// camera comes back at once at its lowest layer (the policed link carries it with no audio
/// beside it, with some loss), and rises once the link recovers (640 wide from 25 s in a run
/// here). The run ends 8 s after the last pause and 32 s after its start at the earliest, so
/// its last 8 s, checked to decode, come after the 20 s of policing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_paused_video_comes_back_while_the_other_microphone_is_muted() {
    let (_node, samples, result) =
        run_starved("starved_muted", Some(Duration::from_secs(20))).await;
    let paused = |s: &Value| s["state"] == "paused";
    let muted_at = result["mic_muted_at"].as_u64();
    assert!(
        muted_at.is_some_and(|i| i <= 15),
        "alice's video paused for bob, and she muted, within 15 s: {samples:?}"
    );
    let muted_events = result["bob_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "muted" && e["identity"] == "alice")
        .count();
    assert!(
        muted_events >= 1,
        "bob saw her mute: {}",
        result["bob_events"]
    );
    let states: Vec<&str> = samples
        .iter()
        .map(|s| s["state"].as_str().unwrap_or(""))
        .collect();
    let tail = &samples[samples.len().saturating_sub(8)..];
    assert!(
        tail.len() == 8 && !tail.iter().any(paused),
        "alice's video resumed for 8 s once bob's link recovered, her microphone muted; \
         states second by second: {states:?}"
    );
    let field = |s: &Value, key: &str| s[key].as_i64().unwrap_or(0);
    let decoded = field(&tail[7], "frames") - field(&tail[0], "frames");
    let made = made_between(&tail[0]["made"], &tail[7]["made"]);
    // From the first second back, with the key frame and layer switches that follow a pause.
    assert!(
        kept_decoding(decoded, made, 7, 40),
        "and decodes again: {decoded} frames in 7 s of {made} made"
    );
}

/// A track published while a subscriber's link is too weak for video: Alice shares her screen
/// once her camera is paused for Bob (policed to 150 kbit/s throughout). The share is paused for
/// him from the start, and his livekit-client must know it. It drops a state for a track it does
/// not have yet, and the SFU decides the pause before the offer that brings Bob the track, so
/// the state is said again once he has answered; without that his client showed the share as
/// active while nothing came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_client_a_track_published_to_a_starved_link_arrives_paused() {
    let (node, samples, _) = run_starved("starved_share", None).await;
    let metrics = settled_metrics(&node).await;
    assert!(
        samples.iter().any(|s| s["state"] == "paused"),
        "alice's camera paused for bob first: {samples:?}"
    );
    assert!(
        samples.iter().any(|s| s["share_state"] == "paused"),
        "bob's client knew her screen share was paused: {samples:?}"
    );
    assert!(metric(&metrics, "streams_paused_total") >= 2, "{metrics}");
}
