//! The clinic assistant's command language: what a doctor or patient types in their Care desk room.
//!
//! [`parse`] turns one message body into a [`Command`] or a [`CommandError`] whose text tells the person
//! what was wrong and how the command is written. Dates and times stay as the person typed them
//! (clinic wall-clock); the appservice resolves them in the clinic's time zone, and resolves
//! appointment and request references against what the person may see.
//!
//! Grammar (tokens separated by spaces; the free-text reason takes the rest of the line):
//!
//! ```text
//! !help
//! !today                                   doctors: today's appointments
//! !upcoming                                next appointments (doctors and patients)
//! !book @patient DATE TIME LENGTH [video|in-person] REASON
//! !reschedule REF DATE TIME [LENGTH]
//! !cancel REF
//! !consult @patient                        doctors: open the consultation room
//! !requests                                doctors: pending requests; patients: their own
//! !accept REF [DATE TIME [LENGTH]]
//! !decline REF
//! !request [@doctor] [DATE TIME] [video|in-person] REASON
//! !unread                                  unread messages in consultations
//! DATE   = YYYY-MM-DD | today | tomorrow
//! TIME   = HH:MM (24-hour clock)
//! LENGTH = 30m | 1h | 1h30m | 45min
//! REF    = the first 8 or more characters of the id the assistant showed, or the whole id
//! ```

use chrono::{NaiveDate, NaiveTime};

use crate::appointment::MAX_DURATION_MINUTES;
use crate::{AppointmentKind, OwnedUserId, Timestamp, UserId};

/// The fewest characters of an id a reference may give.
pub const MIN_REF_LEN: usize = 8;

/// The longest message the assistant reads as a command (longer bodies are refused unread).
pub const MAX_COMMAND_LEN: usize = 2000;

/// A day as typed: a calendar date, or one relative to the clinic's today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Day {
    /// `YYYY-MM-DD`.
    Date(NaiveDate),
    /// `today`.
    Today,
    /// `tomorrow`.
    Tomorrow,
}

impl Day {
    /// The calendar date, given the clinic's date today.
    pub fn resolve(self, today: NaiveDate) -> NaiveDate {
        match self {
            Day::Date(d) => d,
            Day::Today => today,
            Day::Tomorrow => today.succ_opt().unwrap_or(today),
        }
    }
}

/// A clinic wall-clock moment as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    /// The day.
    pub day: Day,
    /// The time of day.
    pub time: NaiveTime,
}

/// A reference to an appointment or request: a prefix of its id (lower-case hex and dashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRef(String);

impl IdRef {
    /// Parses a reference; it must be at least [`MIN_REF_LEN`] characters of a UUID.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim_start_matches('#').to_ascii_lowercase();
        let valid = text.len() >= MIN_REF_LEN
            && text.len() <= 36
            && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        valid.then_some(Self(text))
    }

    /// Whether the id `full` (hyphenated UUID) starts with this reference.
    pub fn matches(&self, full: &str) -> bool {
        full.starts_with(&self.0)
    }

    /// The reference as typed (normalised to lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The short form of an id that the assistant shows and accepts back.
pub fn short_id(full: &str) -> &str {
    full.get(..MIN_REF_LEN).unwrap_or(full)
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `!help`.
    Help,
    /// `!today`.
    Today,
    /// `!upcoming` (also `!next`).
    Upcoming,
    /// `!book`.
    Book {
        /// The patient.
        patient: OwnedUserId,
        /// When.
        when: When,
        /// How long, in minutes.
        minutes: i64,
        /// Video (the default) or in person.
        kind: AppointmentKind,
        /// Why.
        reason: String,
    },
    /// `!reschedule`.
    Reschedule {
        /// Which appointment.
        appointment: IdRef,
        /// The new start.
        when: When,
        /// A new length, if given.
        minutes: Option<i64>,
    },
    /// `!cancel`.
    Cancel {
        /// Which appointment.
        appointment: IdRef,
    },
    /// `!consult`.
    Consult {
        /// The patient.
        patient: OwnedUserId,
    },
    /// `!requests`.
    Requests,
    /// `!accept`.
    Accept {
        /// Which request.
        request: IdRef,
        /// When to book it, if not at the patient's preferred time.
        when: Option<When>,
        /// A length, if not the requested one.
        minutes: Option<i64>,
    },
    /// `!decline`.
    Decline {
        /// Which request.
        request: IdRef,
    },
    /// `!request`.
    Request {
        /// The doctor asked; `None`: the patient's own doctor.
        doctor: Option<OwnedUserId>,
        /// A preferred time, if given.
        when: Option<When>,
        /// Video (the default) or in person.
        kind: AppointmentKind,
        /// Why.
        reason: String,
    },
    /// `!unread`.
    Unread,
    /// `!calendar`: a sign-in link to the calendar page.
    Calendar,
    /// `!ical` (a new private feed URL) and `!ical off` (revoke it).
    Ical {
        /// Whether to revoke rather than create.
        off: bool,
    },
}

/// Why a message is not a command the assistant can carry out. The `Display` text is shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command at all (no leading `!`).
    #[error("I only understand commands. Send !help to see them.")]
    NotACommand,
    /// Longer than [`MAX_COMMAND_LEN`].
    #[error("That message is too long for a command. Send !help to see the commands.")]
    TooLong,
    /// An unknown command word.
    #[error("I don't know the command !{0}. Send !help to see the commands.")]
    Unknown(String),
    /// A known command written wrongly.
    #[error("{problem}. Write it as: {usage}")]
    Usage {
        /// What was wrong.
        problem: String,
        /// How the command is written.
        usage: &'static str,
    },
}

struct Spec {
    usage: &'static str,
}

const BOOK: Spec = Spec {
    usage: "!book @patient:server 2026-12-01 10:30 30m [video|in-person] reason",
};
const RESCHEDULE: Spec = Spec {
    usage: "!reschedule <appointment id> 2026-12-01 11:00 [30m]",
};
const CANCEL: Spec = Spec {
    usage: "!cancel <appointment id>",
};
const CONSULT: Spec = Spec {
    usage: "!consult @patient:server",
};
const ACCEPT: Spec = Spec {
    usage: "!accept <request id> [2026-12-01 10:30 [30m]]",
};
const DECLINE: Spec = Spec {
    usage: "!decline <request id>",
};
const ICAL: Spec = Spec {
    usage: "!ical [off]",
};
const REQUEST: Spec = Spec {
    usage: "!request [@doctor:server] [2026-12-01 10:30] [video|in-person] reason",
};

/// Words that take no arguments: the word, its command, and how it is written.
const BARE: &[(&str, Command, &str)] = &[
    ("help", Command::Help, "!help"),
    ("today", Command::Today, "!today"),
    ("upcoming", Command::Upcoming, "!upcoming"),
    ("next", Command::Upcoming, "!next"),
    ("requests", Command::Requests, "!requests"),
    ("unread", Command::Unread, "!unread"),
    ("calendar", Command::Calendar, "!calendar"),
];

impl Spec {
    fn err(&self, problem: impl Into<String>) -> CommandError {
        CommandError::Usage {
            problem: problem.into(),
            usage: self.usage,
        }
    }
}

/// Reads one message body as a command.
pub fn parse(body: &str) -> Result<Command, CommandError> {
    if body.len() > MAX_COMMAND_LEN {
        return Err(CommandError::TooLong);
    }
    let body = body.trim();
    let Some(rest) = body.strip_prefix('!') else {
        return Err(CommandError::NotACommand);
    };
    let (word, args) = split_word(rest);
    let word = word.to_ascii_lowercase();
    if let Some((_, command, usage)) = BARE.iter().find(|(w, _, _)| *w == word) {
        return if args.is_empty() {
            Ok(command.clone())
        } else {
            Err(CommandError::Usage {
                problem: format!("!{word} takes nothing after it"),
                usage,
            })
        };
    }
    let mut args = Args::new(args);
    match word.as_str() {
        "book" => {
            let patient = args.user(&BOOK, "the patient")?;
            let when = args.when(&BOOK)?;
            let minutes = args.length(&BOOK)?;
            let kind = args.kind().unwrap_or(AppointmentKind::Video);
            let reason = args.reason(&BOOK)?;
            Ok(Command::Book {
                patient,
                when,
                minutes,
                kind,
                reason,
            })
        }
        "reschedule" | "move" => {
            let appointment = args.id(&RESCHEDULE, "the appointment")?;
            let when = args.when(&RESCHEDULE)?;
            let minutes = args.optional_length(&RESCHEDULE)?;
            args.end(&RESCHEDULE)?;
            Ok(Command::Reschedule {
                appointment,
                when,
                minutes,
            })
        }
        "cancel" => {
            let appointment = args.id(&CANCEL, "the appointment")?;
            args.end(&CANCEL)?;
            Ok(Command::Cancel { appointment })
        }
        "ical" => {
            let Some(word) = args.peek() else {
                return Ok(Command::Ical { off: false });
            };
            if !matches!(
                word.to_ascii_lowercase().as_str(),
                "off" | "revoke" | "stop"
            ) {
                return Err(ICAL.err(format!("I don't understand {word:?} after !ical")));
            }
            args.next(&ICAL, "off")?;
            args.end(&ICAL)?;
            Ok(Command::Ical { off: true })
        }
        "consult" => {
            let patient = args.user(&CONSULT, "the patient")?;
            args.end(&CONSULT)?;
            Ok(Command::Consult { patient })
        }
        "accept" => {
            let request = args.id(&ACCEPT, "the request")?;
            let when = if args.is_empty() {
                None
            } else {
                Some(args.when(&ACCEPT)?)
            };
            let minutes = args.optional_length(&ACCEPT)?;
            args.end(&ACCEPT)?;
            Ok(Command::Accept {
                request,
                when,
                minutes,
            })
        }
        "decline" => {
            let request = args.id(&DECLINE, "the request")?;
            args.end(&DECLINE)?;
            Ok(Command::Decline { request })
        }
        "request" => {
            let doctor = if args.peek().is_some_and(|t| t.starts_with('@')) {
                Some(args.user(&REQUEST, "the doctor")?)
            } else {
                None
            };
            let when = if args.peek().is_some_and(looks_like_day) {
                Some(args.when(&REQUEST)?)
            } else {
                None
            };
            let kind = args.kind().unwrap_or(AppointmentKind::Video);
            let reason = args.reason(&REQUEST)?;
            Ok(Command::Request {
                doctor,
                when,
                kind,
                reason,
            })
        }
        "" => Err(CommandError::Unknown(String::new())),
        other => Err(CommandError::Unknown(
            other.chars().take(32).collect::<String>(),
        )),
    }
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (
            text.get(..i).unwrap_or(text),
            text.get(i..).unwrap_or("").trim(),
        ),
        None => (text, ""),
    }
}

fn looks_like_day(token: &str) -> bool {
    let t = token.to_ascii_lowercase();
    t == "today" || t == "tomorrow" || NaiveDate::parse_from_str(&t, "%Y-%m-%d").is_ok()
}

/// The arguments after the command word, consumed left to right.
struct Args<'a> {
    rest: &'a str,
}

impl<'a> Args<'a> {
    fn new(rest: &'a str) -> Self {
        Self { rest: rest.trim() }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<&'a str> {
        let (word, _) = split_word(self.rest);
        (!word.is_empty()).then_some(word)
    }

    fn next(&mut self, spec: &Spec, what: &str) -> Result<&'a str, CommandError> {
        let (word, rest) = split_word(self.rest);
        if word.is_empty() {
            return Err(spec.err(format!("{what} is missing")));
        }
        self.rest = rest;
        Ok(word)
    }

    fn end(&self, spec: &Spec) -> Result<(), CommandError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(spec.err(format!(
                "I don't understand \"{}\" at the end",
                self.rest.chars().take(40).collect::<String>()
            )))
        }
    }

    fn user(&mut self, spec: &Spec, what: &str) -> Result<OwnedUserId, CommandError> {
        let word = self.next(spec, what)?;
        UserId::parse(word)
            .map_err(|_| spec.err(format!("{what} must be a Matrix ID such as @name:server")))
    }

    fn id(&mut self, spec: &Spec, what: &str) -> Result<IdRef, CommandError> {
        let word = self.next(spec, &format!("the id of {what}"))?;
        IdRef::parse(word).ok_or_else(|| {
            spec.err(format!(
                "\"{}\" is not an id: give at least its first {MIN_REF_LEN} characters",
                word.chars().take(40).collect::<String>()
            ))
        })
    }

    fn when(&mut self, spec: &Spec) -> Result<When, CommandError> {
        let day = self.next(spec, "the date")?;
        let day = match day.to_ascii_lowercase().as_str() {
            "today" => Day::Today,
            "tomorrow" => Day::Tomorrow,
            text => Day::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                spec.err(format!(
                    "\"{}\" is not a date: use YYYY-MM-DD, today or tomorrow",
                    text.chars().take(40).collect::<String>()
                ))
            })?),
        };
        let time = self.next(spec, "the time")?;
        let time = NaiveTime::parse_from_str(time, "%H:%M").map_err(|_| {
            spec.err(format!(
                "\"{}\" is not a time: use HH:MM on the 24-hour clock",
                time.chars().take(40).collect::<String>()
            ))
        })?;
        Ok(When { day, time })
    }

    fn length(&mut self, spec: &Spec) -> Result<i64, CommandError> {
        let word = self.next(spec, "the length")?;
        parse_length(word).ok_or_else(|| length_error(spec, word))
    }

    fn optional_length(&mut self, spec: &Spec) -> Result<Option<i64>, CommandError> {
        match self.peek() {
            None => Ok(None),
            Some(word) => {
                let minutes = parse_length(word).ok_or_else(|| length_error(spec, word))?;
                self.rest = split_word(self.rest).1;
                Ok(Some(minutes))
            }
        }
    }

    fn kind(&mut self) -> Option<AppointmentKind> {
        let kind = match self.peek()?.to_ascii_lowercase().as_str() {
            "video" => AppointmentKind::Video,
            "in-person" | "in_person" | "inperson" | "visit" => AppointmentKind::InPerson,
            _ => return None,
        };
        self.rest = split_word(self.rest).1;
        Some(kind)
    }

    fn reason(&mut self, spec: &Spec) -> Result<String, CommandError> {
        let reason = std::mem::take(&mut self.rest).trim();
        if reason.is_empty() {
            Err(spec.err("the reason is missing"))
        } else {
            Ok(reason.to_owned())
        }
    }
}

fn length_error(spec: &Spec, word: &str) -> CommandError {
    spec.err(format!(
        "\"{}\" is not a length: use minutes and hours such as 30m, 1h or 1h30m (at most {} hours)",
        word.chars().take(40).collect::<String>(),
        MAX_DURATION_MINUTES / 60
    ))
}

/// `2d`, `1h30m`, `45min`, `2h15` → minutes, units from largest to smallest. A bare number is refused:
/// minutes or hours would be a guess. Callers bound the result to what they accept.
pub fn parse_minutes(text: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 4] = [("min", 1), ("m", 1), ("h", 60), ("d", 24 * 60)];
    let text = text.to_ascii_lowercase();
    let mut rest = text.as_str();
    let mut total: i64 = 0;
    let mut last_factor: Option<i64> = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n = i64::from(rest.get(..digits)?.parse::<u32>().ok()?);
        rest = rest.get(digits..)?;
        let (unit, factor) = match UNITS.iter().find(|(u, _)| rest.starts_with(u)) {
            Some(&(unit, factor)) => (unit, factor),
            // `2h15`: trailing minutes after hours.
            None if rest.is_empty() && last_factor == Some(60) => ("", 1),
            None => return None,
        };
        if last_factor.is_some_and(|last| factor >= last) {
            return None;
        }
        total = total.checked_add(n * factor)?;
        last_factor = Some(factor);
        rest = rest.get(unit.len()..)?;
    }
    last_factor.map(|_| total)
}

/// `30m`, `45min`, `1h`, `1h30m`, `2h15` → minutes, within what an appointment may last.
pub fn parse_length(text: &str) -> Option<i64> {
    parse_minutes(text).filter(|m| (1..=MAX_DURATION_MINUTES).contains(m))
}

/// A length in minutes as the assistant writes it (`30 min`, `1 h`, `1 h 30 min`).
pub fn format_length(minutes: i64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The `!help` text for a person with the given role (`None`: no role; they get the patient's list).
pub fn help(as_doctor: bool) -> String {
    let mut text = String::from("I am the clinic assistant. I understand these commands:\n");
    if as_doctor {
        text.push_str(concat!(
            "!today — your appointments today\n",
            "!upcoming — your next appointments\n",
            "!book @patient:server 2026-12-01 10:30 30m [video|in-person] reason — book an appointment\n",
            "!reschedule <id> 2026-12-01 11:00 [30m] — move an appointment\n",
            "!cancel <id> — cancel an appointment\n",
            "!consult @patient:server — open the consultation room with a patient\n",
            "!requests — appointment requests waiting for you\n",
            "!accept <id> [2026-12-01 10:30 [30m]] — accept a request (at the time given, or the one asked for)\n",
            "!decline <id> — decline a request\n",
        ));
    } else {
        text.push_str(concat!(
            "!upcoming — your next appointments\n",
            "!request [2026-12-01 10:30] [video|in-person] reason — ask your doctor for an appointment\n",
            "!requests — your appointment requests\n",
        ));
    }
    text.push_str(concat!(
        "!unread — messages from your consultations you have not read\n",
        "!calendar — a link to your calendar page (it works once, for a short while)\n",
        "!ical — a private link for your phone's calendar; !ical off stops it\n",
        "!help — this list\n",
        "Dates may be written today or tomorrow; times are the clinic's, on the 24-hour clock. ",
        "An <id> is the 8-character code I show beside each appointment or request.",
    ));
    text
}

/// The instant a typed moment names, given a way to read clinic wall-clock times.
pub fn resolve_when<E>(
    when: When,
    today: NaiveDate,
    to_utc: impl FnOnce(chrono::NaiveDateTime) -> Result<Timestamp, E>,
) -> Result<Timestamp, E> {
    to_utc(when.day.resolve(today).and_time(when.time))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn date(s: &str) -> Day {
        Day::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn usage_of(result: Result<Command, CommandError>) -> (String, &'static str) {
        match result {
            Err(CommandError::Usage { problem, usage }) => (problem, usage),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_issue_s_booking_example_parses() {
        let c = parse("!book @patient:clinic.example 2026-12-01 10:30 30m Follow-up").unwrap();
        assert_eq!(
            c,
            Command::Book {
                patient: UserId::parse("@patient:clinic.example").unwrap(),
                when: When {
                    day: date("2026-12-01"),
                    time: at(10, 30)
                },
                minutes: 30,
                kind: AppointmentKind::Video,
                reason: "Follow-up".into(),
            }
        );
    }

    #[test]
    fn book_takes_a_kind_relative_days_and_a_long_reason() {
        let c = parse("!BOOK  @p:s tomorrow 09:05 1h15m in-person  Blood test, fasting ").unwrap();
        assert_eq!(
            c,
            Command::Book {
                patient: UserId::parse("@p:s").unwrap(),
                when: When {
                    day: Day::Tomorrow,
                    time: at(9, 5)
                },
                minutes: 75,
                kind: AppointmentKind::InPerson,
                reason: "Blood test, fasting".into(),
            }
        );
    }

    #[test]
    fn malformed_bookings_say_what_is_wrong_and_how_to_write_it() {
        for (text, needle) in [
            ("!book", "the patient is missing"),
            ("!book patient 2026-12-01 10:30 30m x", "Matrix ID"),
            ("!book @p:s", "the date is missing"),
            ("!book @p:s 01/12/2026 10:30 30m x", "not a date"),
            ("!book @p:s 2026-02-30 10:30 30m x", "not a date"),
            ("!book @p:s 2026-12-01", "the time is missing"),
            ("!book @p:s 2026-12-01 25:00 30m x", "not a time"),
            ("!book @p:s 2026-12-01 10.30 30m x", "not a time"),
            ("!book @p:s 2026-12-01 10:30", "the length is missing"),
            ("!book @p:s 2026-12-01 10:30 30 x", "not a length"),
            ("!book @p:s 2026-12-01 10:30 0m x", "not a length"),
            ("!book @p:s 2026-12-01 10:30 13h x", "not a length"),
            ("!book @p:s 2026-12-01 10:30 30m", "the reason is missing"),
            (
                "!book @p:s 2026-12-01 10:30 30m video",
                "the reason is missing",
            ),
        ] {
            let (problem, usage) = usage_of(parse(text));
            assert!(problem.contains(needle), "{text}: {problem}");
            assert_eq!(usage, BOOK.usage, "{text}");
        }
    }

    #[test]
    fn reschedule_and_cancel_take_an_id_prefix() {
        assert_eq!(
            parse("!reschedule 0192ABCD-12 2026-12-02 11:00").unwrap(),
            Command::Reschedule {
                appointment: IdRef("0192abcd-12".into()),
                when: When {
                    day: date("2026-12-02"),
                    time: at(11, 0)
                },
                minutes: None,
            }
        );
        assert_eq!(
            parse("!move 0192abcd today 08:00 45min").unwrap(),
            Command::Reschedule {
                appointment: IdRef("0192abcd".into()),
                when: When {
                    day: Day::Today,
                    time: at(8, 0)
                },
                minutes: Some(45),
            }
        );
        assert_eq!(
            parse("!cancel #0192abcd").unwrap(),
            Command::Cancel {
                appointment: IdRef("0192abcd".into())
            }
        );
        let (problem, _) = usage_of(parse("!cancel 0192"));
        assert!(problem.contains("at least its first 8"), "{problem}");
        let (problem, _) = usage_of(parse("!cancel zzzzzzzzzz"));
        assert!(problem.contains("not an id"), "{problem}");
        let (problem, _) = usage_of(parse("!cancel 0192abcd now"));
        assert!(problem.contains("at the end"), "{problem}");
        let (problem, _) = usage_of(parse("!reschedule 0192abcd 2026-12-02 11:00 soon"));
        assert!(problem.contains("not a length"), "{problem}");
        let (problem, _) = usage_of(parse("!cancel"));
        assert!(problem.contains("missing"), "{problem}");
    }

    #[test]
    fn requests_and_their_answers() {
        assert_eq!(parse("!requests").unwrap(), Command::Requests);
        assert_eq!(
            parse("!accept 0192abcd").unwrap(),
            Command::Accept {
                request: IdRef("0192abcd".into()),
                when: None,
                minutes: None
            }
        );
        assert_eq!(
            parse("!accept 0192abcd 2026-12-03 14:00 20m").unwrap(),
            Command::Accept {
                request: IdRef("0192abcd".into()),
                when: Some(When {
                    day: date("2026-12-03"),
                    time: at(14, 0)
                }),
                minutes: Some(20)
            }
        );
        assert_eq!(
            parse("!decline 0192abcd").unwrap(),
            Command::Decline {
                request: IdRef("0192abcd".into())
            }
        );
        assert_eq!(
            parse("!request Refill of my prescription").unwrap(),
            Command::Request {
                doctor: None,
                when: None,
                kind: AppointmentKind::Video,
                reason: "Refill of my prescription".into()
            }
        );
        assert_eq!(
            parse("!request @dr:s 2026-12-03 09:00 in-person check-up").unwrap(),
            Command::Request {
                doctor: Some(UserId::parse("@dr:s").unwrap()),
                when: Some(When {
                    day: date("2026-12-03"),
                    time: at(9, 0)
                }),
                kind: AppointmentKind::InPerson,
                reason: "check-up".into()
            }
        );
        let (problem, _) = usage_of(parse("!request"));
        assert!(problem.contains("reason"), "{problem}");
        let (problem, _) = usage_of(parse("!request @not-an-id check-up"));
        assert!(problem.contains("Matrix ID"), "{problem}");
        let (problem, _) = usage_of(parse("!request tomorrow check-up"));
        assert!(problem.contains("not a time"), "{problem}");
        let (problem, _) = usage_of(parse("!accept 0192abcd 2026-12-03"));
        assert!(problem.contains("time is missing"), "{problem}");
    }

    #[test]
    fn bare_commands_refuse_arguments() {
        for (text, command) in [
            ("!help", Command::Help),
            ("  !Today ", Command::Today),
            ("!upcoming", Command::Upcoming),
            ("!next", Command::Upcoming),
            ("!unread", Command::Unread),
            ("!calendar", Command::Calendar),
            ("!ical", Command::Ical { off: false }),
            ("!ICAL off", Command::Ical { off: true }),
            ("!ical revoke", Command::Ical { off: true }),
        ] {
            assert_eq!(parse(text).unwrap(), command, "{text}");
        }
        let (problem, usage) = usage_of(parse("!ical please"));
        assert!(problem.contains("\"please\""), "{problem}");
        assert_eq!(usage, "!ical [off]");
        let (problem, _) = usage_of(parse("!ical off now"));
        assert!(problem.contains("now"), "{problem}");
        let (problem, usage) = usage_of(parse("!today please"));
        assert!(problem.contains("takes nothing"), "{problem}");
        assert_eq!(usage, "!today");
        assert_eq!(
            parse("!consult @p:s").unwrap(),
            Command::Consult {
                patient: UserId::parse("@p:s").unwrap()
            }
        );
    }

    #[test]
    fn anything_else_is_refused_with_a_pointer_to_help() {
        assert_eq!(parse("hello"), Err(CommandError::NotACommand));
        assert_eq!(parse(""), Err(CommandError::NotACommand));
        assert_eq!(parse("!"), Err(CommandError::Unknown(String::new())));
        assert_eq!(
            parse("!frobnicate now"),
            Err(CommandError::Unknown("frobnicate".into()))
        );
        assert_eq!(
            parse(&format!("!book {}", "x".repeat(MAX_COMMAND_LEN))),
            Err(CommandError::TooLong)
        );
        assert!(
            CommandError::Unknown("x".into())
                .to_string()
                .contains("!help")
        );
    }

    #[test]
    fn odd_input_never_panics() {
        // Multi-byte text, control characters and lone punctuation in every position.
        let words = [
            "!book",
            "!request",
            "!accept",
            "@",
            "@é:ß",
            "2026-12-01",
            "24:00",
            "ü",
            "h",
            "1h",
            "m",
            "\u{0}",
            "—",
            "today",
            "video",
            "#",
            "-",
            "9999999999999999999h",
        ];
        for a in words {
            for b in words {
                for c in words {
                    let _ = parse(&format!("{a} {b} {c} {a}"));
                }
            }
        }
    }

    #[test]
    fn lengths() {
        for (text, minutes) in [
            ("30m", Some(30)),
            ("45min", Some(45)),
            ("1h", Some(60)),
            ("1h30m", Some(90)),
            ("2h15", Some(135)),
            ("12h", Some(720)),
            ("12h1m", None),
            ("30", None),
            ("m", None),
            ("h", None),
            ("-5m", None),
            ("1x", None),
            ("99999999999999999999h", None),
        ] {
            assert_eq!(parse_length(text), minutes, "{text}");
        }
        assert_eq!(format_length(30), "30 min");
        assert_eq!(format_length(60), "1 h");
        assert_eq!(format_length(90), "1 h 30 min");
    }

    #[test]
    fn references_match_ids_by_prefix() {
        let r = IdRef::parse("0192ABCD").unwrap();
        assert!(r.matches("0192abcd-0000-7000-8000-000000000000"));
        assert!(!r.matches("0192abce-0000-7000-8000-000000000000"));
        assert_eq!(short_id("0192abcd-0000-7000-8000-000000000000"), "0192abcd");
        assert!(IdRef::parse(&"a".repeat(37)).is_none());
    }

    #[test]
    fn help_differs_by_role() {
        assert!(help(true).contains("!book"));
        assert!(!help(false).contains("!book"));
        assert!(help(false).contains("!request"));
        assert!(help(true).contains("!unread") && help(false).contains("!unread"));
    }

    #[test]
    fn relative_days_resolve_against_the_clinic_s_today() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(Day::Tomorrow.resolve(today).to_string(), "2027-01-01");
        assert_eq!(Day::Today.resolve(today), today);
    }
}
