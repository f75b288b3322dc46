//! H.264 key frame detection on RTP payloads (RFC 6184, packetization mode 0 and 1).
//!
//! A packet starts a key frame when it carries an IDR slice (NAL type 5) or a sequence parameter
//! set (type 7): browsers send SPS and PPS right before each IDR, usually aggregated in one STAP-A,
//! and a decoder joining there can start decoding (spec `matrixrtc-livekit.md` §5 item 12, janus
//! #1552). Payloads come as a single NAL unit (types 1–23), a STAP-A (24, several NAL units
//! prefixed by 16-bit sizes) or FU-A fragments (28; only the first fragment, S bit set, counts).
//! STAP-B, MTAP and FU-B belong to interleaved mode, which WebRTC does not negotiate.

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

fn starts_keyframe(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
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
                if nal.first().is_some_and(|h| starts_keyframe(h & 0x1f)) {
                    return true;
                }
                rest = tail.get(size..).unwrap_or_default();
            }
            false
        }
        FU_A => rest
            .first()
            .is_some_and(|fu| fu & 0x80 != 0 && starts_keyframe(fu & 0x1f)),
        t => starts_keyframe(t),
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
        assert!(is_keyframe(&[nal(24), 0, 0, 0, 1, nal(5)]));
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
}
