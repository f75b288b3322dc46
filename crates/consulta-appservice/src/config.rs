//! Consulta's configuration file, in the style admins know from mautrix bridges.
//!
//! One commented YAML file (`bridge-config/config.example.yaml`), environment overrides
//! `CONSULTA_<SECTION>__<KEY>` with a `_FILE` variant for secrets, tokens generated once and written back
//! into the file without disturbing its comments, and a refusal to run on placeholder secrets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use consulta_core::{ClinicTimeZone, OwnedUserId, Role, UserId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_norway::Value;

use crate::secret::{PLACEHOLDER, Secret};

/// The example configuration, shipped in the binary for `consulta generate-config`.
pub const EXAMPLE: &str = include_str!("../../../bridge-config/config.example.yaml");

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "CONSULTA_";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse or does not have the expected keys.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// An environment override could not be applied.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// Which variable.
        var: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value is present but unusable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What to do about it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How Consulta reaches the homeserver.
    pub homeserver: HomeserverConfig,
    /// How the homeserver reaches Consulta.
    pub appservice: AppserviceConfig,
    /// The pre-event gate's shared secret.
    pub antispam: AntispamConfig,
    /// The store.
    pub database: DatabaseConfig,
    /// The clinical rules.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Appointments.
    #[serde(default)]
    pub appointments: AppointmentsConfig,
    /// Roles by user ID or server name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub permissions: BTreeMap<String, Role>,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// `homeserver:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the client-server API.
    pub address: String,
    /// Server name.
    pub domain: String,
    /// A server admin's access token for admin APIs; empty disables them.
    #[serde(default = "empty_secret")]
    pub admin_token: Secret,
}

fn empty_secret() -> Secret {
    Secret::new("")
}

/// What deleting a conversation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Keep the room for the retention period, out of the patient's reach.
    #[default]
    Archive,
    /// Purge the room from the homeserver.
    Purge,
}

/// `policy:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Allow a third member in consultations.
    #[serde(default)]
    pub care_teams: bool,
    /// Partner homeservers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_servers: Vec<String>,
    /// Hours before an unread reminder; 0 disables.
    #[serde(default = "default_reminder_hours")]
    pub unread_reminder_hours: u32,
    /// Archive or purge on delete.
    #[serde(default)]
    pub on_delete: OnDelete,
}

fn default_reminder_hours() -> u32 {
    24
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            care_teams: false,
            allowed_servers: Vec::new(),
            unread_reminder_hours: default_reminder_hours(),
            on_delete: OnDelete::Archive,
        }
    }
}

/// `appointments:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentsConfig {
    /// The clinic's IANA time zone (default UTC).
    #[serde(default)]
    pub time_zone: ClinicTimeZone,
    /// When before an appointment its parties are reminded, such as `24h` and `15m`.
    #[serde(default = "default_reminders")]
    pub reminders: Vec<String>,
    /// Clinic wall-clock time (`HH:MM`) at which patients get the day's video joining instructions.
    #[serde(default = "default_day_of")]
    pub day_of_notice_at: String,
    /// Public URL of the calendar page, as patients' phones and Element reach it; empty: the page
    /// under `appservice.address` (right for a single-machine setup, not behind a proxy).
    #[serde(default)]
    pub calendar_url: String,
    /// How long a sign-in link from the assistant stays usable, in minutes (it also works only once).
    #[serde(default = "default_link_minutes")]
    pub sign_in_link_minutes: u32,
    /// How long the calendar page stays signed in, in hours.
    #[serde(default = "default_session_hours")]
    pub calendar_session_hours: u32,
}

impl Default for AppointmentsConfig {
    fn default() -> Self {
        Self {
            time_zone: ClinicTimeZone::default(),
            reminders: default_reminders(),
            day_of_notice_at: default_day_of(),
            calendar_url: String::new(),
            sign_in_link_minutes: default_link_minutes(),
            calendar_session_hours: default_session_hours(),
        }
    }
}

fn default_reminders() -> Vec<String> {
    vec!["24h".to_owned(), "15m".to_owned()]
}

fn default_day_of() -> String {
    "07:00".to_owned()
}

fn default_link_minutes() -> u32 {
    15
}

fn default_session_hours() -> u32 {
    12
}

impl Config {
    /// The calendar page's public URL, ending in `/`.
    pub fn calendar_page_url(&self) -> String {
        let url = if self.appointments.calendar_url.is_empty() {
            format!(
                "{}/_consulta/calendar/",
                self.appservice.address.trim_end_matches('/')
            )
        } else {
            self.appointments.calendar_url.clone()
        };
        if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        }
    }
}

impl AppointmentsConfig {
    /// The reminder offsets, checked.
    pub fn reminder_offsets(&self) -> Result<Vec<chrono::Duration>, ConfigError> {
        self.reminders
            .iter()
            .map(|text| {
                parse_offset(text).ok_or_else(|| ConfigError::Invalid {
                    key: "appointments.reminders",
                    reason: format!(
                        "{text:?} is not an offset: use a whole number with m, h or d (15m, 24h, 2d), at most 30d"
                    ),
                })
            })
            .collect()
    }

    /// The day-of notice time, checked.
    pub fn day_of_time(&self) -> Result<chrono::NaiveTime, ConfigError> {
        chrono::NaiveTime::parse_from_str(&self.day_of_notice_at, "%H:%M").map_err(|_| {
            ConfigError::Invalid {
                key: "appointments.day_of_notice_at",
                reason: format!("{:?} is not a time: use HH:MM", self.day_of_notice_at),
            }
        })
    }
}

/// `15m`, `24h`, `2d` → a positive offset of at most 30 days.
fn parse_offset(text: &str) -> Option<chrono::Duration> {
    consulta_core::commands::parse_minutes(text.trim())
        .filter(|m| (1..=30 * 24 * 60).contains(m))
        .map(chrono::Duration::minutes)
}

/// `appservice:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    /// URL the homeserver pushes to.
    pub address: String,
    /// Listen address.
    pub hostname: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Registration id.
    pub id: String,
    /// Prefix of the exclusive bot namespace.
    pub namespace_prefix: String,
    /// The clinic assistant.
    pub bot: BotConfig,
    /// Appservice → homeserver token.
    pub as_token: Secret,
    /// Homeserver → appservice token.
    pub hs_token: Secret,
}

/// `appservice.bot:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Localpart.
    pub username: String,
    /// Display name.
    pub displayname: String,
    /// Avatar mxc URI, or empty.
    #[serde(default)]
    pub avatar: String,
    /// Whether the assistant runs: answers commands and delivers notices (its outbox keeps them while off).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Device ID of the assistant's end-to-end encryption device (kept across restarts).
    #[serde(default = "default_bot_device")]
    pub device_id: String,
    /// Directory of the assistant's encrypted Matrix store: session, encryption keys, sync position.
    #[serde(default = "default_bot_store")]
    pub store_path: std::path::PathBuf,
    /// Passphrase that encrypts that store; empty: one derived from `hs_token`.
    #[serde(default)]
    pub store_passphrase: Secret,
}

fn yes() -> bool {
    true
}

fn default_bot_device() -> String {
    "CONSULTA_ASSISTANT".to_owned()
}

fn default_bot_store() -> std::path::PathBuf {
    "bot-store".into()
}

/// `antispam:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AntispamConfig {
    /// Bearer token the synapse-http-antispam module sends.
    pub secret: Secret,
}

/// `database:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL; may hold a password, hence a [`Secret`].
    pub uri: Secret,
    /// Pool size.
    #[serde(default = "default_max_open_conns")]
    pub max_open_conns: u32,
}

fn default_max_open_conns() -> u32 {
    8
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object a line.
    Json,
}

/// `logging:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A tracing filter.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Pretty or JSON.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::Pretty,
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

impl Config {
    /// Parses YAML text, applying overrides from `env` (pairs of variable name and value).
    pub fn from_yaml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value: Value =
            serde_norway::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        apply_env_overrides(&mut value, env)?;
        let config: Config =
            serde_norway::from_value(value).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.check_shape()?;
        Ok(config)
    }

    /// Reads a config file and applies the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml_with_env(&text, std::env::vars())
    }

    /// The registration's `sender_localpart`: the appservice's own user, distinct from the assistant
    /// (Synapse refuses `/sync` to the sender, and the assistant syncs to read encrypted commands).
    pub fn sender_localpart(&self) -> String {
        format!("{}appservice", self.appservice.namespace_prefix)
    }

    /// The bot's full user ID.
    pub fn bot_user_id(&self) -> Result<OwnedUserId, ConfigError> {
        UserId::parse(format!(
            "@{}:{}",
            self.appservice.bot.username, self.homeserver.domain
        ))
        .map_err(|e| ConfigError::Invalid {
            key: "appservice.bot.username",
            reason: format!("not a valid user ID: {e}"),
        })
    }

    /// Checks that holds for any use of the config, including generating a registration.
    fn check_shape(&self) -> Result<(), ConfigError> {
        let prefix = &self.appservice.namespace_prefix;
        if prefix.is_empty() {
            return Err(ConfigError::Invalid {
                key: "appservice.namespace_prefix",
                reason: "must not be empty: it reserves the bots' user IDs".into(),
            });
        }
        if !self.appservice.bot.username.starts_with(prefix.as_str()) {
            return Err(ConfigError::Invalid {
                key: "appservice.bot.username",
                reason: format!("must start with appservice.namespace_prefix ({prefix:?})"),
            });
        }
        if self.appservice.id.is_empty() || self.appservice.id.contains('|') {
            return Err(ConfigError::Invalid {
                key: "appservice.id",
                reason: "must be a non-empty string without '|'".into(),
            });
        }
        self.bot_user_id()?;
        if self.appservice.bot.username == self.sender_localpart() {
            return Err(ConfigError::Invalid {
                key: "appservice.bot.username",
                reason: format!(
                    "must differ from {:?}, the appservice's own user",
                    self.sender_localpart()
                ),
            });
        }
        self.appointments.reminder_offsets()?;
        self.appointments.day_of_time()?;
        if !(1..=24 * 60).contains(&self.appointments.sign_in_link_minutes) {
            return Err(ConfigError::Invalid {
                key: "appointments.sign_in_link_minutes",
                reason: "must be between 1 and 1440".to_owned(),
            });
        }
        if !(1..=24 * 30).contains(&self.appointments.calendar_session_hours) {
            return Err(ConfigError::Invalid {
                key: "appointments.calendar_session_hours",
                reason: "must be between 1 and 720".to_owned(),
            });
        }
        let url = &self.appointments.calendar_url;
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let path_ok = url.trim_end_matches('/').ends_with("/_consulta/calendar");
        if !(url.is_empty() || (scheme_ok && path_ok)) {
            return Err(ConfigError::Invalid {
                key: "appointments.calendar_url",
                reason: format!(
                    "{url:?} must be an http(s) URL ending in /_consulta/calendar/ (forward all of /_consulta/ to the appservice)"
                ),
            });
        }
        if self.appservice.bot.device_id.is_empty()
            || !self
                .appservice
                .bot
                .device_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Invalid {
                key: "appservice.bot.device_id",
                reason: "must be letters, digits, '_' or '-'".into(),
            });
        }
        for key in self.permissions.keys() {
            let valid = if key.starts_with('@') {
                UserId::parse(key.as_str()).is_ok()
            } else {
                !key.is_empty()
            };
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "permissions",
                    reason: format!("{key:?} is neither a user ID nor a server name"),
                });
            }
        }
        Ok(())
    }

    /// Checks that must hold before the service runs: no placeholder secrets.
    pub fn check_ready_to_run(&self) -> Result<(), ConfigError> {
        let secrets = [
            ("appservice.as_token", &self.appservice.as_token),
            ("appservice.hs_token", &self.appservice.hs_token),
            ("antispam.secret", &self.antispam.secret),
        ];
        for (key, secret) in secrets {
            if secret.is_placeholder() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "still {PLACEHOLDER:?}. Run `consulta generate-registration -c <config> -r <registration>` \
                         to generate the tokens, give the registration to the homeserver, then start again \
                         (or set it through the environment)"
                    ),
                });
            }
        }
        if self.policy.on_delete == OnDelete::Purge
            && self.homeserver.admin_token.expose().is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "policy.on_delete",
                reason:
                    "\"purge\" needs homeserver.admin_token (a Synapse server admin's access token)"
                        .into(),
            });
        }
        if self.appservice.as_token == self.appservice.hs_token {
            return Err(ConfigError::Invalid {
                key: "appservice.hs_token",
                reason: "must differ from as_token".into(),
            });
        }
        Ok(())
    }

    /// The passphrase of the assistant's store: the configured one, else one derived from `hs_token`
    /// (so that an older config without the key keeps working; rotating `hs_token` then means a new
    /// assistant device).
    pub fn bot_store_passphrase(&self) -> Secret {
        let configured = &self.appservice.bot.store_passphrase;
        if !configured.is_placeholder() {
            return configured.clone();
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(
            format!("consulta-bot-store:{}", self.appservice.hs_token.expose()).as_bytes(),
        );
        Secret::new(
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )
    }

    /// The role the `permissions` map gives `user`: an exact user ID beats a server name.
    pub fn configured_role(&self, user: &UserId) -> Option<Role> {
        self.permissions
            .get(user.as_str())
            .or_else(|| self.permissions.get(user.server_name().as_str()))
            .copied()
    }
}

/// Applies `CONSULTA_SECTION__KEY[__SUB]` and `…_FILE` overrides onto a parsed YAML document.
///
/// Only variables with a `__` separator are considered, so unrelated `CONSULTA_*` variables (the test
/// kit's, say) are left alone. Where the document already holds a number or a boolean the value is
/// parsed as YAML, everywhere else it stays a string, so a numeric-looking token remains a token.
fn apply_env_overrides(
    doc: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    // Deterministic order; a plain variable wins over its _FILE twin because it is applied last.
    vars.sort_by(|a, b| {
        b.0.ends_with("_FILE")
            .cmp(&a.0.ends_with("_FILE"))
            .then(a.0.cmp(&b.0))
    });
    for (var, raw) in vars {
        let (name, value) = match var.strip_suffix("_FILE") {
            Some(name) => {
                let text = std::fs::read_to_string(&raw).map_err(|e| ConfigError::Env {
                    var: var.clone(),
                    reason: format!("cannot read {raw}: {e}"),
                })?;
                (
                    name.to_owned(),
                    text.trim_end_matches(['\n', '\r']).to_owned(),
                )
            }
            None => (var.clone(), raw),
        };
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        set_path(doc, &path, value).map_err(|reason| ConfigError::Env { var, reason })?;
    }
    Ok(())
}

fn set_path(doc: &mut Value, path: &[String], value: String) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut node = doc;
    for key in parents {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| format!("{key} is not a section"))?;
        node = map
            .entry(Value::String(key.clone()))
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    let map = node
        .as_mapping_mut()
        .ok_or_else(|| format!("{last} is not inside a section"))?;
    let key = Value::String(last.clone());
    let typed = match map.get(&key) {
        Some(Value::Number(_) | Value::Bool(_)) => serde_norway::from_str::<Value>(&value)
            .map_err(|e| format!("not a valid value: {e}"))?,
        _ => Value::String(value),
    };
    map.insert(key, typed);
    Ok(())
}

/// Replaces placeholder secrets in the text of a config file with fresh ones, keeping every comment and
/// line as it was. Returns the new text and the dotted keys that were generated.
pub fn generate_missing_secrets(text: &str) -> (String, Vec<&'static str>) {
    const SECRETS: [(&str, &str, &str); 4] = [
        ("appservice", "as_token", "appservice.as_token"),
        (
            "appservice",
            "store_passphrase",
            "appservice.bot.store_passphrase",
        ),
        ("appservice", "hs_token", "appservice.hs_token"),
        ("antispam", "secret", "antispam.secret"),
    ];
    let mut section = "";
    let mut generated = Vec::new();
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let indent = body.len() - body.trim_start().len();
        if indent == 0
            && !body.starts_with('#')
            && let Some((name, _)) = body.split_once(':')
        {
            section = name.trim();
        }
        let replaced = SECRETS.iter().find_map(|(sec, key, dotted)| {
            if *sec != section || indent == 0 {
                return None;
            }
            let rest = body.trim_start().strip_prefix(key)?.strip_prefix(':')?;
            let value = rest
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            (value == PLACEHOLDER || value.is_empty()).then(|| {
                let secret = Secret::generate();
                (
                    format!("{}{key}: {}", &body[..indent], secret.expose()),
                    *dotted,
                )
            })
        });
        match replaced {
            Some((new_line, dotted)) => {
                out.push_str(&new_line);
                out.push_str(ending);
                generated.push(dotted);
            }
            None => out.push_str(line),
        }
    }
    (out, generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_example() -> String {
        generate_missing_secrets(EXAMPLE).0
    }

    #[test]
    fn example_parses_and_names_the_bot() {
        let config = Config::from_yaml_with_env(EXAMPLE, []).unwrap();
        assert_eq!(
            config.bot_user_id().unwrap().as_str(),
            "@_consulta_bot:clinic.example"
        );
        assert_eq!(config.appservice.port, 29400);
        assert!(config.permissions.is_empty());
        assert_eq!(config.logging.format, LogFormat::Pretty);
        assert_eq!(config.appointments.time_zone.name(), "UTC");
    }

    #[test]
    fn the_clinic_time_zone_is_an_iana_name() {
        let env = vec![(
            "CONSULTA_APPOINTMENTS__TIME_ZONE".to_owned(),
            "Europe/Madrid".to_owned(),
        )];
        let config = Config::from_yaml_with_env(EXAMPLE, env).unwrap();
        assert_eq!(config.appointments.time_zone.name(), "Europe/Madrid");
        let env = vec![(
            "CONSULTA_APPOINTMENTS__TIME_ZONE".to_owned(),
            "Middle/Earth".to_owned(),
        )];
        let err = Config::from_yaml_with_env(EXAMPLE, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Middle/Earth"), "{err}");
    }

    #[test]
    fn every_key_of_the_example_has_a_comment_above_it() {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let above = i
                .checked_sub(1)
                .and_then(|j| lines.get(j))
                .map(|l| l.trim_start())
                .unwrap_or("");
            assert!(
                above.starts_with('#'),
                "line {} ({trimmed:?}) has no comment above it",
                i + 1
            );
        }
    }

    #[test]
    fn the_example_refuses_to_run_until_secrets_are_generated() {
        let config = Config::from_yaml_with_env(EXAMPLE, []).unwrap();
        let err = config.check_ready_to_run().unwrap_err().to_string();
        assert!(err.contains("appservice.as_token"), "{err}");
        assert!(
            err.contains("consulta generate-registration"),
            "the message says what to do: {err}"
        );
    }

    #[test]
    fn secret_generation_keeps_comments_and_fills_every_placeholder_once() {
        let (text, generated) = generate_missing_secrets(EXAMPLE);
        assert_eq!(
            generated,
            [
                "appservice.bot.store_passphrase",
                "appservice.as_token",
                "appservice.hs_token",
                "antispam.secret"
            ]
        );
        assert_eq!(text.lines().count(), EXAMPLE.lines().count());
        let comments = |t: &str| {
            t.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
        };
        assert_eq!(comments(&text), comments(EXAMPLE));
        let config = Config::from_yaml_with_env(&text, []).unwrap();
        config.check_ready_to_run().unwrap();
        assert_ne!(config.appservice.as_token, config.appservice.hs_token);
        assert_eq!(
            config.bot_store_passphrase(),
            config.appservice.bot.store_passphrase,
            "the generated passphrase is the one used"
        );

        let (again, generated_again) = generate_missing_secrets(&text);
        assert!(generated_again.is_empty(), "tokens are generated once");
        assert_eq!(again, text);
    }

    #[test]
    fn environment_overrides_keys_and_reads_files() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("hs_token");
        std::fs::write(&token_file, "from-a-file\n").unwrap();
        let env = [
            (
                "CONSULTA_APPSERVICE__AS_TOKEN".to_owned(),
                "12345".to_owned(),
            ),
            (
                "CONSULTA_APPSERVICE__HS_TOKEN_FILE".to_owned(),
                token_file.display().to_string(),
            ),
            ("CONSULTA_APPSERVICE__PORT".to_owned(), "29555".to_owned()),
            ("CONSULTA_ANTISPAM__SECRET".to_owned(), "s3cret".to_owned()),
            (
                "CONSULTA_CACHE_DIR".to_owned(),
                "/ignored/without/separator".to_owned(),
            ),
        ];
        let config =
            Config::from_yaml_with_env(EXAMPLE, env.into_iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            config.appservice.as_token.expose(),
            "12345",
            "numeric-looking tokens stay strings"
        );
        assert_eq!(config.appservice.hs_token.expose(), "from-a-file");
        assert_eq!(config.appservice.port, 29555);
        config.check_ready_to_run().unwrap();
    }

    #[test]
    fn bad_environment_values_are_reported_by_name() {
        let env = vec![(
            "CONSULTA_APPSERVICE__PORT".to_owned(),
            "not a port".to_owned(),
        )];
        let err = Config::from_yaml_with_env(EXAMPLE, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let env = vec![(
            "CONSULTA_DATABASE__URI_FILE".to_owned(),
            "/does/not/exist".to_owned(),
        )];
        let err = Config::from_yaml_with_env(EXAMPLE, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONSULTA_DATABASE__URI_FILE"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_namespaces_are_refused() {
        let typo = ready_example().replace("hostname:", "hostnam:");
        assert!(Config::from_yaml_with_env(&typo, []).is_err());
        let bad_bot = ready_example().replace("username: _consulta_bot", "username: assistant");
        let err = Config::from_yaml_with_env(&bad_bot, [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("namespace_prefix"), "{err}");
    }

    #[test]
    fn the_calendar_url_defaults_to_the_appservice_and_must_keep_its_path() {
        let config = Config::from_yaml_with_env(&ready_example(), []).unwrap();
        assert_eq!(
            config.calendar_page_url(),
            format!(
                "{}/_consulta/calendar/",
                config.appservice.address.trim_end_matches('/')
            )
        );
        let public = [(
            "CONSULTA_APPOINTMENTS__CALENDAR_URL".to_owned(),
            "https://consulta.clinic.example/_consulta/calendar".to_owned(),
        )];
        let config = Config::from_yaml_with_env(&ready_example(), public).unwrap();
        assert_eq!(
            config.calendar_page_url(),
            "https://consulta.clinic.example/_consulta/calendar/"
        );
        for bad in [
            "https://consulta.clinic.example/calendar/",
            "consulta.clinic.example/_consulta/calendar/",
        ] {
            let env = [(
                "CONSULTA_APPOINTMENTS__CALENDAR_URL".to_owned(),
                bad.to_owned(),
            )];
            let err = Config::from_yaml_with_env(&ready_example(), env)
                .unwrap_err()
                .to_string();
            assert!(err.contains("appointments.calendar_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn permissions_map_users_before_domains() {
        let text = ready_example().replace(
            "permissions:\n",
            "permissions:\n    clinic.example: patient\n    \"@drwho:clinic.example\": doctor\n",
        );
        let config = Config::from_yaml_with_env(&text, []).unwrap();
        let who = |s: &str| config.configured_role(&UserId::parse(s).unwrap());
        assert_eq!(who("@drwho:clinic.example"), Some(Role::Doctor));
        assert_eq!(who("@anyone:clinic.example"), Some(Role::Patient));
        assert_eq!(who("@someone:elsewhere.example"), None);
    }
}
