//! Planning notices from the appointment change feed, against the store alone (no homeserver needed).

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use consulta_core::{
    Appointment, AppointmentId, AppointmentKind, AppointmentStatus, Clock, ManualClock, Timestamp,
    UserId,
};
use consulta_store::Booked;

fn appointment(n: u32, start: Timestamp, updated_at: Timestamp) -> Appointment {
    let doctor = UserId::parse(format!("@dr{n}:clinic.example")).unwrap();
    Appointment {
        id: AppointmentId::from_uuid(uuid::Uuid::now_v7()),
        doctor: doctor.clone(),
        patient: UserId::parse(format!("@pat{n}:clinic.example")).unwrap(),
        start,
        duration_minutes: 30,
        kind: AppointmentKind::Video,
        status: AppointmentStatus::Scheduled,
        reason: String::new(),
        room_id: None,
        created_by: doctor.clone(),
        created_at: updated_at,
        updated_by: doctor,
        updated_at,
    }
}

#[tokio::test]
async fn a_change_committed_behind_the_cursor_still_gets_its_notices_once() {
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let (state, _dir) = crate::offline_state_with_clock(clock.clone()).await;
    let store = state.store().clone();
    let tomorrow = t0 + Duration::days(1);

    let first = appointment(1, tomorrow, clock.now());
    assert_eq!(store.book_appointment(&first).await.unwrap(), Booked::Done);
    assert_eq!(
        state.plan_notices().await.unwrap().changes,
        2,
        "both parties"
    );

    // A booking whose transaction started 20 s before the one above but committed after the planner
    // had moved its cursor past both times.
    clock.advance(Duration::seconds(30));
    let late = appointment(2, tomorrow, t0 - Duration::seconds(20));
    assert_eq!(store.book_appointment(&late).await.unwrap(), Booked::Done);
    assert_eq!(
        state.plan_notices().await.unwrap().changes,
        2,
        "the late commit is found, and the first booking is not told twice"
    );
    clock.advance(Duration::minutes(1));
    assert_eq!(state.plan_notices().await.unwrap().changes, 0);
    for a in [&first, &late] {
        for recipient in [&a.doctor, &a.patient] {
            let key = consulta_core::notices::change_key(a, recipient);
            assert_eq!(store.notice_state(&key).await.unwrap(), Some(None), "{key}");
        }
    }
}
