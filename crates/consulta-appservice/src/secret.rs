//! Secrets that must never reach a log line or an error message.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The value admins write in the example config where Consulta should generate a secret.
pub const PLACEHOLDER: &str = "generate";

/// A token, password or key. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// 64 random alphanumeric characters (≈ 381 bits), safe in URLs, headers and YAML.
    pub fn generate() -> Self {
        Self(
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(64)
                .map(char::from)
                .collect(),
        )
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether this is still the example config's placeholder (or empty).
    pub fn is_placeholder(&self) -> bool {
        let v = self.0.trim();
        v.is_empty() || v == PLACEHOLDER
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret kept only as a digest, to check presented tokens in constant time.
///
/// Both sides are hashed before comparing, so neither the content nor the length of the expected token
/// leaks through timing.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Digest of the expected token.
    pub fn of(secret: &Secret) -> Self {
        Self(Sha256::digest(secret.expose().as_bytes()).into())
    }

    /// Whether `presented` is the expected token.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(
            format!("{:?}", TokenDigest::of(&s)),
            "TokenDigest([redacted])"
        );
    }

    #[test]
    fn generated_secrets_are_long_random_and_not_placeholders() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(!a.is_placeholder());
        assert!(Secret::new("generate").is_placeholder());
        assert!(Secret::new("  ").is_placeholder());
    }

    #[test]
    fn digest_matches_only_the_same_token() {
        let d = TokenDigest::of(&Secret::new("right"));
        assert!(d.matches("right"));
        assert!(!d.matches("wrong"));
        assert!(!d.matches("righ"));
        assert!(!d.matches(""));
    }
}
