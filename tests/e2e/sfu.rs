//! `consulta sfu` as an operator runs it: generate the config, start, scrape metrics, and have
//! tokens checked with the generated key.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consulta_sfu::auth::{ApiSecret, Claims, VideoGrant, mint};
use consulta_testkit::free_port;

use crate::support::{Lines, consulta, output, piped, signal, wait_exit};

fn token(secret: &str, room_create: bool) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: "consulta".to_owned(),
        sub: "@doctor:clinic.test".to_owned(),
        exp: Some(now + 300),
        video: VideoGrant {
            room_join: true,
            room_create,
            room: "consultation-1".to_owned(),
            ..VideoGrant::default()
        },
        ..Claims::default()
    };
    mint(&claims, &ApiSecret::new(secret)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consulta_sfu_runs_from_a_generated_config() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, printed) = output(consulta(dir.path()).args(["sfu", "--generate-config"]));
    assert!(ok, "{printed}");
    let generated = std::fs::read_to_string(dir.path().join("sfu.yaml")).unwrap();
    assert!(!generated.contains("CHANGE_ME"), "a secret was generated");
    let mode = std::fs::metadata(dir.path().join("sfu.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only its owner can read the API secret"
    );
    let secret = generated
        .lines()
        .find_map(|l| l.trim().strip_prefix("consulta: "))
        .unwrap()
        .to_owned();
    let (ok, printed) = output(consulta(dir.path()).args(["sfu", "--generate-config"]));
    assert!(!ok, "an existing config is not overwritten: {printed}");

    let (port, udp_port) = (free_port().unwrap(), free_port().unwrap());
    let config = generated
        .replace("127.0.0.1:7880", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:7882", &format!("127.0.0.1:{udp_port}"));
    std::fs::write(dir.path().join("sfu.yaml"), config).unwrap();
    let mut child = piped(consulta(dir.path()).args(["sfu"]));
    let mut lines = Lines::follow(&mut child);
    tokio::task::block_in_place(|| lines.wait_for("Consulta SFU started", Duration::from_secs(30)));
    let logs = lines.seen.join("\n");
    assert!(!logs.contains(&secret), "the secret is never logged");

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("consulta_sfu_rooms 0"), "{metrics}");
    assert!(metrics.contains("# TYPE consulta_sfu_rtp_packets_forwarded_total counter"));

    let validate = |token: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let response = http
                .get(format!("{base}/rtc/validate"))
                .query(&[("access_token", token)])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(
        validate(token(&secret, false)).await,
        (404, "requested room does not exist".to_owned())
    );
    assert_eq!(validate(token(&secret, true)).await.0, 200);
    assert_eq!(
        validate(token("another-secret-that-is-long-enough-0000", true))
            .await
            .0,
        401
    );

    signal(&child, libc::SIGTERM);
    let status = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    assert!(status.success(), "SIGTERM stops the SFU cleanly: {status}");
}

/// `consulta sfu` runs again in place (same process id) with glibc told to back its heap with
/// transparent huge pages, from one arena (`consulta_media::heap`), where the kernel waits to be
/// asked (`madvise`): the process the test started is the one serving, started a second time
/// (the restart's mark is in its initial environment) and logging the tunables from its own
/// environment. (glibc advises its heap once it grows by 2 MiB, which an idle node's does not:
/// the bench prints how much of the node's memory is on huge pages, docs/benchmarks.md.) An
/// operator's `GLIBC_TUNABLES` that names the tunable (here to 0) is left exactly as it is, other
/// tunables in it included, with no restart.
#[test]
fn consulta_sfu_puts_its_heap_on_huge_pages_unless_the_operator_chose() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, printed) = output(consulta(dir.path()).args(["sfu", "--generate-config"]));
    assert!(ok, "{printed}");
    let generated = std::fs::read_to_string(dir.path().join("sfu.yaml")).unwrap();
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let operator = "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=0";
    let theirs =
        format!("heap pages as the operator's GLIBC_TUNABLES chooses glibc_tunables={operator}");
    let (ours, restarted) = if thp.contains("[madvise]") {
        (
            "heap on transparent huge pages: restarted with GLIBC_TUNABLES glibc_tunables=glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1",
            true,
        )
    } else if thp.contains("[always]") {
        (
            "heap on transparent huge pages: the kernel's setting is always",
            false,
        )
    } else {
        (
            "heap on ordinary pages: the kernel offers no transparent huge pages",
            false,
        )
    };
    for (chosen, said, restarted) in [(None, ours, restarted), (Some(operator), &*theirs, false)] {
        let (port, udp_port) = (free_port().unwrap(), free_port().unwrap());
        let config = generated
            .replace("127.0.0.1:7880", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:7882", &format!("127.0.0.1:{udp_port}"));
        std::fs::write(dir.path().join("sfu.yaml"), config).unwrap();
        let mut command = consulta(dir.path());
        command
            .arg("sfu")
            .env_remove("CONSULTA_HEAP_RESTARTED")
            .env_remove("LD_PRELOAD")
            .env_remove("MALLOC_ARENA_MAX")
            .env_remove("RUST_LOG");
        match chosen {
            Some(tunables) => command.env("GLIBC_TUNABLES", tunables),
            None => command.env_remove("GLIBC_TUNABLES"),
        };
        let mut child = piped(&mut command);
        let mut lines = Lines::follow(&mut child);
        let line = plain(&lines.wait_for(" heap ", Duration::from_secs(30)));
        assert!(line.ends_with(said), "{chosen:?}: {line}");
        lines.wait_for("Consulta SFU started", Duration::from_secs(30));
        // The process the test started is the one serving; its initial environment (what
        // execve was given) says whether it was started again.
        assert!(child.try_wait().unwrap().is_none(), "{chosen:?}");
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let marked = environ
            .split(|&b| b == 0)
            .any(|var| var == b"CONSULTA_HEAP_RESTARTED=1");
        assert_eq!(marked, restarted, "{chosen:?}: started again");
        let name = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
        assert_eq!(
            name.trim_end(),
            "consulta",
            "{chosen:?}: ps and pgrep find it by name"
        );
        signal(&child, libc::SIGTERM);
        assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    }
}

/// A log line without its colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('\u{1b}') {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find('m')
            .map_or("", |end| &rest[start + end + 1..]);
    }
    out + rest
}
