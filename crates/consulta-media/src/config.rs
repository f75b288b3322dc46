//! The settings of `consulta sfu`, read from a YAML file (`sfu.example.yaml` at the repository's
//! `bridge-config/`, with a comment above every key).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use consulta_sfu::auth::{ApiKeys, ApiSecret};
use consulta_sfu::core::SfuConfig;
use consulta_sfu::shell::ShellConfig;
use serde::Deserialize;

use crate::node::NodeConfig;

/// The example configuration, with a comment above every key.
pub const EXAMPLE: &str = include_str!("../../../bridge-config/sfu.example.yaml");

/// Secrets shorter than this are refused (HS256 keys should carry at least 256 bits).
const MIN_SECRET_LEN: usize = 32;

/// What can be wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not match the expected shape.
    #[error("invalid SFU configuration: {0}")]
    Parse(String),
    /// A value is unusable.
    #[error("invalid SFU configuration: {0}")]
    Invalid(String),
}

/// `consulta sfu`'s settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfuSettings {
    /// Signalling (`/rtc`) and `/metrics` listen here.
    pub listen: SocketAddr,
    /// The one UDP socket all media uses.
    pub udp_bind: SocketAddr,
    /// The IP clients send media to (public IP behind NAT); default: `udp_bind`'s IP.
    #[serde(default)]
    pub advertised_ip: Option<IpAddr>,
    /// API key → secret.
    pub keys: BTreeMap<String, String>,
    /// STUN/TURN servers handed to clients.
    #[serde(default)]
    pub ice_servers: Vec<IceServerSettings>,
    /// Seconds an empty room lives.
    #[serde(default = "default_empty_timeout")]
    pub empty_timeout_secs: u64,
    /// Participants per room (0 = unlimited).
    #[serde(default)]
    pub max_participants: u32,
    /// Estimate each subscriber's downlink and cap its layers to fit
    /// (`MediaConfig::congestion_control`); default true.
    #[serde(default = "default_bandwidth_estimation")]
    pub bandwidth_estimation: bool,
    /// `tracing` filter, e.g. `info` or `consulta_media=debug,info`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

/// One STUN/TURN server for clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerSettings {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default)]
    pub username: String,
    /// TURN credential.
    #[serde(default)]
    pub credential: String,
}

fn default_empty_timeout() -> u64 {
    300
}

fn default_bandwidth_estimation() -> bool {
    true
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl SfuSettings {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and checks YAML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let settings: Self =
            serde_norway::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "`keys` is empty: no token could ever be accepted".to_owned(),
            ));
        }
        for (key, secret) in &self.keys {
            if secret.contains("CHANGE_ME") || secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::Invalid(format!(
                    "the secret of key `{key}` is a placeholder or shorter than {MIN_SECRET_LEN} characters"
                )));
            }
        }
        if self.advertised_ip.is_none() && self.udp_bind.ip().is_unspecified() {
            return Err(ConfigError::Invalid(
                "`udp_bind` is a wildcard address: set `advertised_ip` to the address clients reach"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The node configuration these settings describe.
    pub fn node_config(&self) -> NodeConfig {
        let keys = self
            .keys
            .iter()
            .fold(ApiKeys::new(), |keys, (key, secret)| {
                keys.with(key.clone(), ApiSecret::new(secret.clone()))
            });
        NodeConfig {
            shell: ShellConfig {
                keys,
                core: SfuConfig {
                    empty_timeout: std::time::Duration::from_secs(self.empty_timeout_secs),
                    max_participants: self.max_participants,
                    ice_servers: self
                        .ice_servers
                        .iter()
                        .map(|s| livekit_protocol::IceServer {
                            urls: s.urls.clone(),
                            username: s.username.clone(),
                            credential: s.credential.clone(),
                        })
                        .collect(),
                    ..SfuConfig::default()
                },
                ..ShellConfig::default()
            },
            advertised_ip: self.advertised_ip,
            media: crate::peer::MediaConfig {
                congestion_control: self.bandwidth_estimation,
                ..crate::peer::MediaConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn every_key_of_the_example_has_a_comment_above_it() {
        let mut previous = "";
        for line in EXAMPLE.lines() {
            let trimmed = line.trim_start();
            let is_key = !trimmed.starts_with('#')
                && !trimmed.starts_with('-')
                && trimmed.contains(':')
                && !trimmed.is_empty();
            if is_key {
                assert!(
                    previous.trim_start().starts_with('#'),
                    "no comment above `{line}`"
                );
            }
            previous = line;
        }
    }

    #[test]
    fn the_example_refuses_to_run_until_its_secret_is_changed() {
        let error = SfuSettings::parse(EXAMPLE).unwrap_err();
        assert!(error.to_string().contains("placeholder"), "{error}");
        let fixed = EXAMPLE.replace("CHANGE_ME", "a-real-secret-that-is-long-enough-000");
        let settings = SfuSettings::parse(&fixed).unwrap();
        let node = settings.node_config();
        assert_eq!(node.shell.core.empty_timeout.as_secs(), 300);
        assert_eq!(node.advertised_ip, Some("127.0.0.1".parse().unwrap()));
        assert!(node.media.congestion_control);
        let off = fixed.replace("bandwidth_estimation: true", "bandwidth_estimation: false");
        assert!(
            !SfuSettings::parse(&off)
                .unwrap()
                .node_config()
                .media
                .congestion_control
        );
    }

    #[test]
    fn wildcard_binds_need_an_advertised_ip_and_unknown_keys_are_refused() {
        let base = "listen: 127.0.0.1:7880\nkeys:\n  k: a-real-secret-that-is-long-enough-000\n";
        let wildcard = format!("{base}udp_bind: 0.0.0.0:7882\n");
        assert!(SfuSettings::parse(&wildcard).is_err());
        let advertised = format!("{wildcard}advertised_ip: 203.0.113.7\n");
        assert!(SfuSettings::parse(&advertised).is_ok());
        let typo = format!("{advertised}udp_port: 1\n");
        assert!(SfuSettings::parse(&typo).is_err());
        let short = "listen: 127.0.0.1:7880\nudp_bind: 127.0.0.1:7882\nkeys:\n  k: short\n";
        assert!(SfuSettings::parse(short).is_err());
    }
}
