//! The DTLS-SRTP keys of a connection `rtc` set up, read through its public crypto-provider
//! interface. The own write path (`send::OwnWrite`) seals with them, after checking them against
//! an SRTCP packet `rtc` sealed; tests and benchmarks use them to open what a connection sent
//! (tests/it/srtp.rs, and `SrtpWatch` in the router tests) and to seal packets for it without
//! `rtc`'s write path (`consulta-sfu-bench pipeline`).
//!
//! `rtc` keeps its SRTP contexts and its DTLS exporter to itself, but it takes its cryptography
//! from a provider the application may supply (`SettingEngineBuilder::with_crypto_provider`).
//! [`KeyTap`] is such a provider: it hands every operation to ring's provider and keeps a copy of
//! the one output it wants, the DTLS-SRTP keying material (RFC 5764 §4.2). DTLS derives it with the
//! TLS PRF (RFC 5246 §5): P_SHA256 over the master secret, seeded with the exporter label
//! `EXTRACTOR-dtls_srtp` and both randoms. Each output block is an HMAC over `A(i) ‖ seed`, so
//! the tap keeps the output of every two-part HMAC whose second part is that seed, and starts
//! again at `A(1) = HMAC(seed)`, the first step of each derivation.
//!
//! It depends on how `rtc` 0.21 calls its provider (one HMAC per PRF step, the seed passed as its
//! own part). Its users check the keys against what `rtc` itself sealed, so a change there fails
//! them instead of skewing them.

use std::sync::{Arc, Mutex, PoisonError};

use rtc::crypto::providers::RingProvider;
use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher,
    StreamCipherAlgorithm,
};
use rtc::srtp::protection_profile::ProtectionProfile;

/// RFC 5764 §4.2: the exporter label of DTLS-SRTP.
const DTLS_SRTP_LABEL: &[u8] = b"EXTRACTOR-dtls_srtp";

/// The keying material `rtc` exported last, as the PRF produced it (whole 32-byte blocks: the
/// exporter uses a prefix of it).
#[derive(Default)]
struct Exported(Mutex<Vec<u8>>);

impl Exported {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A crypto provider (ring's) that remembers the DTLS-SRTP keying material.
pub struct KeyTap {
    random: rtc::crypto::providers::RingRandom,
    crypto: TapCrypto,
}

impl KeyTap {
    /// A provider to give one connection (`MediaPeer::with_crypto`).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            random: rtc::crypto::providers::RingRandom,
            crypto: TapCrypto {
                ring: RingProvider::new(),
                exported: Arc::default(),
            },
        })
    }

    /// A provider that exported `material` already (tests: the keys DTLS would give).
    #[cfg(test)]
    pub(crate) fn with_material(material: &[u8]) -> Arc<Self> {
        let tap = Self::new();
        tap.crypto
            .exported
            .with(|exported| exported.extend_from_slice(material));
        tap
    }

    /// The first `len` bytes of the keying material exported last, once there is that much.
    pub fn keying_material(&self, len: usize) -> Option<Vec<u8>> {
        self.crypto
            .exported
            .with(|material| material.get(..len).map(<[u8]>::to_vec))
    }

    /// The DTLS client's and the DTLS server's SRTP master keys for `profile` (RFC 5764 §4.2:
    /// the material is client key, server key, client salt, server salt).
    pub fn keys(&self, profile: ProtectionProfile) -> Option<[MasterKeys; 2]> {
        let (key, salt) = (profile.key_len(), profile.salt_len());
        let material = self.keying_material(2 * (key + salt))?;
        let (keys, salts) = material.split_at(2 * key);
        let (client_key, server_key) = keys.split_at(key);
        let (client_salt, server_salt) = salts.split_at(salt);
        let side = |key: &[u8], salt: &[u8]| MasterKeys::new(profile, key, salt);
        Some([side(client_key, client_salt), side(server_key, server_salt)])
    }

    /// [`keys`](Self::keys) for SRTP_AEAD_AES_128_GCM, what the SFU sends with.
    pub fn aes128_gcm_keys(&self) -> Option<[MasterKeys; 2]> {
        self.keys(ProtectionProfile::AeadAes128Gcm)
    }
}

/// One side's SRTP master key and salt, for one protection profile.
#[derive(Clone)]
pub struct MasterKeys {
    profile: ProtectionProfile,
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl MasterKeys {
    /// Keys given (tests and benchmarks make them up).
    pub fn new(profile: ProtectionProfile, key: &[u8], salt: &[u8]) -> Self {
        Self {
            profile,
            key: key.to_vec(),
            salt: salt.to_vec(),
        }
    }

    /// The protection profile the keys are for.
    pub fn profile(&self) -> ProtectionProfile {
        self.profile
    }

    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// An SRTP context with these keys and no replay window (so that it opens a packet sent
    /// again, too).
    pub fn context(&self) -> Result<rtc::srtp::context::Context, rtc::shared::error::Error> {
        rtc::srtp::context::Context::new(
            &self.key,
            &self.salt,
            self.profile,
            None,
            None,
            &rtc::crypto::providers::RingCrypto,
        )
    }

    /// An SRTP context with these keys that refuses a packet seen before, or older than `window`
    /// packets behind the newest, as `rtc`'s context for what the remote sends does (its default
    /// window: 64), SRTP and SRTCP alike.
    pub fn context_with_replay_window(
        &self,
        window: usize,
    ) -> Result<rtc::srtp::context::Context, rtc::shared::error::Error> {
        rtc::srtp::context::Context::new(
            &self.key,
            &self.salt,
            self.profile,
            Some(rtc::srtp::option::srtp_replay_protection(window)),
            Some(rtc::srtp::option::srtcp_replay_protection(window)),
            &rtc::crypto::providers::RingCrypto,
        )
    }
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("MasterKeys").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeyTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("KeyTap").finish_non_exhaustive()
    }
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        "ring, DTLS-SRTP keying material kept"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        &self.random
    }
}

struct TapCrypto {
    ring: RingProvider,
    exported: Arc<Exported>,
}

impl TapCrypto {
    fn ring(&self) -> &dyn RTCCrypto {
        self.ring.crypto()
    }
}

impl RTCCrypto for TapCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.ring().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.ring().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.ring().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        Ok(Box::new(TapMac {
            inner: self.ring().new_hmac(algorithm, key)?,
            exported: self.exported.clone(),
        }))
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.ring().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.ring().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.ring().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.ring().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.ring().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.ring().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.ring()
            .verify_signature(scheme, public_key, message, signature)
    }
}

struct TapMac {
    inner: Box<dyn Mac>,
    exported: Arc<Exported>,
}

impl Mac for TapMac {
    fn output_len(&self) -> usize {
        self.inner.output_len()
    }

    fn sign(&mut self, input: &[&[u8]], output: &mut [u8]) -> Result<(), CryptoError> {
        self.inner.sign(input, output)?;
        match input {
            // A(1) = HMAC(seed): a new derivation begins.
            [seed] if seed.starts_with(DTLS_SRTP_LABEL) => self.exported.with(Vec::clear),
            // HMAC(A(i) ‖ seed): the next block of keying material.
            [_, seed] if seed.starts_with(DTLS_SRTP_LABEL) => self
                .exported
                .with(|material| material.extend_from_slice(output)),
            _ => {}
        }
        Ok(())
    }

    fn verify(&mut self, input: &[&[u8]], expected: &[u8]) -> Result<(), CryptoError> {
        self.inner.verify(input, expected)
    }
}
