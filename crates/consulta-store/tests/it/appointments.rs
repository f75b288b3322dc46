//! Appointments and requests: booking without double booking (also under concurrency), changes,
//! listings, and the life of a request.

use chrono::Duration;
use consulta_core::{
    Appointment, AppointmentId, AppointmentKind, AppointmentRequest, AppointmentStatus, Conflict,
    ConflictParty, RequestId, RequestStatus, Timestamp,
};
use consulta_store::{Booked, Store};
use uuid::Uuid;

use super::{t0, user};

/// Minutes after t0.
fn at(minutes: i64) -> Timestamp {
    t0() + Duration::minutes(minutes)
}

pub fn appointment(doctor: &str, patient: &str, start: i64, minutes: i64) -> Appointment {
    let doctor = user(doctor);
    Appointment {
        id: AppointmentId::from_uuid(Uuid::now_v7()),
        doctor: doctor.clone(),
        patient: user(patient),
        start: at(start),
        duration_minutes: minutes,
        kind: AppointmentKind::Video,
        status: AppointmentStatus::Scheduled,
        reason: "Follow-up".into(),
        room_id: None,
        created_by: doctor.clone(),
        created_at: t0(),
        updated_by: doctor,
        updated_at: t0(),
    }
}

async fn bookings_never_overlap_in_either_calendar(store: &Store) {
    let a = appointment("@ada:c.test", "@p1:c.test", 600, 30);
    assert_eq!(store.book_appointment(&a).await.unwrap(), Booked::Done);
    assert_eq!(store.appointment(a.id).await.unwrap(), Some(a.clone()));

    let overlapping = appointment("@ada:c.test", "@p2:c.test", 615, 30);
    assert_eq!(
        store.book_appointment(&overlapping).await.unwrap(),
        Booked::Busy(Conflict {
            party: ConflictParty::Doctor,
            with: a.id
        })
    );
    assert_eq!(store.appointment(overlapping.id).await.unwrap(), None);
    let enclosing = appointment("@ada:c.test", "@p2:c.test", 500, 300);
    assert!(matches!(
        store.book_appointment(&enclosing).await.unwrap(),
        Booked::Busy(_)
    ));

    let back_to_back = appointment("@ada:c.test", "@p2:c.test", 630, 30);
    assert_eq!(
        store.book_appointment(&back_to_back).await.unwrap(),
        Booked::Done
    );
    let other_doctor_same_patient = appointment("@bea:c.test", "@p1:c.test", 590, 20);
    assert_eq!(
        store
            .book_appointment(&other_doctor_same_patient)
            .await
            .unwrap(),
        Booked::Busy(Conflict {
            party: ConflictParty::Patient,
            with: a.id
        })
    );
    let other_doctor_other_patient = appointment("@bea:c.test", "@p3:c.test", 600, 30);
    assert_eq!(
        store
            .book_appointment(&other_doctor_other_patient)
            .await
            .unwrap(),
        Booked::Done
    );

    // Cancelling frees the slot, once.
    assert!(
        store
            .set_appointment_status(
                a.id,
                AppointmentStatus::Cancelled,
                &user("@ada:c.test"),
                at(1)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_appointment_status(
                a.id,
                AppointmentStatus::Completed,
                &user("@ada:c.test"),
                at(2)
            )
            .await
            .unwrap(),
        "only scheduled appointments change status"
    );
    let cancelled = store.appointment(a.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, AppointmentStatus::Cancelled);
    assert_eq!(cancelled.updated_at, at(1));
    let replacement = appointment("@ada:c.test", "@p4:c.test", 600, 30);
    assert_eq!(
        store.book_appointment(&replacement).await.unwrap(),
        Booked::Done,
        "a cancelled appointment no longer blocks its slot"
    );

    // Rescheduling checks the new time, ignoring the appointment's own old time.
    let mut moved = back_to_back.clone();
    moved.start = at(640);
    moved.updated_at = at(3);
    assert_eq!(
        store.update_appointment(&moved).await.unwrap(),
        Booked::Done
    );
    assert_eq!(
        store.appointment(moved.id).await.unwrap(),
        Some(moved.clone())
    );
    let mut onto_other = moved.clone();
    onto_other.start = at(620);
    assert_eq!(
        store.update_appointment(&onto_other).await.unwrap(),
        Booked::Busy(Conflict {
            party: ConflictParty::Doctor,
            with: replacement.id
        })
    );
    let mut stale = cancelled.clone();
    stale.start = at(2000);
    assert_eq!(
        store.update_appointment(&stale).await.unwrap(),
        Booked::Stale,
        "a cancelled appointment cannot be rescheduled"
    );
}

async fn listings_follow_time_and_status(store: &Store) {
    let doc = "@lis:c.test";
    let pat = "@lpat:c.test";
    let ended = appointment(doc, pat, 0, 30);
    let under_way = appointment(doc, "@lother:c.test", 50, 30);
    let mut cancelled = appointment(doc, pat, 100, 30);
    let later = appointment(doc, pat, 200, 60);
    let with_other_doctor = appointment("@lis2:c.test", pat, 300, 30);
    for a in [&ended, &under_way, &cancelled, &later, &with_other_doctor] {
        assert_eq!(store.book_appointment(a).await.unwrap(), Booked::Done);
    }
    store
        .set_appointment_status(
            cancelled.id,
            AppointmentStatus::Cancelled,
            &user(doc),
            at(1),
        )
        .await
        .unwrap();
    cancelled.status = AppointmentStatus::Cancelled;
    let ids = |v: Vec<Appointment>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();

    // At minute 60: the ended one is gone, the one under way counts, cancelled ones do not.
    assert_eq!(
        ids(store
            .next_appointments(&user(doc), at(60), 20)
            .await
            .unwrap()),
        [under_way.id, later.id]
    );
    assert_eq!(
        ids(store
            .next_appointments(&user(pat), at(60), 20)
            .await
            .unwrap()),
        [later.id, with_other_doctor.id],
        "a patient's listing spans their doctors"
    );
    assert_eq!(
        ids(store
            .next_appointments(&user(pat), at(60), 1)
            .await
            .unwrap()),
        [later.id]
    );
    assert!(
        store
            .next_appointments(&user("@nobody:c.test"), at(0), 20)
            .await
            .unwrap()
            .is_empty()
    );

    // Ranges return every status that shares time with [from, to).
    assert_eq!(
        ids(store
            .appointments_between(&user(pat), at(20), at(201), 100)
            .await
            .unwrap()),
        [ended.id, cancelled.id, later.id]
    );
    assert_eq!(
        ids(store
            .appointments_between(&user(pat), at(30), at(200), 100)
            .await
            .unwrap()),
        [cancelled.id],
        "touching the range's ends is not sharing time"
    );
    assert_eq!(
        store
            .appointments_between(&user(doc), at(0), at(1000), 2)
            .await
            .unwrap()
            .len(),
        2,
        "the limit holds"
    );

    assert!(store.cares_for(&user(doc), &user(pat)).await.unwrap());
    assert!(
        !store
            .cares_for(&user(doc), &user("@stranger:c.test"))
            .await
            .unwrap()
    );
}

fn request(patient: &str, doctor: &str, created: i64) -> AppointmentRequest {
    AppointmentRequest {
        id: RequestId::from_uuid(Uuid::now_v7()),
        patient: user(patient),
        doctor: user(doctor),
        preferred_start: Some(at(5000)),
        duration_minutes: 20,
        kind: AppointmentKind::InPerson,
        reason: "Results".into(),
        status: RequestStatus::Pending,
        created_at: at(created),
        decided_by: None,
        decided_at: None,
        appointment: None,
    }
}

async fn requests_are_answered_once(store: &Store) {
    let (doc, pat) = ("@rdoc:c.test", "@rpat:c.test");
    let first = request(pat, doc, 1);
    let second = request(pat, doc, 2);
    let third = request(pat, doc, 3);
    for r in [&first, &second, &third] {
        store.insert_appointment_request(r).await.unwrap();
    }
    assert_eq!(
        store.appointment_request(first.id).await.unwrap(),
        Some(first.clone())
    );
    let listed = |v: Vec<AppointmentRequest>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        listed(
            store
                .appointment_requests_of(&user(doc), None, 10)
                .await
                .unwrap()
        ),
        [third.id, second.id, first.id],
        "newest first"
    );

    // Decline one; a second answer finds it no longer pending.
    assert!(
        store
            .close_appointment_request(first.id, RequestStatus::Declined, &user(doc), at(10))
            .await
            .unwrap()
    );
    assert!(
        !store
            .close_appointment_request(first.id, RequestStatus::Withdrawn, &user(pat), at(11))
            .await
            .unwrap()
    );
    let declined = store.appointment_request(first.id).await.unwrap().unwrap();
    assert_eq!(
        (declined.status, declined.decided_by, declined.decided_at),
        (RequestStatus::Declined, Some(user(doc)), Some(at(10)))
    );

    // Accept one: the appointment is booked and linked, once.
    let mut booking = appointment(doc, pat, 5000, 20);
    booking.created_at = at(12);
    assert_eq!(
        store
            .accept_appointment_request(second.id, &booking)
            .await
            .unwrap(),
        Booked::Done
    );
    let accepted = store.appointment_request(second.id).await.unwrap().unwrap();
    assert_eq!(accepted.status, RequestStatus::Accepted);
    assert_eq!(accepted.appointment, Some(booking.id));
    assert_eq!(accepted.decided_at, Some(at(12)));
    assert!(store.appointment(booking.id).await.unwrap().is_some());
    let again = appointment(doc, pat, 6000, 20);
    assert_eq!(
        store
            .accept_appointment_request(second.id, &again)
            .await
            .unwrap(),
        Booked::Stale
    );
    assert_eq!(
        store.appointment(again.id).await.unwrap(),
        None,
        "nothing is booked for a request that is no longer pending"
    );

    // Accepting onto a busy slot books nothing and leaves the request pending.
    let clash = appointment(doc, pat, 5010, 20);
    assert_eq!(
        store
            .accept_appointment_request(third.id, &clash)
            .await
            .unwrap(),
        Booked::Busy(Conflict {
            party: ConflictParty::Doctor,
            with: booking.id
        })
    );
    assert_eq!(
        store
            .appointment_request(third.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Pending
    );
    assert_eq!(
        listed(
            store
                .appointment_requests_of(&user(pat), Some(RequestStatus::Pending), 10)
                .await
                .unwrap()
        ),
        [third.id]
    );
    assert!(
        store
            .appointment_requests_of(&user("@other:c.test"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Many bookings of overlapping slots in one doctor's calendar at once: exactly one wins.
async fn concurrent_bookings_of_one_slot_have_one_winner(store: &Store) {
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let a = appointment("@race:c.test", &format!("@racer{i}:c.test"), 3000 + i, 30);
            tokio::spawn(async move { store.book_appointment(&a).await.unwrap() })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        match task.await.unwrap() {
            Booked::Done => done += 1,
            Booked::Busy(c) => assert_eq!(c.party, ConflictParty::Doctor),
            Booked::Stale => panic!("a new booking is never stale"),
        }
    }
    assert_eq!(done, 1, "exactly one of the concurrent bookings wins");
    assert_eq!(
        store
            .next_appointments(&user("@race:c.test"), at(0), 20)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// The change feed returns every booking and change once, in order, from a cursor.
async fn changes_are_followed_from_a_cursor(store: &Store) {
    let later = t0() + Duration::days(400);
    let mut first = appointment("@feed:c.test", "@fp:c.test", 0, 30);
    first.updated_at = later;
    let mut second = appointment("@feed:c.test", "@fp:c.test", 60, 30);
    second.updated_at = later;
    let mut third = appointment("@feed:c.test", "@fp:c.test", 120, 30);
    third.updated_at = later + Duration::seconds(1);
    for a in [&third, &first, &second] {
        assert_eq!(store.book_appointment(a).await.unwrap(), Booked::Done);
    }
    let feed = store
        .appointments_changed_since(later - Duration::milliseconds(1), None, 10)
        .await
        .unwrap();
    let mut same_instant = [first.id, second.id];
    same_instant.sort();
    assert_eq!(
        feed.iter().map(|a| a.id).collect::<Vec<_>>(),
        [same_instant[0], same_instant[1], third.id]
    );
    let page = store
        .appointments_changed_since(later, Some(same_instant[0]), 1)
        .await
        .unwrap();
    assert_eq!(
        page[0].id, same_instant[1],
        "the cursor's instant continues by id"
    );
    assert!(
        store
            .appointments_changed_since(third.updated_at, Some(third.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A cancellation moves the appointment to the end of the feed.
    store
        .set_appointment_status(
            first.id,
            AppointmentStatus::Cancelled,
            &user("@feed:c.test"),
            later + Duration::seconds(2),
        )
        .await
        .unwrap();
    let feed = store
        .appointments_changed_since(third.updated_at, Some(third.id), 10)
        .await
        .unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(
        (feed[0].id, feed[0].status),
        (first.id, AppointmentStatus::Cancelled)
    );
}

pub async fn conformance(store: &Store) {
    changes_are_followed_from_a_cursor(store).await;
    bookings_never_overlap_in_either_calendar(store).await;
    listings_follow_time_and_status(store).await;
    requests_are_answered_once(store).await;
    concurrent_bookings_of_one_slot_have_one_winner(store).await;
}
