//! `consulta dev` as the README tells a developer to run it.

use std::time::Duration;

use consulta_testkit::free_port;
use serde_json::{Value, json};

use crate::support::{Lines, consulta, piped, signal, wait_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stack_starts_prints_working_credentials_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let (hs_port, as_port) = (free_port().unwrap(), free_port().unwrap());
    let (sfu_port, sfu_udp_port) = (free_port().unwrap(), free_port().unwrap());
    let mut child = piped(consulta(dir.path()).args([
        "dev",
        "--homeserver-port",
        &hs_port.to_string(),
        "--appservice-port",
        &as_port.to_string(),
        "--sfu-port",
        &sfu_port.to_string(),
        "--sfu-udp-port",
        &sfu_udp_port.to_string(),
    ]));
    let mut lines = Lines::follow(&mut child);
    tokio::task::block_in_place(|| {
        lines.wait_for("Press Ctrl-C to stop.", Duration::from_secs(180))
    });
    let printed = lines.seen.join("\n");
    let homeserver = format!("http://127.0.0.1:{hs_port}");
    assert!(
        printed.contains(&homeserver),
        "the homeserver URL is printed:\n{printed}"
    );

    let http = reqwest::Client::new();
    for localpart in ["doctor", "patient1", "patient2"] {
        let line = lines
            .seen
            .iter()
            .find(|l| l.contains(&format!("@{localpart}:clinic.test")))
            .unwrap_or_else(|| panic!("no credentials for {localpart}:\n{printed}"));
        let password = line.split("password: ").nth(1).unwrap().trim();
        let login: Value = http
            .post(format!("{homeserver}/_matrix/client/v3/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            login["user_id"],
            format!("@{localpart}:clinic.test"),
            "printed credentials log in: {login}"
        );
    }
    let health: Value = http
        .get(format!("http://127.0.0.1:{as_port}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    // The SFU runs too, and says where.
    assert!(
        printed.contains(&format!("ws://127.0.0.1:{sfu_port}")),
        "the SFU URL is printed:\n{printed}"
    );
    let validate = http
        .get(format!("http://127.0.0.1:{sfu_port}/rtc/validate"))
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 401, "the SFU wants a token");

    signal(&child, libc::SIGINT);
    let status = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(30)));
    assert!(status.success(), "Ctrl-C stops the stack cleanly: {status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", hs_port)).is_err(),
        "Synapse is stopped with the stack"
    );
}
