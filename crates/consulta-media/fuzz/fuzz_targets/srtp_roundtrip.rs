//! The own SRTP (`consulta_media::srtp`) under both profiles: whatever bytes come in, reading an
//! RTP header's length, opening, counting packets as taken and sealing never panic; the sealer
//! never seals one index of a stream twice (a GCM nonce used again); and each packet sealed here
//! opens here to the same bytes, at the index it was sealed at (the two sides keep the same
//! rollover counters). The opener keeps no replay window: the sealer seals a late packet it
//! jumped over up to 1024 behind, as far as a browser's receiver takes one, where this crate's
//! opening window, like `rtc`'s, is 64.
#![no_main]

use std::collections::HashSet;

use consulta_media::keytap::MasterKeys;
use consulta_media::srtp::{RtpCrypto, header_len};
use libfuzzer_sys::fuzz_target;
use rtc::srtp::protection_profile::ProtectionProfile;

fuzz_target!(|data: &[u8]| {
    let Some((&profile, data)) = data.split_first() else {
        return;
    };
    let profile = if profile & 1 == 0 {
        ProtectionProfile::Aes128CmHmacSha1_80
    } else {
        ProtectionProfile::AeadAes128Gcm
    };
    let salt = [0x5a_u8; 14];
    let Some(salt) = salt.get(..profile.salt_len()) else {
        return;
    };
    let keys = MasterKeys::new(profile, &[0x3c; 16], salt);
    let (Ok(mut sealer), Ok(mut opener), Ok(mut raw)) = (
        RtpCrypto::new(&keys, false),
        RtpCrypto::new(&keys, false),
        RtpCrypto::new(&keys, true),
    ) else {
        return;
    };
    let mut sealed_at = HashSet::new();
    for chunk in data.split(|b| *b == 0xFF) {
        let Some((&selector, packet)) = chunk.split_first() else {
            continue;
        };
        let ssrc_seq = |p: &[u8]| -> Option<(u32, u16)> {
            let ssrc = u32::from_be_bytes(p.get(8..12)?.try_into().ok()?);
            let seq = u16::from_be_bytes(p.get(2..4)?.try_into().ok()?);
            Some((ssrc, seq))
        };
        // Anything, as a datagram from the network, with any header length.
        let (ssrc, seq) = ssrc_seq(packet).unwrap_or((u32::from(selector), 0));
        let _ = raw.open(packet, usize::from(selector), ssrc, seq);
        if selector & 0x80 != 0 {
            let _ = raw.taken(ssrc, seq, u64::from(selector).rotate_left(u32::from(selector)));
        }
        // As a plain packet: sealed here, it opens here.
        let (Some(len), Some((ssrc, seq))) = (header_len(packet), ssrc_seq(packet)) else {
            continue;
        };
        let mut sealed = packet.to_vec();
        let Ok(index) = sealer.seal(&mut sealed, len, ssrc, seq) else {
            assert_eq!(sealed, packet, "a refused packet is left as it was");
            continue;
        };
        assert!(sealed_at.insert((ssrc, index)), "index {index} of {ssrc} sealed twice");
        match opener.open(&sealed, len, ssrc, seq) {
            Ok(opened) => assert_eq!(&opened[..], packet, "opened to other bytes"),
            Err(error) => panic!("sealed here, not opened here: {error:?}"),
        }
    }
});
