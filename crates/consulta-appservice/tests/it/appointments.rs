//! Appointments through the REST API against a real Synapse: a doctor books with an access token, the
//! patient reads with an OpenID token, double bookings race, strangers are refused and audited, bad
//! input gets a code, and requests go from patient to doctor.

use chrono::{Duration, SecondsFormat, Utc};
use consulta_core::{AuditAction, ClinicTimeZone, Role};
use consulta_testkit::{Stack, StackOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Person, person};

/// Calls `/_consulta/v1{path}` with an `Authorization` header value; returns status and JSON body.
pub async fn call(
    stack: &Stack,
    authorization: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(
        method,
        format!("{}/_consulta/v1{path}", stack.appservice_url),
    );
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, value)
}

pub fn bearer(p: &Person) -> String {
    format!("Bearer {}", p.user.access_token)
}

/// A Matrix OpenID token for `p`, from the client API (what a widget gets through `get_openid`).
pub async fn openid(stack: &Stack, p: &Person) -> String {
    let response: Value = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/client/v3/user/{}/openid/request_token",
            stack.synapse.base_url(),
            p.user.user_id
        ))
        .bearer_auth(&p.user.access_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["token_type"], "Bearer", "{response}");
    format!("OpenID {}", response["access_token"].as_str().unwrap())
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctors_book_patients_read_with_openid_and_strangers_are_refused() {
    let stack = Stack::start_with(StackOptions {
        config_overrides: vec![(
            "CONSULTA_APPOINTMENTS__TIME_ZONE".into(),
            "Europe/Madrid".into(),
        )],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let doctor = person(&stack, "drgrey", Some(Role::Doctor)).await;
    let patient = person(&stack, "alice", Some(Role::Patient)).await;
    let other = person(&stack, "bob", Some(Role::Patient)).await;
    let pending = person(&stack, "newcomer", None).await;
    let start = (Utc::now() + Duration::days(2))
        .date_naive()
        .and_hms_opt(9, 0, 0)
        .unwrap()
        .and_utc();

    // The doctor books with an access token; the answer shows UTC and the clinic's local time.
    let (status, booked) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::POST,
        "/appointments",
        Some(json!({
            "patient": patient.id(),
            "start": rfc3339(start),
            "duration_minutes": 30,
            "kind": "video",
            "reason": "Viral load results",
        })),
    )
    .await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_owned();
    assert_eq!(booked["doctor"], doctor.id().as_str());
    assert_eq!(booked["status"], "scheduled");
    assert_eq!(booked["time_zone"], "Europe/Madrid");
    assert_eq!(booked["end"], rfc3339(start + Duration::minutes(30)));
    let madrid: ClinicTimeZone = "Europe/Madrid".parse().unwrap();
    assert_eq!(booked["start_local"], madrid.present(start));

    // The patient lists it with an OpenID token, both as "next" and by range.
    let token = openid(&stack, &patient).await;
    let (status, next) = call(
        &stack,
        Some(&token),
        Method::GET,
        "/appointments/next?limit=5",
        None,
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["appointments"][0]["id"], id.as_str());
    let from = rfc3339(start - Duration::hours(1));
    let to = rfc3339(start + Duration::hours(1));
    let (status, range) = call(
        &stack,
        Some(&token),
        Method::GET,
        &format!("/appointments?from={from}&to={to}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{range}");
    assert_eq!(range["appointments"].as_array().unwrap().len(), 1);
    let (status, body) = call(
        &stack,
        Some("OpenID not-a-token"),
        Method::GET,
        "/appointments/next",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    // Another patient cannot read it, nor list Alice's; both attempts are audited.
    let (status, body) = call(
        &stack,
        Some(&bearer(&other)),
        Method::GET,
        &format!("/appointments/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("no_appointment"))
    );
    let (status, _) = call(
        &stack,
        Some(&openid(&stack, &other).await),
        Method::GET,
        &format!("/appointments?user={}", patient.id()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let audit = stack.appservice.store().recent_audit(100).await.unwrap();
    let refused: Vec<_> = audit
        .iter()
        .filter(|r| r.action == AuditAction::AppointmentRefused && r.actor == Some(other.id()))
        .collect();
    assert!(
        refused
            .iter()
            .any(|r| r.target.as_deref() == Some(id.as_str())
                && r.detail == "get: no_appointment via api"),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r.target.as_deref() == Some(patient.id().as_str())
                && r.detail == "list: no_appointment via openid"),
        "{refused:?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r.action == AuditAction::AppointmentViewed
                && r.actor == Some(patient.id())
                && r.detail.ends_with("via openid")),
        "reads are audited too"
    );
    assert!(
        audit.iter().all(|r| !r.detail.contains("Viral")),
        "reasons never reach the audit log"
    );

    // Bad input: a code for each.
    let book = |body: Value| {
        let auth = bearer(&doctor);
        let stack = &stack;
        async move {
            call(
                stack,
                Some(&auth),
                Method::POST,
                "/appointments",
                Some(body),
            )
            .await
        }
    };
    let later = start + Duration::days(1);
    for (body, expected) in [
        (
            json!({"patient": patient.id(), "start": "tomorrow at ten"}),
            "bad_time",
        ),
        (
            json!({"patient": patient.id(), "start": rfc3339(later), "end": rfc3339(later - Duration::minutes(30))}),
            "end_before_start",
        ),
        (
            json!({"patient": pending.id(), "start": rfc3339(later)}),
            "unknown_patient",
        ),
        (
            json!({"patient": "@nobody:elsewhere.test", "start": rfc3339(later)}),
            "unknown_patient",
        ),
        (
            json!({"patient": patient.id(), "start": rfc3339(Utc::now() - Duration::hours(1))}),
            "in_the_past",
        ),
        (
            json!({"patient": patient.id(), "start": rfc3339(later), "duration_minutes": 0}),
            "bad_duration",
        ),
        // 2027-03-28 02:30 does not exist in Madrid (the clocks jump from 02:00 to 03:00).
        (
            json!({"patient": patient.id(), "start": "2027-03-28T02:30"}),
            "nonexistent_time",
        ),
        (
            json!({"patient": "not a user id", "start": rfc3339(later)}),
            "bad_body",
        ),
    ] {
        let (status, body) = book(body).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(expected)),
            "{body}"
        );
        assert_eq!(body["status"], 400);
    }
    let (status, body) =
        book(json!({"patient": patient.id(), "start": rfc3339(start + Duration::minutes(15))}))
            .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("doctor_busy")));
    let (status, body) = call(
        &stack,
        Some(&bearer(&patient)),
        Method::POST,
        "/appointments",
        Some(json!({"patient": patient.id(), "start": rfc3339(later)})),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_allowed")));
    // Local wall-clock input is read in the clinic's zone.
    let (status, local) =
        book(json!({"patient": other.id(), "start": "2027-01-15T10:30", "duration_minutes": 45}))
            .await;
    assert_eq!(status, 201, "{local}");
    assert_eq!(local["start"], "2027-01-15T09:30:00Z");
    assert_eq!(local["start_local"], "2027-01-15T10:30:00+01:00");

    // Reschedule, then cancel; a cancelled appointment no longer changes.
    let local_id = local["id"].as_str().unwrap();
    let (status, moved) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::PATCH,
        &format!("/appointments/{local_id}"),
        Some(json!({"start": "2027-01-15T12:00"})),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["start"], "2027-01-15T11:00:00Z");
    assert_eq!(moved["duration_minutes"], 45);
    let (status, cancelled) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::POST,
        &format!("/appointments/{local_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, body) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::PATCH,
        &format!("/appointments/{local_id}"),
        Some(json!({"status": "no_show"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_scheduled"))
    );

    // Requests: Alice asks her doctor (they share an appointment); he accepts at the time she asked.
    let wish = start + Duration::days(7);
    let (status, request) = call(
        &stack,
        Some(&token),
        Method::POST,
        "/appointment-requests",
        Some(json!({"doctor": doctor.id(), "preferred_start": rfc3339(wish), "duration_minutes": 20, "reason": "Side effects"})),
    )
    .await;
    assert_eq!(status, 201, "{request}");
    let request_id = request["id"].as_str().unwrap();
    let (status, body) = call(
        &stack,
        Some(&bearer(&pending)),
        Method::POST,
        "/appointment-requests",
        Some(json!({"doctor": doctor.id()})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_a_patient"))
    );
    let (status, pending_list) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::GET,
        "/appointment-requests?status=pending",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(pending_list["requests"][0]["id"], request_id);
    let (status, body) = call(
        &stack,
        Some(&bearer(&patient)),
        Method::POST,
        &format!("/appointment-requests/{request_id}/accept"),
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_allowed")));
    let (status, accepted) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::POST,
        &format!("/appointment-requests/{request_id}/accept"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{accepted}");
    assert_eq!(accepted["request"]["status"], "accepted");
    assert_eq!(accepted["appointment"]["start"], rfc3339(wish));
    assert_eq!(accepted["appointment"]["duration_minutes"], 20);
    let (status, body) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::POST,
        &format!("/appointment-requests/{request_id}/decline"),
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("not_pending")));
    let (status, body) = call(
        &stack,
        Some(&bearer(&other)),
        Method::GET,
        &format!("/appointment-requests/{request_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("no_appointment"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_bookings_of_one_slot_exactly_one_wins() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drrace", Some(Role::Doctor)).await;
    let first = person(&stack, "carol", Some(Role::Patient)).await;
    let second = person(&stack, "dave", Some(Role::Patient)).await;
    let start = rfc3339(Utc::now() + Duration::days(3));
    let auth = bearer(&doctor);
    let book = |patient: ruma::OwnedUserId, minutes: i64| {
        let (stack, auth, start) = (&stack, auth.clone(), start.clone());
        async move {
            call(
                stack,
                Some(&auth),
                Method::POST,
                "/appointments",
                Some(json!({"patient": patient, "start": start, "duration_minutes": minutes})),
            )
            .await
        }
    };
    for _ in 0..3 {
        let ((a, body_a), (b, body_b)) = tokio::join!(book(first.id(), 30), book(second.id(), 45));
        let mut statuses = [a, b];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{body_a} {body_b}");
        let loser = if a == 409 { body_a } else { body_b };
        assert_eq!(loser["code"], "doctor_busy");
        // Free the slot for the next round.
        let winner_id = stack
            .appservice
            .store()
            .next_appointments(&doctor.id(), Utc::now(), 5)
            .await
            .unwrap();
        assert_eq!(winner_id.len(), 1);
        let (status, _) = call(
            &stack,
            Some(&auth),
            Method::POST,
            &format!("/appointments/{}/cancel", winner_id[0].id),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
}
