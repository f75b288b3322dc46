//! Booking rules: who may book, change and see appointments, when a slot is acceptable, and when two
//! appointments collide. Pure: the shell gathers roles and the existing appointments, passes `now`, and
//! applies the answer (the store repeats the collision check inside its write transaction).
//!
//! | actor   | book                      | change / cancel                | see                                   |
//! |---------|---------------------------|--------------------------------|---------------------------------------|
//! | doctor  | in their own calendar     | their own appointments         | their own, and their patients'        |
//! | admin   | in any doctor's calendar  | any                            | any                                   |
//! | patient | no (they *request*)       | no                             | their own                             |
//! | pending | no                        | no                             | nothing                               |
//!
//! A slot is `[start, start + duration)`: back-to-back appointments do not collide. Only *scheduled*
//! appointments occupy time; cancelled ones free it.

use chrono::Duration;

use crate::appointment::MAX_DURATION_MINUTES;
use crate::{Appointment, AppointmentId, AppointmentStatus, Role, Timestamp, UserId};

/// How far ahead an appointment may be booked, in days (two years).
pub const MAX_DAYS_AHEAD: i64 = 731;

/// A person named in a decision, with their role (`None`: pending or unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    /// Their Matrix id.
    pub user: &'a UserId,
    /// Their role.
    pub role: Option<Role>,
}

impl<'a> Who<'a> {
    /// A person with a role.
    pub fn new(user: &'a UserId, role: Option<Role>) -> Self {
        Self { user, role }
    }
}

/// A validated stretch of time: a start and a length in whole minutes within the accepted bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    start: Timestamp,
    duration_minutes: i64,
}

impl Slot {
    /// A slot of `duration_minutes` from `start`.
    pub fn new(start: Timestamp, duration_minutes: i64) -> Result<Self, BookingRefusal> {
        if duration_minutes < 0 {
            // A negative length is what an end before the start looks like.
            return Err(BookingRefusal::EndBeforeStart);
        }
        Appointment::checked_duration(duration_minutes).map_err(|_| {
            BookingRefusal::BadDuration {
                got: duration_minutes,
                max: MAX_DURATION_MINUTES,
            }
        })?;
        Ok(Self {
            start,
            duration_minutes,
        })
    }

    /// The slot from `start` to `end`, which must be later by a whole number of minutes.
    pub fn between(start: Timestamp, end: Timestamp) -> Result<Self, BookingRefusal> {
        if end <= start {
            return Err(BookingRefusal::EndBeforeStart);
        }
        let length = end - start;
        if length.num_milliseconds() % 60_000 != 0 {
            return Err(BookingRefusal::BadDuration {
                got: length.num_minutes(),
                max: MAX_DURATION_MINUTES,
            });
        }
        Self::new(start, length.num_minutes())
    }

    /// When it starts.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// How long it lasts, in minutes.
    pub fn duration_minutes(&self) -> i64 {
        self.duration_minutes
    }

    /// When it ends (exclusive).
    pub fn end(&self) -> Timestamp {
        self.start + Duration::minutes(self.duration_minutes)
    }
}

impl Appointment {
    /// The time it occupies.
    pub fn slot(&self) -> Slot {
        Slot {
            start: self.start,
            duration_minutes: self.duration_minutes,
        }
    }
}

/// Whose calendar a collision is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictParty {
    /// The doctor already sees someone then.
    Doctor,
    /// The patient already has an appointment then.
    Patient,
}

/// A scheduled appointment that shares time with a proposed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// Whose calendar.
    pub party: ConflictParty,
    /// The appointment in the way.
    pub with: AppointmentId,
}

/// Why a booking, change, view or request was refused. Each has a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BookingRefusal {
    /// The actor's role may not create or change appointments (patients request instead).
    #[error("only doctors and clinic admins book and change appointments")]
    NotAllowed,
    /// A doctor tried to book or change another doctor's appointment.
    #[error("doctors book and change appointments in their own calendar only")]
    NotYourCalendar,
    /// The named doctor does not have the doctor role.
    #[error("the named doctor is not a doctor of this clinic")]
    UnknownDoctor,
    /// The named patient does not have the patient role.
    #[error("the named patient is not a validated patient of this clinic")]
    UnknownPatient,
    /// Doctor and patient are the same person.
    #[error("an appointment needs two different people")]
    SamePerson,
    /// The end is not after the start.
    #[error("the end must be after the start")]
    EndBeforeStart,
    /// The length is out of bounds or not in whole minutes.
    #[error("the duration must be a whole number of minutes between 1 and {max}, got {got}")]
    BadDuration {
        /// The length asked for, in minutes.
        got: i64,
        /// The longest accepted.
        max: i64,
    },
    /// The slot starts before now.
    #[error("the appointment would start in the past")]
    InThePast,
    /// The slot starts more than [`MAX_DAYS_AHEAD`] days from now.
    #[error("appointments can be booked at most {MAX_DAYS_AHEAD} days ahead")]
    TooFarAhead,
    /// The slot collides with a scheduled appointment.
    #[error("{} already has an appointment at that time", match .0.party { ConflictParty::Doctor => "the doctor", ConflictParty::Patient => "the patient" })]
    Busy(Conflict),
    /// Only scheduled appointments can be changed.
    #[error("the appointment is {0} and can no longer be changed")]
    NotScheduled(AppointmentStatus),
    /// A status change that is not scheduled → cancelled / completed / no-show.
    #[error("an appointment can only become cancelled, completed or no_show")]
    BadStatusChange,
    /// Completed or no-show before the appointment started.
    #[error("the appointment has not started yet")]
    NotStarted,
    /// The viewer may not see it; answered as "not found" so that nothing leaks.
    #[error("no such appointment")]
    NotVisible,
    /// Only patients request appointments.
    #[error("only patients request appointments")]
    NotAPatient,
    /// A patient asked a doctor who is not theirs.
    #[error("you can request appointments from your own doctors only")]
    NotYourDoctor,
    /// The request was already answered or withdrawn.
    #[error("the request is no longer pending")]
    RequestNotPending,
    /// Accepting a request that names no preferred time needs one.
    #[error("the request names no time: give the appointment's start")]
    MissingStart,
}

impl BookingRefusal {
    /// The stable machine-readable code (the REST API's `code`, the bot's error key).
    pub fn code(&self) -> &'static str {
        match self {
            BookingRefusal::NotAllowed => "not_allowed",
            BookingRefusal::NotYourCalendar => "not_your_calendar",
            BookingRefusal::UnknownDoctor => "unknown_doctor",
            BookingRefusal::UnknownPatient => "unknown_patient",
            BookingRefusal::SamePerson => "same_person",
            BookingRefusal::EndBeforeStart => "end_before_start",
            BookingRefusal::BadDuration { .. } => "bad_duration",
            BookingRefusal::InThePast => "in_the_past",
            BookingRefusal::TooFarAhead => "too_far_ahead",
            BookingRefusal::Busy(Conflict {
                party: ConflictParty::Doctor,
                ..
            }) => "doctor_busy",
            BookingRefusal::Busy(Conflict {
                party: ConflictParty::Patient,
                ..
            }) => "patient_busy",
            BookingRefusal::NotScheduled(_) => "not_scheduled",
            BookingRefusal::BadStatusChange => "bad_status_change",
            BookingRefusal::NotStarted => "not_started",
            BookingRefusal::NotVisible => "no_appointment",
            BookingRefusal::NotAPatient => "not_a_patient",
            BookingRefusal::NotYourDoctor => "not_your_doctor",
            BookingRefusal::RequestNotPending => "not_pending",
            BookingRefusal::MissingStart => "missing_start",
        }
    }
}

/// Checks that a slot starts neither in the past nor absurdly far ahead.
pub fn check_timing(slot: &Slot, now: Timestamp) -> Result<(), BookingRefusal> {
    if slot.start() < now {
        Err(BookingRefusal::InThePast)
    } else if slot.start() > now + Duration::days(MAX_DAYS_AHEAD) {
        Err(BookingRefusal::TooFarAhead)
    } else {
        Ok(())
    }
}

/// May the actor change appointments in `doctor`'s calendar at all?
fn check_may_change(actor: Who<'_>, doctor: &UserId) -> Result<(), BookingRefusal> {
    match actor.role {
        Some(Role::Admin) => Ok(()),
        Some(Role::Doctor) if actor.user == doctor => Ok(()),
        Some(Role::Doctor) => Err(BookingRefusal::NotYourCalendar),
        Some(Role::Patient) | None => Err(BookingRefusal::NotAllowed),
    }
}

/// May `actor` book `slot` for `doctor` and `patient` at `now`? Collisions are checked separately
/// ([`find_conflict`]), against the store, inside its transaction.
pub fn decide_booking(
    actor: Who<'_>,
    doctor: Who<'_>,
    patient: Who<'_>,
    slot: &Slot,
    now: Timestamp,
) -> Result<(), BookingRefusal> {
    check_may_change(actor, doctor.user)?;
    if doctor.user == patient.user {
        return Err(BookingRefusal::SamePerson);
    }
    if doctor.role != Some(Role::Doctor) {
        return Err(BookingRefusal::UnknownDoctor);
    }
    if patient.role != Some(Role::Patient) {
        return Err(BookingRefusal::UnknownPatient);
    }
    check_timing(slot, now)
}

/// A change to an existing appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new time (and length).
    Reschedule(Slot),
    /// Kind, reason or room: no effect on the calendar.
    Details,
    /// Cancelled, completed or no-show.
    Status(AppointmentStatus),
}

/// May `actor` make `change` to `appointment` at `now`?
pub fn decide_change(
    actor: Who<'_>,
    appointment: &Appointment,
    change: Change,
    now: Timestamp,
) -> Result<(), BookingRefusal> {
    check_may_change(actor, &appointment.doctor)?;
    if appointment.status != AppointmentStatus::Scheduled {
        return Err(BookingRefusal::NotScheduled(appointment.status));
    }
    match change {
        Change::Reschedule(slot) => check_timing(&slot, now),
        Change::Details => Ok(()),
        Change::Status(AppointmentStatus::Cancelled) => Ok(()),
        Change::Status(AppointmentStatus::Completed | AppointmentStatus::NoShow) => {
            if appointment.start <= now {
                Ok(())
            } else {
                Err(BookingRefusal::NotStarted)
            }
        }
        Change::Status(AppointmentStatus::Scheduled) => Err(BookingRefusal::BadStatusChange),
    }
}

/// May `viewer` see `appointment`? `is_their_patient`: the viewer is a doctor who cares for the
/// appointment's patient (a consultation or an appointment between them).
pub fn may_view(viewer: Who<'_>, appointment: &Appointment, is_their_patient: bool) -> bool {
    match viewer.role {
        Some(Role::Admin) => true,
        Some(Role::Doctor) => appointment.doctor == viewer.user || is_their_patient,
        Some(Role::Patient) => appointment.patient == viewer.user,
        None => false,
    }
}

/// May `viewer` list the appointments of `subject` (themselves, or a patient of theirs)?
pub fn decide_listing(
    viewer: Who<'_>,
    subject: &UserId,
    is_their_patient: bool,
) -> Result<(), BookingRefusal> {
    let allowed = match viewer.role {
        Some(Role::Admin) => true,
        Some(Role::Doctor) => viewer.user == subject || is_their_patient,
        Some(Role::Patient) => viewer.user == subject,
        None => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(BookingRefusal::NotVisible)
    }
}

/// The first scheduled appointment among `existing` that shares time with `slot` in the doctor's or the
/// patient's calendar, ignoring `except` (the appointment being rescheduled). The doctor's calendar is
/// reported first.
pub fn find_conflict<'a>(
    existing: impl IntoIterator<Item = &'a Appointment>,
    doctor: &UserId,
    patient: &UserId,
    slot: &Slot,
    except: Option<AppointmentId>,
) -> Option<Conflict> {
    let mut patient_conflict = None;
    for a in existing {
        if a.status != AppointmentStatus::Scheduled
            || Some(a.id) == except
            || !a.overlaps(slot.start(), slot.end())
        {
            continue;
        }
        if a.doctor == doctor {
            return Some(Conflict {
                party: ConflictParty::Doctor,
                with: a.id,
            });
        }
        if a.patient == patient && patient_conflict.is_none() {
            patient_conflict = Some(Conflict {
                party: ConflictParty::Patient,
                with: a.id,
            });
        }
    }
    patient_conflict
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use uuid::Uuid;

    use super::*;
    use crate::{AppointmentKind, OwnedUserId};

    fn at(minutes: i64) -> Timestamp {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn uid(s: &str) -> OwnedUserId {
        OwnedUserId::try_from(s).unwrap()
    }

    fn slot(start: i64, minutes: i64) -> Slot {
        Slot::new(at(start), minutes).unwrap()
    }

    fn appointment(n: u128, doctor: &str, patient: &str, start: i64, minutes: i64) -> Appointment {
        Appointment {
            id: AppointmentId::from_uuid(Uuid::from_u128(n)),
            doctor: uid(doctor),
            patient: uid(patient),
            start: at(start),
            duration_minutes: minutes,
            kind: AppointmentKind::Video,
            status: AppointmentStatus::Scheduled,
            reason: String::new(),
            room_id: None,
            created_by: uid(doctor),
            created_at: at(-1000),
            updated_by: uid(doctor),
            updated_at: at(-1000),
        }
    }

    #[test]
    fn slots_need_an_end_after_the_start_and_a_sane_length() {
        assert_eq!(
            Slot::between(at(10), at(10)),
            Err(BookingRefusal::EndBeforeStart)
        );
        assert_eq!(
            Slot::between(at(10), at(5)),
            Err(BookingRefusal::EndBeforeStart)
        );
        assert_eq!(Slot::between(at(0), at(30)).unwrap().duration_minutes(), 30);
        assert_eq!(Slot::between(at(0), at(30)).unwrap().end(), at(30));
        assert!(matches!(
            Slot::between(at(0), at(0) + Duration::seconds(90)),
            Err(BookingRefusal::BadDuration { .. })
        ));
        assert!(matches!(
            Slot::new(at(0), 0),
            Err(BookingRefusal::BadDuration { got: 0, .. })
        ));
        assert_eq!(Slot::new(at(0), -15), Err(BookingRefusal::EndBeforeStart));
        assert!(matches!(
            Slot::new(at(0), MAX_DURATION_MINUTES + 1),
            Err(BookingRefusal::BadDuration { .. })
        ));
        assert_eq!(
            Slot::new(at(0), i64::MIN),
            Err(BookingRefusal::EndBeforeStart)
        );
        assert!(Slot::new(at(0), MAX_DURATION_MINUTES).is_ok());
    }

    #[test]
    fn only_doctors_in_their_own_calendar_and_admins_book() {
        let (doc, other_doc, pat, admin) = (
            uid("@doc:c.test"),
            uid("@doc2:c.test"),
            uid("@pat:c.test"),
            uid("@admin:c.test"),
        );
        let doctor = Who::new(&doc, Some(Role::Doctor));
        let patient = Who::new(&pat, Some(Role::Patient));
        let now = at(-60);
        let s = slot(0, 30);
        assert_eq!(decide_booking(doctor, doctor, patient, &s, now), Ok(()));
        assert_eq!(
            decide_booking(
                Who::new(&admin, Some(Role::Admin)),
                doctor,
                patient,
                &s,
                now
            ),
            Ok(())
        );
        assert_eq!(
            decide_booking(
                Who::new(&other_doc, Some(Role::Doctor)),
                doctor,
                patient,
                &s,
                now
            ),
            Err(BookingRefusal::NotYourCalendar)
        );
        assert_eq!(
            decide_booking(patient, doctor, patient, &s, now),
            Err(BookingRefusal::NotAllowed)
        );
        assert_eq!(
            decide_booking(Who::new(&pat, None), doctor, patient, &s, now),
            Err(BookingRefusal::NotAllowed)
        );
    }

    #[test]
    fn bookings_name_a_doctor_and_a_patient_and_a_future_time() {
        let (doc, pat, admin, pending) = (
            uid("@doc:c.test"),
            uid("@pat:c.test"),
            uid("@admin:c.test"),
            uid("@new:c.test"),
        );
        let actor = Who::new(&admin, Some(Role::Admin));
        let doctor = Who::new(&doc, Some(Role::Doctor));
        let patient = Who::new(&pat, Some(Role::Patient));
        let now = at(-60);
        assert_eq!(
            decide_booking(actor, doctor, Who::new(&pending, None), &slot(0, 30), now),
            Err(BookingRefusal::UnknownPatient)
        );
        assert_eq!(
            decide_booking(
                actor,
                doctor,
                Who::new(&doc, Some(Role::Doctor)),
                &slot(0, 30),
                now
            ),
            Err(BookingRefusal::SamePerson)
        );
        assert_eq!(
            decide_booking(
                actor,
                Who::new(&pat, Some(Role::Patient)),
                Who::new(&doc, Some(Role::Patient)),
                &slot(0, 30),
                now
            ),
            Err(BookingRefusal::UnknownDoctor)
        );
        assert_eq!(
            decide_booking(actor, doctor, patient, &slot(-61, 30), now),
            Err(BookingRefusal::InThePast)
        );
        assert_eq!(
            decide_booking(actor, doctor, patient, &slot(-60, 30), now),
            Ok(()),
            "starting right now is allowed"
        );
        let far = Slot::new(now + Duration::days(MAX_DAYS_AHEAD + 1), 30).unwrap();
        assert_eq!(
            decide_booking(actor, doctor, patient, &far, now),
            Err(BookingRefusal::TooFarAhead)
        );
    }

    #[test]
    fn overlaps_are_found_in_either_calendar_and_doctor_first() {
        let existing = [
            appointment(1, "@doc:c.test", "@p1:c.test", 0, 30),
            appointment(2, "@doc2:c.test", "@p2:c.test", 60, 30),
            {
                let mut cancelled = appointment(3, "@doc:c.test", "@p3:c.test", 120, 30);
                cancelled.status = AppointmentStatus::Cancelled;
                cancelled
            },
        ];
        let (doc, p2, p9) = (uid("@doc:c.test"), uid("@p2:c.test"), uid("@p9:c.test"));
        let conflict = |patient: &UserId, s: Slot, except| {
            find_conflict(existing.iter(), &doc, patient, &s, except)
        };
        assert_eq!(
            conflict(&p9, slot(15, 30), None),
            Some(Conflict {
                party: ConflictParty::Doctor,
                with: existing[0].id
            })
        );
        assert_eq!(
            conflict(&p9, slot(30, 30), None),
            None,
            "back to back is fine"
        );
        assert_eq!(
            conflict(&p9, slot(-30, 30), None),
            None,
            "ending at the start is fine"
        );
        assert_eq!(
            conflict(&p2, slot(75, 10), None),
            Some(Conflict {
                party: ConflictParty::Patient,
                with: existing[1].id
            }),
            "the patient is busy with another doctor"
        );
        assert_eq!(
            conflict(&p9, slot(120, 30), None),
            None,
            "cancelled appointments free their slot"
        );
        assert_eq!(
            conflict(&p9, slot(10, 30), Some(existing[0].id)),
            None,
            "rescheduling does not collide with itself"
        );
        assert_eq!(
            conflict(&p2, slot(0, 120), None).map(|c| c.party),
            Some(ConflictParty::Doctor),
            "the doctor's calendar is reported first"
        );
    }

    #[test]
    fn status_moves_only_from_scheduled() {
        let doc = uid("@doc:c.test");
        let doctor = Who::new(&doc, Some(Role::Doctor));
        let a = appointment(1, "@doc:c.test", "@p:c.test", 0, 30);
        let before = at(-10);
        let after = at(40);
        assert_eq!(
            decide_change(
                doctor,
                &a,
                Change::Status(AppointmentStatus::Cancelled),
                before
            ),
            Ok(())
        );
        for to in [AppointmentStatus::Completed, AppointmentStatus::NoShow] {
            assert_eq!(
                decide_change(doctor, &a, Change::Status(to), before),
                Err(BookingRefusal::NotStarted)
            );
            assert_eq!(decide_change(doctor, &a, Change::Status(to), after), Ok(()));
        }
        assert_eq!(
            decide_change(
                doctor,
                &a,
                Change::Status(AppointmentStatus::Scheduled),
                before
            ),
            Err(BookingRefusal::BadStatusChange)
        );
        for from in [
            AppointmentStatus::Cancelled,
            AppointmentStatus::Completed,
            AppointmentStatus::NoShow,
        ] {
            let mut done = a.clone();
            done.status = from;
            for change in [
                Change::Status(AppointmentStatus::Cancelled),
                Change::Details,
                Change::Reschedule(slot(100, 30)),
            ] {
                assert_eq!(
                    decide_change(doctor, &done, change, before),
                    Err(BookingRefusal::NotScheduled(from))
                );
            }
        }
    }

    #[test]
    fn changes_follow_the_booking_permissions_and_timing() {
        let (doc, doc2, pat, admin) = (
            uid("@doc:c.test"),
            uid("@doc2:c.test"),
            uid("@p:c.test"),
            uid("@admin:c.test"),
        );
        let a = appointment(1, "@doc:c.test", "@p:c.test", 0, 30);
        let now = at(-100);
        let later = Change::Reschedule(slot(60, 45));
        assert_eq!(
            decide_change(Who::new(&doc, Some(Role::Doctor)), &a, later, now),
            Ok(())
        );
        assert_eq!(
            decide_change(Who::new(&admin, Some(Role::Admin)), &a, later, now),
            Ok(())
        );
        assert_eq!(
            decide_change(Who::new(&doc2, Some(Role::Doctor)), &a, later, now),
            Err(BookingRefusal::NotYourCalendar)
        );
        assert_eq!(
            decide_change(Who::new(&pat, Some(Role::Patient)), &a, later, now),
            Err(BookingRefusal::NotAllowed)
        );
        assert_eq!(
            decide_change(
                Who::new(&doc, Some(Role::Doctor)),
                &a,
                Change::Reschedule(slot(-200, 30)),
                now
            ),
            Err(BookingRefusal::InThePast)
        );
    }

    #[test]
    fn patients_see_their_own_and_doctors_their_patients() {
        let (doc, doc2, pat, pat2, admin, pending) = (
            uid("@doc:c.test"),
            uid("@doc2:c.test"),
            uid("@p:c.test"),
            uid("@p2:c.test"),
            uid("@admin:c.test"),
            uid("@x:c.test"),
        );
        let a = appointment(1, "@doc:c.test", "@p:c.test", 0, 30);
        assert!(may_view(Who::new(&pat, Some(Role::Patient)), &a, false));
        assert!(!may_view(Who::new(&pat2, Some(Role::Patient)), &a, false));
        assert!(
            !may_view(Who::new(&pat2, Some(Role::Patient)), &a, true),
            "a patient is nobody's doctor"
        );
        assert!(may_view(Who::new(&doc, Some(Role::Doctor)), &a, false));
        assert!(!may_view(Who::new(&doc2, Some(Role::Doctor)), &a, false));
        assert!(may_view(Who::new(&doc2, Some(Role::Doctor)), &a, true));
        assert!(may_view(Who::new(&admin, Some(Role::Admin)), &a, false));
        assert!(!may_view(Who::new(&pending, None), &a, false));

        assert_eq!(
            decide_listing(Who::new(&pat, Some(Role::Patient)), &pat, false),
            Ok(())
        );
        assert_eq!(
            decide_listing(Who::new(&pat, Some(Role::Patient)), &pat2, false),
            Err(BookingRefusal::NotVisible)
        );
        assert_eq!(
            decide_listing(Who::new(&doc, Some(Role::Doctor)), &pat2, true),
            Ok(())
        );
        assert_eq!(
            decide_listing(Who::new(&doc, Some(Role::Doctor)), &pat2, false),
            Err(BookingRefusal::NotVisible)
        );
        assert_eq!(
            decide_listing(Who::new(&pending, None), &pending, false),
            Err(BookingRefusal::NotVisible)
        );
    }

    #[test]
    fn refusal_codes_are_distinct() {
        let c = Conflict {
            party: ConflictParty::Doctor,
            with: AppointmentId::from_uuid(Uuid::nil()),
        };
        let all = [
            BookingRefusal::NotAllowed,
            BookingRefusal::NotYourCalendar,
            BookingRefusal::UnknownDoctor,
            BookingRefusal::UnknownPatient,
            BookingRefusal::SamePerson,
            BookingRefusal::EndBeforeStart,
            BookingRefusal::BadDuration { got: 0, max: 1 },
            BookingRefusal::InThePast,
            BookingRefusal::TooFarAhead,
            BookingRefusal::Busy(c),
            BookingRefusal::Busy(Conflict {
                party: ConflictParty::Patient,
                ..c
            }),
            BookingRefusal::NotScheduled(AppointmentStatus::Cancelled),
            BookingRefusal::BadStatusChange,
            BookingRefusal::NotStarted,
            BookingRefusal::NotVisible,
            BookingRefusal::NotAPatient,
            BookingRefusal::NotYourDoctor,
            BookingRefusal::RequestNotPending,
            BookingRefusal::MissingStart,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(
            BookingRefusal::Busy(c)
                .to_string()
                .contains("the doctor already")
        );
    }
}
