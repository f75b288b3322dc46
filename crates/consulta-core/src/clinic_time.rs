//! The clinic's wall clock: turning what people type ("2026-12-01 10:30") into UTC instants and UTC
//! instants back into local times, in the clinic's configured IANA time zone.
//!
//! Appointments are stored as UTC instants. Wall-clock input is read in the clinic's zone, and daylight
//! saving changes are handled explicitly:
//!
//! - **Gap** (clocks jump forward, e.g. 02:30 on the last Sunday of March in Europe/Madrid does not
//!   exist): refused with [`TimeError::NonexistentLocalTime`], naming the zone, so the person picks a
//!   real time. We never shift silently into the next hour.
//! - **Overlap** (clocks fall back, e.g. 02:30 on the last Sunday of October happens twice): the
//!   **earlier** instant (the one still in summer time) is chosen. That is what calendar apps do and
//!   what someone booking "at 02:30" most likely means; [`ClinicTimeZone::resolve`] reports
//!   [`LocalTime::Ambiguous`] so a caller can warn, and input with an explicit offset
//!   (`2026-10-25T02:30:00+01:00`) selects the later one.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::Timestamp;

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an IANA zone name such as `Europe/Madrid` or `UTC`.
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Madrid or UTC")]
    UnknownZone(String),
    /// Text that is neither RFC 3339 nor a local `YYYY-MM-DD HH:MM[:SS]`.
    #[error(
        "cannot read {0:?} as a time: use 2026-12-01T10:30 (clinic time) or 2026-12-01T10:30:00+01:00"
    )]
    Malformed(String),
    /// A wall-clock time skipped by a daylight-saving change.
    #[error("{local} does not exist in {zone}: the clocks skip that hour; choose another time")]
    NonexistentLocalTime {
        /// The local time asked for.
        local: NaiveDateTime,
        /// The zone.
        zone: String,
    },
}

/// How a wall-clock time maps to instants in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalTime {
    /// Exactly one instant.
    Unique(Timestamp),
    /// Twice, because the clocks fall back: the earlier and the later instant.
    Ambiguous {
        /// The first occurrence (still in summer time).
        earlier: Timestamp,
        /// The second occurrence.
        later: Timestamp,
    },
    /// Never: the clocks skip it.
    Gap,
}

/// The clinic's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClinicTimeZone(Tz);

impl Default for ClinicTimeZone {
    fn default() -> Self {
        Self(Tz::UTC)
    }
}

impl fmt::Display for ClinicTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl FromStr for ClinicTimeZone {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Tz>()
            .map(Self)
            .map_err(|_| TimeError::UnknownZone(s.to_owned()))
    }
}

/// Serialised as its IANA name, as in the configuration file.
impl serde::Serialize for ClinicTimeZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for ClinicTimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl ClinicTimeZone {
    /// The zone's IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Every instant a wall-clock time denotes in this zone.
    pub fn resolve(&self, local: NaiveDateTime) -> LocalTime {
        match self.0.from_local_datetime(&local) {
            LocalResult::Single(t) => LocalTime::Unique(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                LocalTime::Ambiguous {
                    earlier: a.min(b),
                    later: a.max(b),
                }
            }
            LocalResult::None => LocalTime::Gap,
        }
    }

    /// The instant of a wall-clock time: refused in a gap, the earlier instant in an overlap.
    pub fn to_utc(&self, local: NaiveDateTime) -> Result<Timestamp, TimeError> {
        match self.resolve(local) {
            LocalTime::Unique(t) | LocalTime::Ambiguous { earlier: t, .. } => Ok(t),
            LocalTime::Gap => Err(TimeError::NonexistentLocalTime {
                local,
                zone: self.name().to_owned(),
            }),
        }
    }

    /// Reads a time as people and systems send it:
    /// - RFC 3339 with `Z` or an offset (`2026-12-01T10:30:00+01:00`): that exact instant;
    /// - a local wall-clock time without offset (`2026-12-01T10:30`, `2026-12-01 10:30:00`): in the
    ///   clinic's zone, see the module documentation for daylight-saving changes.
    pub fn parse(&self, text: &str) -> Result<Timestamp, TimeError> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(t.with_timezone(&Utc));
        }
        let local = [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .ok_or_else(|| TimeError::Malformed(text.to_owned()))?;
        self.to_utc(local)
    }

    /// Reads a local date and time given apart (`2026-12-01`, `10:30`), as in a bot command.
    pub fn parse_date_time(&self, date: &str, time: &str) -> Result<Timestamp, TimeError> {
        let malformed = || TimeError::Malformed(format!("{date} {time}"));
        let date = NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").map_err(|_| malformed())?;
        let time = NaiveTime::parse_from_str(time.trim(), "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(time.trim(), "%H:%M:%S"))
            .map_err(|_| malformed())?;
        self.to_utc(date.and_time(time))
    }

    /// The local wall-clock time of an instant.
    pub fn local(&self, t: Timestamp) -> NaiveDateTime {
        t.with_timezone(&self.0).naive_local()
    }

    /// An instant as RFC 3339 with the clinic's offset at that instant (`2026-12-01T10:30:00+01:00`).
    pub fn present(&self, t: Timestamp) -> String {
        t.with_timezone(&self.0).to_rfc3339()
    }

    /// The start of the local day containing `t`, as an instant (for "today's appointments"). On a day
    /// that starts in a gap, the first instant of the day.
    pub fn start_of_day(&self, t: Timestamp) -> Timestamp {
        let date = self.local(t).date();
        let mut probe = date.and_time(NaiveTime::MIN);
        // A gap is at most a few hours long; step through it.
        for _ in 0..=24 * 4 {
            if let Ok(t) = self.to_utc(probe) {
                return t;
            }
            probe += chrono::Duration::minutes(15);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn madrid() -> ClinicTimeZone {
        "Europe/Madrid".parse().unwrap()
    }

    fn utc(text: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn zones_parse_by_iana_name_and_default_to_utc() {
        assert_eq!(ClinicTimeZone::default().name(), "UTC");
        assert_eq!(madrid().to_string(), "Europe/Madrid");
        assert_eq!(
            "Mars/Olympus".parse::<ClinicTimeZone>(),
            Err(TimeError::UnknownZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn zones_serialise_as_their_name() {
        assert_eq!(
            serde_json::to_string(&madrid()).unwrap(),
            "\"Europe/Madrid\""
        );
        assert_eq!(
            serde_json::from_str::<ClinicTimeZone>("\"Europe/Madrid\"").unwrap(),
            madrid()
        );
        let err = serde_json::from_str::<ClinicTimeZone>("\"CET+1\"").unwrap_err();
        assert!(err.to_string().contains("IANA"), "{err}");
    }

    #[test]
    fn local_input_is_read_in_the_clinic_zone() {
        // Winter: UTC+1.
        assert_eq!(
            madrid().parse("2026-12-01T10:30").unwrap(),
            utc("2026-12-01T09:30:00Z")
        );
        assert_eq!(
            madrid().parse("2026-12-01 10:30:15").unwrap(),
            utc("2026-12-01T09:30:15Z")
        );
        // Summer: UTC+2.
        assert_eq!(
            madrid().parse_date_time("2026-07-01", "10:30").unwrap(),
            utc("2026-07-01T08:30:00Z")
        );
        // Explicit offsets win over the clinic zone.
        assert_eq!(
            madrid().parse("2026-12-01T10:30:00-05:00").unwrap(),
            utc("2026-12-01T15:30:00Z")
        );
        assert_eq!(
            madrid().parse("2026-12-01T10:30:00Z").unwrap(),
            utc("2026-12-01T10:30:00Z")
        );
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T10:00",
            "2026-12-01",
            "10:30",
            "2026-12-01T25:00",
        ] {
            assert!(
                matches!(madrid().parse(bad), Err(TimeError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(madrid().parse_date_time("2026-12-01", "10h30").is_err());
        assert!(madrid().parse_date_time("01/12/2026", "10:30").is_err());
    }

    #[test]
    fn a_time_in_the_spring_gap_is_refused_with_the_zone_named() {
        // 2026-03-29: Madrid jumps from 02:00 to 03:00.
        let err = madrid().parse("2026-03-29T02:30").unwrap_err();
        assert!(matches!(err, TimeError::NonexistentLocalTime { .. }));
        assert!(err.to_string().contains("Europe/Madrid"), "{err}");
        assert_eq!(
            madrid().resolve(
                NaiveDateTime::parse_from_str("2026-03-29T02:00", "%Y-%m-%dT%H:%M").unwrap()
            ),
            LocalTime::Gap
        );
        // Either side of the gap is fine, and one hour of wall clock apart is one UTC instant apart.
        let before = madrid().parse("2026-03-29T01:59").unwrap();
        let after = madrid().parse("2026-03-29T03:00").unwrap();
        assert_eq!(after - before, Duration::minutes(1));
    }

    #[test]
    fn a_time_in_the_autumn_overlap_is_the_earlier_instant() {
        // 2026-10-25: Madrid falls back from 03:00 to 02:00, so 02:30 happens twice.
        let local = NaiveDateTime::parse_from_str("2026-10-25T02:30", "%Y-%m-%dT%H:%M").unwrap();
        assert_eq!(
            madrid().resolve(local),
            LocalTime::Ambiguous {
                earlier: utc("2026-10-25T00:30:00Z"),
                later: utc("2026-10-25T01:30:00Z"),
            }
        );
        assert_eq!(
            madrid().parse("2026-10-25T02:30").unwrap(),
            utc("2026-10-25T00:30:00Z")
        );
        // The later one is reachable with an explicit offset.
        assert_eq!(
            madrid().parse("2026-10-25T02:30:00+01:00").unwrap(),
            utc("2026-10-25T01:30:00Z")
        );
    }

    #[test]
    fn presentation_carries_the_offset_in_force_at_that_instant() {
        assert_eq!(
            madrid().present(utc("2026-10-25T00:30:00Z")),
            "2026-10-25T02:30:00+02:00"
        );
        assert_eq!(
            madrid().present(utc("2026-10-25T01:30:00Z")),
            "2026-10-25T02:30:00+01:00"
        );
        assert_eq!(
            ClinicTimeZone::default().present(utc("2026-10-25T01:30:00Z")),
            "2026-10-25T01:30:00+00:00"
        );
        // Round trip through the presentation.
        let t = utc("2026-03-29T01:15:00Z");
        assert_eq!(madrid().parse(&madrid().present(t)).unwrap(), t);
    }

    #[test]
    fn days_start_at_local_midnight_even_across_dst() {
        let t = utc("2026-10-25T12:00:00Z");
        assert_eq!(madrid().start_of_day(t), utc("2026-10-24T22:00:00Z"));
        // A 25-hour day: the next local midnight is 25 h later.
        let next = madrid().start_of_day(t + Duration::days(1));
        assert_eq!(next - madrid().start_of_day(t), Duration::hours(25));
        // A zone whose midnight falls into the gap (America/Santiago, 2026-09-06 00:00 does not exist).
        let santiago: ClinicTimeZone = "America/Santiago".parse().unwrap();
        let day = santiago.start_of_day(utc("2026-09-06T15:00:00Z"));
        assert_eq!(
            santiago.local(day),
            NaiveDateTime::parse_from_str("2026-09-06T01:00", "%Y-%m-%dT%H:%M").unwrap()
        );
    }
}
