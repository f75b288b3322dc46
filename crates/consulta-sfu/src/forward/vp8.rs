//! The VP8 RTP payload descriptor (RFC 7741 §4.2): parsing, key frame detection, and in-place
//! rewriting of PictureID and TL0PICIDX.
//!
//! When the SFU switches a subscriber from one simulcast layer to another, each layer carries its
//! own PictureID and TL0PICIDX sequences. Chrome freezes when they jump (spec
//! `matrixrtc-livekit.md` §2.8, §5 item 12, mediasoup #140), so the forwarder rewrites them to run
//! on from the last values it sent. A rewrite never changes the packet's length: a 7-bit PictureID
//! stays 7 bits wide and a 15-bit one 15 bits wide.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (OPTIONAL, M = 15-bit PictureID, one more byte follows)
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! ```
//!
//! LiveKit E2EE leaves the first 10 bytes of a key frame's VP8 payload in clear, so the descriptor
//! and the first payload byte (which holds the key frame flag) are always readable.

/// A PictureID as carried in one packet: its value and its width on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureId {
    /// A 7-bit PictureID (M bit clear).
    Short(u8),
    /// A 15-bit PictureID (M bit set).
    Long(u16),
}

impl PictureId {
    /// The value, 0..=127 or 0..=32767.
    pub fn value(self) -> u16 {
        match self {
            Self::Short(v) => u16::from(v),
            Self::Long(v) => v,
        }
    }

    /// The mask of the value's width (0x7f or 0x7fff).
    pub fn mask(self) -> u16 {
        match self {
            Self::Short(_) => 0x7f,
            Self::Long(_) => 0x7fff,
        }
    }
}

/// The fields of a VP8 payload descriptor that forwarding needs, and where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// S bit: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// Partition index (PID).
    pub partition_index: u8,
    /// PictureID, if present.
    pub picture_id: Option<PictureId>,
    /// TL0PICIDX, if present.
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index (TID), if present.
    pub temporal_id: Option<u8>,
    /// Length of the descriptor in bytes; the VP8 payload starts here.
    pub len: usize,
    /// This packet starts a key frame: start of partition 0 and the P bit of the VP8 frame header
    /// clear.
    pub keyframe: bool,
}

impl Descriptor {
    /// Parses the descriptor at the start of an RTP payload. `None` if it is truncated (including
    /// a descriptor with no VP8 payload byte after it).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let extended = first & 0x80 != 0;
        let start_of_partition = first & 0x10 != 0;
        let partition_index = first & 0x07;
        let mut at = 1;
        let mut picture_id = None;
        let mut tl0_pic_idx = None;
        let mut temporal_id = None;
        if extended {
            let x = *payload.get(at)?;
            at += 1;
            if x & 0x80 != 0 {
                let b = *payload.get(at)?;
                at += 1;
                picture_id = Some(if b & 0x80 != 0 {
                    let lo = *payload.get(at)?;
                    at += 1;
                    PictureId::Long(u16::from(b & 0x7f) << 8 | u16::from(lo))
                } else {
                    PictureId::Short(b)
                });
            }
            if x & 0x40 != 0 {
                tl0_pic_idx = Some(*payload.get(at)?);
                at += 1;
            }
            if x & 0x30 != 0 {
                let b = *payload.get(at)?;
                at += 1;
                if x & 0x20 != 0 {
                    temporal_id = Some(b >> 6);
                }
            }
        }
        let header = *payload.get(at)?;
        Some(Self {
            start_of_partition,
            partition_index,
            picture_id,
            tl0_pic_idx,
            temporal_id,
            len: at,
            keyframe: start_of_partition && partition_index == 0 && header & 0x01 == 0,
        })
    }
}

/// Whether an RTP payload of a VP8 stream starts a key frame. False for truncated input.
pub fn is_keyframe(payload: &[u8]) -> bool {
    Descriptor::parse(payload).is_some_and(|d| d.keyframe)
}

/// Overwrites PictureID and TL0PICIDX in place, where the packet carries them. Each value is
/// truncated to the width the packet already uses (7 or 15 bits for the PictureID), so the
/// packet's length never changes. Returns the descriptor as rewritten, or `None` (and leaves the
/// payload untouched) if it does not parse.
pub fn rewrite(payload: &mut [u8], picture_id: u16, tl0_pic_idx: u8) -> Option<Descriptor> {
    let mut d = Descriptor::parse(payload)?;
    // Positions follow from the parse: byte 0, X byte at 1, PictureID from 2, TL0PICIDX after it.
    let mut at = 2;
    if let Some(old) = d.picture_id {
        let new = match old {
            PictureId::Short(_) => {
                let v = (picture_id & 0x7f) as u8;
                *payload.get_mut(at)? = v;
                at += 1;
                PictureId::Short(v)
            }
            PictureId::Long(_) => {
                let v = picture_id & 0x7fff;
                let [hi, lo] = v.to_be_bytes();
                *payload.get_mut(at)? = 0x80 | hi;
                *payload.get_mut(at + 1)? = lo;
                at += 2;
                PictureId::Long(v)
            }
        };
        d.picture_id = Some(new);
    }
    if d.tl0_pic_idx.is_some() {
        *payload.get_mut(at)? = tl0_pic_idx;
        d.tl0_pic_idx = Some(tl0_pic_idx);
    }
    Some(d)
}

/// The longest payload descriptor (RFC 7741 §4.2: 1 + 1 + 2 + 1 + 1 bytes), all that
/// [`rewrite`] may change.
pub const DESCRIPTOR_MAX: usize = 6;

/// A rewritten payload descriptor: the first bytes of one subscriber's copy of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    bytes: [u8; DESCRIPTOR_MAX],
    len: u8,
}

impl Head {
    /// The descriptor's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Writes the descriptor over the start of `payload` (the one it was made from, or a copy).
    pub fn apply(&self, payload: &mut [u8]) {
        if let Some(start) = payload.get_mut(..usize::from(self.len)) {
            start.copy_from_slice(self.bytes());
        }
    }
}

/// What [`rewrite`] would make of `payload`'s descriptor, without touching the payload: the
/// descriptor as rewritten, and its bytes where they differ from the payload's (`None`: the
/// payload can go as it is). `None` if it does not parse.
pub fn rewritten(
    payload: &[u8],
    picture_id: u16,
    tl0_pic_idx: u8,
) -> Option<(Descriptor, Option<Head>)> {
    // The descriptor and the VP8 header byte after it, which the parse wants.
    let mut start = [0; DESCRIPTOR_MAX + 1];
    let taken = payload.len().min(start.len());
    let start = start.get_mut(..taken)?;
    start.copy_from_slice(payload.get(..taken)?);
    let d = rewrite(start, picture_id, tl0_pic_idx)?;
    let head = (start.get(..d.len) != payload.get(..d.len)).then(|| {
        let mut bytes = [0; DESCRIPTOR_MAX];
        for (to, from) in bytes.iter_mut().zip(start.iter().take(d.len)) {
            *to = *from;
        }
        Head {
            bytes,
            len: d.len as u8,
        }
    });
    Some((d, head))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use super::*;

    /// A VP8 packet: descriptor with a 15-bit (`long`) or 7-bit PictureID and a TL0PICIDX, then
    /// a VP8 payload whose first byte says key frame or not. `start` sets S (partition 0).
    pub(crate) fn packet(long: bool, picture_id: u16, tl0: u8, start: bool, key: bool) -> Vec<u8> {
        let mut p = vec![0x80 | if start { 0x10 } else { 0 }, 0x80 | 0x40];
        if long {
            p.extend_from_slice(&(0x8000 | picture_id).to_be_bytes());
        } else {
            p.push((picture_id & 0x7f) as u8);
        }
        p.push(tl0);
        // Frame header byte 0: size bits, show_frame, version 0, P bit (0 = key frame).
        p.push(if key { 0x10 } else { 0x11 });
        p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0xaa, 0xbb]);
        p
    }

    #[test]
    fn minimal_descriptor_keyframe_and_delta() {
        // S=1, PID=0, no extension; payload byte P=0.
        assert!(is_keyframe(&[0x10, 0x10, 0x02]));
        // P=1: inter frame.
        assert!(!is_keyframe(&[0x10, 0x11, 0x02]));
        // Not the start of a partition (continuation packet of a key frame).
        assert!(!is_keyframe(&[0x00, 0x10]));
        // Start of partition 1, not 0.
        assert!(!is_keyframe(&[0x11, 0x10]));
    }

    #[test]
    fn extended_descriptors_parse() {
        let key = packet(true, 0x1234, 7, true, true);
        let d = Descriptor::parse(&key).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Long(0x1234)));
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.len, 5);
        assert!(d.keyframe);
        let delta = packet(false, 100, 9, true, false);
        let d = Descriptor::parse(&delta).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Short(100)));
        assert_eq!(d.len, 4);
        assert!(!d.keyframe);
        // T and K: TID in the top two bits.
        let d = Descriptor::parse(&[0x90, 0x30, 0b1010_0000, 0x10]).unwrap();
        assert_eq!(d.temporal_id, Some(2));
        assert!(d.keyframe);
        // K alone: the byte is present but TID is not meaningful.
        let d = Descriptor::parse(&[0x90, 0x10, 0b1010_0000, 0x10]).unwrap();
        assert_eq!(d.temporal_id, None);
        assert_eq!(d.len, 3);
    }

    #[test]
    fn truncated_input_is_no_keyframe() {
        let key = packet(true, 0x1234, 7, true, true);
        for n in 0..6 {
            assert!(Descriptor::parse(&key[..n]).is_none(), "len {n}");
            assert!(!is_keyframe(&key[..n]));
        }
        assert!(is_keyframe(&key[..6]));
        assert!(!is_keyframe(&[]));
        // X set but no extension byte; I set but no PictureID; M set but one byte missing.
        assert!(Descriptor::parse(&[0x90]).is_none());
        assert!(Descriptor::parse(&[0x90, 0x80]).is_none());
        assert!(Descriptor::parse(&[0x90, 0x80, 0x81]).is_none());
    }

    #[test]
    fn rewrite_keeps_the_width_and_the_length() {
        let mut long = packet(true, 0x1234, 7, true, true);
        let before = long.clone();
        let d = rewrite(&mut long, 0x7fff, 200).unwrap();
        assert_eq!(long.len(), before.len());
        assert_eq!(d.picture_id, Some(PictureId::Long(0x7fff)));
        assert_eq!(&long[2..5], &[0xff, 0xff, 200]);
        assert_eq!(long[5..], before[5..], "payload untouched");
        assert!(Descriptor::parse(&long).unwrap().keyframe);

        // 15-bit wrap: a value past 0x7fff is truncated to the 15-bit space.
        let d = rewrite(&mut long, 0x8000, 0).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Long(0)));
        assert_eq!(&long[2..4], &[0x80, 0x00], "M bit stays set");

        // 7-bit: truncated to 7 bits, still one byte.
        let mut short = packet(false, 5, 1, false, false);
        let len = short.len();
        let d = rewrite(&mut short, 130, 255).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Short(2)));
        assert_eq!(short.len(), len);
        assert_eq!(&short[2..4], &[2, 255]);
        assert_eq!(Descriptor::parse(&short).unwrap(), d);
    }

    #[test]
    fn rewrite_without_fields_changes_nothing() {
        let mut p = vec![0x10, 0x10, 0x02];
        let before = p.clone();
        assert!(rewrite(&mut p, 77, 77).is_some());
        assert_eq!(p, before);
        let mut truncated = vec![0x90, 0x80];
        assert!(rewrite(&mut truncated, 1, 1).is_none());
        assert_eq!(truncated, vec![0x90, 0x80]);
    }

    /// What `rewritten` says, applied to a copy, is what `rewrite` makes of the payload in place,
    /// for every descriptor shape, and it names no bytes when nothing changes.
    #[test]
    fn the_rewritten_head_is_the_rewrite_in_place() {
        let mut payloads = vec![
            vec![0x10, 0x10, 0x02],
            vec![0x90, 0x30, 0b1010_0000, 0x10, 0x01],
            vec![0x90, 0x10, 0b1010_0000, 0x10],
            vec![0x90, 0x80],
        ];
        for long in [true, false] {
            for tl0 in [true, false] {
                for key in [true, false] {
                    payloads.push(packet(long, 0x1234, 7, tl0, key));
                }
            }
        }
        // The longest descriptor: I (15 bits), L and T/K, then the header byte and nothing more.
        payloads.push(vec![0x90, 0xf0, 0x92, 0x34, 7, 0x40, 0x10]);
        for payload in &payloads {
            for n in 0..=payload.len() {
                let payload = &payload[..n];
                for (id, tl0) in [(0x1234, 7), (0x0034, 7), (0x1234, 8), (0x7fff, 255), (5, 0)] {
                    let mut in_place = payload.to_vec();
                    let expected = rewrite(&mut in_place, id, tl0);
                    let got = rewritten(payload, id, tl0);
                    assert_eq!(got.map(|(d, _)| d), expected, "{payload:02x?} {id} {tl0}");
                    let Some((_, head)) = got else { continue };
                    let mut copy = payload.to_vec();
                    match head {
                        Some(head) => {
                            assert!(head.bytes().len() <= DESCRIPTOR_MAX);
                            head.apply(&mut copy);
                            assert_ne!(copy, payload, "a head is named only for a change");
                        }
                        None => assert_eq!(in_place, payload, "no head, no change"),
                    }
                    assert_eq!(copy, in_place, "{payload:02x?} {id} {tl0}");
                }
            }
        }
    }
}
