//! Roles: what a person is to the clinic.
//!
//! A local user with no role is *pending*: they may log in but are isolated until an admin or a doctor
//! validates them. That state is the absence of a role (`Option<Role>::None`), not a role of its own,
//! so that no code can "grant pending".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A person's role at the clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives care; never starts conversations or adds people.
    Patient,
    /// Gives care; starts and deletes conversations, books appointments.
    Doctor,
    /// Clinic staff who manage accounts. Not a doctor unless also given that role.
    Admin,
}

impl Role {
    /// Every role, for exhaustive tests and listings.
    pub const ALL: [Role; 3] = [Role::Patient, Role::Doctor, Role::Admin];

    /// The stable lowercase name used in config, storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| CoreError::UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_its_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
    }

    #[test]
    fn unknown_role_names_are_refused() {
        for bad in ["", "Doctor", "nurse", "pending", " patient"] {
            assert_eq!(
                bad.parse::<Role>(),
                Err(CoreError::UnknownRole(bad.to_owned()))
            );
        }
    }
}
