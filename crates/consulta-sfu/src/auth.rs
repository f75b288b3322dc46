//! LiveKit access tokens: verification for the SFU, minting for tests and the RTC auth service.
//!
//! Implements spec `matrixrtc-livekit.md` §1.6: HS256 JWTs whose `iss` names an API key, `sub` the
//! participant identity, and whose `video` grant (camelCase JSON) says which room may be joined and
//! what the holder may do there. Only HS256 is accepted, the `alg` header is checked before the
//! signature, `exp` is required, and clock skew of [`LEEWAY_SECS`] is tolerated either side.
//!
//! HS256 is implemented here on `hmac` + `sha2` (already in the workspace) rather than through
//! `jsonwebtoken`: that crate needs a crypto backend (aws-lc-rs or a RustCrypto tree with RSA and
//! elliptic curves) for algorithms the SFU must refuse anyway, and a single algorithm leaves no
//! room for algorithm-confusion mistakes. The signature is compared in constant time
//! (`Mac::verify_slice`).

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Clock skew tolerated on `exp` and `nbf`, as LiveKit's verifier does.
pub const LEEWAY_SECS: u64 = 60;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. The variants never carry the token or the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Not three base64url segments, bad JSON, or too long.
    #[error("malformed access token")]
    Malformed,
    /// The header names an algorithm other than HS256.
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// `iss` does not name a configured API key.
    #[error("unknown API key")]
    UnknownKey,
    /// The HMAC does not match.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway) or missing.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The grant does not allow joining a room (no `roomJoin`, no room, or no identity).
    #[error("token does not grant joining a room")]
    NotJoinable,
    /// The token is for another room than the one asked for.
    #[error("token is for another room")]
    WrongRoom,
    /// Signing failed (an empty secret, say).
    #[error("cannot sign token")]
    Signing,
}

/// An API secret. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSecret(String);

impl ApiSecret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    fn mac(&self) -> Result<Hmac<Sha256>, AuthError> {
        Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).map_err(|_| AuthError::Signing)
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The configured API keys: `iss` → secret.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(HashMap<String, ApiSecret>);

impl ApiKeys {
    /// No keys: every token is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key.
    pub fn with(mut self, key: impl Into<String>, secret: ApiSecret) -> Self {
        self.0.insert(key.into(), secret);
        self
    }

    /// The secret of `key`.
    pub fn get(&self, key: &str) -> Option<&ApiSecret> {
        self.0.get(key)
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `video` grant. Field names are LiveKit's camelCase; absent booleans keep LiveKit's defaults
/// (see the getters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    /// May create the room on join.
    #[serde(skip_serializing_if = "is_false")]
    pub room_create: bool,
    /// May join `room`.
    #[serde(skip_serializing_if = "is_false")]
    pub room_join: bool,
    /// May list rooms (RoomService; unused by the SFU).
    #[serde(skip_serializing_if = "is_false")]
    pub room_list: bool,
    /// May record (unused).
    #[serde(skip_serializing_if = "is_false")]
    pub room_record: bool,
    /// May administer `room` (unused).
    #[serde(skip_serializing_if = "is_false")]
    pub room_admin: bool,
    /// The room this grant is for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub room: String,
    /// May publish tracks (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// May subscribe to tracks (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    /// May publish data packets (default: same as `canPublish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    /// Sources the holder may publish (`camera`, `microphone`, `screen_share`,
    /// `screen_share_audio`); empty means all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub can_publish_sources: Vec<String>,
    /// May update its own name/metadata (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    /// Invisible to other participants.
    #[serde(skip_serializing_if = "is_false")]
    pub hidden: bool,
    /// A recorder (shown as such to others).
    #[serde(skip_serializing_if = "is_false")]
    pub recorder: bool,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(value: &bool) -> bool {
    !*value
}

impl VideoGrant {
    /// `canPublish`, default true.
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }

    /// `canSubscribe`, default true.
    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }

    /// `canPublishData`, default `canPublish`.
    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or_else(|| self.can_publish())
    }

    /// `canUpdateOwnMetadata`, default false.
    pub fn can_update_own_metadata(&self) -> bool {
        self.can_update_own_metadata.unwrap_or(false)
    }
}

/// The JWT claims LiveKit uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// API key.
    #[serde(default)]
    pub iss: String,
    /// Participant identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// Token id; LiveKit's fallback identity when `sub` is empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Expiry, seconds since the Unix epoch. Required on verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Participant metadata (opaque to the SFU).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// Participant attributes.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub attributes: HashMap<String, String>,
    /// The room grant.
    #[serde(default)]
    pub video: VideoGrant,
}

/// A verified token that allows joining a room: what the session core needs, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrant {
    /// The API key that signed the token (`iss`).
    pub api_key: String,
    /// Participant identity (`sub`, or `jti` when `sub` is empty).
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Participant metadata.
    pub metadata: String,
    /// Participant attributes.
    pub attributes: HashMap<String, String>,
    /// The grant, with `room` non-empty and `roomJoin` set.
    pub video: VideoGrant,
}

impl JoinGrant {
    /// The room this grant is for.
    pub fn room(&self) -> &str {
        &self.video.room
    }

    /// A token granting the same as this one (key, identity, name, metadata, attributes, room
    /// and permissions), valid from `now_unix_secs` for `ttl_secs`: what `refresh_token` hands a
    /// connected client for its reconnects. `None` when the key is no longer configured.
    pub fn renewed(&self, keys: &ApiKeys, now_unix_secs: u64, ttl_secs: u64) -> Option<String> {
        let claims = Claims {
            iss: self.api_key.clone(),
            sub: self.identity.clone(),
            exp: Some(now_unix_secs.saturating_add(ttl_secs)),
            nbf: Some(now_unix_secs),
            iat: Some(now_unix_secs),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            attributes: self.attributes.clone(),
            video: self.video.clone(),
            ..Claims::default()
        };
        mint(&claims, keys.get(&self.api_key)?).ok()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies `token` against `keys` at `now_unix_secs` and checks that it allows joining a room
/// (and, if `expected_room` is given, that room). Refuses before anything else looks at the claims.
pub fn verify_join(
    token: &str,
    keys: &ApiKeys,
    now_unix_secs: u64,
    expected_room: Option<&str>,
) -> Result<JoinGrant, AuthError> {
    let claims = verify(token, keys, now_unix_secs)?;
    let identity = if claims.sub.is_empty() {
        claims.jti
    } else {
        claims.sub
    };
    if !claims.video.room_join || claims.video.room.is_empty() || identity.is_empty() {
        return Err(AuthError::NotJoinable);
    }
    if expected_room.is_some_and(|room| room != claims.video.room) {
        return Err(AuthError::WrongRoom);
    }
    Ok(JoinGrant {
        api_key: claims.iss,
        identity,
        name: claims.name,
        metadata: claims.metadata,
        attributes: claims.attributes,
        video: claims.video,
    })
}

/// Verifies signature and validity window; returns the claims.
pub fn verify(token: &str, keys: &ApiKeys, now_unix_secs: u64) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header: Header = decode_segment(header_b64)?;
    if header.alg != "HS256" {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    // The key is named inside the (not yet trusted) claims; only the lookup uses it before the
    // signature is checked.
    let claims: Claims = decode_segment(claims_b64)?;
    let secret = keys.get(&claims.iss).ok_or(AuthError::UnknownKey)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| AuthError::Malformed)?;
    let mut mac = secret.mac()?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(claims_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;

    let exp = claims.exp.ok_or(AuthError::Expired)?;
    if exp.saturating_add(LEEWAY_SECS) < now_unix_secs {
        return Err(AuthError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now_unix_secs.saturating_add(LEEWAY_SECS))
    {
        return Err(AuthError::NotYetValid);
    }
    Ok(claims)
}

fn decode_segment<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// Signs `claims` with HS256 under `secret`; `claims.iss` should name the key. For tests and the
/// RTC authorization service.
pub fn mint(claims: &Claims, secret: &ApiSecret) -> Result<String, AuthError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims).map_err(|_| AuthError::Signing)?;
    let body = URL_SAFE_NO_PAD.encode(body);
    let mut mac = secret.mac()?;
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{header}.{body}.{signature}"))
}

/// Claims for a participant who may join `room` (publish and subscribe by default), valid from
/// `now_unix_secs` for `ttl_secs`. Adjust the returned value before [`mint`]ing it.
pub fn join_claims(
    api_key: &str,
    identity: &str,
    room: &str,
    now_unix_secs: u64,
    ttl_secs: u64,
) -> Claims {
    Claims {
        iss: api_key.to_owned(),
        sub: identity.to_owned(),
        exp: Some(now_unix_secs.saturating_add(ttl_secs)),
        nbf: Some(now_unix_secs),
        iat: Some(now_unix_secs),
        video: VideoGrant {
            room_join: true,
            room: room.to_owned(),
            ..VideoGrant::default()
        },
        ..Claims::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> ApiKeys {
        ApiKeys::new().with("devkey", ApiSecret::new("devsecret-devsecret-devsecret-32"))
    }

    fn token(claims: &Claims) -> String {
        mint(claims, &ApiSecret::new("devsecret-devsecret-devsecret-32")).unwrap()
    }

    #[test]
    fn minted_token_round_trips_with_camel_case_grant() {
        let mut claims = join_claims("devkey", "@alice:hs:DEV", "room1", NOW, 3600);
        claims.name = "Alice".into();
        claims.video.can_publish = Some(false);
        claims.video.room_create = true;
        let token = token(&claims);
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json["video"]["roomJoin"], true);
        assert_eq!(json["video"]["roomCreate"], true);
        assert_eq!(json["video"]["canPublish"], false);

        let grant = verify_join(&token, &keys(), NOW + 10, Some("room1")).unwrap();
        assert_eq!(grant.identity, "@alice:hs:DEV");
        assert_eq!(grant.name, "Alice");
        assert!(!grant.video.can_publish());
        assert!(!grant.video.can_publish_data());
        assert!(grant.video.can_subscribe());
    }

    #[test]
    fn accepts_livekit_style_json() {
        let json = r#"{"iss":"devkey","sub":"bob","exp":1800003600,"nbf":1800000000,
            "video":{"roomJoin":true,"room":"r","canPublishSources":["camera"],"hidden":true}}"#;
        let claims: Claims = serde_json::from_str(json).unwrap();
        let grant = verify_join(&token(&claims), &keys(), NOW, None).unwrap();
        assert_eq!(grant.video.can_publish_sources, vec!["camera".to_owned()]);
        assert!(grant.video.hidden);
    }

    #[test]
    fn refuses_expired_and_not_yet_valid() {
        let claims = join_claims("devkey", "a", "r", NOW, 3600);
        let minted = token(&claims);
        assert_eq!(
            verify_join(&minted, &keys(), NOW + 3600 + LEEWAY_SECS + 1, None),
            Err(AuthError::Expired)
        );
        assert!(verify_join(&minted, &keys(), NOW + 3600 + LEEWAY_SECS, None).is_ok());
        assert_eq!(
            verify_join(&minted, &keys(), NOW - LEEWAY_SECS - 1, None),
            Err(AuthError::NotYetValid)
        );
        let mut no_exp = claims;
        no_exp.exp = None;
        assert_eq!(
            verify_join(&token(&no_exp), &keys(), NOW, None),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn refuses_wrong_signature_and_unknown_key() {
        let claims = join_claims("devkey", "a", "r", NOW, 3600);
        let forged = mint(&claims, &ApiSecret::new("another-secret")).unwrap();
        assert_eq!(
            verify_join(&forged, &keys(), NOW, None),
            Err(AuthError::BadSignature)
        );
        let unknown = join_claims("otherkey", "a", "r", NOW, 3600);
        assert_eq!(
            verify_join(&token(&unknown), &keys(), NOW, None),
            Err(AuthError::UnknownKey)
        );
        // A tampered payload with the original signature.
        let good = token(&claims);
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut evil = claims.clone();
        evil.video.room = "other".into();
        let evil_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        parts[1] = &evil_body;
        assert_eq!(
            verify_join(&parts.join("."), &keys(), NOW, None),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn refuses_other_algorithms() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&join_claims("devkey", "a", "r", NOW, 3600)).unwrap());
        assert_eq!(
            verify_join(&format!("{header}.{body}."), &keys(), NOW, None),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn refuses_wrong_room_and_missing_room_join() {
        let claims = join_claims("devkey", "a", "r", NOW, 3600);
        assert_eq!(
            verify_join(&token(&claims), &keys(), NOW, Some("elsewhere")),
            Err(AuthError::WrongRoom)
        );
        let mut no_join = claims.clone();
        no_join.video.room_join = false;
        assert_eq!(
            verify_join(&token(&no_join), &keys(), NOW, None),
            Err(AuthError::NotJoinable)
        );
        let mut no_identity = claims;
        no_identity.sub.clear();
        assert_eq!(
            verify_join(&token(&no_identity), &keys(), NOW, None),
            Err(AuthError::NotJoinable)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_not_panicked_on() {
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "é.é.é",
            "eyJhbGciOiJIUzI1NiJ9..",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
        ] {
            assert!(verify_join(bad, &keys(), NOW, None).is_err(), "{bad:?}");
        }
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            verify_join(&long, &keys(), NOW, None),
            Err(AuthError::Malformed)
        );
    }
}
