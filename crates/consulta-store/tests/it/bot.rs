//! The clinic assistant's outbox, feed cursors, command claims and the reminder scan.

use chrono::Duration;
use consulta_core::{AppointmentStatus, RoomId};
use consulta_store::{Booked, FeedCursor, Store};

use super::appointments::appointment;
use super::{t0, user};

async fn the_outbox_keeps_one_copy_per_key_until_delivered(store: &Store) {
    let pat = user("@outbox-p:c.test");
    assert!(
        store
            .enqueue_notice("k1", &pat, "first", t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .enqueue_notice("k1", &pat, "again", t0())
            .await
            .unwrap(),
        "same key refused"
    );
    assert!(
        store
            .enqueue_notice("k2", &pat, "second", t0())
            .await
            .unwrap()
    );
    let pending = store.pending_notices(10, 5).await.unwrap();
    assert_eq!(
        pending.iter().map(|n| n.body.as_str()).collect::<Vec<_>>(),
        ["first", "second"],
        "oldest first, the refused copy absent"
    );
    let first = &pending[0];
    store
        .mark_notice_failed(first.id, "unreachable")
        .await
        .unwrap();
    let again = store.pending_notices(10, 5).await.unwrap();
    assert_eq!((again[0].id, again[0].attempts), (first.id, 1));
    assert_eq!(
        store.pending_notices(10, 1).await.unwrap().len(),
        1,
        "a notice that failed too often is left for an operator"
    );
    store.mark_notice_sent(first.id, "$e1", t0()).await.unwrap();
    assert_eq!(store.pending_notices(10, 5).await.unwrap().len(), 1);
    assert_eq!(store.notice_state("k1").await.unwrap(), Some(Some(t0())));
    assert_eq!(store.notice_state("k2").await.unwrap(), Some(None));
    assert_eq!(store.notice_state("k3").await.unwrap(), None);
    // Delivered notices go after a while, and a purged key is not re-enqueued by accident meanwhile.
    assert_eq!(
        store
            .purge_sent_notices(t0() + Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.pending_notices(10, 5).await.unwrap().len(), 1);
    assert_eq!(store.notice_state("k1").await.unwrap(), None);
}

async fn cursors_and_commands_persist(store: &Store) {
    assert_eq!(store.feed_cursor("changes").await.unwrap(), None);
    let cursor = FeedCursor {
        at: t0(),
        id: Some("abc".into()),
    };
    store.set_feed_cursor("changes", &cursor).await.unwrap();
    assert_eq!(store.feed_cursor("changes").await.unwrap(), Some(cursor));
    let moved = FeedCursor {
        at: t0() + Duration::seconds(5),
        id: None,
    };
    store.set_feed_cursor("changes", &moved).await.unwrap();
    assert_eq!(store.feed_cursor("changes").await.unwrap(), Some(moved));

    assert!(store.claim_command("$cmd1", t0()).await.unwrap());
    assert!(
        !store.claim_command("$cmd1", t0()).await.unwrap(),
        "only once"
    );

    let owner = user("@desk-owner:c.test");
    let room = RoomId::parse("!desk:c.test").unwrap();
    assert_eq!(store.care_desk_owner(&room).await.unwrap(), None);
    store.set_care_desk(&owner, &room, t0()).await.unwrap();
    assert_eq!(store.care_desk_owner(&room).await.unwrap(), Some(owner));
}

async fn the_reminder_scan_pages_through_scheduled_starts(store: &Store) {
    // Far from the other tests' appointments, on their own doctor and patient.
    let base = 60 * 24 * 900;
    let mut ids = Vec::new();
    for i in 0..5 {
        let a = appointment("@scan-dr:c.test", "@scan-p:c.test", base + i * 60, 30);
        assert_eq!(store.book_appointment(&a).await.unwrap(), Booked::Done);
        ids.push(a.id);
    }
    store
        .set_appointment_status(
            ids[1],
            AppointmentStatus::Cancelled,
            &user("@scan-dr:c.test"),
            t0(),
        )
        .await
        .unwrap();
    let from = t0() + Duration::minutes(base);
    let to = from + Duration::minutes(4 * 60);
    let page = store
        .scheduled_starting_between(from, to, None, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    let last = page.last().map(|a| (a.start, a.id));
    let rest = store
        .scheduled_starting_between(from, to, last, 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|a| a.id).collect::<Vec<_>>(),
        [ids[3]],
        "the fifth starts at `to`, outside the range"
    );
}

pub async fn conformance(store: &Store) {
    the_outbox_keeps_one_copy_per_key_until_delivered(store).await;
    cursors_and_commands_persist(store).await;
    the_reminder_scan_pages_through_scheduled_starts(store).await;
}
