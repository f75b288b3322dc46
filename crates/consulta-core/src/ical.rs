//! The private iCal feed (RFC 5545) of a person's appointments, for phone calendars.
//!
//! Phone calendars copy feeds to cloud services, so an entry says only when and how: no reason, no
//! names, no Matrix IDs. The title tells a video consultation from a visit; the description points at
//! the calendar page, which asks the person to sign in before it shows more.

use std::fmt::Write as _;

use crate::{Appointment, AppointmentKind, AppointmentStatus, Timestamp};

/// Longest content line in octets, before the line break (RFC 5545 §3.1).
const MAX_LINE_OCTETS: usize = 75;

/// Renders `appointments` as one VCALENDAR. `host` makes the entries' UIDs globally unique (the
/// homeserver's name); `page_url` is where the description sends the reader for details.
pub fn feed(appointments: &[Appointment], host: &str, page_url: &str, now: Timestamp) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//Consulta//Appointments//EN".to_owned(),
        "CALSCALE:GREGORIAN".to_owned(),
        "METHOD:PUBLISH".to_owned(),
        "X-WR-CALNAME:Consulta appointments".to_owned(),
        // Ask subscribers to refresh hourly (RFC 7986 and its older Microsoft spelling).
        "REFRESH-INTERVAL;VALUE=DURATION:PT1H".to_owned(),
        "X-PUBLISHED-TTL:PT1H".to_owned(),
    ];
    for a in appointments {
        let (summary, status) = match (a.kind, a.status) {
            (_, AppointmentStatus::Cancelled) => ("Cancelled: Consulta appointment", "CANCELLED"),
            (AppointmentKind::Video, _) => ("Video consultation (Consulta)", "CONFIRMED"),
            (AppointmentKind::InPerson, _) => ("Clinic appointment (Consulta)", "CONFIRMED"),
        };
        let description = match a.kind {
            AppointmentKind::Video => "Join from the Consulta app on the day. Details: ",
            AppointmentKind::InPerson => "Please come to the clinic. Details: ",
        };
        lines.extend([
            "BEGIN:VEVENT".to_owned(),
            format!("UID:{}@{}", a.id, escape(host)),
            format!("DTSTAMP:{}", utc(now)),
            format!("LAST-MODIFIED:{}", utc(a.updated_at)),
            format!("CREATED:{}", utc(a.created_at)),
            format!("DTSTART:{}", utc(a.start)),
            format!("DTEND:{}", utc(a.end())),
            format!("SUMMARY:{summary}"),
            format!(
                "DESCRIPTION:{}",
                escape(&format!("{description}{page_url}"))
            ),
            format!("URL:{page_url}"),
            format!("STATUS:{status}"),
            "TRANSP:OPAQUE".to_owned(),
            "CLASS:PRIVATE".to_owned(),
            "END:VEVENT".to_owned(),
        ]);
    }
    lines.push("END:VCALENDAR".to_owned());
    let mut out = String::new();
    for line in &lines {
        fold_into(&mut out, line);
    }
    out
}

/// A UTC date-time in iCal's basic format, `20261201T093000Z`.
fn utc(t: Timestamp) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Escapes a TEXT value (RFC 5545 §3.3.11).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends `line` with CRLF, folded so that no physical line exceeds 75 octets; folds never split a
/// UTF-8 character, and each continuation starts with one space.
fn fold_into(out: &mut String, line: &str) {
    let mut budget = MAX_LINE_OCTETS;
    let mut used = 0;
    for c in line.chars() {
        if used + c.len_utf8() > budget {
            out.push_str("\r\n ");
            used = 0;
            budget = MAX_LINE_OCTETS - 1;
        }
        out.push(c);
        used += c.len_utf8();
    }
    let _ = write!(out, "\r\n");
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::{AppointmentId, UserId};

    fn appointment(kind: AppointmentKind, status: AppointmentStatus) -> Appointment {
        let doctor = UserId::parse("@dr.house:clinic.example").unwrap();
        let created = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
        Appointment {
            id: AppointmentId::from_uuid(Uuid::from_u128(7)),
            doctor: doctor.clone(),
            patient: UserId::parse("@pat:clinic.example").unwrap(),
            start: Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap(),
            duration_minutes: 45,
            kind,
            status,
            reason: "viral load results".into(),
            room_id: None,
            created_by: doctor.clone(),
            created_at: created,
            updated_by: doctor,
            updated_at: created,
        }
    }

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    #[test]
    fn an_entry_says_when_and_how_but_not_why_or_who() {
        let text = feed(
            &[appointment(
                AppointmentKind::Video,
                AppointmentStatus::Scheduled,
            )],
            "clinic.example",
            "https://consulta.clinic.example/_consulta/calendar/",
            now(),
        );
        assert!(
            text.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"),
            "{text}"
        );
        assert!(text.ends_with("END:VCALENDAR\r\n"));
        let unfolded = text.replace("\r\n ", "");
        for line in [
            "UID:00000000-0000-0000-0000-000000000007@clinic.example",
            "DTSTART:20261201T093000Z",
            "DTEND:20261201T101500Z",
            "DTSTAMP:20261125T120000Z",
            "SUMMARY:Video consultation (Consulta)",
            "STATUS:CONFIRMED",
            "CLASS:PRIVATE",
        ] {
            assert!(
                unfolded.contains(&format!("\r\n{line}\r\n")),
                "{line} in {unfolded}"
            );
        }
        for secret in ["viral", "house", "@pat", "@dr"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(text.matches("BEGIN:VEVENT").count(), 1);
    }

    #[test]
    fn cancelled_and_in_person_entries_are_marked() {
        let text = feed(
            &[
                appointment(AppointmentKind::InPerson, AppointmentStatus::Scheduled),
                appointment(AppointmentKind::Video, AppointmentStatus::Cancelled),
            ],
            "clinic.example",
            "https://x.example/",
            now(),
        );
        assert!(text.contains("\r\nSUMMARY:Clinic appointment (Consulta)\r\n"));
        assert!(text.contains("\r\nSTATUS:CANCELLED\r\n"));
        assert_eq!(text.matches("BEGIN:VEVENT").count(), 2);
    }

    #[test]
    fn long_lines_fold_at_75_octets_without_splitting_characters() {
        let url = format!("https://ü.example/{}", "é".repeat(80));
        let text = feed(
            &[appointment(
                AppointmentKind::Video,
                AppointmentStatus::Scheduled,
            )],
            "clinic.example",
            &url,
            now(),
        );
        for line in text.split("\r\n") {
            assert!(
                line.len() <= MAX_LINE_OCTETS,
                "{} octets: {line}",
                line.len()
            );
        }
        let unfolded = text.replace("\r\n ", "");
        assert!(unfolded.contains(&format!("\r\nURL:{url}\r\n")));
        assert_eq!(
            text.matches('\n').count(),
            text.matches("\r\n").count(),
            "only CRLF"
        );
    }

    #[test]
    fn text_values_are_escaped() {
        assert_eq!(escape("a,b;c\\d\ne\r"), "a\\,b\\;c\\\\d\\ne");
        assert_eq!(escape("tab\there"), "tabhere");
    }

    #[test]
    fn an_empty_feed_is_a_valid_calendar() {
        let text = feed(&[], "h", "https://x/", now());
        assert!(text.contains("PRODID:-//Consulta//Appointments//EN"));
        assert!(!text.contains("VEVENT"));
    }
}
