//! The `Appointments` service: booking, changing, listing and requesting appointments for the REST API,
//! the clinic assistant bot and the calendar widget.
//!
//! Every call names the acting Matrix user (already authenticated by the caller's channel) and the
//! channel ([`Via`]). The service looks up roles, asks `consulta_core::booking` and
//! `consulta_core::appointment_request` for the decision, applies it to the store (which repeats the
//! double-booking check inside its write transaction) and writes one audit record per read, change or
//! refusal. Audit records carry ids, operation names and refusal codes — never the reason text.

use chrono::Duration;
use consulta_core::appointment_request::{decide_request, decide_request_answer, may_view_request};
use consulta_core::booking::{decide_booking, decide_change, decide_listing, may_view};
use consulta_core::{
    Appointment, AppointmentId, AppointmentKind, AppointmentRequest, AppointmentStatus,
    AuditAction, BookingRefusal, Change, ClinicTimeZone, OwnedRoomId, OwnedUserId, RequestId,
    RequestStatus, Role, Slot, TimeError, Timestamp, UserId, Who,
};
use consulta_store::{Booked, StoreError};
use uuid::Uuid;

use crate::state::AppState;

/// The longest range one listing may span, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// The most appointments or requests one listing returns.
pub const MAX_LISTING: u32 = 500;

/// Through which channel the actor acts (recorded in the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The REST API, with a Matrix access token.
    Api,
    /// The REST API, with a Matrix OpenID token (the calendar widget).
    OpenId,
    /// A command to the clinic assistant bot.
    Bot,
    /// The calendar page, with a session from a sign-in link or a widget's OpenID token.
    Calendar,
    /// A private iCal feed URL.
    Feed,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::OpenId => "openid",
            Via::Bot => "bot",
            Via::Calendar => "calendar",
            Via::Feed => "ical",
        }
    }
}

/// Why an appointment operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppointmentError {
    /// A booking rule refused it (see [`BookingRefusal::code`]).
    #[error(transparent)]
    Refused(#[from] BookingRefusal),
    /// No such appointment or request (or one the actor may not see: the answer is the same).
    #[error("no such appointment or request")]
    NotFound,
    /// A listing's range is empty or longer than [`MAX_RANGE_DAYS`].
    #[error("the range must end after it starts and span at most {MAX_RANGE_DAYS} days")]
    BadRange,
    /// A time that cannot be read, or that the clinic's clocks skip.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppointmentError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppointmentError::Refused(r) => r.code(),
            AppointmentError::NotFound => "no_appointment",
            AppointmentError::BadRange => "bad_range",
            AppointmentError::Time(TimeError::NonexistentLocalTime { .. }) => "nonexistent_time",
            AppointmentError::Time(_) => "bad_time",
            AppointmentError::Store(_) => "internal",
        }
    }
}

/// A booking to make.
#[derive(Debug, Clone)]
pub struct NewAppointment {
    /// The doctor; `None`: the actor (a doctor booking in their own calendar).
    pub doctor: Option<OwnedUserId>,
    /// The patient.
    pub patient: OwnedUserId,
    /// When.
    pub slot: Slot,
    /// Video or in person.
    pub kind: AppointmentKind,
    /// Why (free text, never logged).
    pub reason: String,
    /// The consultation room it belongs to, if any.
    pub room_id: Option<OwnedRoomId>,
}

/// Changes to an appointment's time or details; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppointmentUpdate {
    /// A new start (the length stays unless `duration_minutes` is given too).
    pub start: Option<Timestamp>,
    /// A new length in minutes (from the current start unless `start` is given too).
    pub duration_minutes: Option<i64>,
    /// A new kind.
    pub kind: Option<AppointmentKind>,
    /// A new reason.
    pub reason: Option<String>,
    /// A new room (`Some(None)` detaches it).
    pub room_id: Option<Option<OwnedRoomId>>,
}

/// A patient's request to make.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The doctor asked.
    pub doctor: OwnedUserId,
    /// When the patient would like it, if they say.
    pub preferred_start: Option<Timestamp>,
    /// How long, in minutes.
    pub duration_minutes: i64,
    /// Video or in person.
    pub kind: AppointmentKind,
    /// Why (free text, never logged).
    pub reason: String,
}

/// How the doctor books an accepted request; `None` takes the request's own value.
#[derive(Debug, Clone, Default)]
pub struct Acceptance {
    /// When (required if the request names no preferred time).
    pub slot: Option<Slot>,
    /// Video or in person.
    pub kind: Option<AppointmentKind>,
    /// The consultation room.
    pub room_id: Option<OwnedRoomId>,
}

/// The appointments service; get one with [`AppState::appointments`].
#[derive(Debug, Clone, Copy)]
pub struct Appointments<'a> {
    state: &'a AppState,
    /// A caller whose role was read at the start of this request, so it is not read again.
    known: Option<(&'a UserId, Option<Role>)>,
}

impl AppState {
    /// The appointments service.
    pub fn appointments(&self) -> Appointments<'_> {
        Appointments {
            state: self,
            known: None,
        }
    }

    /// The appointments service for one request whose caller's role has just been read.
    pub fn appointments_for<'a>(
        &'a self,
        caller: &'a UserId,
        role: Option<Role>,
    ) -> Appointments<'a> {
        Appointments {
            state: self,
            known: Some((caller, role)),
        }
    }
}

impl Appointments<'_> {
    /// The clinic's time zone, for reading wall-clock input and presenting times.
    pub fn time_zone(&self) -> ClinicTimeZone {
        self.state.config().appointments.time_zone
    }

    fn now(&self) -> Timestamp {
        self.state.clock().now()
    }

    /// A local, non-bot user's role; anyone else has none here.
    async fn role(&self, user: &UserId) -> Result<Option<Role>, StoreError> {
        if let Some((caller, role)) = self.known
            && caller == user
        {
            return Ok(role);
        }
        if self.state.is_local(user) && !self.state.is_bot(user) {
            self.state.role_of(user).await
        } else {
            Ok(None)
        }
    }

    async fn audit(
        &self,
        actor: &UserId,
        action: AuditAction,
        target: impl ToString,
        detail: String,
    ) {
        self.state
            .audit(
                Some(actor.to_owned()),
                action,
                Some(target.to_string()),
                &detail,
            )
            .await;
    }

    /// Audits a refusal and returns it as the error.
    async fn refuse<T>(
        &self,
        actor: &UserId,
        via: Via,
        op: &str,
        target: impl ToString,
        refusal: BookingRefusal,
    ) -> Result<T, AppointmentError> {
        tracing::info!(actor = %actor, op, code = refusal.code(), "appointment operation refused");
        self.audit(
            actor,
            AuditAction::AppointmentRefused,
            target,
            format!("{op}: {} via {}", refusal.code(), via.as_str()),
        )
        .await;
        Err(match refusal {
            BookingRefusal::NotVisible => AppointmentError::NotFound,
            other => AppointmentError::Refused(other),
        })
    }

    async fn changed(&self, actor: &UserId, via: Via, op: &str, target: impl ToString) {
        self.audit(
            actor,
            AuditAction::AppointmentChanged,
            target,
            format!("{op} via {}", via.as_str()),
        )
        .await;
    }

    async fn viewed(&self, actor: &UserId, via: Via, op: &str, target: impl ToString, n: usize) {
        self.audit(
            actor,
            AuditAction::AppointmentViewed,
            target,
            format!("{op} n={n} via {}", via.as_str()),
        )
        .await;
    }

    /// Whether `viewer` (if a doctor) cares for `patient`.
    async fn cares_for(&self, viewer: Who<'_>, patient: &UserId) -> Result<bool, StoreError> {
        if viewer.role == Some(Role::Doctor) {
            self.state.store().cares_for(viewer.user, patient).await
        } else {
            Ok(false)
        }
    }

    /// Loads an appointment the actor may see; refusals and unknown ids are audited alike.
    async fn visible(
        &self,
        actor: Who<'_>,
        via: Via,
        op: &str,
        id: AppointmentId,
    ) -> Result<Appointment, AppointmentError> {
        let Some(appointment) = self.state.store().appointment(id).await? else {
            return self
                .refuse(actor.user, via, op, id, BookingRefusal::NotVisible)
                .await;
        };
        let theirs = self.cares_for(actor, &appointment.patient).await?;
        if may_view(actor, &appointment, theirs) {
            Ok(appointment)
        } else {
            self.refuse(actor.user, via, op, id, BookingRefusal::NotVisible)
                .await
        }
    }

    /// Audits input refused before it reached the service (a slot whose end is before its start, a
    /// time that cannot be read) and returns the error to answer with.
    pub async fn refused_input(
        &self,
        actor: &UserId,
        via: Via,
        op: &str,
        error: AppointmentError,
    ) -> AppointmentError {
        let code = error.code();
        tracing::info!(actor = %actor, op, code, "appointment input refused");
        self.audit(
            actor,
            AuditAction::AppointmentRefused,
            actor,
            format!("{op}: {code} via {}", via.as_str()),
        )
        .await;
        error
    }

    /// Books an appointment. Doctors book in their own calendar, admins in any doctor's.
    pub async fn book(
        &self,
        actor: &UserId,
        via: Via,
        new: NewAppointment,
    ) -> Result<Appointment, AppointmentError> {
        let now = self.now();
        let doctor = new.doctor.unwrap_or_else(|| actor.to_owned());
        let actor_who = Who::new(actor, self.role(actor).await?);
        let doctor_who = Who::new(&doctor, self.role(&doctor).await?);
        let patient_who = Who::new(&new.patient, self.role(&new.patient).await?);
        if let Err(refusal) = decide_booking(actor_who, doctor_who, patient_who, &new.slot, now) {
            return self.refuse(actor, via, "book", &new.patient, refusal).await;
        }
        let appointment = Appointment {
            id: AppointmentId::from_uuid(Uuid::now_v7()),
            doctor: doctor.clone(),
            patient: new.patient.clone(),
            start: new.slot.start(),
            duration_minutes: new.slot.duration_minutes(),
            kind: new.kind,
            status: AppointmentStatus::Scheduled,
            reason: new.reason,
            room_id: new.room_id,
            created_by: actor.to_owned(),
            created_at: now,
            updated_by: actor.to_owned(),
            updated_at: now,
        };
        match self.state.store().book_appointment(&appointment).await? {
            Booked::Done => {
                self.changed(actor, via, "book", appointment.id).await;
                Ok(appointment)
            }
            Booked::Busy(conflict) => {
                self.refuse(
                    actor,
                    via,
                    "book",
                    &new.patient,
                    BookingRefusal::Busy(conflict),
                )
                .await
            }
            Booked::Stale => Err(AppointmentError::NotFound),
        }
    }

    /// One appointment, if the actor may see it.
    pub async fn get(
        &self,
        actor: &UserId,
        via: Via,
        id: AppointmentId,
    ) -> Result<Appointment, AppointmentError> {
        let who = Who::new(actor, self.role(actor).await?);
        let appointment = self.visible(who, via, "get", id).await?;
        self.viewed(actor, via, "get", id, 1).await;
        Ok(appointment)
    }

    /// Appointments of `subject` (default: the actor) that share time with `[from, to)`, any status.
    /// Patients list their own; doctors theirs and their patients'; admins anyone's.
    pub async fn list(
        &self,
        actor: &UserId,
        via: Via,
        subject: Option<&UserId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Appointment>, AppointmentError> {
        if to <= from || to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(AppointmentError::BadRange);
        }
        let subject = subject.unwrap_or(actor);
        let who = Who::new(actor, self.role(actor).await?);
        let theirs = subject != actor && self.cares_for(who, subject).await?;
        if let Err(refusal) = decide_listing(who, subject, theirs) {
            return self.refuse(actor, via, "list", subject, refusal).await;
        }
        let list = self
            .state
            .store()
            .appointments_between(subject, from, to, MAX_LISTING)
            .await?;
        self.viewed(actor, via, "list", subject, list.len()).await;
        Ok(list)
    }

    /// The actor's next `limit` scheduled appointments (at most [`MAX_LISTING`]) that have not ended.
    pub async fn next(
        &self,
        actor: &UserId,
        via: Via,
        limit: u32,
    ) -> Result<Vec<Appointment>, AppointmentError> {
        let who = Who::new(actor, self.role(actor).await?);
        if let Err(refusal) = decide_listing(who, actor, false) {
            return self.refuse(actor, via, "next", actor, refusal).await;
        }
        let list = self
            .state
            .store()
            .next_appointments(actor, self.now(), limit.min(MAX_LISTING))
            .await?;
        self.viewed(actor, via, "next", actor, list.len()).await;
        Ok(list)
    }

    /// Reschedules an appointment or changes its details.
    pub async fn update(
        &self,
        actor: &UserId,
        via: Via,
        id: AppointmentId,
        update: AppointmentUpdate,
    ) -> Result<Appointment, AppointmentError> {
        let who = Who::new(actor, self.role(actor).await?);
        let rescheduling = update.start.is_some() || update.duration_minutes.is_some();
        let op = if rescheduling { "reschedule" } else { "update" };
        let mut appointment = self.visible(who, via, op, id).await?;
        let slot = if rescheduling {
            match Slot::new(
                update.start.unwrap_or(appointment.start),
                update
                    .duration_minutes
                    .unwrap_or(appointment.duration_minutes),
            ) {
                Ok(slot) => Some(slot),
                Err(refusal) => return self.refuse(actor, via, op, id, refusal).await,
            }
        } else {
            None
        };
        let change = slot.map_or(Change::Details, Change::Reschedule);
        let now = self.now();
        if let Err(refusal) = decide_change(who, &appointment, change, now) {
            return self.refuse(actor, via, op, id, refusal).await;
        }
        if let Some(slot) = slot {
            appointment.start = slot.start();
            appointment.duration_minutes = slot.duration_minutes();
        }
        if let Some(kind) = update.kind {
            appointment.kind = kind;
        }
        if let Some(reason) = update.reason {
            appointment.reason = reason;
        }
        if let Some(room) = update.room_id {
            appointment.room_id = room;
        }
        appointment.updated_by = actor.to_owned();
        appointment.updated_at = now;
        match self.state.store().update_appointment(&appointment).await? {
            Booked::Done => {
                self.changed(actor, via, op, id).await;
                Ok(appointment)
            }
            Booked::Busy(conflict) => {
                self.refuse(actor, via, op, id, BookingRefusal::Busy(conflict))
                    .await
            }
            Booked::Stale => {
                let status = self
                    .state
                    .store()
                    .appointment(id)
                    .await?
                    .map_or(AppointmentStatus::Cancelled, |a| a.status);
                self.refuse(actor, via, op, id, BookingRefusal::NotScheduled(status))
                    .await
            }
        }
    }

    /// Cancels an appointment, or records it as completed or a no-show.
    pub async fn set_status(
        &self,
        actor: &UserId,
        via: Via,
        id: AppointmentId,
        status: AppointmentStatus,
    ) -> Result<Appointment, AppointmentError> {
        let who = Who::new(actor, self.role(actor).await?);
        let op = match status {
            AppointmentStatus::Cancelled => "cancel",
            AppointmentStatus::Completed => "complete",
            AppointmentStatus::NoShow => "no_show",
            AppointmentStatus::Scheduled => "reopen",
        };
        let mut appointment = self.visible(who, via, op, id).await?;
        let now = self.now();
        if let Err(refusal) = decide_change(who, &appointment, Change::Status(status), now) {
            return self.refuse(actor, via, op, id, refusal).await;
        }
        if !self
            .state
            .store()
            .set_appointment_status(id, status, actor, now)
            .await?
        {
            let current = self
                .state
                .store()
                .appointment(id)
                .await?
                .map_or(AppointmentStatus::Cancelled, |a| a.status);
            return self
                .refuse(actor, via, op, id, BookingRefusal::NotScheduled(current))
                .await;
        }
        appointment.status = status;
        appointment.updated_by = actor.to_owned();
        appointment.updated_at = now;
        self.changed(actor, via, op, id).await;
        Ok(appointment)
    }

    /// Cancels an appointment.
    pub async fn cancel(
        &self,
        actor: &UserId,
        via: Via,
        id: AppointmentId,
    ) -> Result<Appointment, AppointmentError> {
        self.set_status(actor, via, id, AppointmentStatus::Cancelled)
            .await
    }

    /// A patient asks one of their doctors for an appointment.
    pub async fn request(
        &self,
        actor: &UserId,
        via: Via,
        new: NewRequest,
    ) -> Result<AppointmentRequest, AppointmentError> {
        let now = self.now();
        let patient = Who::new(actor, self.role(actor).await?);
        let doctor = Who::new(&new.doctor, self.role(&new.doctor).await?);
        let preferred = match new.preferred_start {
            Some(start) => match Slot::new(start, new.duration_minutes) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    return self
                        .refuse(actor, via, "request", &new.doctor, refusal)
                        .await;
                }
            },
            None => match Slot::new(now, new.duration_minutes) {
                Ok(_) => None,
                Err(refusal) => {
                    return self
                        .refuse(actor, via, "request", &new.doctor, refusal)
                        .await;
                }
            },
        };
        let theirs = doctor.role == Some(Role::Doctor)
            && self.state.store().cares_for(&new.doctor, actor).await?;
        if let Err(refusal) = decide_request(patient, doctor, theirs, preferred.as_ref(), now) {
            return self
                .refuse(actor, via, "request", &new.doctor, refusal)
                .await;
        }
        let request = AppointmentRequest {
            id: RequestId::from_uuid(Uuid::now_v7()),
            patient: actor.to_owned(),
            doctor: new.doctor,
            preferred_start: new.preferred_start,
            duration_minutes: new.duration_minutes,
            kind: new.kind,
            reason: new.reason,
            status: RequestStatus::Pending,
            created_at: now,
            decided_by: None,
            decided_at: None,
            appointment: None,
        };
        self.state
            .store()
            .insert_appointment_request(&request)
            .await?;
        self.changed(actor, via, "request", request.id).await;
        Ok(request)
    }

    /// Requests made by the actor (a patient) or addressed to them (a doctor), newest first.
    pub async fn requests(
        &self,
        actor: &UserId,
        via: Via,
        status: Option<RequestStatus>,
    ) -> Result<Vec<AppointmentRequest>, AppointmentError> {
        let who = Who::new(actor, self.role(actor).await?);
        if let Err(refusal) = decide_listing(who, actor, false) {
            return self
                .refuse(actor, via, "list_requests", actor, refusal)
                .await;
        }
        let list = self
            .state
            .store()
            .appointment_requests_of(actor, status, MAX_LISTING)
            .await?;
        self.viewed(actor, via, "list_requests", actor, list.len())
            .await;
        Ok(list)
    }

    async fn visible_request(
        &self,
        actor: Who<'_>,
        via: Via,
        op: &str,
        id: RequestId,
    ) -> Result<AppointmentRequest, AppointmentError> {
        match self.state.store().appointment_request(id).await? {
            Some(r) if may_view_request(actor, &r) => Ok(r),
            _ => {
                self.refuse(actor.user, via, op, id, BookingRefusal::NotVisible)
                    .await
            }
        }
    }

    /// One request, if the actor is its patient, its doctor or an admin.
    pub async fn get_request(
        &self,
        actor: &UserId,
        via: Via,
        id: RequestId,
    ) -> Result<AppointmentRequest, AppointmentError> {
        let who = Who::new(actor, self.role(actor).await?);
        let request = self.visible_request(who, via, "get_request", id).await?;
        self.viewed(actor, via, "get_request", id, 1).await;
        Ok(request)
    }

    /// The doctor accepts a request: an appointment is booked (at the preferred time unless
    /// `acceptance` gives another) and the request points at it.
    pub async fn accept_request(
        &self,
        actor: &UserId,
        via: Via,
        id: RequestId,
        acceptance: Acceptance,
    ) -> Result<(AppointmentRequest, Appointment), AppointmentError> {
        let now = self.now();
        let who = Who::new(actor, self.role(actor).await?);
        let mut request = self.visible_request(who, via, "accept", id).await?;
        if let Err(refusal) = decide_request_answer(who, &request, RequestStatus::Accepted) {
            return self.refuse(actor, via, "accept", id, refusal).await;
        }
        let slot = match (acceptance.slot, request.preferred_start) {
            (Some(slot), _) => slot,
            (None, Some(start)) => match Slot::new(start, request.duration_minutes) {
                Ok(slot) => slot,
                Err(refusal) => return self.refuse(actor, via, "accept", id, refusal).await,
            },
            (None, None) => {
                return self
                    .refuse(actor, via, "accept", id, BookingRefusal::MissingStart)
                    .await;
            }
        };
        let doctor = Who::new(&request.doctor, self.role(&request.doctor).await?);
        let patient = Who::new(&request.patient, self.role(&request.patient).await?);
        if let Err(refusal) = decide_booking(who, doctor, patient, &slot, now) {
            return self.refuse(actor, via, "accept", id, refusal).await;
        }
        let appointment = Appointment {
            id: AppointmentId::from_uuid(Uuid::now_v7()),
            doctor: request.doctor.clone(),
            patient: request.patient.clone(),
            start: slot.start(),
            duration_minutes: slot.duration_minutes(),
            kind: acceptance.kind.unwrap_or(request.kind),
            status: AppointmentStatus::Scheduled,
            reason: request.reason.clone(),
            room_id: acceptance.room_id,
            created_by: actor.to_owned(),
            created_at: now,
            updated_by: actor.to_owned(),
            updated_at: now,
        };
        match self
            .state
            .store()
            .accept_appointment_request(id, &appointment)
            .await?
        {
            Booked::Done => {
                self.changed(actor, via, "accept", id).await;
                self.changed(actor, via, "book", appointment.id).await;
                request.status = RequestStatus::Accepted;
                request.decided_by = Some(actor.to_owned());
                request.decided_at = Some(now);
                request.appointment = Some(appointment.id);
                Ok((request, appointment))
            }
            Booked::Busy(conflict) => {
                self.refuse(actor, via, "accept", id, BookingRefusal::Busy(conflict))
                    .await
            }
            Booked::Stale => {
                self.refuse(actor, via, "accept", id, BookingRefusal::RequestNotPending)
                    .await
            }
        }
    }

    /// The doctor declines a request.
    pub async fn decline_request(
        &self,
        actor: &UserId,
        via: Via,
        id: RequestId,
    ) -> Result<AppointmentRequest, AppointmentError> {
        self.close_request(actor, via, id, RequestStatus::Declined, "decline")
            .await
    }

    /// The patient withdraws their request.
    pub async fn withdraw_request(
        &self,
        actor: &UserId,
        via: Via,
        id: RequestId,
    ) -> Result<AppointmentRequest, AppointmentError> {
        self.close_request(actor, via, id, RequestStatus::Withdrawn, "withdraw")
            .await
    }

    async fn close_request(
        &self,
        actor: &UserId,
        via: Via,
        id: RequestId,
        to: RequestStatus,
        op: &str,
    ) -> Result<AppointmentRequest, AppointmentError> {
        let now = self.now();
        let who = Who::new(actor, self.role(actor).await?);
        let mut request = self.visible_request(who, via, op, id).await?;
        if let Err(refusal) = decide_request_answer(who, &request, to) {
            return self.refuse(actor, via, op, id, refusal).await;
        }
        if !self
            .state
            .store()
            .close_appointment_request(id, to, actor, now)
            .await?
        {
            return self
                .refuse(actor, via, op, id, BookingRefusal::RequestNotPending)
                .await;
        }
        self.changed(actor, via, op, id).await;
        request.status = to;
        request.decided_by = Some(actor.to_owned());
        request.decided_at = Some(now);
        Ok(request)
    }
}
