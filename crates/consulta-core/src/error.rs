//! The one error type of the core crate.

/// Why a domain value could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A role name that is not one of `patient`, `doctor`, `admin`.
    #[error("unknown role {0:?}: expected patient, doctor or admin")]
    UnknownRole(String),
    /// A string that is not a valid identifier of the given kind.
    #[error("invalid {kind}: {reason}")]
    InvalidId { kind: &'static str, reason: String },
    /// A stored or submitted value of an enumeration that this version does not know.
    #[error("unknown {kind} {value:?}")]
    UnknownVariant { kind: &'static str, value: String },
    /// An appointment whose length is zero, negative or absurdly long.
    #[error("appointment duration must be between 1 and {max} minutes, got {got}")]
    InvalidDuration { got: i64, max: i64 },
    /// Doctor and patient are the same person.
    #[error("an appointment needs two different people")]
    SamePerson,
}
