//! The SFU's media-forwarding decisions, sans-IO: which RTP packet goes to which subscriber, with
//! which sequence number and timestamp.
//!
//! Implements spec `matrixrtc-livekit.md` §2.8 (layer choice, switching on key frames, continuity
//! of sequence numbers, timestamps and VP8 PictureID) and §5 item 12. Nothing here depends on the
//! WebRTC engine: the engine hands over plain RTP fields and the payload, and applies what comes
//! back (see `docs/SFU.md`, "Forwarding decisions").
//!
//! - [`Codec`] and [`is_keyframe`]: what a packet is.
//! - [`vp8`]: the VP8 payload descriptor, parsed and rewritten (in place, or as a subscriber's
//!   head over a shared payload).
//! - [`h264`]: H.264 key frame detection.
//! - [`Quality`], [`quality_for_dimensions`]: simulcast layers and LiveKit's layer choice.
//! - [`DownTrack`]: one subscriber's view of one track: drop or forward, and the rewritten fields.
//! - [`loss`]: loss on an incoming stream, net of late and repaired packets (for metrics).

mod downtrack;
pub mod h264;
pub mod loss;
pub(crate) mod quality;
pub mod vp8;

pub use downtrack::{
    DownTrack, DownTrackConfig, DownTrackStats, DropReason, Forward, IncomingPacket,
    KeyframeRequest,
};
pub use quality::{Quality, quality_for_dimensions, quality_for_settings};

/// The codec of a track, from its MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `video/VP8`.
    Vp8,
    /// `video/H264`.
    H264,
    /// `video/VP9`.
    Vp9,
    /// `video/AV1`.
    Av1,
    /// `audio/opus`.
    Opus,
    /// Any other audio codec (`audio/red`, `audio/PCMU`, …): forwarded as is, no key frames.
    OtherAudio,
    /// Any other video codec: never has a recognisable key frame, so it never starts.
    OtherVideo,
}

impl Codec {
    /// The codec for a MIME type such as `video/VP8` (case-insensitive, as in SDP). `None` for a
    /// type that is neither `audio/…` nor `video/…`.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let (kind, name) = mime.split_once('/')?;
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        if kind.eq_ignore_ascii_case("audio") {
            Some(if is("opus") {
                Self::Opus
            } else {
                Self::OtherAudio
            })
        } else if kind.eq_ignore_ascii_case("video") {
            Some(if is("VP8") {
                Self::Vp8
            } else if is("H264") {
                Self::H264
            } else if is("VP9") {
                Self::Vp9
            } else if is("AV1") {
                Self::Av1
            } else {
                Self::OtherVideo
            })
        } else {
            None
        }
    }

    /// Whether this is a video codec (with key frames and, possibly, simulcast layers).
    pub fn is_video(self) -> bool {
        !matches!(self, Self::Opus | Self::OtherAudio)
    }

    /// The RTP clock rate: 90 kHz for video, 48 kHz for Opus. Other audio codecs have their own
    /// rates; the engine should pass the negotiated one to [`DownTrackConfig`] instead.
    pub fn default_clock_rate(self) -> u32 {
        if self.is_video() { 90_000 } else { 48_000 }
    }
}

/// Whether an RTP payload starts a key frame, where a decoder can start.
///
/// - VP8: start of partition 0 and the P bit of the frame header clear ([`vp8`]).
/// - H.264: an IDR slice or an SPS, alone, in a STAP-A, or as the first FU-A fragment ([`h264`]).
/// - VP9: the first byte of the payload descriptor has B (start of frame) set and P (inter
///   predicted) clear. Enough for simulcast; SVC spatial layers are not looked at.
/// - AV1: the aggregation header's N bit (first packet of a coded video sequence).
/// - Audio: never (every packet is a switch point; [`DownTrack`] knows).
///
/// Always false for truncated input; never panics.
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8::is_keyframe(payload),
        Codec::H264 => h264::is_keyframe(payload),
        Codec::Vp9 => payload.first().is_some_and(|b| b & 0x48 == 0x08),
        Codec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        Codec::Opus | Codec::OtherAudio | Codec::OtherVideo => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_from_mime_types() {
        assert_eq!(Codec::from_mime("video/VP8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("video/H264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime("video/VP9"), Some(Codec::Vp9));
        assert_eq!(Codec::from_mime("video/AV1"), Some(Codec::Av1));
        assert_eq!(Codec::from_mime("audio/opus"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("audio/red"), Some(Codec::OtherAudio));
        assert_eq!(Codec::from_mime("video/rtx"), Some(Codec::OtherVideo));
        assert_eq!(Codec::from_mime("application/data"), None);
        assert_eq!(Codec::from_mime("VP8"), None);
        assert!(Codec::Vp8.is_video() && !Codec::Opus.is_video());
        assert_eq!(Codec::Vp8.default_clock_rate(), 90_000);
        assert_eq!(Codec::Opus.default_clock_rate(), 48_000);
    }

    #[test]
    fn keyframes_per_codec() {
        assert!(is_keyframe(Codec::Vp8, &[0x10, 0x10, 0x02]));
        assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x11, 0x02]));
        assert!(is_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(!is_keyframe(Codec::H264, &[0x41, 0x9a]));
        // VP9: B set, P clear / P set / B clear.
        assert!(is_keyframe(Codec::Vp9, &[0x08, 0x00]));
        assert!(!is_keyframe(Codec::Vp9, &[0x48, 0x00]));
        assert!(!is_keyframe(Codec::Vp9, &[0x00, 0x00]));
        // AV1: N bit.
        assert!(is_keyframe(Codec::Av1, &[0x18]));
        assert!(!is_keyframe(Codec::Av1, &[0x10]));
        for codec in [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1, Codec::Opus] {
            assert!(!is_keyframe(codec, &[]));
        }
        assert!(!is_keyframe(Codec::Opus, &[0x10, 0x10]));
    }
}
