//! Read state: messages seen in consultations, read receipts, reminders sent, care desk rooms.
//! Ids and times only; message content never reaches the store.

use consulta_core::{Consultation, RoomId, Timestamp, UserId, read_state::Unread};
use sqlx::Row;

use crate::{Store, StoreError, from_millis, parse_room, parse_user, to_millis};

/// A person's furthest receipt of one kind in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The receipted event.
    pub event_id: String,
    /// When the receipt was made.
    pub read_at: Timestamp,
    /// How far it reads: the receipted message's time, or the receipt's time.
    pub position: Timestamp,
}

/// An open consultation whose doctor wrote after the last reminder, with that reminder's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderCandidate {
    /// The consultation.
    pub consultation: Consultation,
    /// Up to which message time the last reminder covered, if one was sent.
    pub covered_upto: Option<Timestamp>,
}

impl Store {
    /// Records a message seen in a consultation room. Idempotent per event.
    pub async fn record_message(
        &self,
        event_id: &str,
        room: &RoomId,
        sender: &UserId,
        sent_at: Timestamp,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query(
            "INSERT INTO consultation_messages (event_id, room_id, sender, sent_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(room.as_str())
        .bind(sender.as_str())
        .bind(to_millis(sent_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a read receipt; a receipt that reads less far than the one recorded is ignored.
    pub async fn record_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        private: bool,
        event_id: &str,
        read_at: Timestamp,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        let message_time: Option<i64> =
            sqlx::query("SELECT sent_at FROM consultation_messages WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(self.pool())
                .await?
                .map(|row| row.try_get("sent_at"))
                .transpose()?;
        let position = message_time.unwrap_or(to_millis(read_at));
        sqlx::query(
            "INSERT INTO read_receipts (room_id, user_id, private, event_id, read_at, position) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (room_id, user_id, private) DO UPDATE SET event_id = excluded.event_id, \
             read_at = excluded.read_at, position = excluded.position \
             WHERE excluded.position > read_receipts.position",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(i64::from(private))
        .bind(event_id)
        .bind(to_millis(read_at))
        .bind(position)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A person's furthest receipt of one kind in a room.
    pub async fn receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        private: bool,
    ) -> Result<Option<Receipt>, StoreError> {
        sqlx::query(
            "SELECT event_id, read_at, position FROM read_receipts WHERE room_id = $1 AND user_id = $2 AND private = $3",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(i64::from(private))
        .fetch_optional(self.pool())
        .await?
        .map(|row| {
            Ok(Receipt {
                event_id: row.try_get("event_id")?,
                read_at: from_millis(row.try_get("read_at")?)?,
                position: from_millis(row.try_get("position")?)?,
            })
        })
        .transpose()
    }

    /// When `sender` last wrote in `room`.
    pub async fn last_message_at(
        &self,
        room: &RoomId,
        sender: &UserId,
    ) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query("SELECT MAX(sent_at) AS at FROM consultation_messages WHERE room_id = $1 AND sender = $2")
            .bind(room.as_str())
            .bind(sender.as_str())
            .fetch_one(self.pool())
            .await?;
        row.try_get::<Option<i64>, _>("at")?
            .map(from_millis)
            .transpose()
    }

    /// Messages from `sender` in `room` sent after `after` (all of them if `None`).
    pub async fn messages_after(
        &self,
        room: &RoomId,
        sender: &UserId,
        after: Option<Timestamp>,
    ) -> Result<Unread, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(sent_at) AS since FROM consultation_messages \
             WHERE room_id = $1 AND sender = $2 AND sent_at > $3",
        )
        .bind(room.as_str())
        .bind(sender.as_str())
        .bind(after.map_or(i64::MIN, to_millis))
        .fetch_one(self.pool())
        .await?;
        Ok(Unread {
            count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
            since: row
                .try_get::<Option<i64>, _>("since")?
                .map(from_millis)
                .transpose()?,
        })
    }

    /// Open consultations whose doctor wrote, no later than `cutoff`, after the last reminder.
    pub async fn reminder_candidates(
        &self,
        cutoff: Timestamp,
    ) -> Result<Vec<ReminderCandidate>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.room_id, c.doctor, c.patient, c.status, c.created_at, c.closed_at, r.covered_upto \
             FROM consultations c LEFT JOIN unread_reminders r ON r.room_id = c.room_id AND r.user_id = c.patient \
             WHERE c.status = 'open' AND EXISTS (SELECT 1 FROM consultation_messages m \
               WHERE m.room_id = c.room_id AND m.sender = c.doctor \
               AND m.sent_at > COALESCE(r.covered_upto, $1) AND m.sent_at <= $2)",
        )
        .bind(i64::MIN)
        .bind(to_millis(cutoff))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                let covered: Option<i64> = row.try_get("covered_upto")?;
                Ok(ReminderCandidate {
                    covered_upto: covered.map(from_millis).transpose()?,
                    consultation: crate::consultations::consultation_from_row(row)?,
                })
            })
            .collect()
    }

    /// Claims the reminder covering messages up to `covered_upto`; `false` if one already covers them.
    pub async fn claim_reminder(
        &self,
        room: &RoomId,
        user: &UserId,
        covered_upto: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let result = sqlx::query(
            "INSERT INTO unread_reminders (room_id, user_id, covered_upto, sent_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET covered_upto = excluded.covered_upto, \
             sent_at = excluded.sent_at WHERE excluded.covered_upto > unread_reminders.covered_upto",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(to_millis(covered_upto))
        .bind(to_millis(now))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives a claimed reminder back (it could not be sent), restoring the previous coverage.
    pub async fn release_reminder(
        &self,
        room: &RoomId,
        user: &UserId,
        previous: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        match previous {
            Some(at) => {
                sqlx::query("UPDATE unread_reminders SET covered_upto = $1 WHERE room_id = $2 AND user_id = $3")
                    .bind(to_millis(at))
                    .bind(room.as_str())
                    .bind(user.as_str())
                    .execute(self.pool())
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM unread_reminders WHERE room_id = $1 AND user_id = $2")
                    .bind(room.as_str())
                    .bind(user.as_str())
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// The room in which the clinic assistant talks to `user`.
    pub async fn care_desk(
        &self,
        user: &UserId,
    ) -> Result<Option<consulta_core::OwnedRoomId>, StoreError> {
        sqlx::query("SELECT room_id FROM care_desks WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(self.pool())
            .await?
            .map(|row| parse_room(row.try_get("room_id")?))
            .transpose()
    }

    /// Every Care desk room.
    pub async fn care_desk_rooms(&self) -> Result<Vec<consulta_core::OwnedRoomId>, StoreError> {
        sqlx::query("SELECT room_id FROM care_desks ORDER BY created_at")
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|row| parse_room(row.try_get("room_id")?))
            .collect()
    }

    /// Records `user`'s care desk unless one is already recorded; returns the one that counts.
    pub async fn set_care_desk(
        &self,
        user: &UserId,
        room: &RoomId,
        now: Timestamp,
    ) -> Result<consulta_core::OwnedRoomId, StoreError> {
        let _write = self.write_lock().await;
        sqlx::query("INSERT INTO care_desks (user_id, room_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING")
            .bind(user.as_str())
            .bind(room.as_str())
            .bind(to_millis(now))
            .execute(self.pool())
            .await?;
        let recorded = self.care_desk(user).await?;
        recorded.ok_or(StoreError::Corrupt {
            what: "care desk",
            value: parse_user(user.to_string())?.to_string(),
        })
    }
}
