//! Carrying out the assistant's commands: parse (`consulta_core::commands`), resolve references and
//! clinic times, call the services every other channel uses (appointments, consultations, read state),
//! and write the answer. Permissions are the services' own; this module only turns their answers and
//! refusals into sentences.

use chrono::Duration;
use consulta_core::commands::{Command, IdRef, When, format_length, help, parse, short_id};
use consulta_core::notices::clinic_time;
use consulta_core::{
    Appointment, AppointmentKind, AppointmentRequest, AppointmentStatus, ConsultationStatus,
    OwnedUserId, RequestStatus, Role, Slot, Timestamp, UserId,
};

use crate::appointments::{
    Acceptance, AppointmentError, AppointmentUpdate, NewAppointment, NewRequest, Via,
};
use crate::state::AppState;

/// Why a command could not be carried out, as told to the person.
#[derive(Debug)]
enum Failure {
    /// A sentence for the person.
    Say(String),
    /// The appointments service refused or failed.
    Appointments(AppointmentError),
    /// Something on our side failed; the details went to the log where it happened.
    Internal,
}

impl From<AppointmentError> for Failure {
    fn from(e: AppointmentError) -> Self {
        Failure::Appointments(e)
    }
}

impl From<consulta_store::StoreError> for Failure {
    fn from(e: consulta_store::StoreError) -> Self {
        tracing::error!(error = %e, "store failed while carrying out a command");
        Failure::Internal
    }
}

/// The answer to one message in a Care desk room from its owner.
pub async fn answer(state: &AppState, actor: &UserId, body: &str) -> String {
    let command = match parse(body) {
        Ok(command) => command,
        Err(e) => return e.to_string(),
    };
    let role = match state.role_of(actor).await {
        Ok(role) => role,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a role for a command");
            return SORRY.to_owned();
        }
    };
    match carry_out(state, actor, role, command).await {
        Ok(text) => text,
        Err(Failure::Say(text)) => text,
        Err(Failure::Appointments(AppointmentError::Store(e))) => {
            tracing::error!(error = %e, "store failed while carrying out a command");
            SORRY.to_owned()
        }
        Err(Failure::Appointments(e)) => format!("I could not do that: {e}."),
        Err(Failure::Internal) => SORRY.to_owned(),
    }
}

const SORRY: &str = "Something went wrong on our side. Please try again in a few minutes.";

async fn carry_out(
    state: &AppState,
    actor: &UserId,
    role: Option<Role>,
    command: Command,
) -> Result<String, Failure> {
    let svc = state.appointments();
    let tz = svc.time_zone();
    let now = state.clock().now();
    let as_doctor = matches!(role, Some(Role::Doctor | Role::Admin));
    let doctors_only =
        || Failure::Say("Only doctors can do that. Send !help to see what you can do.".to_owned());
    match command {
        Command::Help => Ok(help(as_doctor)),
        Command::Today => {
            if !as_doctor {
                return Err(doctors_only());
            }
            let from = tz.start_of_day(now);
            let to = tz.start_of_day(from + Duration::hours(36));
            let list = svc.list(actor, Via::Bot, None, from, to).await?;
            Ok(listing(state, actor, "Today", &list))
        }
        Command::Upcoming => {
            let list = svc.next(actor, Via::Bot, 10).await?;
            Ok(listing(state, actor, "Your next appointments", &list))
        }
        Command::Book {
            patient,
            when,
            minutes,
            kind,
            reason,
        } => {
            let start = resolve(state, actor, "book", when).await?;
            let slot = Slot::new(start, minutes).map_err(AppointmentError::from)?;
            let room_id = state
                .store()
                .open_consultation_between(actor, &patient)
                .await?
                .map(|c| c.room_id);
            let a = svc
                .book(
                    actor,
                    Via::Bot,
                    NewAppointment {
                        doctor: None,
                        patient,
                        slot,
                        kind,
                        reason,
                        room_id,
                    },
                )
                .await?;
            Ok(format!(
                "Booked: {}. Both of you will be reminded.",
                line(state, actor, &a)
            ))
        }
        Command::Reschedule {
            appointment,
            when,
            minutes,
        } => {
            let a = find_appointment(state, actor, &appointment).await?;
            let start = resolve(state, actor, "reschedule", when).await?;
            let a = svc
                .update(
                    actor,
                    Via::Bot,
                    a.id,
                    AppointmentUpdate {
                        start: Some(start),
                        duration_minutes: minutes,
                        ..AppointmentUpdate::default()
                    },
                )
                .await?;
            Ok(format!("Moved: {}.", line(state, actor, &a)))
        }
        Command::Cancel { appointment } => {
            let a = find_appointment(state, actor, &appointment).await?;
            let a = svc.cancel(actor, Via::Bot, a.id).await?;
            Ok(format!("Cancelled: {}.", line(state, actor, &a)))
        }
        Command::Consult { patient } => {
            if !as_doctor {
                return Err(doctors_only());
            }
            match state.start_consultation(actor, &patient).await {
                Ok((room, created)) => Ok(format!(
                    "{} consultation with {patient}: https://matrix.to/#/{room}",
                    if created {
                        "I opened the"
                    } else {
                        "Here is your"
                    }
                )),
                Err(crate::consultations::StartError::Homeserver(e)) => {
                    tracing::info!(error = %e, "consultation not started from a command");
                    Err(Failure::Say(format!(
                        "I could not open a consultation with {patient}: the clinic's rules refused it \
                         (is {patient} a patient of this clinic?)."
                    )))
                }
                Err(crate::consultations::StartError::Store(e)) => Err(e.into()),
            }
        }
        Command::Requests => {
            let status = as_doctor.then_some(RequestStatus::Pending);
            let list = svc.requests(actor, Via::Bot, status).await?;
            if list.is_empty() {
                return Ok(if as_doctor {
                    "No appointment requests are waiting for you.".to_owned()
                } else {
                    "You have no appointment requests.".to_owned()
                });
            }
            let mut text = String::from(if as_doctor {
                "Appointment requests waiting for you:"
            } else {
                "Your appointment requests:"
            });
            for r in &list {
                text.push('\n');
                text.push_str(&request_line(state, actor, r));
            }
            if as_doctor {
                text.push_str("\nAnswer with !accept <id> [date time] or !decline <id>.");
            }
            Ok(text)
        }
        Command::Accept {
            request,
            when,
            minutes,
        } => {
            let r = find_request(state, actor, &request).await?;
            let slot = match when {
                Some(when) => {
                    let start = resolve(state, actor, "accept_request", when).await?;
                    Some(
                        Slot::new(start, minutes.unwrap_or(r.duration_minutes))
                            .map_err(AppointmentError::from)?,
                    )
                }
                None => None,
            };
            let room_id = state
                .store()
                .open_consultation_between(actor, &r.patient)
                .await?
                .map(|c| c.room_id);
            let (_, a) = svc
                .accept_request(
                    actor,
                    Via::Bot,
                    r.id,
                    Acceptance {
                        slot,
                        kind: None,
                        room_id,
                    },
                )
                .await?;
            Ok(format!("Accepted and booked: {}.", line(state, actor, &a)))
        }
        Command::Decline { request } => {
            let r = find_request(state, actor, &request).await?;
            svc.decline_request(actor, Via::Bot, r.id).await?;
            Ok(format!(
                "Declined the request from {} [{}].",
                r.patient,
                short_id(&r.id.to_string())
            ))
        }
        Command::Request {
            doctor,
            when,
            kind,
            reason,
        } => {
            let doctor = match doctor {
                Some(d) => d,
                None => own_doctor(state, actor).await?,
            };
            let preferred_start = match when {
                Some(when) => Some(resolve(state, actor, "request", when).await?),
                None => None,
            };
            let r = svc
                .request(
                    actor,
                    Via::Bot,
                    NewRequest {
                        doctor: doctor.clone(),
                        preferred_start,
                        duration_minutes: 30,
                        kind,
                        reason,
                    },
                )
                .await?;
            let doctor_notice = format!(
                "New appointment request from {actor} [{}]. Send !requests to see it.",
                short_id(&r.id.to_string())
            );
            state
                .enqueue_notice(&format!("request:{}", r.id), &doctor, &doctor_notice)
                .await?;
            Ok(format!(
                "I sent your request to {doctor} [{}]. You will hear from me when they answer.",
                short_id(&r.id.to_string())
            ))
        }
        Command::Unread => unread(state, actor).await,
        Command::Calendar => {
            let url = state.calendar_sign_in_link(actor).await?;
            Ok(format!(
                "Your calendar: {url}\nThe link signs you in once and works for {} minutes. Send !calendar again for a new one.",
                state.config().appointments.sign_in_link_minutes
            ))
        }
        Command::Ical { off: false } => {
            let url = state.new_calendar_feed(actor).await?;
            Ok(format!(
                "Your private calendar feed: {url}\nAdd it to your phone's calendar as a subscription. It shows when your appointments are, not what they are about. Anyone with the link can see those times: keep it to yourself. Send !ical again for a new link (the old one stops working), or !ical off to stop it."
            ))
        }
        Command::Ical { off: true } => Ok(if state.revoke_calendar_feed(actor).await? {
            "Your calendar feed link no longer works.".to_owned()
        } else {
            "You had no calendar feed link.".to_owned()
        }),
    }
}

/// Reads a typed moment in the clinic's time zone (audited like any refused input when it cannot be).
async fn resolve(
    state: &AppState,
    actor: &UserId,
    op: &str,
    when: When,
) -> Result<Timestamp, Failure> {
    let tz = state.appointments().time_zone();
    let today = tz.local(state.clock().now()).date();
    match consulta_core::commands::resolve_when(when, today, |local| tz.to_utc(local)) {
        Ok(t) => Ok(t),
        Err(e) => Err(state
            .appointments()
            .refused_input(actor, Via::Bot, op, e.into())
            .await
            .into()),
    }
}

/// The actor's appointment a reference names, among those from a day ago to a year ahead.
async fn find_appointment(
    state: &AppState,
    actor: &UserId,
    reference: &IdRef,
) -> Result<Appointment, Failure> {
    let now = state.clock().now();
    let list = state
        .appointments()
        .list(
            actor,
            Via::Bot,
            None,
            now - Duration::days(1),
            now + Duration::days(365),
        )
        .await?;
    pick_one(
        list.into_iter()
            .filter(|a| reference.matches(&a.id.to_string()))
            .collect(),
        reference,
        ("appointments", "!upcoming"),
    )
}

/// The one item a reference matched, or a sentence saying why there is none.
fn pick_one<T>(
    mut found: Vec<T>,
    reference: &IdRef,
    (items, list_command): (&str, &str),
) -> Result<T, Failure> {
    match (found.pop(), found.is_empty()) {
        (Some(one), true) => Ok(one),
        (None, _) => Err(Failure::Say(format!(
            "None of your {items} has the id {}. Send {list_command} to see them.",
            reference.as_str()
        ))),
        (Some(_), false) => Err(Failure::Say(format!(
            "Several {items} start with {}: give more of the id.",
            reference.as_str()
        ))),
    }
}

/// The request a reference names, among the actor's.
async fn find_request(
    state: &AppState,
    actor: &UserId,
    reference: &IdRef,
) -> Result<AppointmentRequest, Failure> {
    let list = state.appointments().requests(actor, Via::Bot, None).await?;
    pick_one(
        list.into_iter()
            .filter(|r| reference.matches(&r.id.to_string()))
            .collect(),
        reference,
        ("requests", "!requests"),
    )
}

/// The one doctor a patient has an open consultation with.
async fn own_doctor(state: &AppState, patient: &UserId) -> Result<OwnedUserId, Failure> {
    let mut doctors: Vec<OwnedUserId> = state
        .store()
        .consultations_of(patient)
        .await?
        .into_iter()
        .filter(|c| c.patient == patient && c.status == ConsultationStatus::Open)
        .map(|c| c.doctor)
        .collect();
    doctors.sort();
    doctors.dedup();
    match doctors.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::Say(
            "You have no doctor at this clinic yet, so I cannot send a request. Your care team will contact you."
                .to_owned(),
        )),
        several => Err(Failure::Say(format!(
            "You have several doctors; name one: !request @doctor:server [date time] reason. Your doctors: {}",
            several
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn unread(state: &AppState, actor: &UserId) -> Result<String, Failure> {
    let states = state.read_state_of(actor).await?;
    let waiting: Vec<_> = states.iter().filter(|s| s.unread > 0).collect();
    if waiting.is_empty() {
        return Ok("You have read every message in your consultations.".to_owned());
    }
    let tz = state.appointments().time_zone();
    let total: u64 = waiting.iter().map(|s| s.unread).sum();
    let mut text = format!(
        "You have {total} unread message{} in {} consultation{}:",
        if total == 1 { "" } else { "s" },
        waiting.len(),
        if waiting.len() == 1 { "" } else { "s" }
    );
    for s in waiting {
        text.push_str(&format!(
            "\n• {} from {}{} — https://matrix.to/#/{}",
            s.unread,
            s.with,
            s.unread_since
                .map(|t| format!(", the oldest from {}", clinic_time(t, tz)))
                .unwrap_or_default(),
            s.room_id
        ));
    }
    Ok(text)
}

fn kind_word(kind: AppointmentKind) -> &'static str {
    match kind {
        AppointmentKind::Video => "video",
        AppointmentKind::InPerson => "in person",
    }
}

/// One appointment as a line: time, length, kind, the other party, status, id. No reason.
fn line(state: &AppState, viewer: &UserId, a: &Appointment) -> String {
    let tz = state.appointments().time_zone();
    let other = if viewer == a.patient {
        format!("with {}", a.doctor)
    } else if viewer == a.doctor {
        format!("with {}", a.patient)
    } else {
        format!("{} with {}", a.doctor, a.patient)
    };
    let status = match a.status {
        AppointmentStatus::Scheduled => String::new(),
        other => format!(" ({})", other.as_str().replace('_', "-")),
    };
    format!(
        "{}, {}, {} {other}{status} [{}]",
        clinic_time(a.start, tz),
        format_length(a.duration_minutes),
        kind_word(a.kind),
        short_id(&a.id.to_string())
    )
}

fn listing(state: &AppState, viewer: &UserId, title: &str, list: &[Appointment]) -> String {
    if list.is_empty() {
        return format!("{title}: no appointments.");
    }
    let mut text = format!("{title}:");
    for a in list {
        text.push_str("\n• ");
        text.push_str(&line(state, viewer, a));
    }
    text
}

/// One request as a line. The doctor sees the patient's reason: they need it to answer, and the
/// Care desk room is theirs alone and end-to-end encrypted.
fn request_line(state: &AppState, viewer: &UserId, r: &AppointmentRequest) -> String {
    let tz = state.appointments().time_zone();
    let when = r
        .preferred_start
        .map(|t| format!("preferably {}", clinic_time(t, tz)))
        .unwrap_or_else(|| "no preferred time".to_owned());
    if viewer == r.doctor {
        format!(
            "• [{}] {} asks for a {} {} appointment, {when}: {}",
            short_id(&r.id.to_string()),
            r.patient,
            format_length(r.duration_minutes),
            kind_word(r.kind),
            r.reason
        )
    } else {
        format!(
            "• [{}] to {}, {when}: {}",
            short_id(&r.id.to_string()),
            r.doctor,
            r.status.as_str()
        )
    }
}
