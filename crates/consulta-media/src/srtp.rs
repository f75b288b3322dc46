//! SRTP for the RTP packets of the own paths: opening what a publisher sends (`read::OwnRead`)
//! and sealing what the router sends (`send::OwnWrite`), under either profile WebRTC negotiates
//! here: SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711) and SRTP_AEAD_AES_128_GCM (RFC 7714).
//!
//! `rtc`'s SRTP context does the same, and its cipher is what these are checked against (the
//! tests below, and every router and browser test through the own paths). Forwarding 1:1 rooms,
//! opening and sealing with it took about 15 % of the node's time, a third of that in the
//! context rather than the cipher (docs/benchmarks.md, "Own SRTP"): per packet it looked the
//! stream up in a SipHash map (twice), expanded the AES key schedule again, keyed a new HMAC (two
//! SHA-1 blocks of the 20 a video packet takes), copied the packet into a buffer of its own and
//! moved a replay window kept as a vector of words. Here the keys are scheduled once per
//! connection, the HMAC's keyed state is cloned, the window is one 64-bit word, and the packet is
//! sealed where it was laid out.
//!
//! Unlike `rtc`'s, the replay window and the rollover counter move only for a packet that
//! authenticated (RFC 3711 §3.3.2), the counter follows the highest index seen (RFC 3711
//! §3.3.1), not the last one, and the sealing side refuses an index it sealed before.

use aes::Aes128;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use rtc::shared::error::Error;
use rtc::srtp::protection_profile::ProtectionProfile;
use sha1::Sha1;

use crate::keytap::MasterKeys;

/// RFC 3711 §4.3.1: the labels of the session keys derived for SRTP.
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_AUTHENTICATION: u8 = 0x01;
const LABEL_SALT: u8 = 0x02;

/// SRTP_AES128_CM_HMAC_SHA1_80's tag, and its authentication key's length.
const HMAC_TAG_LEN: usize = 10;
const HMAC_KEY_LEN: usize = 20;
/// SRTP_AEAD_AES_128_GCM's tag.
const GCM_TAG_LEN: usize = 16;

/// How far behind the newest index a packet may come and still be taken, for SRTP and for the
/// remote's SRTCP (`send`): `rtc`'s default for what a remote sends, so that what it would refuse
/// is refused here too.
const REPLAY_WINDOW: u64 = 64;

/// How far behind its newest index a sealing context still seals an index it skipped (a repair
/// from the publisher that came late): as far as libwebrtc's receiver still takes a packet (its
/// SRTP replay window is 1024 packets, `pc/srtp_session.cc`), and beyond the 512 numbers the
/// router goes on asking a publisher for (`receive::NACK_REACH`). At a keyframe's rate (about
/// 500 packets a second paced) a repair waited for over one round trip and a NACK interval is
/// already past the 64 of the replay window (review helper-74).
const SEAL_REACH: u64 = 1024;

/// Skipped runs a sealing context keeps at most, over all its streams: each loss downstream of
/// the publisher's connection is one, and a run too many forgets the oldest, whose indexes are
/// then refused (never sealed twice, whatever is forgotten).
const MAX_SKIPPED: usize = 64;

/// Streams a context follows at most. Past it a new stream is refused (`TooManySources`): the
/// read path leaves it with `rtc`, and the router reuses its SSRCs, so a subscriber connection
/// has as many as it receives tracks at once. None is ever forgotten (see `places`).
const MAX_STREAMS: usize = 256;

/// AES blocks of keystream made per call: enough for the AES-NI backend to interleave.
const KEYSTREAM_BLOCKS: usize = 16;

enum Cipher {
    /// RFC 3711: AES in counter mode, HMAC-SHA1 over the header, the encrypted payload and the
    /// rollover counter, cut to 80 bits.
    AesCm {
        aes: Box<Aes128>,
        /// The session salt, placed as in a counter block.
        salt: u128,
        /// Keyed once: each packet starts from a copy.
        auth: Box<Hmac<Sha1>>,
    },
    /// RFC 7714: AES-GCM with the header as associated data.
    Gcm {
        key: Box<ring::aead::LessSafeKey>,
        /// The 96-bit session salt.
        salt: u128,
    },
}

/// Which indexes of a stream were taken: the newest, and which of the [`REPLAY_WINDOW`] before it
/// (bit n: newest − n). Moved only by packets that authenticated, so a forged one cannot make the
/// genuine ones look old. SRTCP's windows (`send`) are the same.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplayWindow {
    newest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// A window with nothing taken yet, at `index`.
    pub(crate) fn at(index: u64) -> Self {
        Self {
            newest: index,
            seen: 0,
        }
    }

    /// Whether `index` was taken before or is older than the window.
    pub(crate) fn replayed(&self, index: u64) -> bool {
        index <= self.newest
            && (self.newest - index >= REPLAY_WINDOW
                || (self.seen >> (self.newest - index)) & 1 == 1)
    }

    /// Records `index` as taken.
    pub(crate) fn take(&mut self, index: u64) {
        if index > self.newest {
            let ahead = index - self.newest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.newest = index;
        } else if let Some(bit) = u32::try_from(self.newest - index)
            .ok()
            .and_then(|behind| 1u64.checked_shl(behind))
        {
            self.seen |= bit;
        }
    }

    /// The 48-bit index of `seq`: the one nearest the newest (RFC 3711 §3.3.1). At the start of
    /// the stream's first rollover period a number far ahead counts as ahead, as `rtc`'s does.
    fn index_of(&self, seq: u16) -> Result<u64, Error> {
        let newest = self.newest;
        let same = (newest & !0xffff) | u64::from(seq);
        if same > newest && same - newest > 0x8000 && newest >= 0x1_0000 {
            Ok(same - 0x1_0000)
        } else if same < newest && newest - same > 0x8000 {
            let next = same + 0x1_0000;
            // RFC 3711 §9.2: 2^48 packets under one key at most.
            if next >> 48 != 0 {
                return Err(Error::ErrExceededMaxPackets);
            }
            Ok(next)
        } else {
            Ok(same)
        }
    }
}

/// One direction's SRTP for RTP: a connection's half of the DTLS-SRTP keys.
pub struct RtpCrypto {
    cipher: Cipher,
    /// Each stream's highest index taken (RFC 3711 §3.3.1's ROC and s_l together) and which
    /// before it were taken too. Never forgotten: a stream that came back to a fresh place would
    /// start its rollover counter at 0 again, which for a sealing context means the same indexes
    /// sealed again over other packets. Only packets that authenticated (or were sealed) make a
    /// place, or ones `rtc` opened ([`taken`](Self::taken)); [`MAX_STREAMS`] at most. A vector
    /// searched once per packet: a connection has a few streams, and one allocation is one cache
    /// miss where a map's control bytes and bucket were two (a map was 1.3 % of the node's time
    /// at S1 80 rooms).
    places: Vec<(u32, ReplayWindow)>,
    /// Whether [`open`](Self::open) refuses a packet taken before (what the remote sends).
    /// [`seal`](Self::seal) always does.
    replay: bool,
    /// Runs of indexes [`seal`](Self::seal) jumped over, `(ssrc, first, end)` (the end not in
    /// it), which it may still seal up to [`SEAL_REACH`] behind the newest, once each. The
    /// replay window alone would refuse them from 64 behind; a bitmap as wide as the reach
    /// would cost every packet a second cache line, where this is read only for a packet that
    /// came late. Empty on an opening context.
    skipped: Vec<(u32, u64, u64)>,
}

impl RtpCrypto {
    /// The context `keys` make, refusing replays when it opens (`replay`).
    pub fn new(keys: &MasterKeys, replay: bool) -> Result<Self, Error> {
        let master =
            Aes128::new_from_slice(keys.key()).map_err(|_| Error::InvalidMasterKeyLength)?;
        // 112 bits for AES-CM, 96 for GCM (RFC 7714 §12), placed from the left either way.
        let master_salt = keys.salt();
        if master_salt.len() != keys.profile().salt_len() || master_salt.len() > 14 {
            return Err(Error::InvalidMasterSaltLength);
        }
        let master_salt = salt_block(master_salt);
        let encryption: [u8; 16] = derive(&master, master_salt, LABEL_ENCRYPTION);
        let cipher = match keys.profile() {
            ProtectionProfile::Aes128CmHmacSha1_80 => {
                let auth: [u8; HMAC_KEY_LEN] = derive(&master, master_salt, LABEL_AUTHENTICATION);
                Cipher::AesCm {
                    aes: Box::new(Aes128::new(&encryption.into())),
                    salt: salt_block(&derive::<14>(&master, master_salt, LABEL_SALT)),
                    auth: Box::new(
                        <Hmac<Sha1> as Mac>::new_from_slice(&auth)
                            .map_err(|_| Error::InvalidMasterKeyLength)?,
                    ),
                }
            }
            ProtectionProfile::AeadAes128Gcm => {
                let key = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &encryption)
                    .map_err(|_| Error::InvalidMasterKeyLength)?;
                let salt: [u8; 12] = derive(&master, master_salt, LABEL_SALT);
                Cipher::Gcm {
                    key: Box::new(ring::aead::LessSafeKey::new(key)),
                    salt: salt.iter().fold(0, |n, b| n << 8 | u128::from(*b)),
                }
            }
            _ => return Err(Error::ErrNoSuchSrtpProfile),
        };
        Ok(Self {
            cipher,
            places: Vec::new(),
            replay,
            skipped: Vec::new(),
        })
    }

    /// The bytes a sealed packet carries after its plaintext.
    pub fn tag_len(&self) -> usize {
        match self.cipher {
            Cipher::AesCm { .. } => HMAC_TAG_LEN,
            Cipher::Gcm { .. } => GCM_TAG_LEN,
        }
    }

    /// Where packet `seq` of `ssrc` stands: its index, the stream's place (`None`: a new stream,
    /// whose first packet's index is its sequence number, RFC 3711 §3.3.1), and whether the index
    /// was taken before or is older than the window.
    ///
    /// # Errors
    /// `TooManySources` for a new stream past [`MAX_STREAMS`]; `ErrExceededMaxPackets` past
    /// 2^48 packets of the stream.
    fn locate(&self, ssrc: u32, seq: u16) -> Result<(u64, Option<usize>, bool), Error> {
        let at = self.places.iter().position(|(s, _)| *s == ssrc);
        match at.and_then(|at| self.places.get(at)) {
            Some((_, window)) => {
                let index = window.index_of(seq)?;
                Ok((index, at, window.replayed(index)))
            }
            None if self.places.len() >= MAX_STREAMS => Err(Error::TooManySources),
            None => Ok((u64::from(seq), None, false)),
        }
    }

    /// The window at `at` (from [`locate`](Self::locate), nothing added since), or a new one for
    /// `ssrc` at `index`.
    fn window_at(&mut self, ssrc: u32, at: Option<usize>, index: u64) -> Option<&mut ReplayWindow> {
        match at {
            Some(at) => self.places.get_mut(at).map(|(_, w)| w),
            None => {
                self.places.push((ssrc, ReplayWindow::at(index)));
                self.places.last_mut().map(|(_, w)| w)
            }
        }
    }

    /// Whether packet `seq` of `ssrc` would be opened or sealed: `Ok` unless it is a replay, too
    /// old, or a stream too many. Nothing moves.
    ///
    /// # Errors
    /// As [`seal`](Self::seal) would refuse the packet before sealing it.
    pub fn check(&self, ssrc: u32, seq: u16) -> Result<(), Error> {
        match self.locate(ssrc, seq)? {
            (index, at, true) if !self.fillable(ssrc, at, index) => {
                Err(Error::SrtpSsrcDuplicated(ssrc, seq))
            }
            _ => Ok(()),
        }
    }

    /// Whether `index` of `ssrc` (at `at`) may be sealed though the replay window refuses it:
    /// jumped over, not sealed since, and at most [`SEAL_REACH`] behind the newest.
    fn fillable(&self, ssrc: u32, at: Option<usize>, index: u64) -> bool {
        self.newest_at(at)
            .is_some_and(|newest| newest.saturating_sub(index) < SEAL_REACH)
            && self.skipped_run(ssrc, index).is_some()
    }

    /// The newest index of the stream at place `at`.
    fn newest_at(&self, at: Option<usize>) -> Option<u64> {
        at.and_then(|at| self.places.get(at)).map(|(_, w)| w.newest)
    }

    /// Where in [`skipped`](Self::skipped) the run holding `index` of `ssrc` is: jumped over by
    /// [`seal`](Self::seal) and not sealed since.
    fn skipped_run(&self, ssrc: u32, index: u64) -> Option<usize> {
        self.skipped
            .iter()
            .position(|&(s, first, end)| s == ssrc && (first..end).contains(&index))
    }

    /// Keeps the runs of `ssrc` that `sealed` (at `at`, the stream's place before it, if any)
    /// leaves: a jump past the newest adds one (and drops the stream's runs then past
    /// [`SEAL_REACH`]), a packet behind it takes its index out of the run holding it. The next
    /// index, nearly every packet, changes nothing.
    fn note_skipped(&mut self, ssrc: u32, at: Option<usize>, sealed: u64) {
        let Some(newest) = self.newest_at(at) else {
            return;
        };
        if sealed == newest + 1 {
            return;
        }
        if sealed > newest {
            let reach = sealed.saturating_sub(SEAL_REACH);
            self.skipped.retain(|&(s, _, end)| s != ssrc || end > reach);
            if self.skipped.len() >= MAX_SKIPPED {
                self.skipped.remove(0);
            }
            self.skipped.push((ssrc, (newest + 1).max(reach), sealed));
        } else if let Some(run) = self.skipped_run(ssrc, sealed) {
            // In place, so the runs stay oldest first for the eviction above.
            let (_, first, end) = self.skipped.remove(run);
            for (from, to) in [(sealed + 1, end), (first, sealed)] {
                if from < to {
                    self.skipped.insert(run, (ssrc, from, to));
                }
            }
        }
    }

    /// Counts packets of `ssrc` as taken that another context (`rtc`'s) opened: `newest` and,
    /// for each bit n of `seen`, the packet n before it. For a stream not known here its numbers
    /// must not have wrapped since its first packet, which is what a new place assumes
    /// (`read::OwnRead` checks).
    ///
    /// # Errors
    /// As [`locate`](Self::locate); nothing moves then.
    pub fn taken(&mut self, ssrc: u32, newest: u16, seen: u64) -> Result<(), Error> {
        let (index, at, _) = self.locate(ssrc, newest)?;
        if let Some(window) = self.window_at(ssrc, at, index) {
            for behind in (0..64u64).filter(|n| (seen >> n) & 1 == 1) {
                if let Some(taken) = index.checked_sub(behind) {
                    window.take(taken);
                }
            }
        }
        Ok(())
    }

    /// Opens `datagram`, an SRTP packet of `ssrc` numbered `seq` whose header (CSRCs and
    /// extensions included) takes its first `header_len` bytes: the plain packet, header and
    /// payload, without the tag (in a buffer exactly that long: it becomes `Bytes` without
    /// another allocation).
    ///
    /// # Errors
    /// `SrtpSsrcDuplicated` for a packet taken before or older than the window (when the context
    /// keeps one); `ErrFailedToVerifyAuthTag` for one that does not authenticate, `ErrTooShortRtp`
    /// for one too short to hold its header and tag, `TooManySources` for a new stream past
    /// [`MAX_STREAMS`]. Nothing moves then.
    pub fn open(
        &mut self,
        datagram: &[u8],
        header_len: usize,
        ssrc: u32,
        seq: u16,
    ) -> Result<BytesMut, Error> {
        let (plain, index, at) = self.unseal(datagram, header_len, ssrc, seq)?;
        if let Some(window) = self.window_at(ssrc, at, index) {
            window.take(index);
        }
        Ok(plain)
    }

    /// Whether `datagram` (as [`open`](Self::open) takes it) would open: it authenticates at
    /// the index this context places it, and is no replay. Nothing moves.
    pub fn opens(&self, datagram: &[u8], header_len: usize, ssrc: u32, seq: u16) -> bool {
        self.unseal(datagram, header_len, ssrc, seq).is_ok()
    }

    /// [`open`](Self::open) but for taking the index: the plain packet, its index, and the
    /// stream's place (`None`: a new stream).
    fn unseal(
        &self,
        datagram: &[u8],
        header_len: usize,
        ssrc: u32,
        seq: u16,
    ) -> Result<(BytesMut, u64, Option<usize>), Error> {
        let sealed_len = datagram
            .len()
            .checked_sub(self.tag_len())
            .filter(|&len| len >= header_len)
            .ok_or(Error::ErrTooShortRtp)?;
        let (index, at, replayed) = self.locate(ssrc, seq)?;
        if self.replay && replayed {
            return Err(Error::SrtpSsrcDuplicated(ssrc, seq));
        }
        let roc = (index >> 16) as u32;
        let (sealed, tag) = datagram.split_at(sealed_len);
        let (header, payload) = sealed.split_at(header_len);
        let mut plain = BytesMut::with_capacity(sealed_len);
        plain.extend_from_slice(header);
        match &self.cipher {
            Cipher::AesCm { aes, salt, auth } => {
                let mut mac = auth.as_ref().clone();
                mac.update(sealed);
                mac.update(&roc.to_be_bytes());
                mac.verify_truncated_left(tag)
                    .map_err(|_| Error::ErrFailedToVerifyAuthTag)?;
                plain.extend_from_slice(payload);
                let data = plain.get_mut(header_len..).unwrap_or_default();
                keystream_xor(aes, aes_cm_iv(*salt, ssrc, index), data);
            }
            Cipher::Gcm { key, salt } => {
                let tag =
                    ring::aead::Tag::try_from(tag).map_err(|_| Error::ErrFailedToVerifyAuthTag)?;
                plain.extend_from_slice(payload);
                let (aad, in_out) = plain.split_at_mut(header_len);
                key.open_in_place_separate_tag(
                    gcm_nonce(*salt, ssrc, index),
                    ring::aead::Aad::from(&*aad),
                    tag,
                    in_out,
                    0..,
                )
                .map_err(|_| Error::ErrFailedToVerifyAuthTag)?;
            }
        }
        Ok((plain, index, at))
    }

    /// Seals `packet`, a plain RTP packet of `ssrc` numbered `seq` whose header takes its first
    /// `header_len` bytes, where it lies: the payload is encrypted and the tag appended. Returns
    /// the index it was sealed at (for [`reseal`](Self::reseal)).
    ///
    /// # Errors
    /// `SrtpSsrcDuplicated` for an index sealed before, or 64 or more behind the newest unless
    /// it was jumped over (then up to [`SEAL_REACH`] behind);
    /// `TooManySources` for a new stream past [`MAX_STREAMS`]; `ErrExceededMaxPackets` past 2^48
    /// packets of the stream; `ErrTooShortRtp` when
    /// `header_len` is past the packet's end. Nothing is sealed then.
    pub fn seal(
        &mut self,
        packet: &mut Vec<u8>,
        header_len: usize,
        ssrc: u32,
        seq: u16,
    ) -> Result<u64, Error> {
        if header_len > packet.len() {
            return Err(Error::ErrTooShortRtp);
        }
        let (index, at, replayed) = self.locate(ssrc, seq)?;
        // The forwarder never seals an index over another plaintext: that would be a GCM nonce
        // used twice. A NACK's answer is sealed again only through `reseal`, which checks that
        // the result is the datagram that left. Refused whatever the cause, unless the index was
        // jumped over and never sealed (a late repair).
        if replayed && !self.fillable(ssrc, at, index) {
            return Err(Error::SrtpSsrcDuplicated(ssrc, seq));
        }
        self.encrypt(packet, header_len, ssrc, index)?;
        self.note_skipped(ssrc, at, index);
        if let Some(window) = self.window_at(ssrc, at, index) {
            window.take(index);
        }
        Ok(index)
    }

    /// Seals `packet` again at `index`, where [`seal`](Self::seal) sealed it before, as the NACK
    /// history does instead of keeping each datagram. Sealing the same header and payload at the
    /// same index gives the same datagram, byte for byte, so nothing new is revealed; the result
    /// is kept only if its tag is `tag`, the one the datagram left with, which it is not for any
    /// other header or payload.
    ///
    /// # Errors
    /// `ErrFailedToVerifyAuthTag` when the tag differs; `SrtpSsrcDuplicated` for an index this
    /// context never came to; `ErrTooShortRtp` as for [`seal`](Self::seal). `packet` is emptied
    /// then, so that nothing sealed differently can be sent by mistake.
    pub fn reseal(
        &self,
        packet: &mut Vec<u8>,
        header_len: usize,
        ssrc: u32,
        index: u64,
        tag: &[u8],
    ) -> Result<(), Error> {
        let mut resealed = || {
            if header_len > packet.len() {
                return Err(Error::ErrTooShortRtp);
            }
            let reached = self
                .places
                .iter()
                .find(|(s, _)| *s == ssrc)
                .is_some_and(|(_, window)| window.replayed(index))
                && self.skipped_run(ssrc, index).is_none();
            if !reached {
                return Err(Error::SrtpSsrcDuplicated(ssrc, index as u16));
            }
            let plain = packet.len();
            self.encrypt(packet, header_len, ssrc, index)?;
            if packet.get(plain..) == Some(tag) {
                Ok(())
            } else {
                Err(Error::ErrFailedToVerifyAuthTag)
            }
        };
        let resealed = resealed();
        if resealed.is_err() {
            packet.clear();
        }
        resealed
    }

    /// Encrypts `packet`'s payload at `index` where it lies and appends the tag.
    fn encrypt(
        &self,
        packet: &mut Vec<u8>,
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), Error> {
        let roc = (index >> 16) as u32;
        match &self.cipher {
            Cipher::AesCm { aes, salt, auth } => {
                let (_, payload) = packet.split_at_mut(header_len);
                keystream_xor(aes, aes_cm_iv(*salt, ssrc, index), payload);
                let mut mac = auth.as_ref().clone();
                mac.update(packet);
                mac.update(&roc.to_be_bytes());
                let tag = mac.finalize().into_bytes();
                packet.extend_from_slice(tag.get(..HMAC_TAG_LEN).unwrap_or_default());
            }
            Cipher::Gcm { key, salt } => {
                let (aad, payload) = packet.split_at_mut(header_len);
                let tag = key
                    .seal_in_place_separate_tag(
                        gcm_nonce(*salt, ssrc, index),
                        ring::aead::Aad::from(&*aad),
                        payload,
                    )
                    .map_err(|_| Error::ErrExceededMaxPackets)?;
                packet.extend_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for RtpCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        let profile = match self.cipher {
            Cipher::AesCm { .. } => "AES-CM/HMAC-SHA1-80",
            Cipher::Gcm { .. } => "AES-128-GCM",
        };
        f.debug_struct("RtpCrypto")
            .field("profile", &profile)
            .field("streams", &self.places.len())
            .finish_non_exhaustive()
    }
}

/// The length of the RTP header at the start of `packet`: fixed part, CSRCs and the extension
/// block (RFC 3550 §5.1, §5.3.1).
pub fn header_len(packet: &[u8]) -> Option<usize> {
    let &first = packet.first()?;
    let fixed = 12 + 4 * usize::from(first & 0x0f);
    let len = if first & 0x10 != 0 {
        let words = packet.get(fixed + 2..fixed + 4)?;
        fixed + 4 + 4 * usize::from(u16::from_be_bytes([*words.first()?, *words.get(1)?]))
    } else {
        fixed
    };
    (len <= packet.len()).then_some(len)
}

/// RFC 3711 §4.3.1 with a key derivation rate of 0 (RFC 5764): the session key, salt or
/// authentication key labelled `label`, as AES-CM's keystream under the master key from the
/// master salt with the label in its eighth byte.
fn derive<const N: usize>(master: &Aes128, master_salt: u128, label: u8) -> [u8; N] {
    let iv = master_salt ^ (u128::from(label) << 64);
    let mut out = [0u8; N];
    keystream_xor(master, iv, &mut out);
    out
}

/// A salt as the high bits of an AES-CM counter block (RFC 3711 §4.1.1: a 112-bit salt times
/// 2^16).
fn salt_block(salt: &[u8]) -> u128 {
    let mut block = [0u8; 16];
    for (b, s) in block.iter_mut().zip(salt) {
        *b = *s;
    }
    u128::from_be_bytes(block)
}

/// RFC 3711 §4.1.1: the counter's start for the packet at `index` of `ssrc`, the salted block
/// with the SSRC times 2^64 and the index times 2^16 XORed in (the low 16 bits count blocks).
fn aes_cm_iv(salt: u128, ssrc: u32, index: u64) -> u128 {
    salt ^ (u128::from(ssrc) << 64) ^ (u128::from(index) << 16)
}

/// RFC 7714 §8.1: the nonce of the packet at `index` of `ssrc`, two zero bytes, the SSRC, the
/// rollover counter and the sequence number, XORed with the 96-bit session salt.
fn gcm_nonce(salt: u128, ssrc: u32, index: u64) -> ring::aead::Nonce {
    let block = (salt ^ (u128::from(ssrc) << 48) ^ u128::from(index)).to_be_bytes();
    let mut nonce = [0u8; 12];
    for (n, b) in nonce.iter_mut().zip(block.iter().skip(4)) {
        *n = *b;
    }
    ring::aead::Nonce::assume_unique_for_key(nonce)
}

/// An AES block.
type Block = GenericArray<u8, aes::cipher::consts::U16>;

/// Fills `blocks` with AES-CM's keystream blocks from block `start` on, counting from `iv`.
fn keystream(aes: &Aes128, iv: u128, start: usize, blocks: &mut [Block]) {
    for (n, block) in (start..).zip(blocks.iter_mut()) {
        *block = iv.wrapping_add(n as u128).to_be_bytes().into();
    }
    aes.encrypt_blocks(blocks);
}

/// `data` XORed in place with AES-CM's keystream from `iv`.
fn keystream_xor(aes: &Aes128, iv: u128, data: &mut [u8]) {
    let mut blocks = [Block::default(); KEYSTREAM_BLOCKS];
    for (n, data) in data.chunks_mut(16 * KEYSTREAM_BLOCKS).enumerate() {
        keystream(aes, iv, n * KEYSTREAM_BLOCKS, &mut blocks);
        for (data, key) in data.chunks_mut(16).zip(&blocks) {
            let key: [u8; 16] = (*key).into();
            match <&mut [u8; 16]>::try_from(&mut *data) {
                Ok(data) => {
                    *data = (u128::from_ne_bytes(*data) ^ u128::from_ne_bytes(key)).to_ne_bytes();
                }
                Err(_) => {
                    for (d, k) in data.iter_mut().zip(key) {
                        *d ^= k;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;

    const PROFILES: [ProtectionProfile; 2] = [
        ProtectionProfile::Aes128CmHmacSha1_80,
        ProtectionProfile::AeadAes128Gcm,
    ];

    fn keys(profile: ProtectionProfile) -> MasterKeys {
        let salt = [0x5a_u8; 14];
        MasterKeys::new(profile, &[0x3c; 16], &salt[..profile.salt_len()])
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A plain packet with CSRCs, a one-byte extension, padding and `len` bytes of payload.
    fn packet(ssrc: u32, seq: u16, len: usize, rich: bool) -> Vec<u8> {
        let mut header = rtc::rtp::Header {
            version: 2,
            ssrc,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            payload_type: 96,
            ..Default::default()
        };
        if rich {
            header.csrc = vec![11, 12];
            header.padding = true;
            header
                .set_extension(3, bytes::Bytes::from_static(&[1, 2, 3]))
                .unwrap();
        }
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + usize::from(seq)) as u8).collect();
        let packet = rtc::rtp::Packet {
            header,
            payload: payload.into(),
        };
        packet.marshal().unwrap().to_vec()
    }

    #[test]
    fn session_keys_are_derived_as_rfc_3711_b3_shows() {
        let master = Aes128::new_from_slice(&hex("E1F97A0D3E018BE0D64FA32C06DE4139")).unwrap();
        let salt = salt_block(&hex("0EC675AD498AFEEBB6960B3AABE6"));
        let key: [u8; 16] = derive(&master, salt, LABEL_ENCRYPTION);
        let session_salt: [u8; 14] = derive(&master, salt, LABEL_SALT);
        let auth: [u8; 20] = derive(&master, salt, LABEL_AUTHENTICATION);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn header_len_counts_csrcs_and_the_extension_block() {
        for rich in [false, true] {
            let plain = packet(1, 2, 30, rich);
            let mut cursor = plain.as_slice();
            rtc::shared::marshal::Unmarshal::unmarshal(&mut cursor)
                .map(|_: rtc::rtp::Header| ())
                .unwrap();
            assert_eq!(header_len(&plain), Some(plain.len() - cursor.len()));
        }
        assert_eq!(header_len(&[0x80; 11]), None);
        // Fifteen CSRCs announced, none there.
        assert_eq!(header_len(&[0x8f; 40]), None);
        // An extension block longer than the packet.
        let mut plain = packet(1, 2, 0, false);
        plain[0] |= 0x10;
        plain.extend_from_slice(&[0xbe, 0xde, 0, 9]);
        assert_eq!(header_len(&plain), None);
    }

    #[test]
    fn what_rtc_seals_opens_here_and_what_is_sealed_here_opens_in_rtc() {
        for profile in PROFILES {
            let mut rtc_sender = keys(profile).context().unwrap();
            let mut rtc_receiver = keys(profile).context().unwrap();
            let mut opener = RtpCrypto::new(&keys(profile), true).unwrap();
            let mut sealer = RtpCrypto::new(&keys(profile), false).unwrap();
            // Across a wrap of the sequence number, two streams interleaved.
            for n in 0..40u32 {
                for ssrc in [0x1111_1111, 0x2222_2222] {
                    let seq = (65_520 + n) as u16;
                    let rich = n % 3 == 0;
                    let plain = packet(ssrc, seq, 100 + n as usize * 37, rich);
                    let len = header_len(&plain).unwrap();

                    let sealed = rtc_sender.encrypt_rtp(&plain).unwrap();
                    let opened = opener.open(&sealed, len, ssrc, seq).unwrap();
                    assert_eq!(opened.as_ref(), plain.as_slice(), "{profile:?} {n}");

                    let mut sealed_here = plain.clone();
                    sealer.seal(&mut sealed_here, len, ssrc, seq).unwrap();
                    assert_eq!(sealed_here, sealed.as_ref(), "{profile:?} {n}");
                    let opened = rtc_receiver.decrypt_rtp(&sealed_here).unwrap();
                    assert_eq!(opened.as_ref(), plain.as_slice());
                }
            }
        }
    }

    #[test]
    fn a_replay_or_a_packet_older_than_the_window_is_refused() {
        for profile in PROFILES {
            let mut sender = keys(profile).context().unwrap();
            let mut opener = RtpCrypto::new(&keys(profile), true).unwrap();
            let mut seal = |seq: u16| {
                let plain = packet(5, seq, 200, false);
                (sender.encrypt_rtp(&plain).unwrap().to_vec(), 12)
            };
            let sealed: Vec<_> = (0..100u16).map(|seq| seal(1_000 + seq)).collect();
            // Out of order within the window: each once.
            for &at in &[10usize, 5, 7, 80, 30] {
                let (datagram, len) = &sealed[at];
                let seq = 1_000 + at as u16;
                assert!(
                    opener.open(datagram, *len, 5, seq).is_ok(),
                    "{profile:?} {at}"
                );
                assert!(
                    matches!(
                        opener.open(datagram, *len, 5, seq),
                        Err(Error::SrtpSsrcDuplicated(5, s)) if s == seq
                    ),
                    "{profile:?} replay of {at}"
                );
            }
            // 80 is the newest: 16 is 64 behind it, 17 is 63.
            let (datagram, len) = &sealed[16];
            assert!(matches!(
                opener.open(datagram, *len, 5, 1_016),
                Err(Error::SrtpSsrcDuplicated(..))
            ));
            let (datagram, len) = &sealed[17];
            assert!(opener.open(datagram, *len, 5, 1_017).is_ok());
            // Without a window (the sending side's), the same packet opens again.
            let mut open_again = RtpCrypto::new(&keys(profile), false).unwrap();
            let (datagram, len) = &sealed[3];
            assert!(open_again.open(datagram, *len, 5, 1_003).is_ok());
            assert!(open_again.open(datagram, *len, 5, 1_003).is_ok());
        }
    }

    #[test]
    fn a_forged_packet_moves_nothing() {
        for profile in PROFILES {
            let mut sender = keys(profile).context().unwrap();
            let mut opener = RtpCrypto::new(&keys(profile), true).unwrap();
            let mut seal = |seq: u16| sender.encrypt_rtp(&packet(5, seq, 300, false)).unwrap();
            let first = seal(100);
            assert!(opener.open(&first, 12, 5, 100).is_ok());
            // Far ahead (it would push the window past every genuine packet, and start the next
            // rollover period), with a tag that does not hold.
            // (Sealed by a context of its own: the sender's would count the packets after it
            // in the next period.)
            let mut forged = keys(profile)
                .context()
                .unwrap()
                .encrypt_rtp(&packet(5, 40_000, 300, false))
                .unwrap()
                .to_vec();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(matches!(
                opener.open(&forged, 12, 5, 40_000),
                Err(Error::ErrFailedToVerifyAuthTag)
            ));
            // A header changed after sealing: the tag covers it (and GCM's associated data).
            let mut tampered = seal(101).to_vec();
            tampered[1] ^= 0x01;
            assert!(opener.open(&tampered, 12, 5, 101).is_err());
            let genuine = seal(102);
            assert!(opener.open(&genuine, 12, 5, 102).is_ok());
            // Too short for a header and a tag.
            assert!(matches!(
                opener.open(&genuine[..20], 12, 5, 102),
                Err(Error::ErrTooShortRtp)
            ));
            assert_eq!(opener.places.len(), 1);
            assert_eq!(
                opener.places.first().map(|(s, w)| (*s, w.newest)),
                Some((5, 102))
            );
        }
    }

    #[test]
    fn the_rollover_counter_follows_the_highest_index() {
        let place = |newest: u64| ReplayWindow::at(newest);
        // Early in the first period a number far ahead is ahead.
        assert_eq!(place(100).index_of(40_000).unwrap(), 40_000);
        // Late in a period, a small number is in the next one; early in one, a large number is
        // in the one before.
        assert_eq!(place(65_000).index_of(10).unwrap(), 0x1_0000 + 10);
        assert_eq!(place(0x1_0000 + 10).index_of(65_000).unwrap(), 65_000);
        assert_eq!(
            place(0x5_0000 + 40_000).index_of(8_000).unwrap(),
            0x5_0000 + 8_000
        );
        assert_eq!(
            place(0x5_0000 + 40_000).index_of(7_000).unwrap(),
            0x6_0000 + 7_000
        );
        // Half a period each way is still the same period.
        assert_eq!(
            place(0x2_0000 + 40_000).index_of(7_232).unwrap(),
            0x2_0000 + 7_232
        );
        assert_eq!(
            place(0x2_0000 + 7_232).index_of(40_000).unwrap(),
            0x2_0000 + 40_000
        );
        assert_eq!(
            place(0x2_0000 + 7_231).index_of(40_000).unwrap(),
            0x1_0000 + 40_000
        );
        // The last index under one key.
        assert!(matches!(
            place((1 << 48) - 10).index_of(5),
            Err(Error::ErrExceededMaxPackets)
        ));
    }

    #[test]
    fn a_sealing_context_never_forgets_a_stream_nor_seals_an_index_twice() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let mut sealer = RtpCrypto::new(&keys(profile), false).unwrap();
        let mut reference = keys(profile).context().unwrap();
        let mut seal_both = |sealer: &mut RtpCrypto, ssrc: u32, seq: u16| {
            let plain = packet(ssrc, seq, 50, false);
            let mut here = plain.clone();
            sealer.seal(&mut here, 12, ssrc, seq).map(|_| {
                let there = reference.encrypt_rtp(&plain).unwrap();
                assert_eq!(here, there.as_ref(), "{ssrc} {seq}");
            })
        };
        // A stream across a wrap, with a hundred others sealed between its packets: its
        // rollover counter stays 1, as `rtc`'s context has it.
        for (n, seq) in (65_530..=65_535).chain(0..6).enumerate() {
            seal_both(&mut sealer, 7, seq).unwrap();
            for other in 0..100 {
                seal_both(&mut sealer, 1_000 + other, n as u16).unwrap();
            }
        }
        assert_eq!(sealer.places.len(), 101);
        // The same index again, or one older than the window: refused, nothing sealed.
        let mut again = packet(7, 3, 50, false);
        assert!(matches!(
            sealer.seal(&mut again, 12, 7, 3),
            Err(Error::SrtpSsrcDuplicated(7, 3))
        ));
        assert_eq!(again, packet(7, 3, 50, false));
        let mut sealer = RtpCrypto::new(&keys(profile), false).unwrap();
        let mut plain = packet(7, 100, 50, false);
        sealer.seal(&mut plain, 12, 7, 100).unwrap();
        let mut old = packet(7, 36, 50, false);
        assert!(sealer.seal(&mut old, 12, 7, 36).is_err());
        let mut late = packet(7, 37, 50, false);
        assert!(sealer.seal(&mut late, 12, 7, 37).is_ok());
    }

    #[test]
    fn a_late_repair_is_sealed_once_where_it_was_jumped_over_up_to_the_reach() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let mut sealer = RtpCrypto::new(&keys(profile), false).unwrap();
        let mut reference = keys(profile).context().unwrap();
        let mut seal = |sealer: &mut RtpCrypto, seq: u16| {
            let plain = packet(7, seq, 50, false);
            let mut here = plain.clone();
            sealer.seal(&mut here, 12, 7, seq).map(|_| {
                // At the index `rtc` gives it: a late one takes no other packet's nonce.
                let there = reference.encrypt_rtp(&plain).unwrap();
                assert_eq!(here, there.as_ref(), "{seq}");
            })
        };
        // 1010..=1012 lost before the SFU, then 188 more sent.
        for seq in (1_000..1_010).chain(1_013..=1_200) {
            seal(&mut sealer, seq).unwrap();
        }
        // Their repairs, 188 to 190 behind: each sealed once.
        assert!(sealer.check(7, 1_011).is_ok());
        seal(&mut sealer, 1_011).unwrap();
        assert!(sealer.check(7, 1_011).is_err());
        assert!(matches!(
            seal(&mut sealer, 1_011),
            Err(Error::SrtpSsrcDuplicated(7, 1_011))
        ));
        seal(&mut sealer, 1_012).unwrap();
        seal(&mut sealer, 1_010).unwrap();
        for seq in [1_009, 1_010, 1_011, 1_012, 1_013, 1_100] {
            assert!(seal(&mut sealer, seq).is_err(), "{seq} again");
        }
        // Never sealed, so no datagram of it to seal again.
        for seq in 1_201..=1_230 {
            if seq != 1_215 {
                seal(&mut sealer, seq).unwrap();
            }
        }
        let mut plain = packet(7, 1_215, 50, false);
        assert!(matches!(
            sealer.reseal(&mut plain, 12, 7, 1_215, &[0; 16]),
            Err(Error::SrtpSsrcDuplicated(..))
        ));
        // One sealed while the replay window still covered it is not sealed again once past it.
        seal(&mut sealer, 1_233).unwrap();
        seal(&mut sealer, 1_232).unwrap();
        for seq in 1_234..=1_400 {
            seal(&mut sealer, seq).unwrap();
        }
        assert!(seal(&mut sealer, 1_232).is_err());
        seal(&mut sealer, 1_231).unwrap();
        // Past the reach: refused, jumped over or not.
        for seq in (1_401..=2_300).chain(2_302..=2_400) {
            seal(&mut sealer, seq).unwrap();
        }
        assert!(seal(&mut sealer, 1_215).is_err());
        seal(&mut sealer, 2_301).unwrap();
        // A run too many forgets the oldest.
        let mut seq = 2_400u16;
        for _ in 0..=MAX_SKIPPED {
            seq += 2;
            seal(&mut sealer, seq).unwrap();
        }
        assert!(seal(&mut sealer, 2_401).is_err());
        seal(&mut sealer, 2_403).unwrap();
        assert!(sealer.skipped.len() <= MAX_SKIPPED);
    }

    #[test]
    fn a_packet_sealed_again_is_the_datagram_that_left_or_nothing() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let mut sealer = RtpCrypto::new(&keys(profile), false).unwrap();
            let tag_len = sealer.tag_len();
            // Across a wrap, so that the rollover counter is part of what must match.
            let mut left = Vec::new();
            for seq in (65_533..=65_535).chain(0..3) {
                let mut datagram = packet(9, seq, 60, false);
                let index = sealer.seal(&mut datagram, 12, 9, seq).unwrap();
                left.push((seq, index, datagram));
            }
            for (seq, index, datagram) in &left {
                let tag = &datagram[datagram.len() - tag_len..];
                let mut again = packet(9, *seq, 60, false);
                sealer.reseal(&mut again, 12, 9, *index, tag).unwrap();
                assert_eq!(&again, datagram, "{profile:?} {seq}");
                // Another payload, or the same one at another index: not the same tag, so
                // nothing is kept.
                let mut other = packet(9, *seq, 60, false);
                other[20] ^= 1;
                assert!(matches!(
                    sealer.reseal(&mut other, 12, 9, *index, tag),
                    Err(Error::ErrFailedToVerifyAuthTag)
                ));
                assert!(other.is_empty());
                let mut elsewhere = packet(9, *seq, 60, false);
                assert!(
                    sealer
                        .reseal(&mut elsewhere, 12, 9, index ^ 0x1_0000, tag)
                        .is_err()
                );
                assert!(elsewhere.is_empty());
            }
            // An index the stream never reached, and a stream never sealed: refused, emptied.
            let (_, newest, datagram) = left.last().unwrap();
            let tag = &datagram[datagram.len() - tag_len..];
            let mut ahead = packet(9, 3, 60, false);
            assert!(matches!(
                sealer.reseal(&mut ahead, 12, 9, newest + 1, tag),
                Err(Error::SrtpSsrcDuplicated(..))
            ));
            assert!(ahead.is_empty());
            let mut unknown = packet(10, 2, 60, false);
            assert!(sealer.reseal(&mut unknown, 12, 10, 2, tag).is_err());
            assert!(unknown.is_empty());
        }
    }

    #[test]
    fn what_another_context_opened_counts_as_taken() {
        let profile = ProtectionProfile::Aes128CmHmacSha1_80;
        let mut sender = keys(profile).context().unwrap();
        let sealed: Vec<_> = (0..20u16)
            .map(|seq| {
                sender
                    .encrypt_rtp(&packet(5, 500 + seq, 80, false))
                    .unwrap()
            })
            .collect();
        let at = |seq: u16| &sealed[usize::from(seq - 500)];
        // `rtc` opened 500..=509 but 505 (lost); the own context takes the stream over.
        let mut opener = RtpCrypto::new(&keys(profile), true).unwrap();
        let seen = 0b11_1110_1111; // 509 is bit 0, 505 bit 4.
        opener.taken(5, 509, seen).unwrap();
        for seq in [503u16, 509] {
            assert!(matches!(
                opener.open(at(seq), 12, 5, seq),
                Err(Error::SrtpSsrcDuplicated(..))
            ));
        }
        assert!(opener.open(at(510), 12, 5, 510).is_ok());
        // The repair of the lost one, late: taken.
        assert!(opener.open(at(505), 12, 5, 505).is_ok());
        // A stream it knows: one more `rtc` opened (from another address) counts too.
        opener.taken(5, 514, 1).unwrap();
        assert!(opener.open(at(514), 12, 5, 514).is_err());
        assert!(opener.open(at(513), 12, 5, 513).is_ok());
        assert!(opener.open(at(515), 12, 5, 515).is_ok());
        // Nothing is checked or moved by `check`.
        assert!(opener.check(5, 516).is_ok());
        assert!(opener.check(5, 515).is_err());
        assert!(opener.open(at(516), 12, 5, 516).is_ok());
    }

    #[test]
    fn a_context_refuses_a_stream_past_its_bound_and_keeps_the_others() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let mut sealer = RtpCrypto::new(&keys(profile), false).unwrap();
        for ssrc in 0..MAX_STREAMS as u32 {
            let mut plain = packet(ssrc, 1, 10, false);
            sealer.seal(&mut plain, 12, ssrc, 1).unwrap();
        }
        let mut plain = packet(9_999, 1, 10, false);
        assert!(matches!(
            sealer.seal(&mut plain, 12, 9_999, 1),
            Err(Error::TooManySources)
        ));
        assert_eq!(plain, packet(9_999, 1, 10, false), "nothing sealed");
        let mut plain = packet(0, 2, 10, false);
        assert!(sealer.seal(&mut plain, 12, 0, 2).is_ok());
        assert_eq!(sealer.places.len(), MAX_STREAMS);
    }
}
