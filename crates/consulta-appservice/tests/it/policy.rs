//! The pre-event gate and the consultation room shape, against a real Synapse and matrix-sdk clients.

use std::time::Duration;

use consulta_core::Role;
use consulta_testkit::Stack;

use crate::{Person, person};
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{RoomId, UserId};
use serde_json::Value;

/// Element's "Start chat": a trusted private chat, which gives the invitee the creator's power.
fn element_dm(invitee: &UserId) -> CreateRoomRequest {
    let mut request = CreateRoomRequest::new();
    request.invite = vec![invitee.to_owned()];
    request.is_direct = true;
    request.preset = Some(RoomPreset::TrustedPrivateChat);
    request
}

/// A client that starts a conversation the way Consulta itself does: a private chat.
fn private_chat(invitee: &UserId) -> CreateRoomRequest {
    let mut request = CreateRoomRequest::new();
    request.invite = vec![invitee.to_owned()];
    request.is_direct = true;
    request.preset = Some(RoomPreset::PrivateChat);
    request
}

async fn room_state(stack: &Stack, who: &Person, room: &str, event_type: &str) -> Option<Value> {
    let url = format!(
        "{}/_matrix/client/v3/rooms/{room}/state/{event_type}/",
        stack.synapse.base_url()
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(&who.user.access_token)
        .send()
        .await
        .unwrap();
    if response.status().is_success() {
        Some(response.json().await.unwrap())
    } else {
        None
    }
}

fn refused_with(err: matrix_sdk::Error, message: &str) {
    let text = err.to_string();
    assert!(
        text.contains(message),
        "expected a refusal saying {message:?}, got: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_cannot_create_rooms_or_invite_and_are_told_why() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drhouse", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    let other = person(&stack, "patient2", Some(Role::Patient)).await;

    let err = patient
        .client
        .create_room(element_dm(&doctor.id()))
        .await
        .unwrap_err();
    refused_with(err, "Conversations are started by your care team.");
    let err = patient
        .client
        .create_room(CreateRoomRequest::new())
        .await
        .unwrap_err();
    refused_with(err, "Conversations are started by your care team.");

    // Inside the doctor's consultation the patient still cannot add anyone.
    let room = doctor
        .client
        .create_room(private_chat(&patient.id()))
        .await
        .unwrap();
    patient
        .client
        .join_room_by_id(room.room_id())
        .await
        .unwrap();
    let patient_room = patient.client.get_room(room.room_id()).unwrap();
    let err = patient_room
        .invite_user_by_id(&other.id())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Only your care team can add people") || text.contains("power level"),
        "refused by the gate (or by power levels once shaped): {text}"
    );

    let audit = stack.appservice.store().recent_audit(20).await.unwrap();
    assert!(
        audit.iter().any(
            |r| r.detail == "user_may_create_room: patient_cannot_create_room"
                && r.actor.as_deref() == Some(&*patient.id())
        ),
        "refusals are audited: {audit:?}"
    );
    stack.stop().await.unwrap();
}

/// Waits until Consulta has finished shaping `room` (encryption is the last step), then checks the shape.
async fn assert_consultation_shape(
    stack: &Stack,
    doctor: &Person,
    patient: &Person,
    room_id: &str,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while room_state(stack, doctor, room_id, "m.room.encryption")
        .await
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the room was never made encrypted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let levels = room_state(stack, doctor, room_id, "m.room.power_levels")
        .await
        .unwrap();
    assert_eq!(levels["invite"], 50, "{levels}");
    assert!(
        levels["users"].get(patient.id().as_str()).is_none(),
        "patient at level 0: {levels}"
    );
    for key in ["kick", "ban", "redact", "state_default"] {
        assert!(levels[key].as_i64().unwrap() >= 50, "{key}: {levels}");
    }
    assert_eq!(levels["users_default"], 0);
    let create = room_state(stack, doctor, room_id, "m.room.create")
        .await
        .unwrap();
    assert!(
        !create["additional_creators"]
            .as_array()
            .is_some_and(|a| a.iter().any(|u| u == patient.id().as_str())),
        "the patient is not a creator: {create}"
    );
    let encryption = room_state(stack, doctor, room_id, "m.room.encryption")
        .await
        .unwrap();
    assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2");
    let guests = room_state(stack, doctor, room_id, "m.room.guest_access")
        .await
        .unwrap();
    assert_eq!(guests["guest_access"], "forbidden");
    let join_rules = room_state(stack, doctor, room_id, "m.room.join_rules")
        .await
        .unwrap();
    assert_eq!(join_rules["join_rule"], "invite");
    let history = room_state(stack, doctor, room_id, "m.room.history_visibility")
        .await
        .unwrap();
    assert!(matches!(
        history["history_visibility"].as_str(),
        Some("shared" | "invited" | "joined")
    ));
}

/// The patient joins and writes, but cannot change the room.
async fn assert_patient_can_write_but_not_rule(patient: &Person, room_id: &RoomId) {
    patient.client.join_room_by_id(room_id).await.unwrap();
    let room = patient.client.get_room(room_id).unwrap();
    room.send(RoomMessageEventContent::text_plain("hello doctor"))
        .await
        .unwrap();
    assert!(
        room.set_name("renamed by patient".into()).await.is_err(),
        "patients cannot change state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctors_conversation_is_an_encrypted_consultation_with_the_patient_at_level_zero() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drgrey", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;

    // A client asking for a plain private chat (no encryption, default levels) is reshaped by Consulta.
    let mut request = CreateRoomRequest::new();
    request.invite = vec![patient.id()];
    request.preset = Some(RoomPreset::PrivateChat);
    let room = doctor.client.create_room(request).await.unwrap();
    let consultation = stack
        .appservice
        .store()
        .consultation(room.room_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (consultation.doctor, consultation.patient),
        (doctor.id(), patient.id())
    );
    assert_consultation_shape(&stack, &doctor, &patient, room.room_id().as_str()).await;
    assert_patient_can_write_but_not_rule(&patient, room.room_id()).await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elements_start_chat_would_make_the_patient_a_creator_so_consulta_opens_a_consultation_instead()
 {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drgrey", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;

    let err = doctor
        .client
        .create_room(element_dm(&patient.id()))
        .await
        .unwrap_err();
    refused_with(
        err,
        "Consulta is opening a proper consultation with them for you instead.",
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let consultation = loop {
        let found = stack
            .appservice
            .store()
            .open_consultation_between(&doctor.id(), &patient.id())
            .await
            .unwrap();
        if let Some(c) = found {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no consultation was opened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_consultation_shape(&stack, &doctor, &patient, consultation.room_id.as_str()).await;
    assert_patient_can_write_but_not_rule(&patient, &consultation.room_id).await;

    // Trying again finds the same consultation instead of opening another.
    let err = doctor
        .client
        .create_room(element_dm(&patient.id()))
        .await
        .unwrap_err();
    refused_with(err, "opening a proper consultation");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = stack
        .appservice
        .store()
        .consultations_of(&doctor.id())
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_users_are_isolated_and_consultations_stay_two_party() {
    let stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drwho", Some(Role::Doctor)).await;
    let colleague = person(&stack, "drno", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    let other = person(&stack, "patient2", Some(Role::Patient)).await;
    let pending = person(&stack, "newcomer", None).await;

    let err = pending
        .client
        .create_room(CreateRoomRequest::new())
        .await
        .unwrap_err();
    refused_with(err, "waiting for the clinic to confirm it");
    let err = doctor
        .client
        .create_room(element_dm(&pending.id()))
        .await
        .unwrap_err();
    refused_with(err, "has not been confirmed by the clinic yet");

    let room = doctor
        .client
        .create_room(private_chat(&patient.id()))
        .await
        .unwrap();
    let err = room.invite_user_by_id(&other.id()).await.unwrap_err();
    refused_with(err, "A consultation is between one doctor and one patient.");
    let err = room.invite_user_by_id(&colleague.id()).await.unwrap_err();
    refused_with(err, "A consultation is between one doctor and one patient.");

    // A colleague cannot add people to someone else's consultation either (and is not in it anyway).
    let staff_room = doctor
        .client
        .create_room(element_dm(&colleague.id()))
        .await
        .unwrap();
    let err = staff_room.invite_user_by_id(&other.id()).await.unwrap_err();
    refused_with(err, "A consultation is between one doctor and one patient.");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_appservice_down_nobody_creates_rooms_fail_closed() {
    let mut stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drstrange", Some(Role::Doctor)).await;
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    stack.stop_appservice().await.unwrap();

    let err = patient
        .client
        .create_room(element_dm(&doctor.id()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("antispam"),
        "refused because the gate is unreachable: {err}"
    );
    let err = doctor
        .client
        .create_room(element_dm(&patient.id()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("antispam"),
        "even doctors wait for the gate: {err}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_that_slipped_past_the_gate_is_undone_and_audited() {
    let stack = Stack::start().await.unwrap();
    let patient = person(&stack, "patient1", Some(Role::Patient)).await;
    // Synapse's server admins bypass spam-checker callbacks: the gate never hears of their invites.
    let admin_token = stack.config.homeserver.admin_token.expose().to_owned();
    let http = reqwest::Client::new();
    let base = stack.synapse.base_url();
    let room: Value = http
        .post(format!("{base}/_matrix/client/v3/createRoom"))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({"preset": "private_chat", "invite": [patient.id()]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["room_id"]
        .as_str()
        .expect("the admin's room was created")
        .to_owned();

    let url = format!(
        "{base}/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}",
        patient.id()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let member: Value = http
            .get(&url)
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if member["membership"] == "leave" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the invite was never withdrawn: {member}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = stack.appservice.store().recent_audit(20).await.unwrap();
    assert!(
        audit.iter().any(|r| r.detail.starts_with("backstop")
            && r.detail.ends_with("undone")
            && r.target.as_deref() == Some(patient.id().as_str())),
        "{audit:?}"
    );
    stack.stop().await.unwrap();
}
