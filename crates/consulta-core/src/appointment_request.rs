//! Appointment requests: a patient asks one of their doctors for an appointment (the paper's future
//! line 4). The doctor (or an admin) accepts it, which books an appointment, or declines it; the
//! patient may withdraw it while it is pending.
//!
//! ```text
//! pending ──accept──▶ accepted (an appointment exists)
//!    │ ├──decline──▶ declined
//!    │ └─withdraw──▶ withdrawn
//! ```

use serde::{Deserialize, Serialize};

use crate::appointment::named_enum;
use crate::booking::{BookingRefusal, Slot, Who, check_timing};
use crate::{AppointmentId, AppointmentKind, OwnedUserId, RequestId, Role, Timestamp};

named_enum!(
    /// Where a request is in its life.
    RequestStatus, "request status" {
        /// Waiting for the doctor.
        Pending => "pending",
        /// Accepted: an appointment was booked.
        Accepted => "accepted",
        /// Declined by the doctor.
        Declined => "declined",
        /// Withdrawn by the patient.
        Withdrawn => "withdrawn",
    }
);

/// A patient's request for an appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRequest {
    /// Its identifier.
    pub id: RequestId,
    /// Who asks.
    pub patient: OwnedUserId,
    /// Whom they ask.
    pub doctor: OwnedUserId,
    /// When the patient would like it, if they said.
    pub preferred_start: Option<Timestamp>,
    /// How long, in minutes.
    pub duration_minutes: i64,
    /// Video or in person.
    pub kind: AppointmentKind,
    /// Why. Free text that may be medically sensitive: never logged.
    pub reason: String,
    /// Pending, accepted, declined or withdrawn.
    pub status: RequestStatus,
    /// When it was made.
    pub created_at: Timestamp,
    /// Who answered or withdrew it.
    pub decided_by: Option<OwnedUserId>,
    /// When.
    pub decided_at: Option<Timestamp>,
    /// The appointment booked on acceptance.
    pub appointment: Option<AppointmentId>,
}

/// May `patient` ask `doctor` for an appointment? `is_their_doctor`: the doctor already cares for the
/// patient (a consultation or an appointment between them). A preferred time, when given, must be a
/// bookable one.
pub fn decide_request(
    patient: Who<'_>,
    doctor: Who<'_>,
    is_their_doctor: bool,
    preferred: Option<&Slot>,
    now: Timestamp,
) -> Result<(), BookingRefusal> {
    if patient.role != Some(Role::Patient) {
        return Err(BookingRefusal::NotAPatient);
    }
    if doctor.role != Some(Role::Doctor) {
        return Err(BookingRefusal::UnknownDoctor);
    }
    if !is_their_doctor {
        return Err(BookingRefusal::NotYourDoctor);
    }
    match preferred {
        Some(slot) => check_timing(slot, now),
        None => Ok(()),
    }
}

/// May `actor` move `request` to `to`? The doctor asked (or an admin) accepts or declines; the patient
/// withdraws; only pending requests move. Accepting also needs [`crate::booking::decide_booking`] for
/// the appointment it books.
pub fn decide_request_answer(
    actor: Who<'_>,
    request: &AppointmentRequest,
    to: RequestStatus,
) -> Result<(), BookingRefusal> {
    let allowed = match to {
        RequestStatus::Accepted | RequestStatus::Declined => match actor.role {
            Some(Role::Admin) => true,
            Some(Role::Doctor) => actor.user == request.doctor,
            _ => false,
        },
        RequestStatus::Withdrawn => actor.user == request.patient,
        RequestStatus::Pending => return Err(BookingRefusal::BadStatusChange),
    };
    if !may_view_request(actor, request) {
        return Err(BookingRefusal::NotVisible);
    }
    if !allowed {
        return Err(BookingRefusal::NotAllowed);
    }
    if request.status != RequestStatus::Pending {
        return Err(BookingRefusal::RequestNotPending);
    }
    Ok(())
}

/// May `viewer` see `request`? Its patient, its doctor, and admins.
pub fn may_view_request(viewer: Who<'_>, request: &AppointmentRequest) -> bool {
    match viewer.role {
        Some(Role::Admin) => true,
        Some(Role::Doctor) => request.doctor == viewer.user,
        Some(Role::Patient) => request.patient == viewer.user,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration};
    use uuid::Uuid;

    use super::*;

    fn at(minutes: i64) -> Timestamp {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn uid(s: &str) -> OwnedUserId {
        OwnedUserId::try_from(s).unwrap()
    }

    fn request(status: RequestStatus) -> AppointmentRequest {
        AppointmentRequest {
            id: RequestId::from_uuid(Uuid::nil()),
            patient: uid("@p:c.test"),
            doctor: uid("@doc:c.test"),
            preferred_start: None,
            duration_minutes: 30,
            kind: AppointmentKind::Video,
            reason: String::new(),
            status,
            created_at: at(0),
            decided_by: None,
            decided_at: None,
            appointment: None,
        }
    }

    #[test]
    fn patients_request_from_their_own_doctors() {
        let (p, doc, admin) = (uid("@p:c.test"), uid("@doc:c.test"), uid("@a:c.test"));
        let patient = Who::new(&p, Some(Role::Patient));
        let doctor = Who::new(&doc, Some(Role::Doctor));
        let now = at(0);
        assert_eq!(decide_request(patient, doctor, true, None, now), Ok(()));
        assert_eq!(
            decide_request(patient, doctor, false, None, now),
            Err(BookingRefusal::NotYourDoctor)
        );
        assert_eq!(
            decide_request(doctor, doctor, true, None, now),
            Err(BookingRefusal::NotAPatient)
        );
        assert_eq!(
            decide_request(Who::new(&p, None), doctor, true, None, now),
            Err(BookingRefusal::NotAPatient)
        );
        assert_eq!(
            decide_request(
                patient,
                Who::new(&admin, Some(Role::Admin)),
                true,
                None,
                now
            ),
            Err(BookingRefusal::UnknownDoctor)
        );
        let past = Slot::new(at(-5), 30).unwrap();
        assert_eq!(
            decide_request(patient, doctor, true, Some(&past), now),
            Err(BookingRefusal::InThePast)
        );
        let future = Slot::new(at(60), 30).unwrap();
        assert_eq!(
            decide_request(patient, doctor, true, Some(&future), now),
            Ok(())
        );
    }

    #[test]
    fn the_doctor_answers_and_the_patient_withdraws_pending_requests_only() {
        let (p, doc, doc2, admin) = (
            uid("@p:c.test"),
            uid("@doc:c.test"),
            uid("@doc2:c.test"),
            uid("@a:c.test"),
        );
        let patient = Who::new(&p, Some(Role::Patient));
        let doctor = Who::new(&doc, Some(Role::Doctor));
        let pending = request(RequestStatus::Pending);
        for to in [RequestStatus::Accepted, RequestStatus::Declined] {
            assert_eq!(decide_request_answer(doctor, &pending, to), Ok(()));
            assert_eq!(
                decide_request_answer(Who::new(&admin, Some(Role::Admin)), &pending, to),
                Ok(())
            );
            assert_eq!(
                decide_request_answer(patient, &pending, to),
                Err(BookingRefusal::NotAllowed)
            );
            assert_eq!(
                decide_request_answer(Who::new(&doc2, Some(Role::Doctor)), &pending, to),
                Err(BookingRefusal::NotVisible),
                "another doctor does not even see it"
            );
        }
        assert_eq!(
            decide_request_answer(patient, &pending, RequestStatus::Withdrawn),
            Ok(())
        );
        assert_eq!(
            decide_request_answer(doctor, &pending, RequestStatus::Withdrawn),
            Err(BookingRefusal::NotAllowed)
        );
        assert_eq!(
            decide_request_answer(doctor, &pending, RequestStatus::Pending),
            Err(BookingRefusal::BadStatusChange)
        );
        for done in [
            RequestStatus::Accepted,
            RequestStatus::Declined,
            RequestStatus::Withdrawn,
        ] {
            assert_eq!(
                decide_request_answer(doctor, &request(done), RequestStatus::Declined),
                Err(BookingRefusal::RequestNotPending)
            );
            assert_eq!(
                decide_request_answer(patient, &request(done), RequestStatus::Withdrawn),
                Err(BookingRefusal::RequestNotPending)
            );
        }
    }

    #[test]
    fn request_statuses_round_trip() {
        for s in RequestStatus::ALL {
            assert_eq!(s.as_str().parse::<RequestStatus>().unwrap(), *s);
        }
        assert!("open".parse::<RequestStatus>().is_err());
    }
}
