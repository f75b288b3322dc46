//! H.264 key frame detection on RTP payloads (RFC 6184, packetization mode 0 and 1).
//!
//! A packet starts a key frame when it carries a sequence parameter set (NAL type 7) or the first
//! slice of an IDR picture (type 5): browsers send SPS and PPS right before each IDR, usually
//! aggregated in one STAP-A, and a decoder joining there can start decoding (spec
//! `matrixrtc-livekit.md` §5 item 12, janus #1552). An IDR slice without the SPS still counts, for
//! encoders that do not repeat it; but only the picture's first slice, whose `first_mb_in_slice`
//! is 0: a picture cut into several slices (hardware encoders do) whose first packets were lost
//! would otherwise be started in its middle. Payloads come as a single NAL unit (types 1–23), a
//! STAP-A (24, several NAL units prefixed by 16-bit sizes) or FU-A fragments (28; only the first
//! fragment, S bit set, counts). STAP-B, MTAP and FU-B belong to interleaved mode, which WebRTC
//! does not negotiate.

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether a NAL unit of `nal_type` whose body (after its header) begins with `body` starts a key
/// frame. A slice header begins with `first_mb_in_slice`, an Exp-Golomb number whose code for 0
/// is the single bit 1: the picture's first slice is the one whose body's first bit is set.
fn starts_keyframe(nal_type: u8, body: &[u8]) -> bool {
    match nal_type {
        NAL_SPS => true,
        NAL_IDR => body.first().is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Whether an RTP payload of an H.264 stream starts a key frame. False for truncated input.
pub fn is_keyframe(payload: &[u8]) -> bool {
    let Some((&header, rest)) = payload.split_first() else {
        return false;
    };
    match header & 0x1f {
        STAP_A => {
            let mut rest = rest;
            // Each aggregated unit: 16-bit size, then the NAL unit. A truncated tail ends the walk
            // but does not undo an IDR/SPS already seen.
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some(nal) = tail.get(..size) else {
                    return false;
                };
                if let Some((h, body)) = nal.split_first()
                    && starts_keyframe(h & 0x1f, body)
                {
                    return true;
                }
                rest = tail.get(size..).unwrap_or_default();
            }
            false
        }
        FU_A => rest
            .split_first()
            .is_some_and(|(fu, body)| fu & 0x80 != 0 && starts_keyframe(fu & 0x1f, body)),
        t => starts_keyframe(t, rest),
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

    /// NAL header with NRI 3 and the given type.
    fn nal(t: u8) -> u8 {
        0x60 | t
    }

    #[test]
    fn single_nal_units() {
        assert!(is_keyframe(&[nal(5), 0x88, 0x84]));
        assert!(is_keyframe(&[nal(7), 0x42, 0xe0, 0x1f]));
        // Non-IDR slice, PPS, SEI: not a key frame on their own.
        assert!(!is_keyframe(&[nal(1), 0x9a]));
        assert!(!is_keyframe(&[nal(8), 0xce]));
        assert!(!is_keyframe(&[nal(6), 0x05]));
        assert!(!is_keyframe(&[]));
    }

    #[test]
    fn stap_a_with_sps_pps_idr_and_without() {
        let sps = [nal(7), 0x42, 0xe0, 0x1f];
        let pps = [nal(8), 0xce, 0x3c];
        let idr = [nal(5), 0x88];
        let mut key = vec![nal(24)];
        for unit in [&sps[..], &pps[..], &idr[..]] {
            key.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            key.extend_from_slice(unit);
        }
        assert!(is_keyframe(&key));

        // PPS then IDR: found in the second unit.
        let mut pps_idr = vec![nal(24), 0, 3];
        pps_idr.extend_from_slice(&pps);
        pps_idr.extend_from_slice(&[0, 2]);
        pps_idr.extend_from_slice(&idr);
        assert!(is_keyframe(&pps_idr));

        // Two non-IDR slices.
        let delta = [nal(24), 0, 2, nal(1), 0x9a, 0, 2, nal(1), 0x9b];
        assert!(!is_keyframe(&delta));
    }

    #[test]
    fn stap_a_truncated_or_lying_sizes() {
        // A size that runs past the end: the IDR behind it is never reached.
        assert!(!is_keyframe(&[nal(24), 0, 9, nal(5), 0x88]));
        // Odd trailing byte after a non-key unit.
        assert!(!is_keyframe(&[nal(24), 0, 1, nal(1), 0]));
        // A zero-sized unit is skipped.
        assert!(is_keyframe(&[nal(24), 0, 0, 0, 2, nal(5), 0x88]));
        assert!(!is_keyframe(&[nal(24)]));
        assert!(!is_keyframe(&[nal(24), 0]));
    }

    #[test]
    fn fu_a_only_the_start_fragment_of_an_idr() {
        let indicator = nal(28);
        assert!(is_keyframe(&[indicator, 0x80 | 5, 0x88]));
        // Middle and end fragments of the IDR.
        assert!(!is_keyframe(&[indicator, 5, 0x88]));
        assert!(!is_keyframe(&[indicator, 0x40 | 5, 0x88]));
        // Start of a non-IDR slice.
        assert!(!is_keyframe(&[indicator, 0x80 | 1, 0x88]));
        // Truncated: no FU header.
        assert!(!is_keyframe(&[indicator]));
    }

    /// A picture in several slices: only its first (`first_mb_in_slice` 0, the body's first bit
    /// set) starts it, whole or as the start of its fragments; a later slice (here 1, code `010`,
    /// and 5, code `00110`) does not, nor an IDR unit with no body to read.
    #[test]
    fn only_the_first_slice_of_an_idr_picture_starts_it() {
        let first = 0b1000_1000;
        let (second, sixth) = (0b0100_0000, 0b0011_0000);
        assert!(is_keyframe(&[nal(5), first]));
        assert!(!is_keyframe(&[nal(5), second, 0x88]));
        assert!(!is_keyframe(&[nal(5), sixth, 0x88]));
        assert!(!is_keyframe(&[nal(5)]));
        let indicator = nal(28);
        assert!(is_keyframe(&[indicator, 0x80 | 5, first]));
        assert!(!is_keyframe(&[indicator, 0x80 | 5, second, 0x88]));
        assert!(!is_keyframe(&[indicator, 0x80 | 5]));
        // Aggregated: a later slice alone is not a start; with the SPS before it, the SPS is.
        assert!(!is_keyframe(&[nal(24), 0, 2, nal(5), second]));
        assert!(is_keyframe(&[
            nal(24),
            0,
            2,
            nal(1),
            0x9a,
            0,
            2,
            nal(5),
            first
        ]));
        assert!(is_keyframe(&[
            nal(24),
            0,
            2,
            nal(7),
            0x42,
            0,
            2,
            nal(5),
            second
        ]));
    }
}
