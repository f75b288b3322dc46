//! Simulcast layers: the three qualities, their rids, and which one a subscriber should get for
//! the size it renders (spec `matrixrtc-livekit.md` §2.7, §2.8).

use livekit_protocol::{TrackInfo, VideoLayer, VideoQuality};

use crate::media::TrackSettings;

/// One simulcast layer of a video track. Ordered from lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quality {
    /// rid `q`.
    Low,
    /// rid `h`.
    Medium,
    /// rid `f`, and the only layer of a track published without simulcast.
    High,
}

impl Quality {
    /// All qualities, lowest first.
    pub const ALL: [Self; 3] = [Self::Low, Self::Medium, Self::High];

    /// The layer an RTP stream belongs to, from its `rid` header extension: `q`, `h`, `f` as
    /// livekit-client publishes them (a two-layer publish uses `q` and `h`). A stream without a
    /// rid is the single layer of a non-simulcast track and counts as [`Quality::High`], as in
    /// LiveKit's TrackInfo. `None` for an unknown rid.
    pub fn from_rid(rid: Option<&str>) -> Option<Self> {
        match rid {
            None | Some("") | Some("f") => Some(Self::High),
            Some("q") => Some(Self::Low),
            Some("h") => Some(Self::Medium),
            Some(_) => None,
        }
    }

    /// The rid livekit-client gives this layer.
    pub fn rid(self) -> &'static str {
        match self {
            Self::Low => "q",
            Self::Medium => "h",
            Self::High => "f",
        }
    }

    /// The least time between two key frame requests to a publisher for this layer's stream, as
    /// LiveKit's defaults (`rtc.pli_throttle`): a low layer's key frames are small and a
    /// subscriber switching to it must not wait; an upper layer's cost the publisher's uplink
    /// most, and every subscriber of the layer receives them.
    pub fn keyframe_request_interval(self) -> std::time::Duration {
        match self {
            Self::Low => std::time::Duration::from_millis(500),
            Self::Medium | Self::High => std::time::Duration::from_secs(1),
        }
    }

    /// Index 0, 1, 2 (LiveKit's `VideoQuality` value).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The quality at index 0, 1, 2; anything above is [`Quality::High`].
    pub fn from_index(i: usize) -> Self {
        match i {
            0 => Self::Low,
            1 => Self::Medium,
            _ => Self::High,
        }
    }

    /// The next lower quality.
    pub fn lower(self) -> Option<Self> {
        match self {
            Self::Low => None,
            Self::Medium => Some(Self::Low),
            Self::High => Some(Self::Medium),
        }
    }

    /// The next higher quality.
    pub fn higher(self) -> Option<Self> {
        match self {
            Self::Low => Some(Self::Medium),
            Self::Medium => Some(Self::High),
            Self::High => None,
        }
    }
}

impl From<Quality> for VideoQuality {
    fn from(q: Quality) -> Self {
        match q {
            Quality::Low => Self::Low,
            Quality::Medium => Self::Medium,
            Quality::High => Self::High,
        }
    }
}

impl TryFrom<VideoQuality> for Quality {
    type Error = ();

    /// `Err` for `OFF`, which is no layer.
    fn try_from(q: VideoQuality) -> Result<Self, ()> {
        match q {
            VideoQuality::Low => Ok(Self::Low),
            VideoQuality::Medium => Ok(Self::Medium),
            VideoQuality::High => Ok(Self::High),
            VideoQuality::Off => Err(()),
        }
    }
}

/// The layers of the track's first (primary) codec, else the track-level list older clients
/// fill.
pub(crate) fn published_layers(track: &TrackInfo) -> &[VideoLayer] {
    match track.codecs.first() {
        Some(codec) if !codec.layers.is_empty() => &codec.layers,
        #[allow(
            deprecated,
            reason = "TrackInfo.layers is what pre-codecs clients announce"
        )]
        _ => &track.layers,
    }
}

/// LiveKit accepts a layer up to 10 % smaller than the rendered size (its layer selection
/// tolerance), so a 360p layer serves a 400-pixel-high tile.
const TOLERANCE: f64 = 0.9;

/// The layer to forward for a subscriber rendering `track` at `width` × `height` (from
/// `UpdateTrackSettings`), after LiveKit's `GetQualityForDimension`:
///
/// - the size that counts is the short side: height for landscape tracks, width for portrait
///   ones (track width < height), for the request and for each layer alike;
/// - layer sizes come from the track's `layers` (sorted, so two-layer publishes give `Low`,
///   `Medium`), or default to 180, 360 and the track's own size;
/// - requested = size × 0.9; the answer is the lowest layer at least that large, else the top.
///
/// An unknown request (0 × 0) or an unknown track size gets [`Quality::High`].
pub fn quality_for_dimensions(track: &TrackInfo, width: u32, height: u32) -> Quality {
    let portrait = track.width < track.height;
    let short_side = |w: u32, h: u32| if portrait { w } else { h };
    let requested = short_side(width, height);
    let original = short_side(track.width, track.height);
    if requested == 0 || (original == 0 && published_layers(track).is_empty()) {
        return Quality::High;
    }
    let mut sizes: Vec<u32> = published_layers(track)
        .iter()
        .map(|l| short_side(l.width, l.height))
        .collect();
    if sizes.is_empty() {
        sizes = vec![180, 360, original];
    }
    sizes.sort_unstable();
    sizes.truncate(Quality::ALL.len());
    let requested = f64::from(requested) * TOLERANCE;
    let index = sizes
        .iter()
        .position(|&s| f64::from(s) >= requested)
        .unwrap_or(sizes.len().saturating_sub(1));
    Quality::from_index(index)
}

/// The layer for a subscriber's `track_setting`: by the rendered size when it gave one
/// ([`quality_for_dimensions`]), else the layer it named (`quality`), else the top one.
pub fn quality_for_settings(track: &TrackInfo, settings: &TrackSettings) -> Quality {
    if settings.width == 0 && settings.height == 0 {
        return settings.quality.unwrap_or(Quality::High);
    }
    quality_for_dimensions(track, settings.width, settings.height)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use livekit_protocol::SimulcastCodecInfo;

    use super::*;

    /// A VP8 track of `width` × `height` announcing `layers` (also used by `dynacast`'s tests).
    pub(crate) fn track(width: u32, height: u32, layers: &[(u32, u32)]) -> TrackInfo {
        TrackInfo {
            width,
            height,
            codecs: vec![SimulcastCodecInfo {
                mime_type: "video/VP8".to_owned(),
                layers: layers
                    .iter()
                    .map(|&(width, height)| VideoLayer {
                        width,
                        height,
                        ..VideoLayer::default()
                    })
                    .collect(),
                ..SimulcastCodecInfo::default()
            }],
            ..TrackInfo::default()
        }
    }

    #[test]
    fn rids_map_to_qualities() {
        assert_eq!(Quality::from_rid(Some("q")), Some(Quality::Low));
        assert_eq!(Quality::from_rid(Some("h")), Some(Quality::Medium));
        assert_eq!(Quality::from_rid(Some("f")), Some(Quality::High));
        assert_eq!(Quality::from_rid(None), Some(Quality::High));
        assert_eq!(Quality::from_rid(Some("x")), None);
        for q in Quality::ALL {
            assert_eq!(Quality::from_rid(Some(q.rid())), Some(q));
            assert_eq!(Quality::try_from(VideoQuality::from(q)), Ok(q));
            assert_eq!(Quality::from_index(q.index()), q);
        }
        assert_eq!(Quality::try_from(VideoQuality::Off), Err(()));
    }

    #[test]
    fn default_layer_sizes() {
        let t = track(1280, 720, &[]);
        assert_eq!(quality_for_dimensions(&t, 320, 180), Quality::Low);
        // 200 × 0.9 = 180: the 180 layer still suffices.
        assert_eq!(quality_for_dimensions(&t, 356, 200), Quality::Low);
        assert_eq!(quality_for_dimensions(&t, 356, 201), Quality::Medium);
        assert_eq!(quality_for_dimensions(&t, 640, 400), Quality::Medium);
        assert_eq!(quality_for_dimensions(&t, 1280, 720), Quality::High);
        // Larger than anything published: the top layer.
        assert_eq!(quality_for_dimensions(&t, 3840, 2160), Quality::High);
        // Unknown sizes.
        assert_eq!(quality_for_dimensions(&t, 0, 0), Quality::High);
        assert_eq!(
            quality_for_dimensions(&track(0, 0, &[]), 320, 180),
            Quality::High
        );
    }

    #[test]
    fn a_size_wins_over_a_named_quality_which_wins_over_nothing() {
        let t = track(1280, 720, &[]);
        let named = |quality| TrackSettings {
            quality,
            ..TrackSettings::default()
        };
        assert_eq!(quality_for_settings(&t, &named(None)), Quality::High);
        assert_eq!(
            quality_for_settings(&t, &named(Some(Quality::Low))),
            Quality::Low
        );
        let sized = TrackSettings {
            width: 640,
            height: 360,
            quality: Some(Quality::Low),
            ..TrackSettings::default()
        };
        assert_eq!(quality_for_settings(&t, &sized), Quality::Medium);
    }

    #[test]
    fn layers_from_track_info_two_layers_and_portrait() {
        let two = track(640, 360, &[(640, 360), (320, 180)]);
        assert_eq!(quality_for_dimensions(&two, 160, 90), Quality::Low);
        assert_eq!(quality_for_dimensions(&two, 640, 360), Quality::Medium);
        assert_eq!(quality_for_dimensions(&two, 1920, 1080), Quality::Medium);

        // A phone camera held upright: the short side is the width.
        let portrait = track(720, 1280, &[(180, 320), (360, 640), (720, 1280)]);
        assert_eq!(quality_for_dimensions(&portrait, 180, 320), Quality::Low);
        assert_eq!(quality_for_dimensions(&portrait, 360, 640), Quality::Medium);
        assert_eq!(quality_for_dimensions(&portrait, 700, 1000), Quality::High);
    }

    #[test]
    #[allow(deprecated, reason = "the track-level list older clients fill")]
    fn track_level_layers_when_the_codec_has_none() {
        let mut t = track(640, 360, &[]);
        t.layers = vec![
            VideoLayer {
                width: 640,
                height: 360,
                ..VideoLayer::default()
            },
            VideoLayer {
                width: 320,
                height: 180,
                ..VideoLayer::default()
            },
        ];
        assert_eq!(quality_for_dimensions(&t, 640, 360), Quality::Medium);
        assert_eq!(quality_for_dimensions(&t, 1280, 720), Quality::Medium);
    }
}
