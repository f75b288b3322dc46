//! Credentials of the calendar page and the iCal feed, kept as digests (see migration 0006).

use consulta_core::{OwnedUserId, Timestamp, UserId};
use sqlx::Row;

use crate::{Store, StoreError, parse_user, to_millis};

/// What a calendar credential opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarTokenKind {
    /// A short-lived sign-in link, exchanged once for a session.
    Link,
    /// The calendar page's session.
    Session,
    /// A private iCal feed URL, valid until revoked.
    Feed,
}

impl CalendarTokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::Session => "session",
            Self::Feed => "feed",
        }
    }
}

impl Store {
    /// Stores a new credential of `user`. A new feed revokes the user's earlier feeds in the same
    /// transaction, so each user has at most one live feed URL.
    pub async fn insert_calendar_token(
        &self,
        digest: &str,
        kind: CalendarTokenKind,
        user: &UserId,
        now: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        let mut tx = self.pool().begin().await?;
        if kind == CalendarTokenKind::Feed {
            sqlx::query(
                "UPDATE calendar_tokens SET revoked_at = $1 \
                 WHERE user_id = $2 AND kind = 'feed' AND revoked_at IS NULL",
            )
            .bind(to_millis(now))
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO calendar_tokens (token_digest, kind, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest)
        .bind(kind.as_str())
        .bind(user.as_str())
        .bind(to_millis(now))
        .bind(expires_at.map(to_millis))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses up the sign-in link with this digest: its user if it was unused, unrevoked and unexpired.
    /// Of two concurrent redemptions exactly one gets the user.
    pub async fn redeem_calendar_link(
        &self,
        digest: &str,
        now: Timestamp,
    ) -> Result<Option<OwnedUserId>, StoreError> {
        let _write = self.write_lock().await;
        sqlx::query(
            "UPDATE calendar_tokens SET used_at = $1 \
             WHERE token_digest = $2 AND kind = 'link' AND used_at IS NULL AND revoked_at IS NULL \
             AND expires_at > $1 RETURNING user_id",
        )
        .bind(to_millis(now))
        .bind(digest)
        .fetch_optional(self.pool())
        .await?
        .map(|row| parse_user(row.try_get("user_id")?))
        .transpose()
    }

    /// The user of a live session or feed credential with this digest.
    pub async fn calendar_token_user(
        &self,
        digest: &str,
        kind: CalendarTokenKind,
        now: Timestamp,
    ) -> Result<Option<OwnedUserId>, StoreError> {
        sqlx::query(
            "SELECT user_id FROM calendar_tokens WHERE token_digest = $1 AND kind = $2 \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(digest)
        .bind(kind.as_str())
        .bind(to_millis(now))
        .fetch_optional(self.pool())
        .await?
        .map(|row| parse_user(row.try_get("user_id")?))
        .transpose()
    }

    /// Revokes every live credential of `kind` that `user` holds; returns how many.
    pub async fn revoke_calendar_tokens(
        &self,
        user: &UserId,
        kind: CalendarTokenKind,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let _write = self.write_lock().await;
        let done = sqlx::query(
            "UPDATE calendar_tokens SET revoked_at = $1 \
             WHERE user_id = $2 AND kind = $3 AND revoked_at IS NULL",
        )
        .bind(to_millis(now))
        .bind(user.as_str())
        .bind(kind.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes links and sessions that expired before `before`, and feeds revoked before it.
    pub async fn purge_calendar_tokens(&self, before: Timestamp) -> Result<u64, StoreError> {
        let _write = self.write_lock().await;
        let done =
            sqlx::query("DELETE FROM calendar_tokens WHERE expires_at < $1 OR revoked_at < $1")
                .bind(to_millis(before))
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected())
    }
}
