//! The admin's workflow: example config → registration → homeserver → `consulta run`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use consulta_store::Store;
use consulta_testkit::{Synapse, SynapseOptions, free_port};
use serde_json::{Value, json};

use crate::support::{Lines, consulta, output, piped, signal, wait_exit};

#[test]
fn generate_config_then_registration_keeps_comments_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = output(consulta(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(ok, "{out}");
    let config_path = dir.path().join("config.yaml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    assert!(original.contains("as_token: generate"));
    assert_eq!(
        std::fs::metadata(&config_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let (ok, out) = output(consulta(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(
        !ok && out.contains("--force"),
        "an existing config is not overwritten: {out}"
    );

    let (ok, out) = output(consulta(dir.path()).args(["run", "-c", "config.yaml"]));
    assert!(!ok, "placeholder secrets must stop the service");
    assert!(
        out.contains("appservice.as_token") && out.contains("generate-registration"),
        "{out}"
    );

    let (ok, out) = output(consulta(dir.path()).args([
        "generate-registration",
        "-c",
        "config.yaml",
        "-r",
        "reg.yaml",
    ]));
    assert!(ok, "{out}");
    assert!(
        out.contains("synapse-http-antispam"),
        "the admin is told what to do next: {out}"
    );
    let with_tokens = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        !with_tokens.contains(": generate"),
        "every placeholder is replaced"
    );
    assert_eq!(
        with_tokens
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count(),
        original
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count(),
        "comments are kept"
    );
    let registration: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.path().join("reg.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        registration["namespaces"]["users"][0]["exclusive"],
        json!(true)
    );
    assert_eq!(
        registration["namespaces"]["users"][1]["exclusive"],
        json!(false)
    );
    assert_eq!(registration["rate_limited"], json!(false));
    assert_eq!(registration["receive_ephemeral"], json!(true));
    assert!(with_tokens.contains(registration["as_token"].as_str().unwrap()));

    let (ok, out) = output(consulta(dir.path()).args([
        "generate-registration",
        "-c",
        "config.yaml",
        "-r",
        "reg.yaml",
    ]));
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        with_tokens,
        "tokens are generated once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consulta_run_serves_a_real_synapse_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = output(consulta(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(ok, "{out}");
    let (as_port, hs_port) = (free_port().unwrap(), free_port().unwrap());
    let db = dir.path().join("consulta.db");
    let env = [
        (
            "CONSULTA_HOMESERVER__ADDRESS",
            format!("http://127.0.0.1:{hs_port}"),
        ),
        ("CONSULTA_HOMESERVER__DOMAIN", "clinic.test".to_owned()),
        (
            "CONSULTA_APPSERVICE__ADDRESS",
            format!("http://127.0.0.1:{as_port}"),
        ),
        ("CONSULTA_APPSERVICE__PORT", as_port.to_string()),
        (
            "CONSULTA_DATABASE__URI",
            format!("sqlite://{}", db.display()),
        ),
    ];
    let (ok, out) = output(
        consulta(dir.path())
            .args([
                "generate-registration",
                "-c",
                "config.yaml",
                "-r",
                "reg.yaml",
            ])
            .envs(env.clone()),
    );
    assert!(ok, "{out}");
    // The admin gives the first doctor a role in the config's permissions map.
    let config_path = dir.path().join("config.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap().replacen(
        "permissions:\n",
        "permissions:\n    \"@drjones:clinic.test\": doctor\n",
        1,
    );
    std::fs::write(&config_path, &config).unwrap();
    let secret = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .unwrap()
        .to_owned();

    let synapse_dir = dir.path().join("synapse");
    std::fs::create_dir(&synapse_dir).unwrap();
    let synapse = Synapse::start(
        &synapse_dir,
        SynapseOptions {
            port: Some(hs_port),
            registration: Some(dir.path().join("reg.yaml")),
            gate: Some((
                format!("http://127.0.0.1:{as_port}/_consulta/antispam"),
                secret,
            )),
            ..SynapseOptions::default()
        },
    )
    .await
    .unwrap();

    let mut child = piped(
        consulta(dir.path())
            .args(["run", "-c", "config.yaml"])
            .envs(env),
    );
    let mut lines = Lines::follow(&mut child);
    tokio::task::block_in_place(|| {
        lines.wait_for("homeserver reached us back", Duration::from_secs(60))
    });

    // A real client's message travels Synapse → the separate appservice process → its store.
    let user = synapse
        .register_user("drjones", "a long enough password", false)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", user.access_token);
    let room: Value = http
        .post(format!(
            "{}/_matrix/client/v3/createRoom",
            synapse.base_url()
        ))
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["room_id"].as_str().expect("room created").to_owned();
    let sent = http
        .put(format!(
            "{}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
            synapse.base_url()
        ))
        .header("authorization", &auth)
        .json(&json!({"msgtype": "m.text", "body": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success());

    let store = Store::connect(&format!("sqlite://{}", db.display()), 1)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.transaction_count().await.unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no transaction reached the appservice process"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    signal(&child, libc::SIGTERM);
    let status = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    assert!(
        status.success(),
        "consulta run exits cleanly on SIGTERM: {status}"
    );
    let output = lines.seen.join("\n");
    for secret_value in [user.access_token.as_str(), "hello"] {
        assert!(
            !output.contains(secret_value),
            "logs must not carry tokens or message text"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_and_revokes_roles_and_audits_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = output(consulta(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(ok, "{out}");
    let db = dir.path().join("consulta.db");
    let env = [(
        "CONSULTA_DATABASE__URI",
        format!("sqlite://{}", db.display()),
    )];
    let (ok, out) = output(
        consulta(dir.path())
            .args([
                "generate-registration",
                "-c",
                "config.yaml",
                "-r",
                "reg.yaml",
            ])
            .envs(env.clone()),
    );
    assert!(ok, "{out}");

    let users = |args: &[&str]| {
        let mut command = consulta(dir.path());
        command
            .arg("users")
            .args(args)
            .args(["-c", "config.yaml"])
            .envs(env.clone());
        output(&mut command)
    };
    let (ok, out) = users(&["set-role", "@first.admin:clinic.example", "admin"]);
    assert!(
        ok && out.contains("@first.admin:clinic.example is now admin"),
        "{out}"
    );
    let (ok, out) = users(&["set-role", "@drjones:clinic.example", "doctor"]);
    assert!(ok, "{out}");
    let (ok, out) = users(&["list", "--role", "doctor"]);
    assert!(
        ok && out.contains("@drjones:clinic.example\tdoctor"),
        "{out}"
    );
    let (ok, out) = users(&["set-role", "@drjones:clinic.example", "nurse"]);
    assert!(!ok && out.contains("unknown role \"nurse\""), "{out}");
    let (ok, out) = users(&["set-role", "@someone:elsewhere.example", "doctor"]);
    assert!(
        !ok && out.contains("not an account of this homeserver"),
        "{out}"
    );
    let (ok, out) = users(&["set-role", "@drjones:clinic.example", "pending"]);
    assert!(ok, "{out}");
    let (ok, out) = users(&["list", "--role", "doctor"]);
    assert!(ok && !out.contains("drjones"), "{out}");

    let store = Store::connect(&format!("sqlite://{}", db.display()), 1)
        .await
        .unwrap();
    let details: Vec<String> = store
        .recent_audit(10)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| r.detail)
        .collect();
    assert_eq!(
        details,
        [
            "pending -> admin via cli",
            "pending -> doctor via cli",
            "doctor -> pending via cli"
        ]
    );
}
