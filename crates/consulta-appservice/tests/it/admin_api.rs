//! Accounts and roles through the REST API, as an admin and as a doctor.

use consulta_core::{AuditAction, Role};
use consulta_testkit::Stack;
use reqwest::Method;
use serde_json::json;

use crate::person;
use crate::rest_support::api;

async fn password_login(stack: &Stack, user: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/login", stack.synapse.base_url()))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_accounts_and_manage_roles_and_every_change_is_audited() {
    let stack = Stack::start().await.unwrap();
    let admin = person(&stack, "clinicadmin", Some(Role::Admin)).await;
    let doctor = person(&stack, "drhouse", Some(Role::Doctor)).await;
    let token = Some(admin.user.access_token.as_str());

    let (status, me) = api(&stack, token, Method::GET, "/me", None).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")));
    let (status, body) = api(&stack, None, Method::GET, "/me", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = api(&stack, Some("not-a-token"), Method::GET, "/me", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    // Create a doctor account: the initial password is returned once and works.
    let create = json!({"username": "drnew", "display_name": "Dr. New", "role": "doctor"});
    let (status, created) = api(&stack, token, Method::POST, "/users", Some(create.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["user_id"], "@drnew:clinic.test");
    let password = created["initial_password"].as_str().unwrap();
    assert_eq!(password_login(&stack, "drnew", password).await, 200);
    // The new doctor's Care desk opens with a welcome from the assistant.
    let drnew = consulta_core::UserId::parse("@drnew:clinic.test").unwrap();
    let welcome = consulta_core::notices::welcome_key(&drnew);
    crate::rest_support::eventually("the welcome is delivered", || async {
        stack
            .appservice
            .store()
            .notice_state(&welcome)
            .await
            .unwrap()
            .flatten()
    })
    .await;
    assert!(
        stack
            .appservice
            .store()
            .care_desk(&drnew)
            .await
            .unwrap()
            .is_some()
    );
    let (status, body) = api(&stack, token, Method::POST, "/users", Some(create)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("exists")));
    let bad = json!({"username": "_consulta_fake"});
    let (status, body) = api(&stack, token, Method::POST, "/users", Some(bad)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_username")));

    let (status, list) = api(&stack, token, Method::GET, "/users?role=doctor", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["@drhouse:clinic.test", "@drnew:clinic.test"]);

    // Change and revoke a role.
    let (status, _) = api(
        &stack,
        token,
        Method::PUT,
        "/users/@drnew:clinic.test/role",
        Some(json!({"role": "patient"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = api(
        &stack,
        token,
        Method::PUT,
        "/users/@drnew:clinic.test/role",
        Some(json!({"role": null})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = api(
        &stack,
        token,
        Method::PUT,
        "/users/@drnew:clinic.test/role",
        Some(json!({"role": "nurse"})),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_body")));

    // Deactivate: the account can no longer log in.
    let (status, _) = api(
        &stack,
        token,
        Method::POST,
        "/users/@drnew:clinic.test/deactivate",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(password_login(&stack, "drnew", password).await, 403);

    // Only admins.
    let (status, body) = api(
        &stack,
        Some(&doctor.user.access_token),
        Method::GET,
        "/users?role=doctor",
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_an_admin")));

    let audit = stack.appservice.store().recent_audit(50).await.unwrap();
    let changes: Vec<&str> = audit
        .iter()
        .rev()
        .filter(|r| {
            r.action == AuditAction::RoleChanged
                && r.target.as_deref() == Some("@drnew:clinic.test")
        })
        .map(|r| r.detail.as_str())
        .collect();
    assert_eq!(
        changes,
        [
            "account created via api",
            "pending -> doctor via api",
            "doctor -> patient via api",
            "patient -> pending via api",
            "pending -> pending via api"
        ]
    );
    assert!(
        audit
            .iter()
            .all(|r| r.action != AuditAction::RoleChanged || r.actor.as_ref() == Some(&admin.id()))
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_validates_a_pending_user_as_a_patient_who_can_then_be_reached() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drvalid", Some(Role::Doctor)).await;
    let newcomer = person(&stack, "newcomer", None).await;
    let token = Some(doctor.user.access_token.as_str());

    let (status, body) = api(
        &stack,
        token,
        Method::POST,
        "/consultations",
        Some(json!({"patient": newcomer.id()})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("refused")),
        "pending users cannot be reached: {body}"
    );

    let path = format!("/patients/{}/validate", newcomer.id());
    let (status, body) = api(
        &stack,
        Some(&newcomer.user.access_token),
        Method::POST,
        &path,
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_a_doctor")));
    let (status, _) = api(&stack, token, Method::POST, &path, None).await;
    assert_eq!(status, 200);
    let (status, body) = api(&stack, token, Method::POST, &path, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("not_pending")));

    let (status, body) = api(
        &stack,
        token,
        Method::POST,
        "/consultations",
        Some(json!({"patient": newcomer.id()})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, again) = api(
        &stack,
        token,
        Method::POST,
        "/consultations",
        Some(json!({"patient": newcomer.id()})),
    )
    .await;
    assert_eq!(
        (status, &again["room_id"]),
        (200, &body["room_id"]),
        "the same consultation is returned"
    );
    let audit = stack.appservice.store().recent_audit(20).await.unwrap();
    assert!(audit.iter().any(
        |r| r.detail == "pending -> patient via api" && r.actor.as_ref() == Some(&doctor.id())
    ));
    stack.stop().await.unwrap();
}
