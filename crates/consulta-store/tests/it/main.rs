//! The store's conformance suite: every behaviour callers rely on, run against each backend.
//!
//! Each backend gets one `#[tokio::test]` that runs the whole suite against a fresh database: a SQLite
//! file, and a database on a throwaway PostgreSQL cluster started by the test kit. Neither is optional:
//! without PostgreSQL's binaries the PostgreSQL test fails (`tests/run` installs them) rather than being
//! skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use chrono::{DateTime, Duration};
use consulta_core::{
    AuditAction, AuditRecord, Consultation, ConsultationStatus, OwnedRoomId, OwnedUserId, Role,
    Timestamp,
};
use consulta_store::{Backend, Recorded, Store};
use consulta_testkit::Postgres;

mod appointments;
mod bot;
mod calendar;

fn t0() -> Timestamp {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn user(s: &str) -> OwnedUserId {
    OwnedUserId::try_from(s).unwrap()
}

async fn transactions_are_recorded_once_and_queued_until_processed(store: &Store) {
    assert_eq!(
        store
            .record_transaction("1", r#"{"events":[]}"#, 0, t0())
            .await
            .unwrap(),
        Recorded::New
    );
    assert_eq!(
        store
            .record_transaction("2", r#"{"events":[{}]}"#, 1, t0())
            .await
            .unwrap(),
        Recorded::New
    );
    assert_eq!(
        store
            .record_transaction("1", r#"{"events":["replayed"]}"#, 1, t0())
            .await
            .unwrap(),
        Recorded::Duplicate,
        "a replayed txnId must not be queued again"
    );
    let pending = store.pending_transactions(10).await.unwrap();
    let ids: Vec<_> = pending.iter().map(|p| p.txn_id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2"],
        "pending transactions come back in arrival order"
    );
    assert_eq!(
        pending[0].body, r#"{"events":[]}"#,
        "the first body wins, a replay changes nothing"
    );

    store
        .finish_transaction("1", t0() + Duration::seconds(1))
        .await
        .unwrap();
    let pending = store.pending_transactions(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].txn_id, "2");
    assert_eq!(
        store.record_transaction("1", "{}", 0, t0()).await.unwrap(),
        Recorded::Duplicate,
        "a processed txnId is still recognised"
    );
    assert_eq!(store.transaction_count().await.unwrap(), 2);
}

async fn roles_are_set_changed_and_revoked(store: &Store) {
    let alice = user("@alice:clinic.test");
    assert_eq!(
        store.role(&alice).await.unwrap(),
        None,
        "unknown users are pending"
    );
    assert_eq!(
        store
            .set_role(&alice, Some(Role::Patient), t0())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.role(&alice).await.unwrap(), Some(Role::Patient));
    assert_eq!(
        store
            .set_role(&alice, Some(Role::Doctor), t0() + Duration::minutes(1))
            .await
            .unwrap(),
        Some(Role::Patient),
        "the previous role is returned for the audit trail"
    );
    let record = store.user(&alice).await.unwrap().unwrap();
    assert_eq!(record.role, Some(Role::Doctor));
    assert_eq!(record.created_at, t0());
    assert_eq!(record.updated_at, t0() + Duration::minutes(1));

    store
        .set_role(&user("@bob:clinic.test"), Some(Role::Doctor), t0())
        .await
        .unwrap();
    let doctors: Vec<_> = store
        .users_with_role(Role::Doctor)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(doctors, [alice.clone(), user("@bob:clinic.test")]);

    assert_eq!(
        store.set_role(&alice, None, t0()).await.unwrap(),
        Some(Role::Doctor)
    );
    assert_eq!(
        store.role(&alice).await.unwrap(),
        None,
        "a revoked role makes the user pending again"
    );
}

async fn consultations_are_recorded_once(store: &Store) {
    let c = Consultation {
        room_id: OwnedRoomId::try_from("!room:clinic.test").unwrap(),
        doctor: user("@doc:clinic.test"),
        patient: user("@pat:clinic.test"),
        created_at: t0(),
        status: ConsultationStatus::Open,
        closed_at: None,
    };
    assert!(store.insert_consultation(&c).await.unwrap());
    assert!(
        !store.insert_consultation(&c).await.unwrap(),
        "the same room is not recorded twice"
    );
    assert_eq!(store.consultation(&c.room_id).await.unwrap(), Some(c));
    let other = OwnedRoomId::try_from("!other:clinic.test").unwrap();
    assert_eq!(store.consultation(&other).await.unwrap(), None);
}

async fn audit_groups_are_committed_in_order(store: &Store) {
    let group: Vec<AuditRecord> = (0..3)
        .map(|i| AuditRecord {
            at: t0() + Duration::seconds(100 + i),
            actor: None,
            action: AuditAction::ActionRefused,
            target: None,
            detail: format!("group-{i}"),
        })
        .collect();
    store.append_audits(&group).await.unwrap();
    let newest = store.recent_audit(3).await.unwrap();
    let details: Vec<&str> = newest.iter().map(|r| r.detail.as_str()).collect();
    assert_eq!(
        details,
        ["group-2", "group-1", "group-0"],
        "a group keeps its order"
    );
    store.append_audits(&[]).await.unwrap();
}

async fn audit_log_keeps_order_and_fields(store: &Store) {
    for (i, action) in AuditAction::ALL.into_iter().enumerate() {
        let record = AuditRecord {
            at: t0() + Duration::seconds(i as i64),
            actor: (i % 2 == 0).then(|| user("@doc:clinic.test")),
            action,
            target: Some(format!("target-{i}")),
            detail: format!("detail-{i}"),
        };
        store.append_audit(&record).await.unwrap();
    }
    let recent = store.recent_audit(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    let last = AuditAction::ALL.len() - 1;
    assert_eq!(recent[0].action, AuditAction::ALL[last], "newest first");
    assert_eq!(
        recent[0].target.as_deref(),
        Some(format!("target-{last}").as_str())
    );
    let actor = |i: usize| i.is_multiple_of(2).then(|| user("@doc:clinic.test"));
    assert_eq!(recent[0].actor, actor(last));
    assert_eq!(recent[1].actor, actor(last - 1));
    assert_eq!(recent[1].at, t0() + Duration::seconds(last as i64 - 1));
}

async fn consultations_are_found_by_party_and_closed_once(store: &Store) {
    let (doc, pat) = (user("@doc2:clinic.test"), user("@pat2:clinic.test"));
    let room = |s: &str| OwnedRoomId::try_from(s).unwrap();
    for (i, r) in ["!c1:clinic.test", "!c2:clinic.test"]
        .into_iter()
        .enumerate()
    {
        let c = Consultation {
            room_id: room(r),
            doctor: doc.clone(),
            patient: pat.clone(),
            created_at: t0() + Duration::minutes(i as i64),
            status: ConsultationStatus::Open,
            closed_at: None,
        };
        store.insert_consultation(&c).await.unwrap();
    }
    let found = store
        .open_consultation_between(&doc, &pat)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.room_id,
        room("!c2:clinic.test"),
        "the newest open one"
    );
    assert_eq!(store.consultations_of(&pat).await.unwrap().len(), 2);
    assert!(
        store
            .close_consultation(&room("!c2:clinic.test"), ConsultationStatus::Archived, t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .close_consultation(&room("!c2:clinic.test"), ConsultationStatus::Purged, t0())
            .await
            .unwrap()
    );
    let closed = store
        .consultation(&room("!c2:clinic.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (closed.status, closed.closed_at),
        (ConsultationStatus::Archived, Some(t0()))
    );
    let found = store
        .open_consultation_between(&doc, &pat)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.room_id, room("!c1:clinic.test"));
}

async fn read_state_tracks_messages_receipts_and_reminders(store: &Store) {
    let (doc, pat) = (user("@doc3:clinic.test"), user("@pat3:clinic.test"));
    let room = OwnedRoomId::try_from("!read:clinic.test").unwrap();
    store
        .insert_consultation(&Consultation {
            room_id: room.clone(),
            doctor: doc.clone(),
            patient: pat.clone(),
            created_at: t0(),
            status: ConsultationStatus::Open,
            closed_at: None,
        })
        .await
        .unwrap();
    let at = |m: i64| t0() + Duration::minutes(m);
    for (id, m) in [("$m1", 1), ("$m2", 2), ("$m3", 3)] {
        store.record_message(id, &room, &doc, at(m)).await.unwrap();
    }
    store
        .record_message("$m1", &room, &doc, at(99))
        .await
        .unwrap(); // a replay changes nothing
    let all = store.messages_after(&room, &doc, None).await.unwrap();
    assert_eq!((all.count, all.since), (3, Some(at(1))));
    assert_eq!(
        store.last_message_at(&room, &doc).await.unwrap(),
        Some(at(3))
    );
    assert_eq!(store.last_message_at(&room, &pat).await.unwrap(), None);

    // Receipts move forward only; a receipt on a known message reads up to that message's time.
    store
        .record_receipt(&room, &pat, false, "$m2", at(10))
        .await
        .unwrap();
    store
        .record_receipt(&room, &pat, false, "$m1", at(11))
        .await
        .unwrap();
    let receipt = store.receipt(&room, &pat, false).await.unwrap().unwrap();
    assert_eq!(
        (receipt.event_id.as_str(), receipt.position, receipt.read_at),
        ("$m2", at(2), at(10))
    );
    assert_eq!(
        store.receipt(&room, &pat, true).await.unwrap(),
        None,
        "private receipts are kept apart"
    );
    store
        .record_receipt(&room, &pat, true, "$unknown", at(20))
        .await
        .unwrap();
    assert_eq!(
        store
            .receipt(&room, &pat, true)
            .await
            .unwrap()
            .unwrap()
            .position,
        at(20)
    );
    let unread = store
        .messages_after(&room, &doc, Some(at(2)))
        .await
        .unwrap();
    assert_eq!((unread.count, unread.since), (1, Some(at(3))));

    // Reminder candidates, claims and releases.
    let candidates = store.reminder_candidates(at(60)).await.unwrap();
    assert!(
        candidates
            .iter()
            .any(|c| c.consultation.room_id == room && c.covered_upto.is_none())
    );
    assert!(
        store
            .reminder_candidates(at(0))
            .await
            .unwrap()
            .iter()
            .all(|c| c.consultation.room_id != room)
    );
    assert!(
        store
            .claim_reminder(&room, &pat, at(3), at(60))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_reminder(&room, &pat, at(3), at(61))
            .await
            .unwrap(),
        "claimed once"
    );
    assert!(
        store
            .reminder_candidates(at(60))
            .await
            .unwrap()
            .iter()
            .all(|c| c.consultation.room_id != room)
    );
    store.release_reminder(&room, &pat, None).await.unwrap();
    assert!(
        store
            .claim_reminder(&room, &pat, at(3), at(62))
            .await
            .unwrap(),
        "released, so claimable again"
    );
    store
        .record_message("$m4", &room, &doc, at(4))
        .await
        .unwrap();
    let again = store.reminder_candidates(at(60)).await.unwrap();
    let candidate = again
        .iter()
        .find(|c| c.consultation.room_id == room)
        .unwrap();
    assert_eq!(candidate.covered_upto, Some(at(3)));

    // Care desks: the first recorded room wins.
    assert_eq!(store.care_desk(&pat).await.unwrap(), None);
    let desk = OwnedRoomId::try_from("!desk:clinic.test").unwrap();
    assert_eq!(store.set_care_desk(&pat, &desk, t0()).await.unwrap(), desk);
    let other = OwnedRoomId::try_from("!other-desk:clinic.test").unwrap();
    assert_eq!(store.set_care_desk(&pat, &other, t0()).await.unwrap(), desk);
}

async fn membership_keeps_the_newest_state(store: &Store) {
    let room = OwnedRoomId::try_from("!members:clinic.test").unwrap();
    let (a, b) = (user("@a:clinic.test"), user("@b:clinic.test"));
    let at = |s: i64| t0() + Duration::seconds(s);
    store
        .record_membership(&room, &a, "invite", at(10))
        .await
        .unwrap();
    store
        .record_membership(&room, &b, "join", at(10))
        .await
        .unwrap();
    store
        .record_membership(&room, &a, "leave", at(5))
        .await
        .unwrap(); // older: ignored
    let mut present = store.present_members(&room).await.unwrap();
    present.sort();
    assert_eq!(present, [a.clone(), b.clone()]);
    store
        .record_membership(&room, &a, "join", at(11))
        .await
        .unwrap();
    store
        .record_membership(&room, &b, "leave", at(12))
        .await
        .unwrap();
    assert_eq!(store.present_members(&room).await.unwrap(), [a]);
}

async fn conformance(store: Store) {
    store.ping().await.unwrap();
    membership_keeps_the_newest_state(&store).await;
    store.checkpoint().await.unwrap();
    consultations_are_found_by_party_and_closed_once(&store).await;
    read_state_tracks_messages_receipts_and_reminders(&store).await;
    transactions_are_recorded_once_and_queued_until_processed(&store).await;
    roles_are_set_changed_and_revoked(&store).await;
    consultations_are_recorded_once(&store).await;
    audit_groups_are_committed_in_order(&store).await;
    audit_log_keeps_order_and_fields(&store).await;
    appointments::conformance(&store).await;
    bot::conformance(&store).await;
    calendar::conformance(&store).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("consulta.db").display());
    let store = Store::connect(&url, 4).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    conformance(store).await;
    // Reopening applies no migration twice and keeps the data.
    let reopened = Store::connect(&url, 4).await.unwrap();
    assert_eq!(reopened.transaction_count().await.unwrap(), 2);
}

#[tokio::test]
async fn postgres_conformance() {
    let postgres = Postgres::start().await.unwrap();
    let url = postgres.create_database("conformance").await.unwrap();
    let store = Store::connect(&url, 4).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    conformance(store).await;
    // Reopening applies no migration twice and keeps the data.
    let reopened = Store::connect(&url, 4).await.unwrap();
    assert_eq!(reopened.transaction_count().await.unwrap(), 2);
    reopened.close().await;
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let err = Store::connect("mysql://localhost/consulta", 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sqlite://"), "{err}");
}
