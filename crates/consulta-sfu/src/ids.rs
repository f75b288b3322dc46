//! Identifier newtypes: room names, participant and track sids, connection handles.
//!
//! Sids follow LiveKit's prefixes (`RM_`, `PA_`, `TR_`), which livekit-client checks when it
//! unpacks stream ids (spec `matrixrtc-livekit.md` §2.8, §5 item 5).

use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Kept inline up to 16 bytes (every sid the SFU makes), longer ones shared: the SFU names
        /// tracks and participants in several maps and with every media packet it forwards, and
        /// a shared text's count is an atomic operation on a line of its own per copy, a cache
        /// miss on the forwarding path. The first 16 bytes are inline either way ([`IdKey`]), so
        /// that comparing, ordering and hashing ids of up to 16 bytes never reads further.
        #[derive(Clone)]
        pub struct $name {
            head: [u8; IdKey::BYTES],
            text: Text,
        }

        impl $name {
            fn new(text: &str) -> Self {
                Self {
                    head: IdKey::head(text),
                    text: Text::of(text),
                }
            }

            /// The id as sent on the wire.
            pub fn as_str(&self) -> &str {
                self.text.as_str(&self.head)
            }

            fn key(&self) -> IdKey {
                IdKey(u128::from_be_bytes(self.head))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.as_str()).finish()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.head == other.head && self.text == other.text
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                // Equal ids have equal keys, and equal texts past them: a long id's whole text
                // counts, or names sharing their first 16 bytes (`consulta-appointment-…`)
                // would all fall in one bucket of a map keyed by them.
                self.key().hash(state);
                if let Text::Shared(text) = &self.text {
                    text.as_bytes().get(IdKey::BYTES..).hash(state);
                }
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            /// The order of the text, byte by byte ([`IdKey`]). Equal keys are settled by the
            /// lengths of ids up to [`IdKey::BYTES`] long (kept inline, so a map lookup that
            /// finds its key reads nothing else), and by the texts of longer ones.
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.key()
                    .cmp(&other.key())
                    .then_with(|| self.text.order(&other.text))
            }
        }
    };
}

/// What an id holds beyond its first [`IdKey::BYTES`] bytes: only its length when that is all
/// of it, else the whole text, shared.
#[derive(Clone)]
enum Text {
    Inline(u8),
    Shared(Arc<str>),
}

impl Text {
    fn of(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if usize::from(len) <= IdKey::BYTES => Self::Inline(len),
            _ => Self::Shared(text.into()),
        }
    }

    fn as_str<'a>(&'a self, head: &'a [u8; IdKey::BYTES]) -> &'a str {
        match self {
            Self::Shared(text) => text,
            // A whole `&str` of up to 16 bytes was copied in: valid UTF-8.
            Self::Inline(len) => head
                .get(..usize::from(*len))
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .unwrap_or_default(),
        }
    }

    /// Between ids with equal keys: an inline text is a shared one's start followed by zero
    /// bytes only, so it comes first; two inline ones are ordered by their lengths, likewise.
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Self::Inline(a), Self::Inline(b)) => a.cmp(b),
            (Self::Inline(_), Self::Shared(_)) => Ordering::Less,
            (Self::Shared(_), Self::Inline(_)) => Ordering::Greater,
            (Self::Shared(a), Self::Shared(b)) if Arc::ptr_eq(a, b) => Ordering::Equal,
            (Self::Shared(a), Self::Shared(b)) => a.cmp(b),
        }
    }
}

impl PartialEq for Text {
    /// Between ids whose first [`IdKey::BYTES`] bytes are equal.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Inline(a), Self::Inline(b)) => a == b,
            (Self::Shared(a), Self::Shared(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

/// An id's first [`IdKey::BYTES`] bytes as one big-endian number, the rest zero. Ordered by it
/// first and then by the text, ids are ordered as their texts are: where two keys differ, the
/// first byte that differs decides both, and a zero of padding stands for a text that ended, which
/// comes first. Two texts of the same length up to [`IdKey::BYTES`] with equal keys are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IdKey(u128);

impl IdKey {
    const BYTES: usize = 16;

    /// `text`'s first [`IdKey::BYTES`] bytes, the rest zero.
    fn head(text: &str) -> [u8; Self::BYTES] {
        let mut bytes = [0u8; Self::BYTES];
        for (slot, byte) in bytes.iter_mut().zip(text.bytes()) {
            *slot = byte;
        }
        bytes
    }
}

string_id!(
    /// A LiveKit room name (for MatrixRTC, the alias from the RTC auth service). Never empty.
    RoomName
);
string_id!(
    /// A participant sid, `PA_…`.
    ParticipantSid
);
string_id!(
    /// A track sid, `TR_…`.
    TrackSid
);

impl RoomName {
    /// `None` for an empty name.
    pub fn parse(name: &str) -> Option<Self> {
        (!name.is_empty()).then(|| Self::new(name))
    }
}

impl ParticipantSid {
    /// Accepts only `PA_…`.
    pub fn parse(sid: &str) -> Option<Self> {
        sid.starts_with("PA_").then(|| Self::new(sid))
    }
}

impl TrackSid {
    /// Accepts only `TR_…`.
    pub fn parse(sid: &str) -> Option<Self> {
        sid.starts_with("TR_").then(|| Self::new(sid))
    }
}

/// One signalling connection (one WebSocket), allocated by the core on join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn{}", self.0)
    }
}

/// Deterministic sid generator (splitmix64 over a seed the shell draws at start), so that the
/// core needs no randomness source and tests are reproducible.
#[derive(Debug, Clone)]
pub(crate) struct SidGen {
    state: u64,
}

impl SidGen {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn room(&mut self) -> String {
        format!("RM_{:012x}", self.next() >> 16)
    }

    pub(crate) fn participant(&mut self) -> ParticipantSid {
        ParticipantSid::new(&format!("PA_{:012x}", self.next() >> 16))
    }

    pub(crate) fn track(&mut self) -> TrackSid {
        TrackSid::new(&format!("TR_{:012x}", self.next() >> 16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids compare, order and hash as their texts do, whatever their lengths and bytes: shorter
    /// and longer than the inline key, prefixes of each other, with zero bytes, sharing the key's
    /// bytes and differing after them.
    #[test]
    fn ids_compare_order_and_hash_as_their_texts() {
        use std::hash::BuildHasher as _;
        let texts = [
            "",
            "a",
            "a\0",
            "a\0\0",
            "ab",
            "TR_0123456789ab",
            "TR_0123456789ac",
            "TR_0123456789a",
            "TR_0123456789abc",
            "TR_0123456789abcd",
            "TR_0123456789abcde",
            "TR_0123456789abcdf",
            "TR_0123456789abcdefXYZ",
            "TR_0123456789abcdefXYA",
            "PA_\u{e9}t\u{e9}",
            "\u{ff}",
            // A character across the inline bytes' end; zero bytes past it, and in a long text.
            "TR_0123456789ab\u{e9}",
            "TR_0123456789ab\u{e8}",
            "a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            "a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            "a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0x",
        ];
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(size_of::<TrackSid>(), 32);
        // Long ids that differ only past their first 16 bytes hash apart (two of these 64 names
        // on one 64-bit hash: about once in 2^53 runs).
        let hashes: std::collections::HashSet<u64> = (0..64)
            .map(|n| hasher.hash_one(RoomName::new(&format!("consulta-appointment-{n}"))))
            .collect();
        assert_eq!(hashes.len(), 64, "long names hashed by their start only");
        for text in texts {
            let id = RoomName::new(text);
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string(), text);
            // A copy (sharing a long text) is the id itself.
            let copy = id.clone();
            assert_eq!(copy.as_str(), text);
            assert!(copy == id);
            assert_eq!(copy.cmp(&id), std::cmp::Ordering::Equal, "{text:?}");
            assert_eq!(hasher.hash_one(&copy), hasher.hash_one(&id), "{text:?}");
        }
        for a in texts {
            for b in texts {
                // Separate texts, so that no comparison is settled by sharing one.
                let (x, y) = (RoomName::new(a), RoomName::new(b));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(x == y, a == b, "{a:?} against {b:?}");
                if a == b {
                    assert_eq!(hasher.hash_one(&x), hasher.hash_one(&y), "{a:?}");
                }
            }
        }
    }
}
