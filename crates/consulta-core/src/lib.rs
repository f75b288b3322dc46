//! Consulta's domain: who people are (roles), what they share (consultations, appointments), and the
//! pure decisions taken over them.
//!
//! Nothing in this crate performs I/O or reads a clock. Callers pass `now` in (see [`clock`]), gather
//! facts from the store and the homeserver, and apply the decisions returned here. That keeps every
//! clinical rule testable without sockets or sleeps.

pub mod appointment;
pub mod appointment_request;
pub mod audit;
pub mod booking;
pub mod clinic_time;
pub mod clock;
pub mod commands;
pub mod consultation;
pub mod error;
pub mod ical;
pub mod ids;
pub mod notices;
pub mod policy;
pub mod read_state;
pub mod role;

pub use appointment::{Appointment, AppointmentKind, AppointmentStatus};
pub use appointment_request::{AppointmentRequest, RequestStatus};
pub use audit::{AuditAction, AuditRecord};
pub use booking::{BookingRefusal, Change, Conflict, ConflictParty, Slot, Who};
pub use clinic_time::{ClinicTimeZone, LocalTime, TimeError};
pub use clock::{Clock, ManualClock, Timestamp};
pub use consultation::{Consultation, ConsultationStatus};
pub use error::CoreError;
pub use ids::{AppointmentId, OwnedRoomId, OwnedUserId, RequestId, RoomId, UserId};
pub use policy::{
    Decision, Party, PolicySettings, Refusal, RoomContext, decide_create_room, decide_invite,
};
pub use role::Role;
