//! Consultations: which room belongs to which doctor and patient.

use consulta_core::{Consultation, ConsultationStatus, RoomId, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, from_millis, parse_room, parse_user, to_millis};

pub(crate) fn consultation_from_row(row: AnyRow) -> Result<Consultation, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Consultation {
        room_id: parse_room(row.try_get("room_id")?)?,
        doctor: parse_user(row.try_get("doctor")?)?,
        patient: parse_user(row.try_get("patient")?)?,
        created_at: from_millis(row.try_get("created_at")?)?,
        status: status
            .parse::<ConsultationStatus>()
            .map_err(|_| StoreError::Corrupt {
                what: "consultation status",
                value: status,
            })?,
        closed_at: row
            .try_get::<Option<i64>, _>("closed_at")?
            .map(from_millis)
            .transpose()?,
    })
}

impl Store {
    /// Records a new consultation. Returns `false` if the room was already recorded.
    pub async fn insert_consultation(&self, c: &Consultation) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let result = sqlx::query(
            "INSERT INTO consultations (room_id, doctor, patient, status, created_at, closed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(c.room_id.as_str())
        .bind(c.doctor.as_str())
        .bind(c.patient.as_str())
        .bind(c.status.as_str())
        .bind(to_millis(c.created_at))
        .bind(c.closed_at.map(to_millis))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The consultation held in `room`, if that room is one.
    pub async fn consultation(&self, room: &RoomId) -> Result<Option<Consultation>, StoreError> {
        sqlx::query(
            "SELECT room_id, doctor, patient, status, created_at, closed_at FROM consultations \
             WHERE room_id = $1",
        )
        .bind(room.as_str())
        .fetch_optional(self.pool())
        .await?
        .map(consultation_from_row)
        .transpose()
    }

    /// The open consultation between `doctor` and `patient`, if there is one (the newest).
    pub async fn open_consultation_between(
        &self,
        doctor: &UserId,
        patient: &UserId,
    ) -> Result<Option<Consultation>, StoreError> {
        sqlx::query(
            "SELECT room_id, doctor, patient, status, created_at, closed_at FROM consultations \
             WHERE doctor = $1 AND patient = $2 AND status = 'open' ORDER BY created_at DESC LIMIT 1",
        )
        .bind(doctor.as_str())
        .bind(patient.as_str())
        .fetch_optional(self.pool())
        .await?
        .map(consultation_from_row)
        .transpose()
    }

    /// Consultations of a doctor or a patient, newest first.
    pub async fn consultations_of(&self, user: &UserId) -> Result<Vec<Consultation>, StoreError> {
        sqlx::query(
            "SELECT room_id, doctor, patient, status, created_at, closed_at FROM consultations \
             WHERE doctor = $1 OR patient = $1 ORDER BY created_at DESC",
        )
        .bind(user.as_str())
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(consultation_from_row)
        .collect()
    }

    /// Marks a consultation archived or purged.
    pub async fn close_consultation(
        &self,
        room: &RoomId,
        status: ConsultationStatus,
        at: consulta_core::Timestamp,
    ) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let result = sqlx::query("UPDATE consultations SET status = $1, closed_at = $2 WHERE room_id = $3 AND status = 'open'")
            .bind(status.as_str())
            .bind(to_millis(at))
            .bind(room.as_str())
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }
}
