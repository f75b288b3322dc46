//! Appointments and appointment requests.
//!
//! **No double booking.** A booking (or a reschedule, or the acceptance of a request) checks the doctor's
//! and the patient's calendars and writes in one transaction, so that two concurrent bookings of the same
//! slot cannot both win:
//! - SQLite: the store's in-process write lock is held around the whole transaction, so writers run one
//!   after the other and each sees its predecessor's row. Should another *process* write the same file,
//!   SQLite itself refuses the second writer's upgrade from its read snapshot (`SQLITE_BUSY_SNAPSHOT`):
//!   the booking fails, it is never doubled.
//! - PostgreSQL: the transaction first takes transaction-scoped advisory locks on the doctor's and the
//!   patient's ids (`pg_advisory_xact_lock(hashtextextended(user_id, 0))`, in sorted order so that two
//!   bookings never wait on each other crosswise). Bookings touching the same calendar queue on the lock
//!   and, in READ COMMITTED, each statement after it sees the rows committed before. This needs no
//!   extension (an exclusion constraint would need `btree_gist`) and no retry loop (SERIALIZABLE would
//!   abort one of the two with a serialization failure). A hash collision between two ids only makes two
//!   unrelated calendars queue behind each other; it never lets a double booking through.
//!
//! Only *scheduled* appointments occupy time. An appointment lasts at most
//! [`MAX_DURATION_MINUTES`](consulta_core::appointment::MAX_DURATION_MINUTES), which bounds how far back
//! an overlapping one can start, so every time query is an index range scan on `(person, status, start)`.

use chrono::Duration;
use consulta_core::appointment::MAX_DURATION_MINUTES;
use consulta_core::{
    Appointment, AppointmentId, AppointmentKind, AppointmentRequest, AppointmentStatus, Conflict,
    ConflictParty, RequestId, RequestStatus, Timestamp, UserId,
};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{Backend, Store, StoreError, from_millis, parse_room, parse_user, to_millis};

// SQL is assembled at compile time (`concat!`), so every query stays a static string: sqlx refuses
// strings built at run time, which could carry injected text.
macro_rules! columns {
    () => {
        "id, doctor, patient, start_at, duration_minutes, kind, status, reason, room_id, \
         created_by, created_at, updated_by, updated_at"
    };
}

macro_rules! request_columns {
    () => {
        "id, patient, doctor, preferred_start, duration_minutes, kind, reason, status, created_at, \
         decided_by, decided_at, appointment_id"
    };
}

/// The scheduled appointment of one calendar (`doctor` or `patient` column) that shares time with
/// `[$4, $3)` and is not `$5`; `$2` bounds how early it can start.
macro_rules! conflict_in {
    ($column:literal) => {
        concat!(
            "SELECT id FROM appointments WHERE ",
            $column,
            " = $1 AND status = 'scheduled' AND start_at > $2 AND start_at < $3 AND end_at > $4 \
             AND id <> $5 ORDER BY start_at LIMIT 1"
        )
    };
}

/// One side (`doctor` or `patient`) of a listing of every status sharing time with `[$4, $3)`.
macro_rules! between_side {
    ($column:literal) => {
        concat!(
            "SELECT * FROM (SELECT ",
            columns!(),
            " FROM appointments WHERE ",
            $column,
            " = $1 AND start_at > $2 AND start_at < $3 AND end_at > $4 ORDER BY start_at LIMIT $5) AS ",
            $column,
            "_side"
        )
    };
}

/// One side (`doctor` or `patient`) of the next `$4` scheduled appointments not ended at `$3`.
macro_rules! next_side {
    ($column:literal) => {
        concat!(
            "SELECT * FROM (SELECT ",
            columns!(),
            " FROM appointments WHERE ",
            $column,
            " = $1 AND status = 'scheduled' AND start_at > $2 AND end_at > $3 \
             ORDER BY start_at LIMIT $4) AS ",
            $column,
            "_side"
        )
    };
}

/// What a write that books time came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booked {
    /// Written.
    Done,
    /// Refused: the slot collides with a scheduled appointment.
    Busy(Conflict),
    /// Refused: the appointment is no longer scheduled, or the request no longer pending (it changed
    /// since the caller read it).
    Stale,
}

fn corrupt(what: &'static str, value: String) -> StoreError {
    StoreError::Corrupt { what, value }
}

fn appointment_from_row(row: AnyRow) -> Result<Appointment, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(Appointment {
        id: id.parse().map_err(|_| corrupt("appointment id", id))?,
        doctor: parse_user(row.try_get("doctor")?)?,
        patient: parse_user(row.try_get("patient")?)?,
        start: from_millis(row.try_get("start_at")?)?,
        duration_minutes: row.try_get("duration_minutes")?,
        kind: kind
            .parse::<AppointmentKind>()
            .map_err(|_| corrupt("appointment kind", kind))?,
        status: status
            .parse::<AppointmentStatus>()
            .map_err(|_| corrupt("appointment status", status))?,
        reason: row.try_get("reason")?,
        room_id: row
            .try_get::<Option<String>, _>("room_id")?
            .map(parse_room)
            .transpose()?,
        created_by: parse_user(row.try_get("created_by")?)?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_by: parse_user(row.try_get("updated_by")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

fn request_from_row(row: AnyRow) -> Result<AppointmentRequest, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(AppointmentRequest {
        id: id.parse().map_err(|_| corrupt("request id", id))?,
        patient: parse_user(row.try_get("patient")?)?,
        doctor: parse_user(row.try_get("doctor")?)?,
        preferred_start: row
            .try_get::<Option<i64>, _>("preferred_start")?
            .map(from_millis)
            .transpose()?,
        duration_minutes: row.try_get("duration_minutes")?,
        kind: kind
            .parse::<AppointmentKind>()
            .map_err(|_| corrupt("appointment kind", kind))?,
        reason: row.try_get("reason")?,
        status: status
            .parse::<RequestStatus>()
            .map_err(|_| corrupt("request status", status))?,
        created_at: from_millis(row.try_get("created_at")?)?,
        decided_by: row
            .try_get::<Option<String>, _>("decided_by")?
            .map(parse_user)
            .transpose()?,
        decided_at: row
            .try_get::<Option<i64>, _>("decided_at")?
            .map(from_millis)
            .transpose()?,
        appointment: row
            .try_get::<Option<String>, _>("appointment_id")?
            .map(|v| v.parse().map_err(|_| corrupt("appointment id", v)))
            .transpose()?,
    })
}

/// The earliest start of an appointment that can still be under way at `t`.
fn lookback(t: Timestamp) -> i64 {
    to_millis(t - Duration::minutes(MAX_DURATION_MINUTES))
}

impl Store {
    /// Locks the calendars of `a`'s doctor and patient for the rest of `tx` (PostgreSQL; SQLite is
    /// already serialised by the write lock).
    async fn lock_calendars(
        &self,
        tx: &mut Transaction<'static, Any>,
        a: &Appointment,
    ) -> Result<(), StoreError> {
        if self.backend() != Backend::Postgres {
            return Ok(());
        }
        let mut ids = [a.doctor.as_str(), a.patient.as_str()];
        ids.sort_unstable();
        for id in ids {
            // Wrapped in a count: sqlx's Any driver cannot carry the function's `void` result.
            sqlx::query(
                "SELECT count(*) AS locked FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS l",
            )
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The first scheduled appointment (other than `a` itself) in `a`'s doctor's or patient's calendar
    /// that shares time with `a`.
    async fn conflict_in(
        tx: &mut Transaction<'static, Any>,
        a: &Appointment,
    ) -> Result<Option<Conflict>, StoreError> {
        for (party, sql, user) in [
            (ConflictParty::Doctor, conflict_in!("doctor"), &a.doctor),
            (ConflictParty::Patient, conflict_in!("patient"), &a.patient),
        ] {
            let row = sqlx::query(sql)
                .bind(user.as_str())
                .bind(lookback(a.start))
                .bind(to_millis(a.end()))
                .bind(to_millis(a.start))
                .bind(a.id.to_string())
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(row) = row {
                let id: String = row.try_get("id")?;
                return Ok(Some(Conflict {
                    party,
                    with: id.parse().map_err(|_| corrupt("appointment id", id))?,
                }));
            }
        }
        Ok(None)
    }

    async fn insert_appointment_in(
        tx: &mut Transaction<'static, Any>,
        a: &Appointment,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO appointments (id, doctor, patient, start_at, end_at, duration_minutes, kind, \
             status, reason, room_id, created_by, created_at, updated_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(a.id.to_string())
        .bind(a.doctor.as_str())
        .bind(a.patient.as_str())
        .bind(to_millis(a.start))
        .bind(to_millis(a.end()))
        .bind(a.duration_minutes)
        .bind(a.kind.as_str())
        .bind(a.status.as_str())
        .bind(a.reason.as_str())
        .bind(a.room_id.as_ref().map(|r| r.as_str()))
        .bind(a.created_by.as_str())
        .bind(to_millis(a.created_at))
        .bind(a.updated_by.as_str())
        .bind(to_millis(a.updated_at))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Books `a` unless its doctor or patient already has a scheduled appointment sharing time with it.
    /// Check and insert are one transaction (see the module documentation).
    pub async fn book_appointment(&self, a: &Appointment) -> Result<Booked, StoreError> {
        let _write = self.write_lock().await;
        let mut tx = self.pool().begin().await?;
        self.lock_calendars(&mut tx, a).await?;
        if let Some(conflict) = Self::conflict_in(&mut tx, a).await? {
            tx.rollback().await?;
            return Ok(Booked::Busy(conflict));
        }
        Self::insert_appointment_in(&mut tx, a).await?;
        tx.commit().await?;
        Ok(Booked::Done)
    }

    /// Writes a changed appointment (new time, kind, reason, room; same doctor and patient) if it is
    /// still scheduled, checking the new time against both calendars in the same transaction.
    pub async fn update_appointment(&self, a: &Appointment) -> Result<Booked, StoreError> {
        let _write = self.write_lock().await;
        let mut tx = self.pool().begin().await?;
        self.lock_calendars(&mut tx, a).await?;
        if let Some(conflict) = Self::conflict_in(&mut tx, a).await? {
            tx.rollback().await?;
            return Ok(Booked::Busy(conflict));
        }
        let result = sqlx::query(
            "UPDATE appointments SET start_at = $1, end_at = $2, duration_minutes = $3, kind = $4, \
             reason = $5, room_id = $6, updated_by = $7, updated_at = $8 \
             WHERE id = $9 AND doctor = $10 AND patient = $11 AND status = 'scheduled'",
        )
        .bind(to_millis(a.start))
        .bind(to_millis(a.end()))
        .bind(a.duration_minutes)
        .bind(a.kind.as_str())
        .bind(a.reason.as_str())
        .bind(a.room_id.as_ref().map(|r| r.as_str()))
        .bind(a.updated_by.as_str())
        .bind(to_millis(a.updated_at))
        .bind(a.id.to_string())
        .bind(a.doctor.as_str())
        .bind(a.patient.as_str())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Booked::Stale);
        }
        tx.commit().await?;
        Ok(Booked::Done)
    }

    /// Moves a scheduled appointment to `status` (cancelled, completed, no-show). Returns `false` if it
    /// does not exist or is no longer scheduled.
    pub async fn set_appointment_status(
        &self,
        id: AppointmentId,
        status: AppointmentStatus,
        by: &UserId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let result = sqlx::query(
            "UPDATE appointments SET status = $1, updated_by = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'scheduled'",
        )
        .bind(status.as_str())
        .bind(by.as_str())
        .bind(to_millis(at))
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// One appointment.
    pub async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM appointments WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .map(appointment_from_row)
        .transpose()
    }

    /// Appointments of `user` (as doctor or patient), of any status, that share time with
    /// `[from, to)`, by start; at most `limit`.
    pub async fn appointments_between(
        &self,
        user: &UserId,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let sql = concat!(
            between_side!("doctor"),
            " UNION ALL ",
            between_side!("patient"),
            " ORDER BY start_at, id LIMIT $5"
        );
        sqlx::query(sql)
            .bind(user.as_str())
            .bind(lookback(from))
            .bind(to_millis(to))
            .bind(to_millis(from))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(appointment_from_row)
            .collect()
    }

    /// Scheduled appointments starting in `[from, to)`, by start and id, at most `limit` after the
    /// cursor `after` (start, id): the reminder scan pages through them.
    pub async fn scheduled_starting_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: Option<(Timestamp, AppointmentId)>,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let (after_start, after_id) = match after {
            Some((start, id)) => (to_millis(start), id.to_string()),
            None => (to_millis(from) - 1, String::new()),
        };
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM appointments WHERE status = 'scheduled' AND start_at >= $1 AND start_at < $2 \
             AND (start_at > $3 OR (start_at = $3 AND id > $4)) ORDER BY start_at, id LIMIT $5"
        ))
        .bind(to_millis(from))
        .bind(to_millis(to))
        .bind(after_start)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(appointment_from_row)
        .collect()
    }

    /// The next `limit` scheduled appointments of `user` (as doctor or patient) that have not ended by
    /// `now` (one under way counts), by start.
    pub async fn next_appointments(
        &self,
        user: &UserId,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let sql = concat!(
            next_side!("doctor"),
            " UNION ALL ",
            next_side!("patient"),
            " ORDER BY start_at, id LIMIT $4"
        );
        sqlx::query(sql)
            .bind(user.as_str())
            .bind(lookback(now))
            .bind(to_millis(now))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(appointment_from_row)
            .collect()
    }

    /// Appointments booked or changed after the cursor `(after, after_id)` in `(updated_at, id)`
    /// order, at most `limit`: a feed for followers such as the bot's notices, which pass the last
    /// appointment seen as the next cursor. `after_id: None` starts strictly after `after`.
    pub async fn appointments_changed_since(
        &self,
        after: Timestamp,
        after_id: Option<AppointmentId>,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let query = match after_id {
            Some(id) => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM appointments WHERE updated_at > $1 OR (updated_at = $1 AND id > $2) \
                 ORDER BY updated_at, id LIMIT $3"
            ))
            .bind(to_millis(after))
            .bind(id.to_string()),
            None => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM appointments WHERE updated_at > $1 AND $2 = '' ORDER BY updated_at, id LIMIT $3"
            ))
            .bind(to_millis(after))
            .bind(""),
        };
        query
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(appointment_from_row)
            .collect()
    }

    /// Whether `doctor` cares for `patient`: a consultation or an appointment between them exists.
    pub async fn cares_for(&self, doctor: &UserId, patient: &UserId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS found FROM consultations WHERE doctor = $1 AND patient = $2 \
             UNION ALL SELECT 1 AS found FROM appointments WHERE doctor = $1 AND patient = $2 LIMIT 1",
        )
        .bind(doctor.as_str())
        .bind(patient.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Records a new request.
    pub async fn insert_appointment_request(
        &self,
        r: &AppointmentRequest,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query(
            "INSERT INTO appointment_requests (id, patient, doctor, preferred_start, duration_minutes, \
             kind, reason, status, created_at, decided_by, decided_at, appointment_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(r.id.to_string())
        .bind(r.patient.as_str())
        .bind(r.doctor.as_str())
        .bind(r.preferred_start.map(to_millis))
        .bind(r.duration_minutes)
        .bind(r.kind.as_str())
        .bind(r.reason.as_str())
        .bind(r.status.as_str())
        .bind(to_millis(r.created_at))
        .bind(r.decided_by.as_ref().map(|u| u.as_str()))
        .bind(r.decided_at.map(to_millis))
        .bind(r.appointment.map(|a| a.to_string()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One request.
    pub async fn appointment_request(
        &self,
        id: RequestId,
    ) -> Result<Option<AppointmentRequest>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            request_columns!(),
            " FROM appointment_requests WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .map(request_from_row)
        .transpose()
    }

    /// Requests made by or addressed to `user`, optionally only those in `status`, newest first; at
    /// most `limit`.
    pub async fn appointment_requests_of(
        &self,
        user: &UserId,
        status: Option<RequestStatus>,
        limit: u32,
    ) -> Result<Vec<AppointmentRequest>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            request_columns!(),
            " FROM appointment_requests WHERE (doctor = $1 OR patient = $1) \
             AND ($2 = '' OR status = $2) ORDER BY created_at DESC, id LIMIT $3"
        ))
        .bind(user.as_str())
        .bind(status.map_or("", RequestStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(request_from_row)
        .collect()
    }

    /// Declines or withdraws a pending request. Returns `false` if it is no longer pending.
    pub async fn close_appointment_request(
        &self,
        id: RequestId,
        status: RequestStatus,
        by: &UserId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let _write = self.write_lock().await;
        let result = sqlx::query(
            "UPDATE appointment_requests SET status = $1, decided_by = $2, decided_at = $3 \
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(by.as_str())
        .bind(to_millis(at))
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Accepts a pending request by booking `a` for it: the collision check, the booking and the
    /// request's change are one transaction.
    pub async fn accept_appointment_request(
        &self,
        id: RequestId,
        a: &Appointment,
    ) -> Result<Booked, StoreError> {
        let _write = self.write_lock().await;
        let mut tx = self.pool().begin().await?;
        self.lock_calendars(&mut tx, a).await?;
        if let Some(conflict) = Self::conflict_in(&mut tx, a).await? {
            tx.rollback().await?;
            return Ok(Booked::Busy(conflict));
        }
        Self::insert_appointment_in(&mut tx, a).await?;
        let result = sqlx::query(
            "UPDATE appointment_requests SET status = 'accepted', decided_by = $1, decided_at = $2, \
             appointment_id = $3 WHERE id = $4 AND status = 'pending' AND doctor = $5 AND patient = $6",
        )
        .bind(a.created_by.as_str())
        .bind(to_millis(a.created_at))
        .bind(a.id.to_string())
        .bind(id.to_string())
        .bind(a.doctor.as_str())
        .bind(a.patient.as_str())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Booked::Stale);
        }
        tx.commit().await?;
        Ok(Booked::Done)
    }
}
