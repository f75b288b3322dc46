//! Read receipts, unread summaries, reminders and deletion, with a real Synapse and matrix-sdk clients.

use std::sync::Arc;

use chrono::Duration;
use consulta_appservice::read_state::REMINDER_TEXT;
use consulta_core::{ConsultationStatus, ManualClock, Role};
use consulta_testkit::{Stack, StackOptions};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::rest_support::{api, eventually};
use crate::{Person, person};

/// A doctor starts a consultation through Consulta; the patient joins. Both clients know the room.
async fn consultation(stack: &Stack, doctor: &Person, patient: &Person) -> OwnedRoomId {
    let body = json!({ "patient": patient.id() });
    let (status, answer) = api(
        stack,
        Some(&doctor.user.access_token),
        Method::POST,
        "/consultations",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let room = OwnedRoomId::try_from(answer["room_id"].as_str().unwrap()).unwrap();
    patient.client.join_room_by_id(&room).await.unwrap();
    for who in [doctor, patient] {
        who.client.sync_once(SyncSettings::default()).await.unwrap();
    }
    room
}

async fn say(who: &Person, room: &OwnedRoomId, text: &str) -> OwnedEventId {
    let room = who.client.get_room(room).unwrap();
    room.send(RoomMessageEventContent::text_plain(text))
        .await
        .unwrap()
        .response
        .event_id
}

async fn mark_read(who: &Person, room: &OwnedRoomId, event: &OwnedEventId, kind: ReceiptType) {
    let room = who.client.get_room(room).unwrap();
    room.send_single_receipt(kind, ReceiptThread::Unthreaded, event.clone())
        .await
        .unwrap();
}

async fn consultations_of(stack: &Stack, who: &Person) -> Value {
    let (status, body) = api(
        stack,
        Some(&who.user.access_token),
        Method::GET,
        "/consultations",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["consultations"][0].clone()
}

async fn unread_total(stack: &Stack, who: &Person) -> u64 {
    let (status, body) = api(
        stack,
        Some(&who.user.access_token),
        Method::GET,
        "/unread",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_read_receipt_shows_as_read_for_the_doctor_and_private_ones_never_do() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drread", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    let room = consultation(&stack, &doctor, &patient).await;

    let note = say(&doctor, &room, "Your results are in; all is well.").await;
    eventually("the patient sees one unread message", || async {
        (unread_total(&stack, &patient).await == 1).then_some(())
    })
    .await;
    let patient_view = consultations_of(&stack, &patient).await;
    assert_eq!(patient_view["with"], doctor.id().as_str());
    assert!(patient_view["unread_since"].is_string());

    // A private receipt clears the patient's own unread count but tells the doctor nothing.
    mark_read(&patient, &room, &note, ReceiptType::ReadPrivate).await;
    eventually("the private receipt counts for the patient", || async {
        (unread_total(&stack, &patient).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        consultations_of(&stack, &doctor).await["other_read_up_to"],
        Value::Null,
        "private stays private"
    );

    // A public receipt shows up for the doctor, with the event and the time.
    mark_read(&patient, &room, &note, ReceiptType::Read).await;
    let seen = eventually("the doctor sees the patient's receipt", || async {
        let view = consultations_of(&stack, &doctor).await;
        (view["other_read_up_to"]["event_id"] == note.as_str()).then_some(view)
    })
    .await;
    assert!(seen["other_read_up_to"]["at"].is_string());
    assert_eq!(seen["as_doctor"], true);

    // The patient answers: the doctor now has one unread message, and since when.
    say(&patient, &room, "Thank you!").await;
    let view = eventually("the doctor has one unread message", || async {
        let view = consultations_of(&stack, &doctor).await;
        (view["unread"] == 1).then_some(view)
    })
    .await;
    assert_eq!(view["with"], patient.id().as_str());
    assert!(view["unread_since"].is_string());
    assert_eq!(unread_total(&stack, &doctor).await, 1);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_doctors_message_brings_one_reminder_after_the_delay() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let stack = Stack::start_with(StackOptions {
        clock: clock.clone(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let doctor = person(&stack, "drremind", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    let room = consultation(&stack, &doctor, &patient).await;
    say(&doctor, &room, "Please book your next blood test.").await;
    eventually("the message is recorded", || async {
        (unread_total(&stack, &patient).await == 1).then_some(())
    })
    .await;

    assert_eq!(
        stack.appservice.send_due_reminders().await.unwrap(),
        0,
        "not before 24 hours"
    );
    clock.advance(Duration::hours(23));
    assert_eq!(stack.appservice.send_due_reminders().await.unwrap(), 0);
    clock.advance(Duration::hours(2));
    assert_eq!(
        stack.appservice.send_due_reminders().await.unwrap(),
        1,
        "one reminder once the delay has passed"
    );
    assert_eq!(
        stack.appservice.send_due_reminders().await.unwrap(),
        0,
        "and only one"
    );
    clock.advance(Duration::hours(48));
    assert_eq!(
        stack.appservice.send_due_reminders().await.unwrap(),
        0,
        "no repeat for the same message"
    );

    // The patient finds the notice, without any content of the message, in their end-to-end encrypted
    // Care desk room, once.
    let desk = crate::desk::join_desk(&stack, &patient).await;
    crate::desk::wait_for_text(&stack, &patient, &desk, REMINDER_TEXT).await;
    assert_eq!(
        crate::desk::assistant_texts(&stack, &patient, &desk).await,
        [REMINDER_TEXT]
    );

    // A new unread message later starts a new wait.
    say(&doctor, &room, "Reminder: fasting before the test.").await;
    eventually("the second message is recorded", || async {
        (unread_total(&stack, &patient).await == 2).then_some(())
    })
    .await;
    let sent_at = chrono::Utc::now();
    clock.set(sent_at + Duration::hours(25));
    assert_eq!(stack.appservice.send_due_reminders().await.unwrap(), 1);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_archives_the_consultation_out_of_the_patients_reach() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drdelete", Some(Role::Doctor)).await;
    let other_doctor = person(&stack, "drother", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    let room = consultation(&stack, &doctor, &patient).await;
    let path = format!("/consultations/{room}");

    let (status, body) = api(
        &stack,
        Some(&patient.user.access_token),
        Method::DELETE,
        &path,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_a_doctor")),
        "patients never delete"
    );
    let (status, body) = api(
        &stack,
        Some(&other_doctor.user.access_token),
        Method::DELETE,
        &path,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_its_doctor"))
    );

    // The patient leaving does not delete it for the doctor.
    patient
        .client
        .get_room(&room)
        .unwrap()
        .leave()
        .await
        .unwrap();
    let c = stack
        .appservice
        .store()
        .consultation(&room)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, ConsultationStatus::Open);

    let (status, body) = api(
        &stack,
        Some(&doctor.user.access_token),
        Method::DELETE,
        &path,
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("archived")),
        "{body}"
    );
    let c = stack
        .appservice
        .store()
        .consultation(&room)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, ConsultationStatus::Archived);
    assert!(c.closed_at.is_some());

    // The patient cannot be brought back into an archived consultation.
    let err = doctor
        .client
        .get_room(&room)
        .unwrap()
        .invite_user_by_id(&patient.id())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("one doctor and one patient"),
        "{err}"
    );
    let (status, _) = api(
        &stack,
        Some(&doctor.user.access_token),
        Method::DELETE,
        &path,
        None,
    )
    .await;
    assert_eq!(status, 404, "already deleted");
    let audit = stack.appservice.store().recent_audit(20).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == consulta_core::AuditAction::ConsultationDeleted)
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_can_purge_the_room_from_the_homeserver() {
    let options = StackOptions {
        config_overrides: vec![("CONSULTA_POLICY__ON_DELETE".into(), "purge".into())],
        ..StackOptions::default()
    };
    let stack = Stack::start_with(options).await.unwrap();
    let doctor = person(&stack, "drpurge", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    let room = consultation(&stack, &doctor, &patient).await;
    say(&doctor, &room, "This will be purged.").await;

    let (status, body) = api(
        &stack,
        Some(&doctor.user.access_token),
        Method::DELETE,
        &format!("/consultations/{room}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("purged")),
        "{body}"
    );
    let url = format!(
        "{}/_matrix/client/v3/rooms/{room}/messages?dir=b",
        stack.synapse.base_url()
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(&doctor.user.access_token)
        .send()
        .await
        .unwrap();
    assert!(
        !response.status().is_success(),
        "the room is gone from the homeserver"
    );
    stack.stop().await.unwrap();
}
