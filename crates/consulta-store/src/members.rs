//! Room membership as Consulta knows it (see migration 0003).

use consulta_core::{OwnedUserId, RoomId, Timestamp, UserId};
use sqlx::Row;

use crate::{Store, StoreError, parse_user, to_millis};

impl Store {
    /// Records `user`'s membership in `room` as of `at`, unless a newer one is recorded.
    pub async fn record_membership(
        &self,
        room: &RoomId,
        user: &UserId,
        membership: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, membership, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, at = excluded.at \
             WHERE excluded.at >= room_members.at",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(membership)
        .bind(to_millis(at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Members of `room` who are joined or invited.
    pub async fn present_members(&self, room: &RoomId) -> Result<Vec<OwnedUserId>, StoreError> {
        sqlx::query("SELECT user_id FROM room_members WHERE room_id = $1 AND membership IN ('join', 'invite')")
            .bind(room.as_str())
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|row| parse_user(row.try_get("user_id")?))
            .collect()
    }
}
