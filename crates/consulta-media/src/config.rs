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

/// The longest `empty_timeout_secs` (a week): a room is meant to outlive a dropped connection,
/// not to be kept for ever, and the deadline must stay a representable instant.
const MAX_EMPTY_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

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

/// `consulta sfu`'s settings. Their `Debug` output names the API keys but not their secrets.
#[derive(Clone, Deserialize)]
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

impl std::fmt::Debug for SfuSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuSettings")
            .field("listen", &self.listen)
            .field("udp_bind", &self.udp_bind)
            .field("advertised_ip", &self.advertised_ip)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("ice_servers", &self.ice_servers)
            .field("empty_timeout_secs", &self.empty_timeout_secs)
            .field("max_participants", &self.max_participants)
            .field("bandwidth_estimation", &self.bandwidth_estimation)
            .field("log_level", &self.log_level)
            .finish()
    }
}

/// One STUN/TURN server for clients. Its `Debug` output leaves out the credential.
#[derive(Clone, Deserialize)]
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

impl std::fmt::Debug for IceServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServerSettings")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl IceServerSettings {
    /// Browsers refuse a server without URLs, and a TURN server without credentials fails only
    /// when a patient's network needs it.
    fn check(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::Invalid(
                "an entry of `ice_servers` has no `urls`".to_owned(),
            ));
        }
        for url in &self.urls {
            let scheme = url.split(':').next().unwrap_or_default();
            match scheme {
                "stun" | "stuns" => {}
                "turn" | "turns" if self.username.is_empty() || self.credential.is_empty() => {
                    return Err(ConfigError::Invalid(format!(
                        "the TURN server `{url}` needs a `username` and a `credential`"
                    )));
                }
                "turn" | "turns" => {}
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "`{url}` in `ice_servers` is not a stun:, stuns:, turn: or turns: URL"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn default_empty_timeout() -> u64 {
    300
}

fn default_bandwidth_estimation() -> bool {
    true
}

fn default_log_level() -> String {
    "info,rtc_dtls=error".to_owned()
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
        self.check_addresses()?;
        if self.empty_timeout_secs > MAX_EMPTY_TIMEOUT_SECS {
            return Err(ConfigError::Invalid(format!(
                "`empty_timeout_secs` is {}: at most {MAX_EMPTY_TIMEOUT_SECS} (a week)",
                self.empty_timeout_secs
            )));
        }
        for server in &self.ice_servers {
            server.check()?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| ConfigError::Invalid(format!("`log_level` `{}`: {e}", self.log_level)))?;
        Ok(())
    }

    /// The address clients send media to must be one they can reach and the UDP socket can
    /// answer from.
    fn check_addresses(&self) -> Result<(), ConfigError> {
        let bound = self.udp_bind.ip();
        let Some(advertised) = self.advertised_ip else {
            if bound.is_unspecified() {
                return Err(ConfigError::Invalid(
                    "`udp_bind` is a wildcard address: set `advertised_ip` to the address clients reach"
                        .to_owned(),
                ));
            }
            return Ok(());
        };
        if advertised.is_unspecified() || advertised.is_multicast() {
            return Err(ConfigError::Invalid(format!(
                "`advertised_ip` {advertised} is not an address clients can send to"
            )));
        }
        if advertised.is_ipv4() != bound.is_ipv4() {
            return Err(ConfigError::Invalid(format!(
                "`advertised_ip` {advertised} and `udp_bind` {bound} are of different IP versions"
            )));
        }
        if advertised.is_loopback() && !bound.is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "`advertised_ip` is the loopback address {advertised}, but `udp_bind` {bound} is \
                 for other machines: clients could never reach it (leave `advertised_ip` out to \
                 advertise {bound}, or set the public address)"
            )));
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
        assert_eq!(node.advertised_ip, None, "udp_bind's address is advertised");
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
    fn debug_output_names_keys_and_turn_users_but_not_their_secrets() {
        let secret = "a-real-secret-that-is-long-enough-000";
        let credential = "turn-credential-xyz";
        let text = format!(
            "listen: 127.0.0.1:7880\nudp_bind: 127.0.0.1:7882\nkeys:\n  clinic-key: {secret}\n\
             ice_servers:\n  - urls: [\"turns:turn.clinic.example:443\"]\n    \
             username: turn-user\n    credential: {credential}\n"
        );
        let settings = SfuSettings::parse(&text).unwrap();
        let node = settings.node_config();
        assert_eq!(node.shell.core.ice_servers[0].credential, credential);
        for shown in [
            format!("{settings:?}"),
            format!("{:?}", node.shell.core),
            format!("{node:?}"),
        ] {
            assert!(shown.contains("turn.clinic.example"), "{shown}");
            assert!(shown.contains("turn-user"), "{shown}");
            assert!(!shown.contains(credential), "{shown}");
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(format!("{settings:?}").contains("clinic-key"));
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

    /// Parses `base` plus `extra`; the error's text if it is refused.
    fn refused(extra: &str) -> Option<String> {
        let base = "listen: 127.0.0.1:7880\nkeys:\n  k: a-real-secret-that-is-long-enough-000\n";
        SfuSettings::parse(&format!("{base}{extra}"))
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn an_advertised_address_clients_cannot_reach_is_refused() {
        let public = "udp_bind: 203.0.113.7:7882\n";
        assert_eq!(refused(public), None, "udp_bind's own address");
        let loopback = refused(&format!("{public}advertised_ip: 127.0.0.1\n")).unwrap();
        assert!(loopback.contains("loopback"), "{loopback}");
        for (bind, advertised) in [
            ("0.0.0.0:7882", "0.0.0.0"),
            ("0.0.0.0:7882", "224.0.0.1"),
            ("0.0.0.0:7882", "2001:db8::7"),
            ("[::]:7882", "203.0.113.7"),
        ] {
            let extra = format!("udp_bind: {bind}\nadvertised_ip: {advertised}\n");
            assert!(
                refused(&extra).is_some(),
                "{bind} advertised as {advertised}"
            );
        }
        let nat = "udp_bind: 10.0.0.5:7882\nadvertised_ip: 203.0.113.7\n";
        assert_eq!(refused(nat), None, "behind NAT");
        let local = "udp_bind: 127.0.0.1:7882\nadvertised_ip: 127.0.0.1\n";
        assert_eq!(refused(local), None, "a machine's own test set-up");
    }

    #[test]
    fn values_that_would_fail_later_are_refused_when_the_file_is_read() {
        let udp = "udp_bind: 127.0.0.1:7882\n";
        // A timeout past any representable instant used to panic when the first room emptied.
        let forever = refused(&format!("{udp}empty_timeout_secs: 18446744073709551615\n"));
        assert!(forever.unwrap().contains("empty_timeout_secs"));
        assert_eq!(refused(&format!("{udp}empty_timeout_secs: 604800\n")), None);
        let typo = refused(&format!("{udp}log_level: \"consulta_media=debg\"\n"));
        assert!(typo.unwrap().contains("log_level"));
        assert_eq!(
            refused(&format!("{udp}log_level: consulta_media=debug,info\n")),
            None
        );
        for servers in [
            "ice_servers:\n  - urls: []\n",
            "ice_servers:\n  - urls: [\"turn:turn.clinic.example:3478\"]\n",
            "ice_servers:\n  - urls: [\"https://turn.clinic.example\"]\n",
        ] {
            assert!(refused(&format!("{udp}{servers}")).is_some(), "{servers}");
        }
        let good = "ice_servers:\n  - urls: [\"stun:stun.clinic.example:3478\"]\n  - urls: [\"turns:turn.clinic.example:443\"]\n    username: u\n    credential: c\n";
        assert_eq!(refused(&format!("{udp}{good}")), None);
    }
}
