//! What the clinic assistant tells people about their appointments, and when.
//!
//! Notices go to a person's Care desk room. They carry the time, the kind and the other party — never
//! the reason, which may be medically sensitive. Each notice has a key that names it uniquely (the
//! appointment, the version or moment it is about, the recipient), so that the outbox that delivers it
//! can refuse a second copy whatever restarts or retries happen in between.

use chrono::{Duration, NaiveTime};

use crate::{Appointment, AppointmentKind, AppointmentStatus, ClinicTimeZone, Timestamp, UserId};

/// What happened to an appointment, as far as its parties need telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeNotice {
    /// Newly booked.
    Booked,
    /// Rescheduled or otherwise changed.
    Changed,
    /// Cancelled.
    Cancelled,
}

impl ChangeNotice {
    fn as_str(self) -> &'static str {
        match self {
            ChangeNotice::Booked => "booked",
            ChangeNotice::Changed => "changed",
            ChangeNotice::Cancelled => "cancelled",
        }
    }
}

/// The notice an appointment's latest version calls for, if any (completion and no-shows need none).
pub fn change_notice(a: &Appointment) -> Option<ChangeNotice> {
    match a.status {
        AppointmentStatus::Cancelled => Some(ChangeNotice::Cancelled),
        AppointmentStatus::Scheduled if a.updated_at == a.created_at => Some(ChangeNotice::Booked),
        AppointmentStatus::Scheduled => Some(ChangeNotice::Changed),
        AppointmentStatus::Completed | AppointmentStatus::NoShow => None,
    }
}

/// The outbox key of a change notice: one per appointment version and recipient.
pub fn change_key(a: &Appointment, recipient: &UserId) -> String {
    format!(
        "appointment:{}:{}:{}",
        a.id,
        a.updated_at.timestamp_millis(),
        recipient
    )
}

/// The outbox key of a reminder: one per appointment, start time, offset and recipient (a rescheduled
/// appointment gets fresh reminders).
pub fn reminder_key(a: &Appointment, before: Duration, recipient: &UserId) -> String {
    format!(
        "reminder:{}:{}:{}:{}",
        a.id,
        a.start.timestamp_millis(),
        before.num_minutes(),
        recipient
    )
}

/// The outbox key of the day-of joining instructions.
pub fn day_of_key(a: &Appointment, recipient: &UserId) -> String {
    format!(
        "day-of:{}:{}:{}",
        a.id,
        a.start.timestamp_millis(),
        recipient
    )
}

/// The outbox key of an unread-message reminder: one per consultation, newest message covered and recipient.
pub fn unread_key(room: &crate::RoomId, covered: Timestamp, recipient: &UserId) -> String {
    format!(
        "unread:{}:{}:{}",
        room,
        covered.timestamp_millis(),
        recipient
    )
}

/// The reminder due at `now`, if any: the smallest of `offsets` whose moment (`start - offset`) has
/// come while the appointment has not started. A reminder whose moment had passed when the appointment
/// was booked is not due (the booking notice told them); a larger reminder missed while Consulta was
/// down is superseded by the smaller one that is due, so nobody gets a stale "in 24 hours".
pub fn due_reminder(a: &Appointment, offsets: &[Duration], now: Timestamp) -> Option<Duration> {
    if a.status != AppointmentStatus::Scheduled || now >= a.start {
        return None;
    }
    offsets
        .iter()
        .copied()
        .filter(|o| *o > Duration::zero())
        .filter(|o| {
            let moment = a.start - *o;
            moment <= now && a.created_at <= moment
        })
        .min()
}

/// Whether the day-of joining instructions for a video appointment are due at `now`: from `send_at`
/// (clinic wall-clock) on the appointment's day (from the start of that day for an appointment before
/// `send_at`), until it starts.
pub fn day_of_due(a: &Appointment, tz: ClinicTimeZone, send_at: NaiveTime, now: Timestamp) -> bool {
    if a.kind != AppointmentKind::Video || a.status != AppointmentStatus::Scheduled {
        return false;
    }
    let day = tz.local(a.start).date();
    let from = match tz.to_utc(day.and_time(send_at)) {
        Ok(from) if from < a.start => from,
        _ => tz.start_of_day(a.start),
    };
    now >= from && now < a.start && tz.local(now).date() == day
}

/// An instant as the clinic reads it: `Tue 1 Dec 2026, 10:30 (Europe/Berlin)`.
pub fn clinic_time(t: Timestamp, tz: ClinicTimeZone) -> String {
    format!(
        "{} ({})",
        tz.local(t).format("%a %-d %b %Y, %H:%M"),
        tz.name()
    )
}

fn kind_text(kind: AppointmentKind) -> &'static str {
    match kind {
        AppointmentKind::Video => "video consultation",
        AppointmentKind::InPerson => "visit at the clinic",
    }
}

/// The other party, as named in a notice to `recipient`.
fn other_party<'a>(a: &'a Appointment, recipient: &UserId) -> (&'static str, &'a UserId) {
    if recipient == a.doctor {
        ("with your patient", &a.patient)
    } else {
        ("with", &a.doctor)
    }
}

/// The text of a change notice.
pub fn change_text(
    change: ChangeNotice,
    a: &Appointment,
    recipient: &UserId,
    tz: ClinicTimeZone,
) -> String {
    let (with, other) = other_party(a, recipient);
    let id = crate::commands::short_id(&a.id.to_string()).to_owned();
    match change {
        ChangeNotice::Cancelled => format!(
            "Appointment cancelled: the {} {with} {other} on {} will not take place. [{id}]",
            kind_text(a.kind),
            clinic_time(a.start, tz),
        ),
        ChangeNotice::Booked | ChangeNotice::Changed => format!(
            "Appointment {}: {} {with} {other} on {}, {}. [{id}]",
            change.as_str(),
            capitalised(kind_text(a.kind)),
            clinic_time(a.start, tz),
            crate::commands::format_length(a.duration_minutes),
        ),
    }
}

/// The text of a reminder sent `before` the start.
pub fn reminder_text(
    a: &Appointment,
    before: Duration,
    recipient: &UserId,
    tz: ClinicTimeZone,
) -> String {
    let (with, other) = other_party(a, recipient);
    format!(
        "Reminder: your {} {with} {other} starts in {}, on {}.",
        kind_text(a.kind),
        in_words(before),
        clinic_time(a.start, tz),
    )
}

/// Outbox key of the welcome in a person's Care desk (sent once per person).
pub fn welcome_key(recipient: &UserId) -> String {
    format!("welcome:{recipient}")
}

/// The first message in a Care desk: what the assistant and the pinned calendar are for.
pub fn welcome_text(as_doctor: bool) -> String {
    let what = if as_doctor {
        "I keep your appointments: book, move and cancel them here or in the Calendar above, and I remind you and your patients before each one."
    } else {
        "I keep your appointments: the Calendar above shows them, I remind you before each one, and you can ask your doctor for one with !request."
    };
    format!(
        "Welcome to your Care desk. {what} Send !help to see what I understand. In Element X, which shows no Calendar, send !calendar for a link to it."
    )
}

/// The day-of text for a video appointment: when, and how to join.
pub fn day_of_text(a: &Appointment, recipient: &UserId, tz: ClinicTimeZone) -> String {
    let (with, other) = other_party(a, recipient);
    let time = tz.local(a.start).format("%H:%M");
    if recipient == a.doctor {
        format!(
            "Today at {time} ({}): video consultation {with} {other}. Start the call in the consultation room; the patient waits until you admit them.",
            tz.name()
        )
    } else {
        format!(
            "Today at {time} ({}) you have a video consultation {with} {other}. A few minutes before, open your consultation room and press the call button; you will wait there until your doctor lets you in. The call can only be joined today.",
            tz.name()
        )
    }
}

/// `24 hours`, `15 minutes`, `1 day 2 hours`.
pub fn in_words(d: Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (days, hours, mins) = (minutes / 1440, (minutes % 1440) / 60, minutes % 60);
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let parts: Vec<String> = [(days, "day"), (hours, "hour"), (mins, "minute")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, one)| unit(n, one))
        .collect();
    if parts.is_empty() {
        "a moment".to_owned()
    } else if days == 1 && hours == 0 && mins == 0 {
        "24 hours".to_owned()
    } else {
        parts.join(" ")
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::AppointmentId;

    fn tz() -> ClinicTimeZone {
        "Europe/Berlin".parse().unwrap()
    }

    fn appointment(start: Timestamp, created: Timestamp) -> Appointment {
        let doctor = UserId::parse("@dr:clinic.example").unwrap();
        Appointment {
            id: AppointmentId::from_uuid(Uuid::nil()),
            doctor: doctor.clone(),
            patient: UserId::parse("@pat:clinic.example").unwrap(),
            start,
            duration_minutes: 30,
            kind: AppointmentKind::Video,
            status: AppointmentStatus::Scheduled,
            reason: "viral load results".into(),
            room_id: None,
            created_by: doctor.clone(),
            created_at: created,
            updated_by: doctor,
            updated_at: created,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    const OFFSETS: [Duration; 2] = [Duration::hours(24), Duration::minutes(15)];

    #[test]
    fn reminders_fall_due_at_their_offsets_and_the_smallest_wins() {
        let start = utc(2026, 12, 10, 9, 0);
        let a = appointment(start, utc(2026, 12, 1, 9, 0));
        assert_eq!(due_reminder(&a, &OFFSETS, utc(2026, 12, 9, 8, 59)), None);
        assert_eq!(
            due_reminder(&a, &OFFSETS, utc(2026, 12, 9, 9, 0)),
            Some(Duration::hours(24))
        );
        assert_eq!(
            due_reminder(&a, &OFFSETS, utc(2026, 12, 10, 8, 44)),
            Some(Duration::hours(24))
        );
        assert_eq!(
            due_reminder(&a, &OFFSETS, utc(2026, 12, 10, 8, 45)),
            Some(Duration::minutes(15))
        );
        assert_eq!(due_reminder(&a, &OFFSETS, start), None, "not once started");
    }

    #[test]
    fn no_reminder_whose_moment_passed_before_booking_nor_for_cancelled_ones() {
        let start = utc(2026, 12, 10, 9, 0);
        let late = appointment(start, utc(2026, 12, 10, 1, 0));
        assert_eq!(due_reminder(&late, &OFFSETS, utc(2026, 12, 10, 2, 0)), None);
        assert_eq!(
            due_reminder(&late, &OFFSETS, utc(2026, 12, 10, 8, 50)),
            Some(Duration::minutes(15))
        );
        let mut cancelled = appointment(start, utc(2026, 12, 1, 9, 0));
        cancelled.status = AppointmentStatus::Cancelled;
        assert_eq!(
            due_reminder(&cancelled, &OFFSETS, utc(2026, 12, 10, 8, 50)),
            None
        );
        assert_eq!(due_reminder(&late, &[Duration::zero()], start), None);
    }

    #[test]
    fn reminder_keys_change_when_the_appointment_moves() {
        let a = appointment(utc(2026, 12, 10, 9, 0), utc(2026, 12, 1, 9, 0));
        let mut moved = a.clone();
        moved.start = utc(2026, 12, 11, 9, 0);
        let p = a.patient.clone();
        assert_ne!(
            reminder_key(&a, Duration::hours(24), &p),
            reminder_key(&moved, Duration::hours(24), &p)
        );
        assert_ne!(
            reminder_key(&a, Duration::hours(24), &p),
            reminder_key(&a, Duration::minutes(15), &p)
        );
        assert_ne!(
            reminder_key(&a, Duration::hours(24), &p),
            reminder_key(&a, Duration::hours(24), &a.doctor)
        );
        let mut changed = a.clone();
        changed.updated_at = utc(2026, 12, 2, 9, 0);
        assert_ne!(change_key(&a, &p), change_key(&changed, &p));
        assert_eq!(change_key(&a, &p), change_key(&a.clone(), &p));
    }

    #[test]
    fn day_of_instructions_only_on_the_day_of_a_video_appointment() {
        // 10:00 Berlin = 09:00 UTC in December.
        let a = appointment(utc(2026, 12, 10, 9, 0), utc(2026, 12, 1, 9, 0));
        let seven = NaiveTime::from_hms_opt(7, 0, 0).unwrap();
        assert!(!day_of_due(&a, tz(), seven, utc(2026, 12, 10, 5, 59)));
        assert!(day_of_due(&a, tz(), seven, utc(2026, 12, 10, 6, 0)));
        assert!(!day_of_due(&a, tz(), seven, utc(2026, 12, 10, 9, 0)));
        assert!(!day_of_due(&a, tz(), seven, utc(2026, 12, 9, 9, 0)));
        let mut visit = a.clone();
        visit.kind = AppointmentKind::InPerson;
        assert!(!day_of_due(&visit, tz(), seven, utc(2026, 12, 10, 7, 0)));
        // An early appointment (06:30 local) gets them from the start of its day.
        let early = appointment(utc(2026, 12, 10, 5, 30), utc(2026, 12, 1, 9, 0));
        assert!(day_of_due(&early, tz(), seven, utc(2026, 12, 10, 0, 0)));
    }

    #[test]
    fn notices_name_time_kind_and_party_but_never_the_reason() {
        let a = appointment(utc(2026, 12, 10, 9, 0), utc(2026, 12, 1, 9, 0));
        let booked = change_text(ChangeNotice::Booked, &a, &a.patient, tz());
        assert_eq!(
            booked,
            "Appointment booked: Video consultation with @dr:clinic.example on Thu 10 Dec 2026, 10:00 (Europe/Berlin), 30 min. [00000000]"
        );
        let for_doctor = change_text(ChangeNotice::Changed, &a, &a.doctor, tz());
        assert!(for_doctor.contains("with your patient @pat:clinic.example"));
        let cancelled = change_text(ChangeNotice::Cancelled, &a, &a.patient, tz());
        assert!(cancelled.starts_with("Appointment cancelled"));
        let reminder = reminder_text(&a, Duration::hours(24), &a.patient, tz());
        assert!(reminder.contains("starts in 24 hours"), "{reminder}");
        let day_of = day_of_text(&a, &a.patient, tz());
        assert!(day_of.contains("Today at 10:00"), "{day_of}");
        for text in [booked, for_doctor, cancelled, reminder, day_of] {
            assert!(!text.contains("viral"), "{text}");
        }
    }

    #[test]
    fn change_notices_follow_the_status_and_version() {
        let mut a = appointment(utc(2026, 12, 10, 9, 0), utc(2026, 12, 1, 9, 0));
        assert_eq!(change_notice(&a), Some(ChangeNotice::Booked));
        a.updated_at = utc(2026, 12, 2, 9, 0);
        assert_eq!(change_notice(&a), Some(ChangeNotice::Changed));
        a.status = AppointmentStatus::Cancelled;
        assert_eq!(change_notice(&a), Some(ChangeNotice::Cancelled));
        a.status = AppointmentStatus::Completed;
        assert_eq!(change_notice(&a), None);
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(in_words(Duration::hours(24)), "24 hours");
        assert_eq!(in_words(Duration::minutes(15)), "15 minutes");
        assert_eq!(in_words(Duration::minutes(61)), "1 hour 1 minute");
        assert_eq!(in_words(Duration::hours(49)), "2 days 1 hour");
        assert_eq!(in_words(Duration::zero()), "a moment");
    }
}
