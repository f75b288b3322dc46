//! Routes exercised in-process with `oneshot`: authentication, malformed input, queries, health.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use consulta_appservice::{AppState, EventSource, app};
use consulta_core::{AuditAction, Role, UserId};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::offline_state;

async fn call(
    state: &AppState,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app(state.clone())
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

fn hs_token(state: &AppState) -> String {
    state.config().appservice.hs_token.expose().to_owned()
}

const TXN: &str = r#"{"events":[{"type":"m.room.message","event_id":"$e1","room_id":"!r:clinic.example","sender":"@p:clinic.example","content":{"body":"hello"}}],"ephemeral":[]}"#;

#[tokio::test]
async fn transactions_need_the_hs_token() {
    let (state, _dir) = offline_state().await;
    let uri = "/_matrix/app/v1/transactions/1";
    let (status, body) = call(&state, Method::PUT, uri, None, TXN).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    let (status, body) = call(&state, Method::PUT, uri, Some("not-the-token"), TXN).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    // The as_token is not the hs_token: a leaked as_token cannot inject transactions.
    let as_token = state.config().appservice.as_token.expose().to_owned();
    let (status, _) = call(&state, Method::PUT, uri, Some(&as_token), TXN).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    assert_eq!(
        state.store().transaction_count().await.unwrap(),
        0,
        "refused transactions are not recorded"
    );
    let audit = state.store().recent_audit(10).await.unwrap();
    assert_eq!(audit.len(), 2, "each wrong token is audited");
    assert!(
        audit
            .iter()
            .all(|r| r.action == AuditAction::AuthenticationFailed)
    );

    let (status, body) = call(&state, Method::PUT, uri, Some(&hs_token(&state)), TXN).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn malformed_transactions_get_matrix_errors_and_change_nothing() {
    let (state, _dir) = offline_state().await;
    let token = hs_token(&state);
    let uri = "/_matrix/app/v1/transactions/7";
    for (body, errcode) in [
        ("", "M_NOT_JSON"),
        ("{not json", "M_NOT_JSON"),
        ("\u{0}\u{1}binary", "M_NOT_JSON"),
        ("[]", "M_BAD_JSON"),
        ("{}", "M_BAD_JSON"),
        (r#"{"events": "nope"}"#, "M_BAD_JSON"),
        (r#"{"events": [], "ephemeral": 3}"#, "M_BAD_JSON"),
    ] {
        let (status, value) = call(&state, Method::PUT, uri, Some(&token), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "body {body:?}");
        assert_eq!(value["errcode"], errcode, "body {body:?}");
    }
    assert_eq!(state.store().transaction_count().await.unwrap(), 0);

    let oversized = format!(
        r#"{{"events":[],"padding":"{}"}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    let (status, value) = call(&state, Method::PUT, uri, Some(&token), &oversized).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(value["errcode"], "M_TOO_LARGE");

    // A well-formed retry of the same txnId still goes through afterwards.
    let (status, _) = call(&state, Method::PUT, uri, Some(&token), TXN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state.store().transaction_count().await.unwrap(), 1);
}

#[tokio::test]
async fn replayed_txn_ids_are_acknowledged_but_processed_once() {
    let (state, _dir) = offline_state().await;
    let processor = consulta_appservice::spawn_processor(&state);
    let mut processed = state.processor().subscribe();
    let token = hs_token(&state);
    for _ in 0..3 {
        let (status, _) = call(
            &state,
            Method::PUT,
            "/_matrix/app/v1/transactions/42",
            Some(&token),
            TXN,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // A later transaction is processed after 42 (arrival order), so once it shows up any duplicate of 42
    // would already have been seen.
    let marker = r#"{"events":[{"type":"m.room.member","event_id":"$m","room_id":"!r:clinic.example","sender":"@d:clinic.example","state_key":"@d:clinic.example","content":{"membership":"join"}}]}"#;
    call(
        &state,
        Method::PUT,
        "/_matrix/app/v1/transactions/43",
        Some(&token),
        marker,
    )
    .await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(txn, _): &(String, String)| txn == "43") {
        let event = tokio::time::timeout(Duration::from_secs(10), processed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.source, EventSource::Timeline);
        seen.push((event.txn_id, event.event_type));
    }
    assert_eq!(
        seen,
        [
            ("42".to_owned(), "m.room.message".to_owned()),
            ("43".to_owned(), "m.room.member".to_owned())
        ]
    );
    assert_eq!(state.store().transaction_count().await.unwrap(), 2);
    assert!(
        state
            .store()
            .pending_transactions(10)
            .await
            .unwrap()
            .is_empty(),
        "processed bodies are dropped"
    );
    processor.abort();
}

#[tokio::test]
async fn ephemeral_events_are_processed_under_either_key() {
    let (state, _dir) = offline_state().await;
    let processor = consulta_appservice::spawn_processor(&state);
    let mut processed = state.processor().subscribe();
    let token = hs_token(&state);
    let receipt = r#"{"type":"m.receipt","room_id":"!r:clinic.example","content":{"$e1":{"m.read":{"@p:clinic.example":{"ts":1}}}}}"#;
    let stable = format!(r#"{{"events":[],"ephemeral":[{receipt}]}}"#);
    let legacy = format!(r#"{{"events":[],"de.sorunome.msc2409.ephemeral":[{receipt}]}}"#);
    call(
        &state,
        Method::PUT,
        "/_matrix/app/v1/transactions/a",
        Some(&token),
        &stable,
    )
    .await;
    call(
        &state,
        Method::PUT,
        "/_matrix/app/v1/transactions/b",
        Some(&token),
        &legacy,
    )
    .await;
    for txn in ["a", "b"] {
        let event = tokio::time::timeout(Duration::from_secs(10), processed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.txn_id, txn);
        assert_eq!(event.source, EventSource::Ephemeral);
        assert_eq!(event.event_type, "m.receipt");
        assert_eq!(event.room_id.unwrap().as_str(), "!r:clinic.example");
    }
    processor.abort();
}

#[tokio::test]
async fn ping_and_queries_answer_as_the_spec_says() {
    let (state, _dir) = offline_state().await;
    let token = hs_token(&state);
    let (status, body) = call(
        &state,
        Method::POST,
        "/_matrix/app/v1/ping",
        Some(&token),
        r#"{"transaction_id":"t1"}"#,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert_eq!(state.last_ping().as_deref(), Some("t1"));
    let (status, _) = call(
        &state,
        Method::POST,
        "/_matrix/app/v1/ping",
        Some("wrong"),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let bot = "/_matrix/app/v1/users/@_consulta_bot:clinic.example";
    assert_eq!(
        call(&state, Method::GET, bot, Some(&token), "").await.0,
        StatusCode::OK
    );
    let (status, body) = call(
        &state,
        Method::GET,
        "/_matrix/app/v1/users/@_consulta_ghost:clinic.example",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let (status, body) = call(
        &state,
        Method::GET,
        "/_matrix/app/v1/users/not-a-user",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
    let (status, _) = call(
        &state,
        Method::GET,
        "/_matrix/app/v1/rooms/%23_consulta_x:clinic.example",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&state, Method::GET, bot, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = call(
        &state,
        Method::GET,
        "/_matrix/app/v1/nothing-here",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED"))
    );
}

#[tokio::test]
async fn health_reports_the_store() {
    let (state, _dir) = offline_state().await;
    let (status, body) = call(&state, Method::GET, "/health", None, "").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    state.store().close().await;
    let (status, body) = call(&state, Method::GET, "/health", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
}

#[tokio::test]
async fn the_gate_needs_its_secret_and_fails_closed() {
    let (state, _dir) = offline_state().await;
    let secret = state.config().antispam.secret.expose().to_owned();
    let uri = "/_consulta/antispam/user_may_create_room";
    let doctor = "@d:clinic.example";
    state
        .store()
        .set_role(
            &UserId::parse(doctor).unwrap(),
            Some(Role::Doctor),
            state.clock().now(),
        )
        .await
        .unwrap();
    let body = r#"{"user_id":"@d:clinic.example"}"#;
    assert_eq!(
        call(&state, Method::POST, uri, None, body).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&state, Method::POST, uri, Some(&hs_token(&state)), body)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&state, Method::POST, uri, Some(&secret), body).await.0,
        StatusCode::OK
    );
    for (uri, body) in [
        (
            "/_consulta/antispam/user_may_join_room",
            r#"{"user":"@d:clinic.example","room":"!r:x","is_invited":false}"#,
        ),
        (
            "/_consulta/antispam/user_may_invite",
            r#"{"user_id":"@d:clinic.example"}"#,
        ),
        (
            "/_consulta/antispam/user_may_invite",
            r#"{"inviter":"not an id","invitee":"@p:clinic.example","room_id":"!r:x"}"#,
        ),
        (uri, "garbage"),
    ] {
        let (status, value) = call(&state, Method::POST, uri, Some(&secret), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} {body}");
        assert_eq!(value["errcode"], "M_FORBIDDEN");
    }
    // The store going away is a refusal, not an error page.
    state.store().close().await;
    let (status, value) = call(&state, Method::POST, uri, Some(&secret), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        value["error"],
        "Consulta cannot decide this action right now, so it is refused."
    );
}

#[tokio::test]
async fn gate_roles_come_from_the_store_then_the_config_map() {
    let (state, _dir) = offline_state().await;
    let secret = state.config().antispam.secret.expose().to_owned();
    let uri = "/_consulta/antispam/user_may_create_room";
    // Unknown local users are pending.
    let (status, value) = call(
        &state,
        Method::POST,
        uri,
        Some(&secret),
        r#"{"user_id":"@x:clinic.example"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("waiting for the clinic")
    );
    // Consulta's own bot may always create rooms.
    let bot = r#"{"user_id":"@_consulta_bot:clinic.example"}"#;
    assert_eq!(
        call(&state, Method::POST, uri, Some(&secret), bot).await.0,
        StatusCode::OK
    );
    // Remote users never create rooms here.
    let remote = r#"{"user_id":"@x:elsewhere.example"}"#;
    assert_eq!(
        call(&state, Method::POST, uri, Some(&secret), remote)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // A patient is told who starts conversations.
    let patient = UserId::parse("@p:clinic.example").unwrap();
    state
        .store()
        .set_role(&patient, Some(Role::Patient), state.clock().now())
        .await
        .unwrap();
    let (status, value) = call(
        &state,
        Method::POST,
        uri,
        Some(&secret),
        r#"{"user_id":"@p:clinic.example"}"#,
    )
    .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Conversations are started by your care team.")
        )
    );
}

#[tokio::test]
async fn federated_invites_count_only_from_partner_clinics() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        consulta_appservice::config::generate_missing_secrets(consulta_appservice::config::EXAMPLE)
            .0
            .replace("allowed_servers: []", "allowed_servers: [partner.example]");
    let overrides = vec![(
        "CONSULTA_DATABASE__URI".to_owned(),
        format!("sqlite://{}", dir.path().join("c.db").display()),
    )];
    let config = consulta_appservice::Config::from_yaml_with_env(&text, overrides).unwrap();
    let store = consulta_store::Store::connect(config.database.uri.expose(), 2)
        .await
        .unwrap();
    let state = AppState::new(
        config,
        store,
        std::sync::Arc::new(consulta_appservice::SystemClock),
    )
    .unwrap();
    let now = state.clock().now();
    state
        .store()
        .set_role(
            &UserId::parse("@p:clinic.example").unwrap(),
            Some(Role::Patient),
            now,
        )
        .await
        .unwrap();
    let secret = state.config().antispam.secret.expose().to_owned();

    let invite = |sender: &str, target: &str| {
        json!({"event": {"type": "m.room.member", "sender": sender, "state_key": target, "room_id": "!r:remote.example",
            "event_id": "$i", "content": {"membership": "invite"}}})
        .to_string()
    };
    let uri = "/_consulta/antispam/federated_user_may_invite";
    let (status, _) = call(
        &state,
        Method::POST,
        uri,
        Some(&secret),
        &invite("@dr:partner.example", "@p:clinic.example"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a partner clinic's doctor may invite our patient"
    );
    let (status, body) = call(
        &state,
        Method::POST,
        uri,
        Some(&secret),
        &invite("@x:stranger.example", "@p:clinic.example"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("This server is not one of the clinic's partners.")
        )
    );
    let (status, body) = call(
        &state,
        Method::POST,
        uri,
        Some(&secret),
        &invite("@dr:partner.example", "@nobody:clinic.example"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "pending users are not reachable from anywhere: {body}"
    );
    // Synapse then asks user_may_invite for the same invite; the answer must agree.
    let body = r#"{"inviter":"@x:stranger.example","invitee":"@p:clinic.example","room_id":"!r:remote.example"}"#;
    let (status, _) = call(
        &state,
        Method::POST,
        "/_consulta/antispam/user_may_invite",
        Some(&secret),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // And our doctors cannot pull people of unknown servers into rooms either.
    state
        .store()
        .set_role(
            &UserId::parse("@d:clinic.example").unwrap(),
            Some(Role::Doctor),
            now,
        )
        .await
        .unwrap();
    let body = r#"{"inviter":"@d:clinic.example","invitee":"@x:stranger.example","room_id":"!r:clinic.example"}"#;
    let (status, _) = call(
        &state,
        Method::POST,
        "/_consulta/antispam/user_may_invite",
        Some(&secret),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
