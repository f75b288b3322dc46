//! Consultations: the rooms in which one doctor and one patient talk.
//!
//! A consultation *is* a Matrix room; Consulta records who it belongs to so that policy, read state and
//! appointments can refer to it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CoreError, OwnedRoomId, OwnedUserId, Timestamp};

/// Whether a consultation is still in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsultationStatus {
    /// Both parties may write.
    Open,
    /// Deleted by the doctor and kept for the legal retention period, out of the patient's reach.
    Archived,
    /// Deleted by the doctor and purged from the homeserver.
    Purged,
}

impl ConsultationStatus {
    /// The stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultationStatus::Open => "open",
            ConsultationStatus::Archived => "archived",
            ConsultationStatus::Purged => "purged",
        }
    }
}

impl fmt::Display for ConsultationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsultationStatus {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ConsultationStatus::Open,
            ConsultationStatus::Archived,
            ConsultationStatus::Purged,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| CoreError::UnknownVariant {
            kind: "consultation status",
            value: s.to_owned(),
        })
    }
}

/// A conversation between a doctor and a patient, held in one Matrix room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consultation {
    /// The Matrix room that carries the conversation.
    pub room_id: OwnedRoomId,
    /// The doctor who started it.
    pub doctor: OwnedUserId,
    /// The patient it is with.
    pub patient: OwnedUserId,
    /// When the doctor started it.
    pub created_at: Timestamp,
    /// Open, archived or purged.
    pub status: ConsultationStatus,
    /// When it was archived or purged, if it was.
    pub closed_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in [
            ConsultationStatus::Open,
            ConsultationStatus::Archived,
            ConsultationStatus::Purged,
        ] {
            assert_eq!(s.as_str().parse::<ConsultationStatus>().unwrap(), s);
        }
        assert!("closed".parse::<ConsultationStatus>().is_err());
    }
}
