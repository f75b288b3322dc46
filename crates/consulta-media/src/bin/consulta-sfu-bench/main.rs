//! `consulta-sfu-bench`: the SFU benchmark of `sfu-performance.md` and issue 4.
//!
//! The SFU node runs in its own process pinned to one core (`taskset -c 1`); this process (pinned
//! to core 0) runs synthetic participants that are real WebRTC peers (webrtc-rs `rtc`: ICE, DTLS,
//! SRTP: GCM both ways, as the router negotiates with publishers that offer RTX, as these and
//! browsers do) speaking
//! LiveKit v0 signalling over WebSocket, so the SFU's whole path is measured.
//! Publishers send paced Opus and VP8 RTP whose payloads carry (stream, sequence, send time);
//! subscribers count what arrives, the gaps and the one-way latency on one monotonic clock. The
//! SFU's CPU comes from /proc/<pid>/stat, its memory from /proc/<pid>/status. An idealised
//! forwarder (see `ideal`) is measured in the same run with the same streams, on the same core.
//!
//! Scenarios: S1 (N 1:1 rooms), S2 (rooms of 4), S3 (1 publisher → K subscribers), S4 (S1 under
//! injected loss), S5 (join/leave churn). With `--janus`, S1–S3 are also run against Janus
//! (Debian `janus`, VideoRoom plugin) with the same participants, on the same core, in the same run.

#![allow(clippy::print_stdout, reason = "a CLI that prints its report")]

mod client;
mod ideal;
mod janus;
mod media;
mod pipeline;
mod srtp;
mod stamp;

use std::cell::RefCell;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use consulta_media::node::{NodeConfig, SfuNode};
use consulta_media::peer::MediaConfig;
use consulta_sfu::auth::{ApiKeys, ApiSecret, join_claims, mint};
use consulta_sfu::shell::ShellConfig;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Dialect;
use crate::ideal::Topology;
use crate::janus::JanusServer;
use crate::media::{Recorder, WindowStats};

const KEY: &str = "bench";
const SECRET: &str = "consulta-bench-secret-of-32-bytes!";

/// The knee: a step with more loss, a slower p99 or a busier SFU ends the scenario.
const KNEE_LOSS_PERCENT: f64 = 0.5;
const KNEE_P99_US: f64 = 20_000.0;
const KNEE_CPU_PERCENT: f64 = 95.0;
/// Above this the generator itself is the bottleneck and the step is invalid.
const GENERATOR_LIMIT_PERCENT: f64 = 85.0;
/// ... or when its own timers fire this late (p99): it is starved of CPU (other processes on its
/// core), so the latency and loss it reports are its own, not the SFU's.
const GENERATOR_LAG_LIMIT_US: f64 = 20_000.0;
/// A churn cycle that has not seen media both ways by then counts as failed.
const CYCLE_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(
    name = "consulta-sfu-bench",
    about = "Benchmarks the Consulta SFU with synthetic WebRTC clients (LiveKit v0 signalling, \
             ICE/DTLS/SRTP) against an idealised forwarder measured in the same run",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    internal: Option<Internal>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// (internal) Run an SFU node on 127.0.0.1 and print its addresses; stops when stdin closes.
    Node {
        /// Drop every Nth RTP datagram each way (`MediaConfig::drop_rtp_every`; S4).
        #[arg(long, default_value_t = 0)]
        drop_rtp_every: u32,
        /// No bandwidth estimation towards subscribers (`MediaConfig::congestion_control`).
        #[arg(long)]
        no_congestion_control: bool,
    },
    /// (internal) Run the idealised forwarder and print its address.
    Ideal,
    /// Time opening and sealing one video packet with `rtc`'s SRTP context and with the own one
    /// the node's media paths use, under both profiles, in one thread without sockets.
    Srtp {
        /// Packets per round.
        #[arg(long, default_value_t = 50_000)]
        packets: u32,
        /// Measured rounds (alternating; the median is reported).
        #[arg(long, default_value_t = 9)]
        rounds: u32,
        /// Streams (SSRCs) the packets are spread over.
        #[arg(long, default_value_t = 4)]
        streams: u32,
    },
    /// Time `rtc`'s per-packet pipeline in one process (two peers connected in memory, no
    /// sockets): write, read and timer cost per packet on the one-way connections the SFU runs,
    /// with and without congestion control on the sending side, and with the bench sealing the
    /// sender's packets itself with the connection's own keys instead of `rtc`'s write path.
    Pipeline {
        /// Packets per round.
        #[arg(long, default_value_t = 20_000)]
        packets: u32,
        /// Measured rounds per setting (alternating; the median is reported).
        #[arg(long, default_value_t = 9)]
        rounds: u32,
        /// Connected pairs the packets are spread over (interleaved, as on a node): many
        /// connections do not fit the CPU's caches.
        #[arg(long, default_value_t = 1)]
        connections: u32,
        /// Read each packet as soon as it is written (as a node handles one datagram after
        /// another), instead of writing 500 per pair and then reading them.
        #[arg(long)]
        interleave: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Scenarios to run, comma-separated: s1 (1:1 rooms), s2 (rooms of 4), s3 (fan-out), s4 (1:1
    /// rooms under injected loss), s5 (churn).
    #[arg(long, default_value = "s1,s2,s3,s4,s5", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// S1 steps: numbers of 1:1 rooms (2 peers, each publishing Opus + VP8 and subscribing).
    #[arg(long, default_value = "10,20,40,80,160", value_delimiter = ',')]
    s1_rooms: Vec<u32>,
    /// S2 steps: numbers of rooms of 4 peers, each publishing and receiving the 3 others.
    #[arg(long, default_value = "5,10,20", value_delimiter = ',')]
    s2_rooms: Vec<u32>,
    /// S3 steps: numbers of subscribers of the one publisher.
    #[arg(long, default_value = "10,25,50,100,200", value_delimiter = ',')]
    s3_subscribers: Vec<u32>,
    /// S5: join/leave cycles (each: join, publish, connect both PCs, receive media, leave).
    #[arg(long, default_value_t = 1000)]
    churn_cycles: u32,
    /// S5: churning participants only subscribe (to tell state kept per publisher from state kept
    /// per subscriber).
    #[arg(long)]
    churn_subscribe_only: bool,
    /// S5: the resident publisher does not subscribe to the joiners (to tell state kept in its
    /// long-lived subscriber connection from state kept by the node per published track).
    #[arg(long)]
    churn_resident_no_subscribe: bool,
    /// S5: cycles in flight at once.
    #[arg(long, default_value_t = 8)]
    churn_concurrency: u32,
    /// Seconds of media before each measurement window.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Seconds of each measurement window.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Core of the SFU process.
    #[arg(long, default_value_t = 1)]
    sfu_core: u32,
    /// Core of the load generator (this process).
    #[arg(long, default_value_t = 0)]
    generator_core: u32,
    /// Do not pin processes to cores (CI machines without taskset or with one core).
    #[arg(long)]
    no_pin: bool,
    /// Skip the idealised forwarder.
    #[arg(long)]
    no_ideal: bool,
    /// S4: numbers of 1:1 rooms under injected loss (as S1).
    #[arg(long, default_value = "20", value_delimiter = ',')]
    s4_rooms: Vec<u32>,
    /// S4: the node drops every Nth RTP datagram it receives and every Nth it sends (50 = 2 %
    /// each way); NACKs must repair them.
    #[arg(long, default_value_t = 50)]
    s4_drop_every: u32,
    /// Set by S4 for the node it starts.
    #[arg(skip)]
    node_drop_rtp_every: u32,
    /// Run the node without bandwidth estimation towards subscribers (to measure what it costs).
    #[arg(long)]
    no_congestion_control: bool,
    /// Publishers send each video frame's packets paced at 2.8 Mbit/s (2.5 × the video's rate, as
    /// libwebrtc's pacer does) instead of all at once; a 16-packet key frame then takes ≈60 ms.
    #[arg(long)]
    pace_video: bool,
    /// Run the SFU node under this command (a profiler, e.g. "heaptrack -o /tmp/node"), split on
    /// spaces; it goes inside `taskset`, and lines the wrapper prints before the node's are skipped.
    #[arg(long)]
    node_wrapper: Option<String>,
    /// Also run S1, S2 and S3's steps against Janus (Debian `janus`, its VideoRoom plugin), on the
    /// SFU's core, with the same participants (Janus API over WebSocket instead of LiveKit's).
    #[arg(long)]
    janus: bool,
    /// The Janus executable.
    #[arg(long, default_value = "janus")]
    janus_bin: String,
    /// Also print each scenario's results as one `BENCH_JSON {...}` line.
    #[arg(long)]
    json: bool,
    /// The executable whose internal `node` subcommand runs the SFU: another build of this bench
    /// (by default this one).
    #[arg(long)]
    node_exe: Option<std::path::PathBuf>,
    /// Compare two builds of the node under this one load generator: the scenarios (s1 to s4)
    /// run against this executable's node (A) and this other build's (B) in the order A B B A,
    /// `--compare-rounds` times, without the idealised forwarder. Prints each run's packets per
    /// core, the means per step, and each round's B pair against its A pair: the machine's speed
    /// drifts over minutes, and the order cancels a drift that is even over a round.
    #[arg(long)]
    compare_with: Option<std::path::PathBuf>,
    /// Rounds of `--compare-with`.
    #[arg(long, default_value_t = 3)]
    compare_rounds: u32,
}

/// The steps of one stepped scenario (s1 to s4; s5 has no steps).
async fn scenario_rows(bench: &mut Bench, scenario: &str) -> anyhow::Result<Vec<Row>> {
    match scenario {
        "s1" => s1(bench).await,
        "s2" => s2(bench).await,
        "s3" => s3(bench).await,
        "s4" => s4(bench).await,
        other => {
            bail!("unknown scenario {other} (s1, s2, s3, s4, s5; --compare-with takes s1 to s4)")
        }
    }
}

/// The `GLIBC_TUNABLES` the SFU's node and the forwarder are started with (see `Proc::spawn`).
fn node_tunables() -> String {
    consulta_media::heap::huge_page_tunables()
        .or_else(|| std::env::var_os(consulta_media::heap::TUNABLES))
        .map_or_else(|| "unset".to_owned(), |t| t.to_string_lossy().into_owned())
}

/// `--compare-with`: see [`RunArgs::compare_with`].
async fn compare(args: RunArgs) -> anyhow::Result<()> {
    let builds = [
        std::env::current_exe()?,
        args.compare_with
            .clone()
            .context("a build to compare with")?,
    ];
    println!(
        "consulta-sfu-bench: A = {}, B = {}; {} rounds of A B B A; both nodes' GLIBC_TUNABLES {}; \
         loadavg {}",
        builds[0].display(),
        builds[1].display(),
        args.compare_rounds,
        node_tunables(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    // Per step: each round's packets per core, summed per build.
    let mut steps: Vec<(String, Vec<[f64; 2]>)> = Vec::new();
    for round in 0..args.compare_rounds {
        for build in [0, 1, 1, 0] {
            let mut run_args = args.clone();
            run_args.compare_with = None;
            run_args.no_ideal = true;
            run_args.json = false;
            run_args.node_exe = builds.get(build).cloned();
            let mut bench = Bench::new(run_args);
            for scenario in &args.scenarios {
                for row in scenario_rows(&mut bench, scenario).await? {
                    let name = ["A", "B"].get(build).copied().unwrap_or_default();
                    println!(
                        "round {} {name} {} {:.0}",
                        round + 1,
                        row.label,
                        row.out_pps_per_core
                    );
                    if !steps.iter().any(|(label, _)| *label == row.label) {
                        let rounds = vec![[0.0; 2]; args.compare_rounds as usize];
                        steps.push((row.label.clone(), rounds));
                    }
                    if let Some(sum) = steps
                        .iter_mut()
                        .find(|(label, _)| *label == row.label)
                        .and_then(|(_, rounds)| rounds.get_mut(round as usize))
                        .and_then(|sums| sums.get_mut(build))
                    {
                        *sum += row.out_pps_per_core;
                    }
                }
            }
        }
    }
    println!("means: step, A, B, B / A of the means, each round's B pair / A pair");
    for (label, rounds) in &steps {
        let mean = |build: usize| {
            rounds
                .iter()
                .filter_map(|sums| sums.get(build))
                .sum::<f64>()
                / (2.0 * rounds.len().max(1) as f64)
        };
        let ratios: Vec<String> = rounds
            .iter()
            .map(|[a, b]| {
                if *a > 0.0 {
                    format!("{:.3}", b / a)
                } else {
                    "-".to_owned()
                }
            })
            .collect();
        let (a, b) = (mean(0), mean(1));
        println!(
            "mean {label:<10} {a:>9.0} {b:>10.0} {:>8.3}   {}",
            if a > 0.0 { b / a } else { 0.0 },
            ratios.join(", ")
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error,consulta_sfu_bench=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.internal {
        Some(Internal::Node {
            drop_rtp_every,
            no_congestion_control,
        }) => run_node(drop_rtp_every, !no_congestion_control),
        Some(Internal::Ideal) => ideal::serve(),
        Some(Internal::Pipeline {
            packets,
            rounds,
            connections,
            interleave,
        }) => pipeline::run(packets, rounds, connections, interleave),
        Some(Internal::Srtp {
            packets,
            rounds,
            streams,
        }) => srtp::run(packets, rounds, streams),
        None => {
            if cli.run.janus
                && let Some(status) = janus::reexec_in_namespace()?
            {
                std::process::exit(status.code().unwrap_or(1));
            }
            if !cli.run.no_pin {
                pin(std::process::id(), cli.run.generator_core)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, run(cli.run))
        }
    }
}

/// Pins every thread of `pid` to `core`.
fn pin(pid: u32, core: u32) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (use --no-pin where it is missing)")?;
    if !status.success() {
        bail!("taskset failed: {status}");
    }
    Ok(())
}

fn run_node(drop_rtp_every: u32, congestion_control: bool) -> anyhow::Result<()> {
    // The runtime `consulta sfu` runs on (a worker per core the process may use: one under the
    // bench's `taskset`), so that the media loop is a task on a worker thread as there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = NodeConfig {
            shell: ShellConfig {
                keys: ApiKeys::new().with(KEY, ApiSecret::new(SECRET)),
                ..ShellConfig::default()
            },
            media: MediaConfig {
                drop_rtp_every,
                congestion_control,
                ..MediaConfig::default()
            },
            ..NodeConfig::default()
        };
        let node = SfuNode::start(
            config,
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            tokio::net::UdpSocket::bind("127.0.0.1:0").await?,
        )
        .await?;
        println!("NODE http={} udp={}", node.http_addr(), node.udp_addr());
        std::io::Write::flush(&mut std::io::stdout())?;
        // The parent closes our stdin (or kills us) when it is done.
        let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = closed.send(());
        });
        let _ = on_close.await;
        drop(node);
        Ok(())
    })
}

/// A child process (node or forwarder), killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn spawn(mode: &str, args: &RunArgs) -> anyhow::Result<Self> {
        let exe = match (&args.node_exe, mode) {
            (Some(exe), "node") => exe.clone().into_os_string(),
            _ => std::env::current_exe()?.into_os_string(),
        };
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if !args.no_pin {
            argv.extend([
                "taskset".into(),
                "-c".into(),
                args.sfu_core.to_string().into(),
            ]);
        }
        if let (Some(wrapper), "node") = (&args.node_wrapper, mode) {
            argv.extend(wrapper.split_whitespace().map(Into::into));
        }
        argv.push(exe);
        let (program, rest) = argv.split_first().context("empty command line")?;
        let mut command = Command::new(program);
        command.args(rest).arg(mode);
        // The heap `consulta sfu` gets by restarting itself (`consulta_media::heap`), given here
        // so that a profiler in `--node-wrapper` sees the process it started; the forwarder too,
        // so that the ratio compares forwarding alone.
        if let Some(tunables) = consulta_media::heap::huge_page_tunables() {
            command.env(consulta_media::heap::TUNABLES, tunables);
        }
        if mode == "node" && args.node_drop_rtp_every > 0 {
            command
                .arg("--drop-rtp-every")
                .arg(args.node_drop_rtp_every.to_string());
        }
        if mode == "node" && args.no_congestion_control {
            command.arg("--no-congestion-control");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {mode} process"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut stdout = std::io::BufReader::new(stdout);
        let key = if mode == "node" { "http=" } else { "udp=" };
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                bail!("the {mode} process ended without printing its address");
            }
            if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix(key)) {
                break addr.parse()?;
            }
        };
        Ok(Self { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of every thread of `pid`, in seconds, and how many times they were put on a CPU:
/// the scheduler's counters (`/proc/<pid>/task/*/schedstat`: nanoseconds, and its third field,
/// which counts each wake-up from a wait once, and a preemption, which the node's pinned core
/// hardly has); without them, utime + stime in clock ticks and no count.
fn cpu_usage(pid: u32) -> anyhow::Result<(f64, Option<u64>)> {
    match schedstat(pid) {
        Some((ns, runs)) => Ok((ns as f64 / 1e9, Some(runs))),
        None => Ok((stat_cpu_secs(pid)?, None)),
    }
}

/// The sums over the threads of `pid` of their `/proc/<pid>/task/*/schedstat`: nanoseconds on a
/// CPU, and times put on one. `None` if no thread has it.
fn schedstat(pid: u32) -> Option<(u64, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for task in tasks.flatten() {
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut fields = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(ns)), Some(_), Some(Some(runs))) =
            (fields.next(), fields.next(), fields.next())
        {
            let (total_ns, total_runs) = total.get_or_insert((0, 0));
            *total_ns += ns;
            *total_runs += runs;
        }
    }
    total
}

/// utime + stime of `pid`, in seconds (10 ms resolution).
fn stat_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()
        .context("VmRSS value")
}

/// `AnonHugePages` of `pid` in KiB; `None` where the kernel does not say.
fn huge_pages_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn token(identity: &str, room: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = join_claims(KEY, identity, room, now.saturating_sub(10), 3600);
    claims.video.room_create = true;
    Ok(mint(&claims, &ApiSecret::new(SECRET))?)
}

/// What one measurement window saw.
#[derive(Debug)]
struct Window {
    stats: WindowStats,
    /// CPU seconds of the SFU's process and of the generator's.
    sfu_cpu: f64,
    generator_cpu: f64,
    /// Times the SFU's threads were put on a CPU (see [`cpu_usage`]).
    sfu_runs: Option<u64>,
    /// How much of the SFU's memory sat on transparent huge pages at the window's end.
    huge_pages_kib: Option<u64>,
    elapsed: Duration,
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
struct Row {
    label: String,
    sessions: u32,
    out_pps: f64,
    mbit_s: f64,
    sfu_cpu_percent: f64,
    out_pps_per_core: f64,
    us_per_packet: f64,
    loss_percent: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// Latency to the sinks' sockets (the kernel's receive stamp): without the generator's own
    /// delay in reading and decrypting.
    socket_p50_us: f64,
    socket_p99_us: f64,
    socket_p999_us: f64,
    generator_lag_p99_us: f64,
    duplicates: u64,
    repaired: u64,
    /// How long after their first sending the packets that filled gaps late arrived.
    repair_p50_us: f64,
    repair_p99_us: f64,
    /// Loss of the audio and of the video streams apart (only video is NACKed: Opus is not).
    loss_audio_percent: f64,
    loss_video_percent: f64,
    keyframes_per_s: f64,
    keyframe_requests_per_s: f64,
    rss_per_session_kib: f64,
    generator_cpu_percent: f64,
    /// How often the SFU's threads were put on its core, per second: mostly wake-ups for
    /// datagrams, each of which costs the node a switch in and out whatever it then handles.
    sfu_runs_per_s: Option<f64>,
    /// The forwarding process's memory on transparent huge pages (`AnonHugePages`) at the
    /// window's end: its heap, when it runs with `consulta_media::heap`'s restart.
    huge_pages_kib: Option<u64>,
    ratio_to_ideal: Option<f64>,
    #[serde(skip)]
    topology: Topology,
}

impl Row {
    fn knee(&self) -> bool {
        self.loss_percent > KNEE_LOSS_PERCENT
            || self.p99_us > KNEE_P99_US
            || self.sfu_cpu_percent >= KNEE_CPU_PERCENT
    }
    fn invalid(&self) -> bool {
        self.generator_cpu_percent > GENERATOR_LIMIT_PERCENT
            || self.generator_lag_p99_us > GENERATOR_LAG_LIMIT_US
    }
}

/// The server a stepped scenario runs against.
enum Server {
    Consulta(Proc),
    Janus(JanusServer),
}

impl Server {
    fn start(dialect: Dialect, args: &RunArgs) -> anyhow::Result<Self> {
        Ok(match dialect {
            Dialect::LiveKit => Self::Consulta(Proc::spawn("node", args)?),
            Dialect::Janus => Self::Janus(JanusServer::start(
                &args.janus_bin,
                (!args.no_pin).then_some(args.sfu_core),
            )?),
        })
    }
    fn pid(&self) -> u32 {
        match self {
            Self::Consulta(node) => node.pid(),
            Self::Janus(janus) => janus.pid(),
        }
    }
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Consulta(node) => node.addr,
            Self::Janus(janus) => janus.addr,
        }
    }
}

struct Bench {
    args: RunArgs,
    /// Which server participants speak to.
    dialect: Dialect,
    recorder: Rc<RefCell<Recorder>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<client::Outcome>>>,
    next_sink: u32,
    next_stream: u32,
}

impl Bench {
    fn new(args: RunArgs) -> Self {
        Self {
            args,
            dialect: Dialect::LiveKit,
            recorder: Rc::new(RefCell::new(Recorder::new(Instant::now()))),
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            next_sink: 0,
            next_stream: 0,
        }
    }

    /// Stops every participant and starts afresh (new sinks, new recorder).
    async fn reset(&mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.stop = watch::channel(false).0;
        self.recorder = Rc::new(RefCell::new(Recorder::new(Instant::now())));
        self.next_sink = 0;
        self.next_stream = 0;
    }

    /// Starts one participant; returns its sink id and its streams (audio, video) if it publishes.
    fn join(
        &mut self,
        http: SocketAddr,
        room: &str,
        publish: bool,
        leave_after_media: bool,
    ) -> anyhow::Result<(u32, Option<(u32, u32)>)> {
        self.join_with(http, room, publish, leave_after_media, true)
    }

    fn join_with(
        &mut self,
        http: SocketAddr,
        room: &str,
        publish: bool,
        leave_after_media: bool,
        auto_subscribe: bool,
    ) -> anyhow::Result<(u32, Option<(u32, u32)>)> {
        let sink = self.next_sink;
        self.next_sink += 1;
        let publish = publish.then(|| {
            let a = self.next_stream;
            self.next_stream += 2;
            (a, a + 1)
        });
        let identity = format!("bench-{sink}");
        let spec = client::Spec {
            dialect: self.dialect,
            http,
            token: token(&identity, room)?,
            room: room.to_owned(),
            identity,
            bind_ip: match self.dialect {
                Dialect::LiveKit => std::net::Ipv4Addr::LOCALHOST.into(),
                Dialect::Janus => janus::NET_IP.into(),
            },
            sink,
            publish,
            leave_after_media,
            auto_subscribe,
            pace_video: self.args.pace_video,
        };
        let recorder = self.recorder.clone();
        recorder.borrow_mut().progress.insert(
            sink,
            media::Progress {
                publish,
                ..media::Progress::default()
            },
        );
        let stop = self.stop.subscribe();
        self.tasks.push(tokio::task::spawn_local(async move {
            let result = if leave_after_media {
                tokio::time::timeout(CYCLE_LIMIT, client::run(spec, recorder.clone(), stop))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no media within {CYCLE_LIMIT:?}")))
            } else {
                client::run(spec, recorder.clone(), stop).await
            };
            if let Err(error) = &result {
                tracing::warn!(%error, sink, "participant failed");
            }
            recorder
                .borrow_mut()
                .progress
                .entry(sink)
                .or_default()
                .ended = true;
            result
        }));
        Ok((sink, publish))
    }

    /// Waits until every (sink, stream) pair of `topology` delivered media, or gives up after
    /// `limit` and names the pairs without, with how far their participants' set-up got.
    async fn wait_flows(&self, topology: &Topology, limit: Duration) -> bool {
        let start = Instant::now();
        let flows: usize = topology.sinks.iter().map(Vec::len).sum();
        while self.recorder.borrow().flows() < flows {
            if start.elapsed() > limit {
                let recorder = self.recorder.borrow();
                println!(
                    "  warning: only {} of {flows} flows carry media after {limit:?}",
                    recorder.flows()
                );
                for line in media::describe_dark_flows(&recorder, topology) {
                    println!("    {line}");
                }
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Warms up, then measures one window against process `pid`.
    async fn measure(&self, pid: u32) -> anyhow::Result<Window> {
        tokio::time::sleep(Duration::from_secs_f64(self.args.warmup_secs)).await;
        let me = std::process::id();
        let ((sfu0, runs0), (gen0, _)) = (cpu_usage(pid)?, cpu_usage(me)?);
        let start = Instant::now();
        self.recorder.borrow_mut().start_window();
        tokio::time::sleep(Duration::from_secs_f64(self.args.duration_secs)).await;
        let stats = self.recorder.borrow_mut().end_window();
        let elapsed = start.elapsed();
        let ((sfu1, runs1), (gen1, _)) = (cpu_usage(pid)?, cpu_usage(me)?);
        Ok(Window {
            stats,
            sfu_cpu: sfu1 - sfu0,
            generator_cpu: gen1 - gen0,
            sfu_runs: runs0.zip(runs1).map(|(a, b)| b.saturating_sub(a)),
            huge_pages_kib: huge_pages_kib(pid),
            elapsed,
        })
    }

    fn row(
        label: String,
        sessions: u32,
        m: Window,
        rss_per_session_kib: f64,
        topology: Topology,
    ) -> Row {
        let Window {
            stats,
            sfu_cpu,
            generator_cpu: gen_cpu,
            sfu_runs,
            huge_pages_kib,
            elapsed,
        } = m;
        let secs = elapsed.as_secs_f64();
        let out_pps = stats.received as f64 / secs;
        let cpu = sfu_cpu / secs;
        Row {
            label,
            sessions,
            out_pps,
            mbit_s: stats.bytes as f64 * 8.0 / secs / 1e6,
            sfu_cpu_percent: 100.0 * cpu,
            out_pps_per_core: if cpu > 0.0 { out_pps / cpu } else { 0.0 },
            us_per_packet: if stats.received > 0 {
                sfu_cpu * 1e6 / stats.received as f64
            } else {
                0.0
            },
            loss_percent: stats.loss_percent(),
            p50_us: stats.p50_us,
            p99_us: stats.p99_us,
            p999_us: stats.p999_us,
            socket_p50_us: stats.socket_p50_us,
            socket_p99_us: stats.socket_p99_us,
            socket_p999_us: stats.socket_p999_us,
            generator_lag_p99_us: stats.generator_lag_p99_us,
            duplicates: stats.duplicates,
            repaired: stats.repaired,
            repair_p50_us: stats.repair_p50_us,
            repair_p99_us: stats.repair_p99_us,
            loss_audio_percent: loss_of(&stats, &topology, false),
            loss_video_percent: loss_of(&stats, &topology, true),
            keyframes_per_s: stats.keyframes as f64 / secs,
            keyframe_requests_per_s: stats.keyframe_requests as f64 / secs,
            rss_per_session_kib,
            generator_cpu_percent: 100.0 * gen_cpu / secs,
            sfu_runs_per_s: sfu_runs.map(|runs| runs as f64 / secs),
            huge_pages_kib,
            ratio_to_ideal: None,
            topology,
        }
    }

    /// Measures the idealised forwarder with `topology` on the SFU's core.
    async fn ideal(&mut self, topology: &Topology) -> anyhow::Result<Row> {
        self.reset().await;
        let forwarder = Proc::spawn("ideal", &self.args)?;
        let tasks = ideal::drive(
            forwarder.addr,
            topology,
            self.args.pace_video,
            self.recorder.clone(),
            self.stop.subscribe(),
        )
        .await?;
        self.wait_flows(topology, Duration::from_secs(10)).await;
        let m = self.measure(forwarder.pid()).await?;
        let _ = self.stop.send(true);
        for task in tasks {
            let _ = task.await;
        }
        let sessions = u32::try_from(topology.sinks.len())?;
        Ok(Self::row(
            "ideal".to_owned(),
            sessions,
            m,
            0.0,
            topology.clone(),
        ))
    }
}

fn print_header(session: &str) {
    println!(
        "{:<10} {:>6} {:>9} {:>7} {:>6} {:>10} {:>7} {:>7} {:>8} {:>8} {:>9} {:>11} {:>6} {:>8} {:>6}",
        "step",
        session,
        "out-pps",
        "Mbit/s",
        "CPU%",
        "pps/core",
        "µs/pkt",
        "loss%",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "RSS/ses KiB",
        "gen%",
        "lag99 ms",
        "ideal"
    );
}

/// The row's latency to the sinks' sockets, and how often the SFU woke, under its table line.
fn print_socket_latency(row: &Row) {
    println!(
        "  latency to the sinks' sockets (kernel receive stamps): p50 {:.3} / p99 {:.3} / p99.9 {:.3} ms",
        row.socket_p50_us / 1000.0,
        row.socket_p99_us / 1000.0,
        row.socket_p999_us / 1000.0,
    );
    if let Some(runs) = row.sfu_runs_per_s.filter(|runs| *runs > 0.0) {
        println!(
            "  the forwarding process was put on its core {runs:.0} times/s: {:.1} packets out per wake-up",
            row.out_pps / runs
        );
    }
    if let Some(kib) = row.huge_pages_kib {
        println!(
            "  on transparent huge pages: {:.1} MiB of the forwarding process's memory",
            kib as f64 / 1024.0
        );
    }
}

fn print_row(row: &Row) {
    println!(
        "{:<10} {:>6} {:>9.0} {:>7.1} {:>6.1} {:>10.0} {:>7.2} {:>7.3} {:>8.3} {:>8.3} {:>9.3} {:>11.0} {:>6.1} {:>8.3} {:>6}{}",
        row.label,
        row.sessions,
        row.out_pps,
        row.mbit_s,
        row.sfu_cpu_percent,
        row.out_pps_per_core,
        row.us_per_packet,
        row.loss_percent,
        row.p50_us / 1000.0,
        row.p99_us / 1000.0,
        row.p999_us / 1000.0,
        row.rss_per_session_kib,
        row.generator_cpu_percent,
        row.generator_lag_p99_us / 1000.0,
        row.ratio_to_ideal
            .map(|r| format!("{:.1}%", 100.0 * r))
            .unwrap_or_else(|| "-".to_owned()),
        if row.generator_cpu_percent > GENERATOR_LIMIT_PERCENT {
            "  INVALID: generator core > 85 %"
        } else if row.invalid() {
            "  INVALID: generator timers > 20 ms late (starved)"
        } else if row.knee() {
            "  knee"
        } else {
            ""
        }
    );
}

/// Adds participants from one step to the next: (bench, server address, from, to, topology).
type Grow<'a> =
    dyn FnMut(&mut Bench, SocketAddr, u32, u32, &mut Topology) -> anyhow::Result<()> + 'a;

/// Runs the stepped scenario against the SFU (and Janus with `--janus`), then the idealised
/// forwarder with the streams of the SFU's last step; `grow` adds participants up to a step.
async fn stepped(
    bench: &mut Bench,
    name: &str,
    session: &str,
    steps: &[u32],
    grow: &mut Grow<'_>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = stepped_on(bench, Dialect::LiveKit, name, session, steps, grow).await?;
    let ideal_topology = rows.last().map(|r| r.topology.clone());
    if bench.args.janus {
        let janus_name = format!("janus-{name}");
        let janus = stepped_on(bench, Dialect::Janus, &janus_name, session, steps, grow).await;
        bench.dialect = Dialect::LiveKit;
        match janus {
            Ok(janus) => rows.extend(janus),
            // The SFU's rows stand on their own.
            Err(error) => println!("{janus_name} failed: {error:#}"),
        }
    }
    if !bench.args.no_ideal
        && let Some(topology) = ideal_topology
    {
        let ideal = bench.ideal(&topology).await?;
        for row in &mut rows {
            if row.us_per_packet > 0.0 {
                row.ratio_to_ideal = Some(ideal.us_per_packet / row.us_per_packet);
            }
        }
        println!(
            "idealised forwarder (fixed-key SRTP via the node's own, consulta_media::srtp: GCM in and out; no DTLS; same streams as the SFU's last step, same core):"
        );
        print_row(&ideal);
        print_socket_latency(&ideal);
        let ratios: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                r.ratio_to_ideal
                    .map(|x| format!("{} {:.1} %", r.label, 100.0 * x))
            })
            .collect();
        println!(
            "out-pps per core as a share of the idealised forwarder's: {}",
            ratios.join(", ")
        );
        rows.push(ideal);
    }
    Ok(rows)
}

/// The steps of one scenario against one server, until the knee.
async fn stepped_on(
    bench: &mut Bench,
    dialect: Dialect,
    name: &str,
    session: &str,
    steps: &[u32],
    grow: &mut Grow<'_>,
) -> anyhow::Result<Vec<Row>> {
    bench.reset().await;
    bench.dialect = dialect;
    let server = Server::start(dialect, &bench.args)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(server.pid())?;
    println!(
        "\n{name} (server pid {}, RSS at start {rss0} KiB)",
        server.pid()
    );
    print_header(session);
    let mut rows = Vec::new();
    let mut current = 0;
    let mut topology = Topology::default();
    for &step in steps {
        grow(bench, server.addr(), current, step, &mut topology)?;
        current = step;
        let setup = Instant::now();
        let complete = bench
            .wait_flows(&topology, Duration::from_secs(20 + u64::from(step) / 4))
            .await;
        tracing::info!(step, setup = ?setup.elapsed(), complete, "step set up");
        let m = bench.measure(server.pid()).await?;
        let rss = rss_kib(server.pid())?;
        let per_session = rss.saturating_sub(rss0) as f64 / f64::from(step.max(1));
        let row = Bench::row(
            format!("{name}-{step}"),
            step,
            m,
            per_session,
            topology.clone(),
        );
        print_row(&row);
        let video: std::collections::HashSet<u32> = row
            .topology
            .streams
            .iter()
            .filter(|(_, video)| *video)
            .map(|(id, _)| *id)
            .collect();
        let video_flows = row
            .topology
            .sinks
            .iter()
            .flatten()
            .filter(|s| video.contains(s))
            .count();
        println!(
            "  loss audio {:.3} %, video {:.3} %; {} gaps filled late (NACK repairs){}; {} duplicates; {:.1} keyframes/s arrived at the sinks ({:.1}/s from the 3 s period alone); publishers got {:.1} keyframe requests/s",
            row.loss_audio_percent,
            row.loss_video_percent,
            row.repaired,
            if row.repaired > 0 {
                format!(
                    ", arriving {:.1} ms (p50) and {:.1} ms (p99) after they were first sent",
                    row.repair_p50_us / 1000.0,
                    row.repair_p99_us / 1000.0
                )
            } else {
                String::new()
            },
            row.duplicates,
            row.keyframes_per_s,
            video_flows as f64 / 3.0,
            row.keyframe_requests_per_s
        );
        print_socket_latency(&row);
        let stop = row.knee() || row.invalid();
        rows.push(row);
        if stop {
            break;
        }
    }
    // Participants leave before the server goes, so that teardown is not reported as failure.
    bench.reset().await;
    drop(server);
    Ok(rows)
}

/// Loss over the video (or the audio) streams of `topology`, in per cent.
fn loss_of(stats: &WindowStats, topology: &Topology, video: bool) -> f64 {
    let (received, expected) = topology
        .streams
        .iter()
        .filter(|(_, is_video)| *is_video == video)
        .filter_map(|(id, _)| stats.per_stream.get(id))
        .fold((0, 0), |(r, e), (sr, se)| (r + sr, e + se));
    if expected == 0 {
        return 0.0;
    }
    100.0 * expected.saturating_sub(received) as f64 / expected as f64
}

async fn s1(bench: &mut Bench) -> anyhow::Result<Vec<Row>> {
    let steps = bench.args.s1_rooms.clone();
    one_to_one(bench, "S1", &steps).await
}

/// S4: S1's rooms with the node dropping every Nth RTP datagram each way. What the sinks still
/// miss is the loss NACK repair left; the gaps filled late are the repairs.
async fn s4(bench: &mut Bench) -> anyhow::Result<Vec<Row>> {
    let steps = bench.args.s4_rooms.clone();
    let saved = bench.args.clone();
    bench.args.node_drop_rtp_every = saved.s4_drop_every;
    bench.args.no_ideal = true;
    // The loss is injected by the Consulta node; Janus would run without it.
    bench.args.janus = false;
    println!(
        "\nS4: the node drops every {}th RTP datagram it receives and every {}th it sends",
        saved.s4_drop_every, saved.s4_drop_every
    );
    let rows = one_to_one(bench, "S4", &steps).await;
    bench.args = saved;
    rows
}

async fn one_to_one(bench: &mut Bench, name: &str, steps: &[u32]) -> anyhow::Result<Vec<Row>> {
    rooms_of(bench, name, steps, 2).await
}

/// S2: small groups of four, everyone publishing and subscribing to the three others (12
/// forwarded streams per participant pair direction, 24 consumers per room).
async fn s2(bench: &mut Bench) -> anyhow::Result<Vec<Row>> {
    let steps = bench.args.s2_rooms.clone();
    rooms_of(bench, "S2", &steps, 4).await
}

/// Rooms of `peers` participants, each publishing Opus + VP8 and receiving everyone else's.
async fn rooms_of(
    bench: &mut Bench,
    name: &str,
    steps: &[u32],
    peers: usize,
) -> anyhow::Result<Vec<Row>> {
    let prefix = name.to_lowercase();
    let mut grow = |bench: &mut Bench, http, from, to, topology: &mut Topology| {
        for room in from..to {
            let room_name = format!("{prefix}-{room}");
            let mut published = Vec::with_capacity(peers);
            for _ in 0..peers {
                let (_, streams) = bench.join(http, &room_name, true, false)?;
                let Some((audio, video)) = streams else {
                    bail!("publishers without streams");
                };
                topology.streams.extend([(audio, false), (video, true)]);
                published.push([audio, video]);
            }
            for me in 0..peers {
                let others = published
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != me)
                    .flat_map(|(_, streams)| *streams)
                    .collect();
                topology.sinks.push(others);
            }
        }
        Ok(())
    };
    stepped(bench, name, "rooms", steps, &mut grow).await
}

async fn s3(bench: &mut Bench) -> anyhow::Result<Vec<Row>> {
    let steps = bench.args.s3_subscribers.clone();
    let mut grow = |bench: &mut Bench, http, from, to, topology: &mut Topology| {
        // The publisher's streams are the topology's only ones.
        let (audio, video) = match topology.streams.as_slice() {
            [(audio, _), (video, _)] => (*audio, *video),
            _ => {
                let (_, streams) = bench.join(http, "s3", true, false)?;
                let streams = streams.context("publisher streams")?;
                topology
                    .streams
                    .extend([(streams.0, false), (streams.1, true)]);
                // The publisher's own sink receives nothing (it is alone until subscribers come,
                // and they do not publish).
                topology.sinks.push(Vec::new());
                streams
            }
        };
        for _ in from..to {
            bench.join(http, "s3", false, false)?;
            topology.sinks.push(vec![audio, video]);
        }
        Ok(())
    };
    stepped(bench, "S3", "subs", &steps, &mut grow).await
}

/// S5: RSS of the node before and after join/leave cycles.
async fn s5(bench: &mut Bench) -> anyhow::Result<serde_json::Value> {
    bench.reset().await;
    let node = Proc::spawn("node", &bench.args)?;
    let rss_start = rss_kib(node.pid())?;
    println!(
        "\nS5 churn: {} join/leave cycles, {} at once, against one resident publisher",
        bench.args.churn_cycles, bench.args.churn_concurrency
    );
    let resident_subscribes = !bench.args.churn_resident_no_subscribe;
    bench.join_with(node.addr, "s5", true, false, resident_subscribes)?;
    let resident = bench.tasks.len();
    let cycles = bench.args.churn_cycles;
    let warm = (cycles / 10).max(1);
    let mut done = 0u32;
    let mut failed = 0u32;
    let mut setup_ms: Vec<f64> = Vec::new();
    let mut rss_warm = 0;
    let mut checkpoints = Vec::new();
    let started = Instant::now();
    while done < cycles {
        while bench.tasks.len() - resident < bench.args.churn_concurrency as usize
            && done + (bench.tasks.len() - resident) as u32 <= cycles.saturating_sub(1)
        {
            let publish = !bench.args.churn_subscribe_only;
            bench.join(node.addr, "s5", publish, true)?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut index = resident;
        while index < bench.tasks.len() {
            if bench.tasks.get(index).is_some_and(JoinHandle::is_finished) {
                let task = bench.tasks.swap_remove(index);
                done += 1;
                match task.await {
                    Ok(Ok(outcome)) => match outcome.first_media {
                        Some(t) => setup_ms.push(t.as_secs_f64() * 1000.0),
                        None => failed += 1,
                    },
                    _ => failed += 1,
                }
                if done == warm {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    rss_warm = rss_kib(node.pid())?;
                }
                if done.is_multiple_of((cycles / 4).max(1)) {
                    let rss = rss_kib(node.pid())?;
                    println!(
                        "  {done} cycles after {:.0} s ({failed} failed): node RSS {rss} KiB",
                        started.elapsed().as_secs_f64()
                    );
                    checkpoints.push((done, rss));
                }
            } else {
                index += 1;
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            println!("  warning: churn stopped after 10 minutes at {done} cycles");
            break;
        }
    }
    // Let the SFU finish tearing down the last sessions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = rss_kib(node.pid())?;
    let _ = bench.stop.send(true);
    let largest_offer = match bench.tasks.drain(..).next() {
        Some(resident) => match tokio::time::timeout(Duration::from_secs(5), resident).await {
            Ok(Ok(Ok(outcome))) => outcome.largest_offer,
            _ => (0, 0),
        },
        None => (0, 0),
    };
    println!(
        "  the resident's largest subscriber offer: {} m-lines, {} bytes",
        largest_offer.0, largest_offer.1
    );
    setup_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        setup_ms
            .get(((setup_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let growth = rss_end as f64 - rss_warm as f64;
    println!(
        "  {done} cycles in {:.1} s, {failed} failed; join → first media p50 {:.0} ms, p99 {:.0} ms",
        started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    println!(
        "  node RSS: start {rss_start} KiB, after {warm} cycles {rss_warm} KiB, after {done} cycles {rss_end} KiB ({:+.0} KiB, {:+.2} KiB/cycle after warm-up)",
        growth,
        growth / f64::from(done.saturating_sub(warm).max(1))
    );
    let marks: Vec<String> = checkpoints
        .iter()
        .map(|(n, rss)| format!("{n}: {rss} KiB"))
        .collect();
    println!("  RSS checkpoints: {}", marks.join(", "));
    bench.reset().await;
    drop(node);
    Ok(serde_json::json!({
        "cycles": done,
        "failed": failed,
        "rss_start_kib": rss_start,
        "rss_warm_kib": rss_warm,
        "rss_end_kib": rss_end,
        "setup_p50_ms": pct(0.5),
        "setup_p99_ms": pct(0.99),
        "resident_offer_mlines": largest_offer.0,
        "resident_offer_bytes": largest_offer.1,
        "checkpoints": checkpoints,
    }))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.compare_with.is_some() {
        return compare(args).await;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let tunables = node_tunables();
    println!(
        "consulta-sfu-bench: SFU on core {}, generator on core {}{}; warm-up {} s, window {} s; \
         the SFU's and the forwarder's GLIBC_TUNABLES {tunables}; loadavg {}",
        args.sfu_core,
        args.generator_core,
        if args.no_pin { " (not pinned)" } else { "" },
        args.warmup_secs,
        args.duration_secs,
        load.trim()
    );
    println!(
        "out-pps = RTP packets arriving at the sinks per second; CPU% = SFU process utime+stime over the window; \
         latency = sink receive - publisher send (one monotonic clock), and to the sinks' sockets = the kernel's receive stamp - publisher send; \
         RSS/ses = node RSS growth per room (S1) or subscriber (S3); \
         lag99 = p99 of how late the generator's own timers fired (packets are stamped when they leave, so it delays them without counting in the latency; a busy generator reads late, which the sink figure includes and the socket figure does not); \
         ideal = the SFU's out-pps per core as a share of the idealised forwarder's"
    );
    let mut bench = Bench::new(args.clone());
    let mut failures = 0;
    for scenario in &args.scenarios {
        let result = match scenario.as_str() {
            "s5" => s5(&mut bench).await,
            stepped => scenario_rows(&mut bench, stepped)
                .await
                .map(|rows| serde_json::json!({ "rows": rows })),
        };
        match result {
            Ok(value) => {
                if args.json {
                    println!(
                        "BENCH_JSON {}",
                        serde_json::json!({ "scenario": scenario, "result": value })
                    );
                }
            }
            Err(error) => {
                failures += 1;
                println!("{scenario} failed: {error:#}");
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg at the end: {}", load.trim());
    if failures > 0 {
        bail!("{failures} scenario(s) failed");
    }
    Ok(())
}
