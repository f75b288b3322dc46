//! Who may receive a publisher's tracks: LiveKit's `subscription_permission`
//! (livekit-client's `setTrackSubscriptionPermissions`).
//!
//! A publisher's rule starts as "everyone" and each request replaces it whole. It names
//! subscribers by identity, so that it still holds for one who joins again with a new sid; an
//! entry that names only a participant sid is resolved to that participant's identity when the
//! request arrives, and one naming a sid not in the room is left out. `all_participants` allows
//! everyone, whatever the entries say; a rule with no entry allows no one. Each entry allows all
//! the publisher's tracks (those published later too) or the tracks it lists. As in LiveKit
//! (`UpTrackManager::UpdateSubscriptionPermission`); the core applies it
//! ([`crate::Sfu`]: subscriptions refused, revoked and granted again).

use std::collections::{BTreeMap, BTreeSet};

use livekit_protocol::SubscriptionPermission;

use crate::ids::TrackSid;

/// Most subscribers one rule may name. A request lists each at most once per participant of
/// the room; this bounds what a publisher makes the node keep.
pub const MAX_ENTRIES: usize = 256;

/// Most tracks one entry may list: a participant publishes at most a few at once, and each
/// publish gets a fresh sid.
pub const MAX_ENTRY_TRACKS: usize = 32;

/// Longest identity an entry may name, in bytes (tokens carry the identities).
pub const MAX_IDENTITY_BYTES: usize = 512;

/// A publisher's rule of who may receive its tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SubscribePermission {
    /// Every subscriber: the rule until the publisher says otherwise.
    #[default]
    Everyone,
    /// Only the identities named, each to all the publisher's tracks or to those listed.
    Only(BTreeMap<String, Allowed>),
}

/// What one named subscriber may receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// All the publisher's tracks, those it publishes later too.
    AllTracks,
    /// These tracks only.
    Tracks(BTreeSet<TrackSid>),
}

/// Why a request was not taken; the rule stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// An entry names neither an identity nor a participant sid.
    #[error("a track permission names no participant")]
    NoParticipant,
    /// Past [`MAX_ENTRIES`], [`MAX_ENTRY_TRACKS`] or [`MAX_IDENTITY_BYTES`].
    #[error("a subscription permission past the node's limits")]
    TooLarge,
}

impl SubscribePermission {
    /// The rule `request` states. `identity_of` gives the identity of a participant of the room
    /// by its sid, for entries that name no identity (`None`: not in the room, and the entry is
    /// left out). Of the tracks an entry lists, only those `own_track` takes are kept: the
    /// publisher's, as every publish gets a fresh sid. An identity named twice keeps its last
    /// entry.
    pub fn from_request(
        request: &SubscriptionPermission,
        identity_of: impl Fn(&str) -> Option<String>,
        own_track: impl Fn(&TrackSid) -> bool,
    ) -> Result<Self, PermissionError> {
        if request.all_participants {
            return Ok(Self::Everyone);
        }
        if request.track_permissions.len() > MAX_ENTRIES {
            return Err(PermissionError::TooLarge);
        }
        let mut only = BTreeMap::new();
        for entry in &request.track_permissions {
            if entry.participant_identity.is_empty() && entry.participant_sid.is_empty() {
                return Err(PermissionError::NoParticipant);
            }
            if entry.participant_identity.len() > MAX_IDENTITY_BYTES
                || entry.track_sids.len() > MAX_ENTRY_TRACKS
            {
                return Err(PermissionError::TooLarge);
            }
            let identity = if entry.participant_identity.is_empty() {
                match identity_of(&entry.participant_sid) {
                    Some(identity) => identity,
                    None => continue,
                }
            } else {
                entry.participant_identity.clone()
            };
            let allowed = if entry.all_tracks {
                Allowed::AllTracks
            } else {
                Allowed::Tracks(
                    entry
                        .track_sids
                        .iter()
                        .filter_map(|t| TrackSid::parse(t))
                        .filter(|t| own_track(t))
                        .collect(),
                )
            };
            only.insert(identity, allowed);
        }
        Ok(Self::Only(only))
    }

    /// Whether the subscriber of `identity` may receive `track`.
    pub fn allows(&self, identity: &str, track: &TrackSid) -> bool {
        match self {
            Self::Everyone => true,
            Self::Only(only) => match only.get(identity) {
                Some(Allowed::AllTracks) => true,
                Some(Allowed::Tracks(tracks)) => tracks.contains(track),
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use livekit_protocol::TrackPermission;

    use super::*;

    fn entry(identity: &str, sid: &str, all: bool, tracks: &[&str]) -> TrackPermission {
        TrackPermission {
            participant_identity: identity.to_owned(),
            participant_sid: sid.to_owned(),
            all_tracks: all,
            track_sids: tracks.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn request(all: bool, entries: Vec<TrackPermission>) -> SubscriptionPermission {
        SubscriptionPermission {
            all_participants: all,
            track_permissions: entries,
        }
    }

    /// Only Bob is in the room by sid.
    fn room(sid: &str) -> Option<String> {
        (sid == "PA_bob").then(|| "bob".to_owned())
    }

    /// Every track is the publisher's but `TR_theirs`.
    fn own(track: &TrackSid) -> bool {
        track.as_str() != "TR_theirs"
    }

    #[test]
    fn a_rule_names_subscribers_by_identity_and_tracks_by_sid() {
        let (cam, mic) = (
            TrackSid::parse("TR_cam").unwrap(),
            TrackSid::parse("TR_mic").unwrap(),
        );
        let later = TrackSid::parse("TR_later").unwrap();
        // The default, and `all_participants` whatever the entries: everyone, every track.
        assert!(SubscribePermission::default().allows("anyone", &cam));
        let all = request(true, vec![entry("carol", "", false, &[])]);
        assert_eq!(
            SubscribePermission::from_request(&all, room, own),
            Ok(SubscribePermission::Everyone)
        );
        // No entry: no one.
        let none = SubscribePermission::from_request(&request(false, vec![]), room, own).unwrap();
        assert!(!none.allows("bob", &cam));
        // Carol all tracks (those published later too), Bob by his sid the microphone only; an
        // unknown sid is left out, as are a track sid that is no sid and another's track.
        let rule = request(
            false,
            vec![
                entry("carol", "", true, &[]),
                entry("", "PA_bob", false, &["TR_mic", "", "TR_theirs"]),
                entry("", "PA_gone", true, &[]),
            ],
        );
        let rule = SubscribePermission::from_request(&rule, room, own).unwrap();
        assert!(rule.allows("carol", &cam) && rule.allows("carol", &later));
        assert!(rule.allows("bob", &mic) && !rule.allows("bob", &cam));
        assert!(!rule.allows("dave", &mic));
        let SubscribePermission::Only(only) = &rule else {
            panic!("a rule");
        };
        assert_eq!(only.len(), 2, "{only:?}");
        let mic_only = Allowed::Tracks([mic.clone()].into());
        assert_eq!(
            only.get("bob"),
            Some(&mic_only),
            "another's track, and no sid, left out"
        );
        // An identity given wins over the sid beside it; named twice, the last entry counts.
        let rule = request(
            false,
            vec![
                entry("carol", "PA_bob", false, &["TR_cam"]),
                entry("carol", "", false, &["TR_mic"]),
            ],
        );
        let rule = SubscribePermission::from_request(&rule, room, own).unwrap();
        assert!(
            rule.allows("carol", &mic) && !rule.allows("carol", &cam) && !rule.allows("bob", &mic)
        );
    }

    #[test]
    fn a_request_past_the_limits_or_naming_no_one_is_refused() {
        let nobody = request(
            false,
            vec![entry("carol", "", true, &[]), entry("", "", true, &[])],
        );
        assert_eq!(
            SubscribePermission::from_request(&nobody, room, own),
            Err(PermissionError::NoParticipant)
        );
        let many = (0..=MAX_ENTRIES)
            .map(|i| entry(&format!("p{i}"), "", true, &[]))
            .collect();
        assert_eq!(
            SubscribePermission::from_request(&request(false, many), room, own),
            Err(PermissionError::TooLarge)
        );
        let at_most = (0..MAX_ENTRIES)
            .map(|i| entry(&format!("p{i}"), "", true, &[]))
            .collect();
        assert!(SubscribePermission::from_request(&request(false, at_most), room, own).is_ok());
        let long = "x".repeat(MAX_IDENTITY_BYTES + 1);
        assert_eq!(
            SubscribePermission::from_request(
                &request(false, vec![entry(&long, "", true, &[])]),
                room,
                own
            ),
            Err(PermissionError::TooLarge)
        );
        let tracks: Vec<String> = (0..=MAX_ENTRY_TRACKS).map(|i| format!("TR_{i}")).collect();
        let tracks: Vec<&str> = tracks.iter().map(String::as_str).collect();
        assert_eq!(
            SubscribePermission::from_request(
                &request(false, vec![entry("bob", "", false, &tracks)]),
                room,
                own
            ),
            Err(PermissionError::TooLarge)
        );
    }
}
