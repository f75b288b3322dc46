//! Audit records: who did what to whom, and whether it was allowed.
//!
//! Every refused action, every change of role and every access to appointments leaves one record.
//! Records name people and rooms by id and never carry message text or appointment reasons.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CoreError, OwnedUserId, Timestamp};

/// What was done or attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// The homeserver delivered a transaction whose body could not be used.
    TransactionRejected,
    /// A caller presented a wrong token to an authenticated route.
    AuthenticationFailed,
    /// A role was granted, changed or revoked.
    RoleChanged,
    /// The policy gate refused an action.
    ActionRefused,
    /// The policy gate allowed an action that needs a trace (e.g. a room creation).
    ActionAllowed,
    /// A doctor deleted a consultation (archived or purged).
    ConsultationDeleted,
    /// Appointments or appointment requests were read (one record per read, naming whose).
    AppointmentViewed,
    /// An appointment or request was booked, changed, cancelled, answered or withdrawn.
    AppointmentChanged,
    /// A read or change of appointments was refused (the detail names the rule).
    AppointmentRefused,
}

impl AuditAction {
    /// Every action, for parsing and exhaustive tests.
    pub const ALL: [AuditAction; 9] = [
        AuditAction::TransactionRejected,
        AuditAction::AuthenticationFailed,
        AuditAction::RoleChanged,
        AuditAction::ActionRefused,
        AuditAction::ActionAllowed,
        AuditAction::ConsultationDeleted,
        AuditAction::AppointmentViewed,
        AuditAction::AppointmentChanged,
        AuditAction::AppointmentRefused,
    ];

    /// The stable name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::TransactionRejected => "transaction_rejected",
            AuditAction::AuthenticationFailed => "authentication_failed",
            AuditAction::RoleChanged => "role_changed",
            AuditAction::ActionRefused => "action_refused",
            AuditAction::ActionAllowed => "action_allowed",
            AuditAction::ConsultationDeleted => "consultation_deleted",
            AuditAction::AppointmentViewed => "appointment_viewed",
            AuditAction::AppointmentChanged => "appointment_changed",
            AuditAction::AppointmentRefused => "appointment_refused",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| CoreError::UnknownVariant {
                kind: "audit action",
                value: s.to_owned(),
            })
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it happened.
    pub at: Timestamp,
    /// Who acted, when known (a Matrix user); `None` for the homeserver or an anonymous caller.
    pub actor: Option<OwnedUserId>,
    /// What was done.
    pub action: AuditAction,
    /// What it was done to: a user id, room id or appointment id, as text.
    pub target: Option<String>,
    /// A short machine-readable detail (`"create_room"`, `"patient -> doctor"`); never message text.
    pub detail: String,
}
