//! Appointments: a doctor and a patient meeting at a time, by video or in person.
//!
//! Times are UTC instants; presentation in the clinic's or the viewer's time zone happens at the
//! edges. Booking rules (overlaps, who may change what) build on these types.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::{AppointmentId, CoreError, OwnedRoomId, OwnedUserId, Timestamp};

/// The longest appointment Consulta accepts, in minutes (a full working day).
pub const MAX_DURATION_MINUTES: i64 = 12 * 60;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable name used in storage and APIs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::CoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::CoreError::UnknownVariant { kind: $kind, value: s.to_owned() })
            }
        }
    };
}

pub(crate) use named_enum;

named_enum!(
    /// How the appointment takes place.
    AppointmentKind, "appointment kind" {
        /// A video consultation through Element Call; the patient may join on the day.
        Video => "video",
        /// The patient comes to the clinic.
        InPerson => "in_person",
    }
);

named_enum!(
    /// Where the appointment is in its life.
    AppointmentStatus, "appointment status" {
        /// Booked and upcoming (or under way).
        Scheduled => "scheduled",
        /// Called off by the doctor or the clinic.
        Cancelled => "cancelled",
        /// Took place.
        Completed => "completed",
        /// The patient did not come.
        NoShow => "no_show",
    }
);

/// One booked appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// Its identifier.
    pub id: AppointmentId,
    /// The doctor who sees the patient.
    pub doctor: OwnedUserId,
    /// The patient.
    pub patient: OwnedUserId,
    /// When it starts.
    pub start: Timestamp,
    /// How long it lasts, in whole minutes.
    pub duration_minutes: i64,
    /// Video or in person.
    pub kind: AppointmentKind,
    /// Scheduled, cancelled, completed or no-show.
    pub status: AppointmentStatus,
    /// Why the patient is seen. Free text that may be medically sensitive: never logged.
    pub reason: String,
    /// The consultation room it belongs to, if any.
    pub room_id: Option<OwnedRoomId>,
    /// Who booked it.
    pub created_by: OwnedUserId,
    /// When it was booked.
    pub created_at: Timestamp,
    /// Who changed it last.
    pub updated_by: OwnedUserId,
    /// When it was changed last.
    pub updated_at: Timestamp,
}

impl Appointment {
    /// Checks that a duration is one Consulta accepts and returns it as a [`Duration`].
    pub fn checked_duration(minutes: i64) -> Result<Duration, CoreError> {
        if (1..=MAX_DURATION_MINUTES).contains(&minutes) {
            Ok(Duration::minutes(minutes))
        } else {
            Err(CoreError::InvalidDuration {
                got: minutes,
                max: MAX_DURATION_MINUTES,
            })
        }
    }

    /// When it ends.
    pub fn end(&self) -> Timestamp {
        self.start + Duration::minutes(self.duration_minutes)
    }

    /// Whether it shares any instant with `[start, end)`. Touching intervals do not overlap.
    pub fn overlaps(&self, start: Timestamp, end: Timestamp) -> bool {
        self.start < end && start < self.end()
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use uuid::Uuid;

    use super::*;

    fn at(minutes: i64) -> Timestamp {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn appointment(start: i64, minutes: i64) -> Appointment {
        let doctor = OwnedUserId::try_from("@doctor:clinic.test").unwrap();
        Appointment {
            id: AppointmentId::from_uuid(Uuid::nil()),
            doctor: doctor.clone(),
            patient: OwnedUserId::try_from("@patient:clinic.test").unwrap(),
            start: at(start),
            duration_minutes: minutes,
            kind: AppointmentKind::Video,
            status: AppointmentStatus::Scheduled,
            reason: String::new(),
            room_id: None,
            created_by: doctor.clone(),
            created_at: at(-60),
            updated_by: doctor,
            updated_at: at(-60),
        }
    }

    #[test]
    fn overlap_is_half_open() {
        let a = appointment(0, 30);
        assert!(a.overlaps(at(29), at(45)));
        assert!(a.overlaps(at(-10), at(1)));
        assert!(a.overlaps(at(5), at(10)));
        assert!(
            !a.overlaps(at(30), at(60)),
            "back-to-back appointments do not overlap"
        );
        assert!(!a.overlaps(at(-30), at(0)));
    }

    #[test]
    fn durations_are_bounded() {
        assert!(Appointment::checked_duration(0).is_err());
        assert!(Appointment::checked_duration(-5).is_err());
        assert!(Appointment::checked_duration(MAX_DURATION_MINUTES + 1).is_err());
        assert_eq!(
            Appointment::checked_duration(30).unwrap(),
            Duration::minutes(30)
        );
    }

    #[test]
    fn enum_names_round_trip() {
        for k in AppointmentKind::ALL {
            assert_eq!(k.as_str().parse::<AppointmentKind>().unwrap(), *k);
        }
        for s in AppointmentStatus::ALL {
            assert_eq!(s.as_str().parse::<AppointmentStatus>().unwrap(), *s);
        }
        assert!("phone".parse::<AppointmentKind>().is_err());
    }
}
