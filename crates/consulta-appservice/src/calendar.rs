//! Credentials of the calendar page and the iCal feed: sign-in links, page sessions and feed URLs.
//!
//! Each is a random 64-character token handed out once; the store keeps only its SHA-256 digest.
//! A link works once and briefly, and buys a session; a widget's OpenID token, checked with the
//! homeserver, buys one too. A feed URL works until its owner replaces or revokes it.

use chrono::Duration;
use consulta_core::{AuditAction, OwnedUserId, Timestamp, UserId};
use consulta_store::{CalendarTokenKind, StoreError};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::state::AppState;

/// A page session just opened.
#[derive(Debug)]
pub struct Session {
    /// Whose it is.
    pub user: OwnedUserId,
    /// The token the page presents (`Authorization: Session <token>`).
    pub token: Secret,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// The hex SHA-256 digest under which a token is stored.
fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `token` could be one of ours: 64 ASCII alphanumerics. Anything else is refused before a
/// store lookup.
fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl AppState {
    /// The calendar page's public URL.
    pub fn calendar_page_url(&self) -> String {
        self.config().calendar_page_url()
    }

    /// A new sign-in link for `user`, valid once for `appointments.sign_in_link_minutes`. The token
    /// travels in the URL's fragment, which browsers never send to a server or put in a referrer.
    pub async fn calendar_sign_in_link(&self, user: &UserId) -> Result<String, StoreError> {
        let token = Secret::generate();
        let now = self.clock().now();
        let ttl = Duration::minutes(i64::from(self.config().appointments.sign_in_link_minutes));
        self.store()
            .insert_calendar_token(
                &digest(token.expose()),
                CalendarTokenKind::Link,
                user,
                now,
                Some(now + ttl),
            )
            .await?;
        Ok(format!(
            "{}#link={}",
            self.calendar_page_url(),
            token.expose()
        ))
    }

    /// Exchanges a sign-in link's token for a session; `None` if it is unknown, used or expired.
    pub async fn redeem_calendar_link(&self, token: &str) -> Result<Option<Session>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let now = self.clock().now();
        match self
            .store()
            .redeem_calendar_link(&digest(token), now)
            .await?
        {
            Some(user) => self.open_calendar_session(&user).await.map(Some),
            None => Ok(None),
        }
    }

    /// Opens a page session for `user` (signed in by a link or a checked OpenID token).
    pub async fn open_calendar_session(&self, user: &UserId) -> Result<Session, StoreError> {
        let token = Secret::generate();
        let now = self.clock().now();
        let expires_at =
            now + Duration::hours(i64::from(self.config().appointments.calendar_session_hours));
        self.store()
            .insert_calendar_token(
                &digest(token.expose()),
                CalendarTokenKind::Session,
                user,
                now,
                Some(expires_at),
            )
            .await?;
        self.audit(
            Some(user.to_owned()),
            AuditAction::ActionAllowed,
            None,
            "calendar session opened",
        )
        .await;
        Ok(Session {
            user: user.to_owned(),
            token,
            expires_at,
        })
    }

    /// Whose live session `token` is.
    pub async fn calendar_session_user(
        &self,
        token: &str,
    ) -> Result<Option<OwnedUserId>, StoreError> {
        self.token_user(token, CalendarTokenKind::Session).await
    }

    /// Ends every page session of `user` (signing out everywhere).
    pub async fn end_calendar_sessions(&self, user: &UserId) -> Result<u64, StoreError> {
        let now = self.clock().now();
        self.store()
            .revoke_calendar_tokens(user, CalendarTokenKind::Session, now)
            .await
    }

    /// A new private iCal feed URL for `user`; any earlier one stops working.
    pub async fn new_calendar_feed(&self, user: &UserId) -> Result<String, StoreError> {
        let token = Secret::generate();
        let now = self.clock().now();
        self.store()
            .insert_calendar_token(
                &digest(token.expose()),
                CalendarTokenKind::Feed,
                user,
                now,
                None,
            )
            .await?;
        self.audit(
            Some(user.to_owned()),
            AuditAction::ActionAllowed,
            None,
            "iCal feed created",
        )
        .await;
        Ok(self.calendar_feed_url(token.expose()))
    }

    /// The URL of the feed with `token`.
    fn calendar_feed_url(&self, token: &str) -> String {
        let page = self.calendar_page_url();
        let base = page
            .strip_suffix("calendar/")
            .unwrap_or(page.as_str())
            .trim_end_matches('/');
        format!("{base}/ical/{token}.ics")
    }

    /// Revokes `user`'s feed URL; returns whether there was one.
    pub async fn revoke_calendar_feed(&self, user: &UserId) -> Result<bool, StoreError> {
        let now = self.clock().now();
        let revoked = self
            .store()
            .revoke_calendar_tokens(user, CalendarTokenKind::Feed, now)
            .await?;
        if revoked > 0 {
            self.audit(
                Some(user.to_owned()),
                AuditAction::ActionAllowed,
                None,
                "iCal feed revoked",
            )
            .await;
        }
        Ok(revoked > 0)
    }

    /// Whose live feed `token` is.
    pub async fn calendar_feed_user(&self, token: &str) -> Result<Option<OwnedUserId>, StoreError> {
        self.token_user(token, CalendarTokenKind::Feed).await
    }

    async fn token_user(
        &self,
        token: &str,
        kind: CalendarTokenKind,
    ) -> Result<Option<OwnedUserId>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let now = self.clock().now();
        self.store()
            .calendar_token_user(&digest(token), kind, now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_shapes_reach_the_store() {
        assert!(well_formed(Secret::generate().expose()));
        assert!(!well_formed(""));
        assert!(!well_formed(&"a".repeat(63)));
        assert!(!well_formed(&"é".repeat(32)));
        assert!(!well_formed(&format!("{}'", "a".repeat(63))));
    }

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
