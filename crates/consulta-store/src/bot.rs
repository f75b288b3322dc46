//! The clinic assistant's durable state: the notice outbox, feed cursors and carried-out commands.

use consulta_core::{OwnedUserId, Timestamp, UserId};
use sqlx::Row;

use crate::{Store, StoreError, from_millis, parse_user, to_millis};

/// A notice in the outbox, not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxNotice {
    /// Its place in the outbox (also what makes its delivery idempotent on the homeserver).
    pub id: i64,
    /// Who it is for.
    pub recipient: OwnedUserId,
    /// The text.
    pub body: String,
    /// Failed deliveries so far.
    pub attempts: i64,
}

/// A cursor into an ordered feed: the last `(at, id)` consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor {
    /// The time component.
    pub at: Timestamp,
    /// The id component (`None`: everything at `at` is still to come).
    pub id: Option<String>,
}

impl Store {
    /// Puts a notice in the outbox unless one with the same key is (or was) there; returns whether it
    /// was added.
    pub async fn enqueue_notice(
        &self,
        dedupe_key: &str,
        recipient: &UserId,
        body: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let done = sqlx::query(
            "INSERT INTO bot_outbox (dedupe_key, recipient, body, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(dedupe_key)
        .bind(recipient.as_str())
        .bind(body)
        .bind(to_millis(now))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Undelivered notices that have failed fewer than `max_attempts` times, oldest first, at most `limit`.
    pub async fn pending_notices(
        &self,
        limit: u32,
        max_attempts: i64,
    ) -> Result<Vec<OutboxNotice>, StoreError> {
        sqlx::query(
            "SELECT id, recipient, body, attempts FROM bot_outbox WHERE sent_at IS NULL AND attempts < $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(max_attempts)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(|row| {
            Ok(OutboxNotice {
                id: row.try_get("id")?,
                recipient: parse_user(row.try_get("recipient")?)?,
                body: row.try_get("body")?,
                attempts: row.try_get("attempts")?,
            })
        })
        .collect()
    }

    /// Records a notice as delivered, as the event `event_id`.
    pub async fn mark_notice_sent(
        &self,
        id: i64,
        event_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query(
            "UPDATE bot_outbox SET sent_at = $1, event_id = $2, last_error = NULL WHERE id = $3",
        )
        .bind(to_millis(now))
        .bind(event_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed delivery attempt (`error`: a short code, never content).
    pub async fn mark_notice_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query("UPDATE bot_outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2")
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether a notice with this key was ever enqueued, and when it was delivered.
    pub async fn notice_state(
        &self,
        dedupe_key: &str,
    ) -> Result<Option<Option<Timestamp>>, StoreError> {
        sqlx::query("SELECT sent_at FROM bot_outbox WHERE dedupe_key = $1")
            .bind(dedupe_key)
            .fetch_optional(self.pool())
            .await?
            .map(|row| {
                row.try_get::<Option<i64>, _>("sent_at")?
                    .map(from_millis)
                    .transpose()
            })
            .transpose()
    }

    /// Deletes delivered notices older than `before` (their text has done its job); returns how many.
    pub async fn purge_sent_notices(&self, before: Timestamp) -> Result<u64, StoreError> {
        let _write = self.write_lock().await;
        let done = sqlx::query("DELETE FROM bot_outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(to_millis(before))
            .execute(self.pool())
            .await?;
        let commands = sqlx::query("DELETE FROM bot_commands WHERE received_at < $1")
            .bind(to_millis(before))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() + commands.rows_affected())
    }

    /// Where the follower `name` has got to in its feed.
    pub async fn feed_cursor(&self, name: &str) -> Result<Option<FeedCursor>, StoreError> {
        sqlx::query("SELECT at, id FROM bot_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .map(|row| {
                Ok(FeedCursor {
                    at: from_millis(row.try_get("at")?)?,
                    id: row.try_get("id")?,
                })
            })
            .transpose()
    }

    /// Moves the follower `name` on to `cursor`.
    pub async fn set_feed_cursor(&self, name: &str, cursor: &FeedCursor) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query(
            "INSERT INTO bot_cursors (name, at, id) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET at = excluded.at, id = excluded.id",
        )
        .bind(name)
        .bind(to_millis(cursor.at))
        .bind(cursor.id.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Claims the command in event `event_id` for carrying out; `false` if it was claimed before.
    pub async fn claim_command(&self, event_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let done = sqlx::query(
            "INSERT INTO bot_commands (event_id, received_at) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(to_millis(now))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whose Care desk `room` is, if anyone's.
    pub async fn care_desk_owner(
        &self,
        room: &consulta_core::RoomId,
    ) -> Result<Option<OwnedUserId>, StoreError> {
        sqlx::query("SELECT user_id FROM care_desks WHERE room_id = $1")
            .bind(room.as_str())
            .fetch_optional(self.pool())
            .await?
            .map(|row| parse_user(row.try_get("user_id")?))
            .transpose()
    }
}
