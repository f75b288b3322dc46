//! Wire framing of LiveKit signalling: one protobuf message per binary WebSocket frame.
//!
//! Implements spec `matrixrtc-livekit.md` §2.2 (framing) and the `join_request` query parameter of
//! §2.1. Client frames are `livekit.SignalRequest`, server frames `livekit.SignalResponse`, both
//! from the `livekit-protocol` crate. Everything here takes bytes from the network, so nothing
//! panics: frames above [`MAX_REQUEST_BYTES`] are refused before decoding, and [`RateLimiter`]
//! bounds how many frames a connection may send.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use livekit_protocol::{
    JoinRequest, SignalRequest, SignalResponse, WrappedJoinRequest, signal_request,
};

use crate::ids::TrackSid;
use prost::Message;

/// Largest accepted client frame. The biggest a well-behaved client sends is its answer to the
/// subscriber offer, one m-line per subscribed track and listing the offer's codecs: with the
/// SFU's codec set an offer takes ≈750 B per m-line (3 773 B for four media m-lines and the data
/// channel, in the Chromium test), so this leaves room for a couple of hundred subscribed tracks.
/// 64 KiB, the earlier limit, refused answers past ≈27 tracks with `rtc`'s full codec list.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Why a frame or parameter could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    /// Longer than [`MAX_REQUEST_BYTES`].
    #[error("signal message too large ({0} bytes)")]
    TooLarge(usize),
    /// Not a valid protobuf message of the expected type.
    #[error("malformed signal message")]
    Malformed,
    /// A well-formed `SignalRequest` with no message set (or one this build does not know).
    #[error("empty signal message")]
    Empty,
    /// `join_request` is compressed (gzip); only uncompressed join requests are supported.
    #[error("compressed join_request is not supported")]
    Compressed,
    /// The connection sends faster than its budget.
    #[error("signal rate limit exceeded")]
    RateLimited,
}

/// Decodes one client frame. The entry point for fuzzing.
pub fn decode_request(bytes: &[u8]) -> Result<SignalRequest, SignalError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(SignalError::TooLarge(bytes.len()));
    }
    let request = SignalRequest::decode(bytes).map_err(|_| SignalError::Malformed)?;
    if request.message.is_none() {
        return Err(SignalError::Empty);
    }
    Ok(request)
}

/// Encodes one server frame.
pub fn encode_response(response: &SignalResponse) -> Vec<u8> {
    response.encode_to_vec()
}

/// Decodes a server frame (for clients and tests).
pub fn decode_response(bytes: &[u8]) -> Result<SignalResponse, SignalError> {
    SignalResponse::decode(bytes).map_err(|_| SignalError::Malformed)
}

/// Encodes a client frame (for clients and tests).
pub fn encode_request(request: &SignalRequest) -> Vec<u8> {
    request.encode_to_vec()
}

/// Decodes the `join_request` query parameter: URL-safe base64 (padding optional) of a
/// `WrappedJoinRequest`. Gzip-compressed requests are refused with [`SignalError::Compressed`].
pub fn decode_join_request(param: &str) -> Result<JoinRequest, SignalError> {
    if param.len() > MAX_REQUEST_BYTES {
        return Err(SignalError::TooLarge(param.len()));
    }
    let bytes = URL_SAFE
        .decode(param)
        .or_else(|_| URL_SAFE_NO_PAD.decode(param))
        .map_err(|_| SignalError::Malformed)?;
    let wrapped =
        WrappedJoinRequest::decode(bytes.as_slice()).map_err(|_| SignalError::Malformed)?;
    if wrapped.compression != 0 {
        return Err(SignalError::Compressed);
    }
    JoinRequest::decode(wrapped.join_request.as_slice()).map_err(|_| SignalError::Malformed)
}

/// A token bucket per connection: `burst` frames at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// A full bucket of `burst`, refilled by one every `every`.
    pub fn refilled_every(burst: u32, every: Duration) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: 1.0 / every.as_secs_f64().max(f64::MIN_POSITIVE),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Whether [`check`](Self::check) at `now` would take a token, without taking it.
    pub fn would_admit(&self, now: Instant) -> bool {
        self.tokens_at(now) >= 1.0
    }

    /// Whether the bucket is full again at `now`: as good as a new one.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.burst
    }

    /// The tokens the bucket holds at `now`.
    fn tokens_at(&self, now: Instant) -> f64 {
        match self.last {
            Some(last) => {
                let elapsed = now.saturating_duration_since(last);
                (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst)
            }
            None => self.tokens,
        }
    }

    /// Takes one frame's token at `now`; `Err` when the budget is spent.
    pub fn check(&mut self, now: Instant) -> Result<(), SignalError> {
        self.tokens = self.tokens_at(now);
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(SignalError::RateLimited)
        }
    }
}

/// The `track_setting` frames a new connection is owed beside its [`RateLimiter`] budget: a few
/// for each video track it receives, for a while. livekit-client sends one per track it receives
/// all at once after a resume (`updateSubscriptions`), and up to three per track shown after a
/// join (hidden while its element is not yet in the page, visible, then its size); in a room of
/// about 85 video tracks or more that passed the budget's burst and closed the connection
/// (review helper-75). Only a setting naming one of those tracks, and nothing else, is taken, so
/// what is owed buys no other work.
#[derive(Debug, Default)]
pub struct OwedSettings {
    left: HashMap<TrackSid, u8>,
    until: Option<Instant>,
}

impl OwedSettings {
    /// `per_track` settings for each of `tracks`, until `until`.
    pub fn new(tracks: impl IntoIterator<Item = TrackSid>, per_track: u8, until: Instant) -> Self {
        Self {
            left: tracks.into_iter().map(|sid| (sid, per_track)).collect(),
            until: Some(until),
        }
    }

    /// Whether `request`, arriving at `now`, is a setting owed: naming exactly one of the tracks,
    /// with settings left for it, in time. Taken if so.
    pub fn take(&mut self, request: &SignalRequest, now: Instant) -> bool {
        if self.lapse(now) {
            return false;
        }
        let Some(signal_request::Message::TrackSetting(setting)) = &request.message else {
            return false;
        };
        let [sid] = setting.track_sids.as_slice() else {
            return false;
        };
        match TrackSid::parse(sid).and_then(|sid| self.left.get_mut(&sid)) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets what is owed once its time is past at `now`; whether it is.
    pub fn lapse(&mut self, now: Instant) -> bool {
        if self.until.is_none_or(|until| now >= until) {
            self.left = HashMap::new();
            self.until = None;
            return true;
        }
        false
    }
}

impl Default for RateLimiter {
    /// 100 frames at once, 50 per second: ICE trickle bursts fit, floods do not.
    fn default() -> Self {
        Self::new(100, 50)
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

    use std::time::Duration;

    use livekit_protocol::{Ping, signal_request};

    use super::*;

    #[test]
    fn round_trips_a_ping() {
        let request = SignalRequest {
            message: Some(signal_request::Message::PingReq(Ping {
                timestamp: 42,
                rtt: 7,
            })),
        };
        let decoded = decode_request(&encode_request(&request)).unwrap();
        assert_eq!(decoded, request);
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(decode_request(&[]), Err(SignalError::Empty));
        assert_eq!(decode_request(&[0xff; 16]), Err(SignalError::Malformed));
        // Field 4 (add_track), length-delimited, claims 100 bytes but has 1.
        assert_eq!(decode_request(&[0x22, 100, 0]), Err(SignalError::Malformed));
        // A truncated varint.
        assert_eq!(decode_request(&[0x70, 0x80]), Err(SignalError::Malformed));
        let huge = vec![0u8; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            decode_request(&huge),
            Err(SignalError::TooLarge(MAX_REQUEST_BYTES + 1))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic stand-in for the fuzzer.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            let _ = decode_request(&bytes);
            let _ = decode_join_request(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn join_request_parameter() {
        let inner = JoinRequest {
            participant_sid: "PA_x".into(),
            ..JoinRequest::default()
        };
        let wrapped = WrappedJoinRequest {
            compression: 0,
            join_request: inner.encode_to_vec(),
        };
        let param = URL_SAFE.encode(wrapped.encode_to_vec());
        assert_eq!(decode_join_request(&param).unwrap(), inner);
        let gz = WrappedJoinRequest {
            compression: 1,
            join_request: vec![1, 2, 3],
        };
        assert_eq!(
            decode_join_request(&URL_SAFE.encode(gz.encode_to_vec())),
            Err(SignalError::Compressed)
        );
        assert_eq!(decode_join_request("!!!"), Err(SignalError::Malformed));
    }

    #[test]
    fn rate_limiter_refills_over_time() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(3, 1);
        for _ in 0..3 {
            limiter.check(start).unwrap();
        }
        assert_eq!(limiter.check(start), Err(SignalError::RateLimited));
        limiter.check(start + Duration::from_secs(1)).unwrap();
        assert_eq!(
            limiter.check(start + Duration::from_secs(1)),
            Err(SignalError::RateLimited)
        );
    }

    /// Owed: a setting naming one of the tracks, as many times as owed, in time. Not owed: a
    /// setting naming another track, or two, or none; another request; anything past the time.
    #[test]
    fn settings_owed_are_those_naming_one_track_received_while_they_last() {
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let setting = |sids: &[&str]| SignalRequest {
            message: Some(signal_request::Message::TrackSetting(
                livekit_protocol::UpdateTrackSettings {
                    track_sids: sids.iter().map(|s| (*s).to_owned()).collect(),
                    ..Default::default()
                },
            )),
        };
        let tracks = ["TR_a", "TR_b"].map(|sid| TrackSid::parse(sid).unwrap());
        let mut owed = OwedSettings::new(tracks.clone(), 2, later(30_000));
        assert!(owed.take(&setting(&["TR_a"]), start));
        assert!(owed.take(&setting(&["TR_a"]), later(1)));
        assert!(!owed.take(&setting(&["TR_a"]), later(2)), "two per track");
        assert!(
            !owed.take(&setting(&["TR_c"]), start),
            "not a track received"
        );
        assert!(!owed.take(&setting(&["TR_b", "TR_b"]), start), "two sids");
        assert!(!owed.take(&setting(&[]), start));
        assert!(!owed.take(&setting(&["not a sid"]), start));
        let ping = SignalRequest {
            message: Some(signal_request::Message::Ping(1)),
        };
        assert!(!owed.take(&ping, start));
        assert!(owed.take(&setting(&["TR_b"]), later(29_999)));
        assert!(
            !owed.take(&setting(&["TR_b"]), later(30_000)),
            "past the time"
        );
        assert!(owed.left.is_empty());
        assert!(!OwedSettings::default().take(&setting(&["TR_a"]), start));
        // Other frames let it lapse too.
        let mut other = OwedSettings::new(tracks, 2, later(30_000));
        assert!(!other.lapse(later(29_999)));
        assert!(other.lapse(later(30_000)) && other.left.is_empty());
    }
}
