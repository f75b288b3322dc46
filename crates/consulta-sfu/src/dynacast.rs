//! Dynacast: telling a publisher which simulcast layers of a video track anyone receives, so that
//! its encoder pauses the others (`subscribed_quality_update`, spec `matrixrtc-livekit.md` §6,
//! "strongly recommended"). A patient alone in the waiting room, or a tile shown small, then
//! costs the phone's uplink and battery only what is watched.
//!
//! The rule is LiveKit's: the highest layer any subscriber wants is enabled together with every
//! layer below it; a track nobody receives (or everyone has hidden) has all layers off. A track
//! published without simulcast has one encoding, which livekit-client maps to the lowest quality,
//! so it is on exactly when someone receives it. More is enabled at once; less only after the
//! lower demand has held for [`DOWNGRADE_DELAY`], so that a layout change or a short hide does not
//! restart an encoder (each restart costs a key frame).

use std::time::{Duration, Instant};

use livekit_protocol::{SubscribedCodec, SubscribedQuality, SubscribedQualityUpdate, TrackInfo};

use crate::forward::{Quality, quality_for_settings};
use crate::media::TrackSettings;

/// How long a lower demand must hold before layers are paused.
pub const DOWNGRADE_DELAY: Duration = Duration::from_secs(3);

/// The layers one subscriber wants of `track`: none when it hid the tile, else the one
/// [`quality_for_settings`] picks (the top one while nothing is known).
fn wanted_by(track: &TrackInfo, settings: Option<&TrackSettings>) -> Option<Quality> {
    match settings {
        Some(s) if s.disabled => None,
        Some(s) => Some(quality_for_settings(track, s)),
        None => Some(Quality::High),
    }
}

/// The highest layer any of `subscribers` (their `track_setting` for `track`, if any) wants;
/// `None` when nobody receives the track.
pub fn wanted<'a>(
    track: &TrackInfo,
    subscribers: impl IntoIterator<Item = Option<&'a TrackSettings>>,
) -> Option<Quality> {
    subscribers
        .into_iter()
        .filter_map(|s| wanted_by(track, s))
        .max()
}

/// What one published video track's publisher was last told, and a pending decrease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dynacast {
    /// The highest enabled layer (`None`: all off). Publishers start with every layer on.
    sent: Option<Quality>,
    /// Since the demand fell below `sent`: the highest demand seen, and when it may be sent.
    pending: Option<(Option<Quality>, Instant)>,
}

impl Default for Dynacast {
    fn default() -> Self {
        Self {
            sent: Some(Quality::High),
            pending: None,
        }
    }
}

impl Dynacast {
    /// The current demand is `wanted`: returns the highest layer to enable now (`Some(None)`:
    /// all off), or `None` when the publisher need not be told anything yet.
    ///
    /// A decrease waits until the demand has stayed below what was sent for [`DOWNGRADE_DELAY`],
    /// and then sends the highest demand seen meanwhile. The wait does not restart when the demand
    /// moves between lower levels, so a tile that flips between small and hidden more often than
    /// the delay still gets its unused top layers paused. The next wait starts when the peak is
    /// sent, so a demand that keeps falling reaches its lowest level in steps of the delay (one
    /// update more, and up to one delay later than a sliding window would): it errs towards
    /// sending more, never less.
    pub fn demand(&mut self, wanted: Option<Quality>, now: Instant) -> Option<Option<Quality>> {
        if wanted >= self.sent {
            self.pending = None;
            if wanted == self.sent {
                return None;
            }
            self.sent = wanted;
            return Some(wanted);
        }
        let (peak, due) = match self.pending {
            Some((peak, due)) => (peak.max(wanted), due),
            None => (wanted, now + DOWNGRADE_DELAY),
        };
        if due > now {
            self.pending = Some((peak, due));
            return None;
        }
        self.sent = peak;
        // A demand below what is now sent starts the next wait at once.
        self.pending = (wanted < peak).then_some((wanted, now + DOWNGRADE_DELAY));
        Some(peak)
    }

    /// What the publisher was last told, to say again: LiveKit repeats it when a track is
    /// unmuted, since the client may have restarted its sender while muted.
    pub fn current(&self) -> Option<Quality> {
        self.sent
    }

    /// When a pending decrease falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|(_, at)| at)
    }
}

/// The message for `track` with every layer up to `highest` enabled. livekit-client 2.x reads
/// the layers of its primary codec from `subscribed_codecs`, naming the codec as it publishes it
/// (`vp8`, lower case; an entry for another codec would make it publish that one as a backup);
/// older clients read `subscribed_qualities`. A track without a known codec gets only the latter.
pub fn quality_update(track: &TrackInfo, highest: Option<Quality>) -> SubscribedQualityUpdate {
    let qualities: Vec<SubscribedQuality> = Quality::ALL
        .into_iter()
        .map(|q| SubscribedQuality {
            quality: livekit_protocol::VideoQuality::from(q).into(),
            enabled: highest.is_some_and(|h| q <= h),
        })
        .collect();
    let codec = track
        .codecs
        .first()
        .and_then(|c| c.mime_type.split_once('/'))
        .map(|(_, codec)| codec.to_ascii_lowercase())
        .filter(|codec| !codec.is_empty());
    #[allow(
        deprecated,
        reason = "subscribed_qualities is what livekit-client before subscribed_codecs reads"
    )]
    SubscribedQualityUpdate {
        track_sid: track.sid.clone(),
        subscribed_codecs: codec
            .map(|codec| SubscribedCodec {
                codec,
                qualities: qualities.clone(),
            })
            .into_iter()
            .collect(),
        subscribed_qualities: qualities,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    fn camera() -> TrackInfo {
        crate::forward::quality::tests::track(1280, 720, &[(320, 180), (640, 360), (1280, 720)])
    }

    fn shown(width: u32, height: u32) -> TrackSettings {
        TrackSettings {
            width,
            height,
            ..TrackSettings::default()
        }
    }

    #[test]
    fn the_largest_tile_decides_and_hidden_tiles_count_for_nothing() {
        let t = camera();
        let hidden = TrackSettings {
            disabled: true,
            ..TrackSettings::default()
        };
        let small = shown(320, 180);
        let medium = shown(640, 360);
        assert_eq!(wanted(&t, []), None);
        assert_eq!(wanted(&t, [Some(&hidden)]), None);
        assert_eq!(
            wanted(&t, [Some(&small), Some(&hidden)]),
            Some(Quality::Low)
        );
        assert_eq!(
            wanted(&t, [Some(&small), Some(&medium)]),
            Some(Quality::Medium)
        );
        // A subscriber that has not said what it renders gets (and keeps on) the top layer.
        assert_eq!(wanted(&t, [Some(&small), None]), Some(Quality::High));
        // One that named a layer (`setVideoQuality`, no size) gets that one.
        let named = TrackSettings {
            quality: Some(Quality::Medium),
            ..TrackSettings::default()
        };
        assert_eq!(
            wanted(&t, [Some(&small), Some(&named)]),
            Some(Quality::Medium)
        );
    }

    #[test]
    fn more_is_enabled_at_once_less_only_after_the_delay() {
        let start = Instant::now();
        let mut d = Dynacast::default();
        // Publishers start with everything on: the same demand says nothing.
        assert_eq!(d.demand(Some(Quality::High), start), None);
        // A smaller tile: nothing until the lower demand has held for the delay.
        assert_eq!(d.demand(Some(Quality::Low), start), None);
        assert_eq!(d.poll_timeout(), Some(start + DOWNGRADE_DELAY));
        let almost = start + DOWNGRADE_DELAY - Duration::from_millis(1);
        assert_eq!(d.demand(Some(Quality::Low), almost), None);
        assert_eq!(
            d.demand(Some(Quality::Low), start + DOWNGRADE_DELAY),
            Some(Some(Quality::Low))
        );
        assert_eq!(d.poll_timeout(), None);
        // Hidden, then shown again before the delay: nothing is paused, nothing is said.
        let t1 = start + Duration::from_secs(10);
        assert_eq!(d.demand(None, t1), None);
        assert_eq!(
            d.demand(Some(Quality::Low), t1 + Duration::from_secs(1)),
            None
        );
        assert_eq!(d.poll_timeout(), None);
        // All off once nothing has been wanted for the delay.
        let t2 = start + Duration::from_secs(20);
        assert_eq!(d.demand(None, t2), None);
        assert_eq!(d.demand(None, t2 + DOWNGRADE_DELAY), Some(None));
        // Anyone wanting the top layer again gets all of them at once.
        let t3 = start + Duration::from_secs(30);
        assert_eq!(d.demand(Some(Quality::High), t3), Some(Some(Quality::High)));
    }

    #[test]
    fn a_demand_flipping_between_lower_levels_still_pauses_the_unused_top() {
        let start = Instant::now();
        let second = |n: u64| start + Duration::from_secs(n);
        let mut d = Dynacast::default();
        // Everything on; the tile then flips between medium and small every second.
        assert_eq!(d.demand(Some(Quality::Medium), second(0)), None);
        assert_eq!(d.demand(Some(Quality::Low), second(1)), None);
        assert_eq!(d.demand(Some(Quality::Medium), second(2)), None);
        assert_eq!(d.poll_timeout(), Some(second(3)));
        // Three seconds below the top: the highest demand of those seconds is sent.
        assert_eq!(
            d.demand(Some(Quality::Low), second(3)),
            Some(Some(Quality::Medium))
        );
        // Small from then on: `h` is paused three seconds later, without another change.
        assert_eq!(d.poll_timeout(), Some(second(6)));
        assert_eq!(d.demand(Some(Quality::Low), second(5)), None);
        assert_eq!(
            d.demand(Some(Quality::Low), second(6)),
            Some(Some(Quality::Low))
        );
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn the_update_names_the_primary_codec_and_enables_every_layer_up_to_the_highest() {
        let mut track = camera();
        track.sid = "TR_x".to_owned();
        let enabled = |update: &SubscribedQualityUpdate| {
            assert_eq!(update.subscribed_codecs.len(), 1);
            update.subscribed_codecs[0]
                .qualities
                .iter()
                .map(|q| q.enabled)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            enabled(&quality_update(&track, None)),
            [false, false, false]
        );
        assert_eq!(
            enabled(&quality_update(&track, Some(Quality::Low))),
            [true, false, false]
        );
        assert_eq!(
            enabled(&quality_update(&track, Some(Quality::Medium))),
            [true, true, false]
        );
        assert_eq!(
            enabled(&quality_update(&track, Some(Quality::High))),
            [true, true, true]
        );
        let update = quality_update(&track, Some(Quality::Low));
        assert_eq!(update.track_sid, "TR_x");
        assert_eq!(update.subscribed_codecs[0].codec, "vp8");
        let low = &update.subscribed_codecs[0].qualities[0];
        assert_eq!(low.quality, i32::from(livekit_protocol::VideoQuality::Low));
        #[allow(deprecated, reason = "the field older clients read")]
        let legacy = &update.subscribed_qualities;
        assert_eq!(legacy, &update.subscribed_codecs[0].qualities);
        // Without a known codec, no codec entry (it would be taken for a backup codec).
        track.codecs.clear();
        assert!(quality_update(&track, None).subscribed_codecs.is_empty());
    }
}
