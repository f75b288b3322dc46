//! Credentials of the calendar page and the iCal feed.

use chrono::Duration;
use consulta_store::{CalendarTokenKind, Store};

use super::{t0, user};

async fn links_are_used_once_and_expire(store: &Store) {
    let doc = user("@cal-doc:c.test");
    let expiry = t0() + Duration::minutes(15);
    store
        .insert_calendar_token("link-a", CalendarTokenKind::Link, &doc, t0(), Some(expiry))
        .await
        .unwrap();
    store
        .insert_calendar_token("link-b", CalendarTokenKind::Link, &doc, t0(), Some(expiry))
        .await
        .unwrap();
    assert_eq!(
        store
            .calendar_token_user("link-a", CalendarTokenKind::Session, t0())
            .await
            .unwrap(),
        None,
        "a link is not a session"
    );
    assert_eq!(
        store.redeem_calendar_link("link-a", t0()).await.unwrap(),
        Some(doc.clone())
    );
    assert_eq!(
        store.redeem_calendar_link("link-a", t0()).await.unwrap(),
        None,
        "used once"
    );
    assert_eq!(
        store.redeem_calendar_link("link-b", expiry).await.unwrap(),
        None,
        "expired at its expiry"
    );
    assert_eq!(
        store.redeem_calendar_link("nothing", t0()).await.unwrap(),
        None
    );
}

async fn sessions_expire_and_feeds_rotate(store: &Store) {
    let pat = user("@cal-pat:c.test");
    let other = user("@cal-other:c.test");
    let expiry = t0() + Duration::hours(12);
    store
        .insert_calendar_token("sess", CalendarTokenKind::Session, &pat, t0(), Some(expiry))
        .await
        .unwrap();
    assert_eq!(
        store
            .calendar_token_user("sess", CalendarTokenKind::Session, t0())
            .await
            .unwrap(),
        Some(pat.clone())
    );
    assert_eq!(
        store
            .calendar_token_user("sess", CalendarTokenKind::Session, expiry)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.redeem_calendar_link("sess", t0()).await.unwrap(),
        None,
        "a session is not a link"
    );

    for (digest, owner) in [("feed-1", &pat), ("feed-x", &other), ("feed-2", &pat)] {
        store
            .insert_calendar_token(digest, CalendarTokenKind::Feed, owner, t0(), None)
            .await
            .unwrap();
    }
    let feed = |digest: &'static str| async move {
        store
            .calendar_token_user(digest, CalendarTokenKind::Feed, t0() + Duration::days(400))
            .await
            .unwrap()
    };
    assert_eq!(feed("feed-1").await, None, "a new feed revokes the old one");
    assert_eq!(
        feed("feed-2").await,
        Some(pat.clone()),
        "feeds do not expire"
    );
    assert_eq!(
        feed("feed-x").await,
        Some(other.clone()),
        "another user's feed is untouched"
    );
    assert_eq!(
        store
            .revoke_calendar_tokens(&pat, CalendarTokenKind::Feed, t0())
            .await
            .unwrap(),
        1
    );
    assert_eq!(feed("feed-2").await, None, "revoked");
    assert_eq!(feed("feed-x").await, Some(other.clone()));

    // Expired sessions and revoked feeds are deleted; the live feed stays.
    let purged = store
        .purge_calendar_tokens(t0() + Duration::days(1))
        .await
        .unwrap();
    assert!(purged >= 3, "purged {purged}");
    assert_eq!(feed("feed-x").await, Some(other));
}

pub async fn conformance(store: &Store) {
    links_are_used_once_and_expire(store).await;
    sessions_expire_and_feeds_rotate(store).await;
}
