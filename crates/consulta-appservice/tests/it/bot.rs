//! The clinic assistant against a real Synapse: end-to-end encrypted commands and notices, reminders at
//! the right (injected) time, and a restart that neither loses nor repeats a notice.

use std::sync::Arc;

use chrono::{Duration, Utc};
use consulta_core::commands::short_id;
use consulta_core::{Clock, ManualClock, Role};
use consulta_testkit::{Stack, StackOptions};

use crate::desk::{assistant_texts, command, join_desk, sync, wait_for_assistant, wait_for_text};
use crate::person;

fn count(texts: &[String], needle: &str) -> usize {
    texts.iter().filter(|t| t.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_books_notifies_reminds_and_survives_a_restart() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut stack = Stack::start_with(StackOptions {
        clock: clock.clone(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let doctor = person(&stack, "drassist", Some(Role::Doctor)).await;
    let patient = person(&stack, "patassist", Some(Role::Patient)).await;
    sync(&doctor).await;
    sync(&patient).await;
    wait_for_assistant(&stack, &doctor).await;

    // The doctor's Care desk: help, a malformed command, a consultation.
    stack.appservice.care_desk_room(&doctor.id()).await.unwrap();
    let desk = join_desk(&stack, &doctor).await;
    command(&doctor, &desk, "!help").await;
    wait_for_text(&stack, &doctor, &desk, "!book @patient:server").await;
    command(
        &doctor,
        &desk,
        "!book @patassist:clinic.test 2026-13-01 10:30 30m x",
    )
    .await;
    wait_for_text(&stack, &doctor, &desk, "is not a date: use YYYY-MM-DD").await;
    command(&doctor, &desk, "!frobnicate").await;
    wait_for_text(
        &stack,
        &doctor,
        &desk,
        "I don't know the command !frobnicate",
    )
    .await;
    command(&doctor, &desk, &format!("!consult {}", patient.id())).await;
    wait_for_text(&stack, &doctor, &desk, "I opened the consultation with").await;

    // A booking in the clinic's zone (UTC here), three days ahead.
    let day = (clock.now() + Duration::days(3)).date_naive();
    command(
        &doctor,
        &desk,
        &format!(
            "!book {} {day} 10:30 30m Follow-up of viral load",
            patient.id()
        ),
    )
    .await;
    wait_for_text(&stack, &doctor, &desk, "Booked:").await;
    let booked = stack
        .appservice
        .store()
        .next_appointments(&patient.id(), clock.now(), 10)
        .await
        .unwrap();
    assert_eq!(booked.len(), 1, "exactly one appointment");
    let a = booked[0].clone();
    assert_eq!(a.start, day.and_hms_opt(10, 30, 0).unwrap().and_utc());
    assert_eq!(
        (a.duration_minutes, a.reason.as_str()),
        (30, "Follow-up of viral load")
    );
    assert!(a.room_id.is_some(), "attached to the consultation");
    let id = short_id(&a.id.to_string()).to_owned();

    // Both parties are told, in their encrypted Care desks, without the reason.
    stack.appservice.plan_notices().await.unwrap();
    let patient_desk = join_desk(&stack, &patient).await;
    let texts = wait_for_text(&stack, &patient, &patient_desk, "Appointment booked").await;
    assert!(texts.iter().all(|t| !t.contains("viral")), "{texts:?}");
    wait_for_text(&stack, &doctor, &desk, "Appointment booked").await;

    // The patient sees it, and cannot book.
    command(&patient, &patient_desk, "!upcoming").await;
    wait_for_text(&stack, &patient, &patient_desk, &format!("[{id}]")).await;
    command(
        &patient,
        &patient_desk,
        &format!("!book {} {day} 12:00 30m x", doctor.id()),
    )
    .await;
    wait_for_text(
        &stack,
        &patient,
        &patient_desk,
        "I could not do that: only doctors",
    )
    .await;

    // 24 hours before: a reminder to each.
    clock.set(a.start - Duration::hours(24));
    stack.appservice.plan_notices().await.unwrap();
    wait_for_text(&stack, &patient, &patient_desk, "starts in 24 hours").await;

    // Consulta is down when the 15-minute reminder and the day's joining instructions fall due.
    stack.stop_appservice().await.unwrap();
    clock.set(a.start - Duration::minutes(15));
    let planned = stack.appservice.plan_notices().await.unwrap();
    assert_eq!((planned.reminders, planned.day_of), (2, 2), "{planned:?}");
    stack.restart_appservice().await.unwrap();
    wait_for_text(&stack, &patient, &patient_desk, "starts in 15 minutes").await;
    wait_for_text(&stack, &patient, &patient_desk, "Today at 10:30").await;
    assert_eq!(
        stack.appservice.plan_notices().await.unwrap().total(),
        0,
        "nothing planned twice after the restart"
    );
    let texts = assistant_texts(&stack, &patient, &patient_desk).await;
    for needle in [
        "Appointment booked",
        "starts in 24 hours",
        "starts in 15 minutes",
        "Today at 10:30",
    ] {
        assert_eq!(count(&texts, needle), 1, "{needle}: {texts:?}");
    }

    // The same device answers after the restart: the doctor cancels, the patient is told.
    command(&doctor, &desk, &format!("!cancel {id}")).await;
    wait_for_text(&stack, &doctor, &desk, "Cancelled:").await;
    stack.appservice.plan_notices().await.unwrap();
    wait_for_text(&stack, &patient, &patient_desk, "Appointment cancelled").await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_requests_and_the_doctor_accepts_through_the_assistant() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let stack = Stack::start_with(StackOptions {
        clock: clock.clone(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let doctor = person(&stack, "drrequest", Some(Role::Doctor)).await;
    let patient = person(&stack, "patrequest", Some(Role::Patient)).await;
    sync(&doctor).await;
    sync(&patient).await;
    wait_for_assistant(&stack, &doctor).await;
    stack
        .appservice
        .start_consultation(&doctor.id(), &patient.id())
        .await
        .unwrap();
    stack
        .appservice
        .care_desk_room(&patient.id())
        .await
        .unwrap();
    let patient_desk = join_desk(&stack, &patient).await;

    command(&patient, &patient_desk, "!request").await;
    wait_for_text(&stack, &patient, &patient_desk, "the reason is missing").await;
    command(&patient, &patient_desk, "!request Prescription renewal").await;
    let texts = wait_for_text(&stack, &patient, &patient_desk, "I sent your request to").await;
    assert!(
        texts.iter().any(|t| t.contains(doctor.id().as_str())),
        "{texts:?}"
    );

    // The doctor hears of it in their desk, lists it with its reason, and accepts it at a time.
    let desk = join_desk(&stack, &doctor).await;
    wait_for_text(&stack, &doctor, &desk, "New appointment request from").await;
    command(&doctor, &desk, "!requests").await;
    let texts = wait_for_text(&stack, &doctor, &desk, "Prescription renewal").await;
    let listed = texts
        .iter()
        .rev()
        .find(|t| t.contains("Prescription renewal"))
        .unwrap();
    let id = listed
        .split('[')
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .to_owned();
    let day = (clock.now() + Duration::days(2)).date_naive();
    command(&doctor, &desk, &format!("!accept {id} {day} 09:00")).await;
    wait_for_text(&stack, &doctor, &desk, "Accepted and booked").await;
    command(&doctor, &desk, "!requests").await;
    wait_for_text(
        &stack,
        &doctor,
        &desk,
        "No appointment requests are waiting",
    )
    .await;
    stack.appservice.plan_notices().await.unwrap();
    wait_for_text(&stack, &patient, &patient_desk, "Appointment booked").await;
    command(&patient, &patient_desk, "!unread").await;
    wait_for_text(
        &stack,
        &patient,
        &patient_desk,
        "You have read every message",
    )
    .await;
    stack.stop().await.unwrap();
}
