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
    assert_eq!(recent[0].action, AuditAction::ALL[5], "newest first");
    assert_eq!(recent[0].target.as_deref(), Some("target-5"));
    assert_eq!(recent[1].actor, Some(user("@doc:clinic.test")));
    assert_eq!(recent[0].actor, None);
    assert_eq!(recent[1].at, t0() + Duration::seconds(4));
}

async fn conformance(store: Store) {
    store.ping().await.unwrap();
    transactions_are_recorded_once_and_queued_until_processed(&store).await;
    roles_are_set_changed_and_revoked(&store).await;
    consultations_are_recorded_once(&store).await;
    audit_log_keeps_order_and_fields(&store).await;
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
