//! `consulta-sfu-bench srtp`: what opening and sealing one video packet costs with `rtc`'s SRTP
//! context and with the own one (`consulta_media::srtp`), which the node's read and write paths
//! use. One thread, no system calls, no sockets: the figures are the cipher and its bookkeeping
//! alone, steadier than the scenarios' CPU shares.
//!
//! Each round takes fresh contexts of both kinds (a context refuses a packet it opened before)
//! and times `packets` packets through each, streams interleaved as a connection's layers are.
//! Rounds alternate the two, and the median round is reported. Before timing, what each seals is
//! checked to be what the other opens, byte for byte.

use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use consulta_media::keytap::MasterKeys;
use consulta_media::srtp::{RtpCrypto, header_len};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// A video packet's payload: with the header and its extensions, a 1 192-byte datagram sealed
/// under AES-CM, as the other SRTP measurements in docs/benchmarks.md.
const PAYLOAD_BYTES: usize = 1_160;

/// One packet to seal: its plain bytes, header, SSRC and sequence number.
struct Plain {
    bytes: Vec<u8>,
    header: rtc::rtp::Header,
}

fn plains(packets: u32, streams: u32) -> anyhow::Result<Vec<Plain>> {
    (0..packets)
        .map(|n| {
            let stream = n % streams.max(1);
            let mut header = rtc::rtp::Header {
                version: 2,
                payload_type: 96,
                ssrc: 0x1000 + stream,
                // Across a wrap of the sequence number.
                sequence_number: (65_000 + n / streams.max(1)) as u16,
                timestamp: n * 3_000,
                ..Default::default()
            };
            // A transport-wide sequence number, as every packet the node sends carries.
            header.set_extension(3, bytes::Bytes::copy_from_slice(&(n as u16).to_be_bytes()))?;
            let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(|i| (i + n as usize) as u8).collect();
            let bytes = rtc::rtp::Packet {
                header: header.clone(),
                payload: payload.into(),
            }
            .marshal()?
            .to_vec();
            // The header as a receiver reads it.
            let header = rtc::rtp::Header::unmarshal(&mut bytes.as_slice())?;
            Ok(Plain { bytes, header })
        })
        .collect()
}

/// Seconds per packet of `f` over `items`.
fn per_packet<T>(items: &[T], mut f: impl FnMut(&T) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    for item in items {
        f(item)?;
    }
    Ok(start.elapsed().as_secs_f64() / items.len().max(1) as f64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `rtc`'s context for `keys`, with the replay window it gives what a remote sends when `replay`.
fn rtc_context(keys: &MasterKeys, replay: bool) -> anyhow::Result<Context> {
    Ok(if replay {
        keys.context_with_replay_window(64)?
    } else {
        keys.context()?
    })
}

pub fn run(packets: u32, rounds: u32, streams: u32) -> anyhow::Result<()> {
    ensure!(
        packets > 0 && rounds > 0,
        "packets and rounds must be positive"
    );
    let plains = plains(packets, streams)?;
    println!(
        "consulta-sfu-bench srtp: {packets} packets of {} bytes sealed under AES-CM, over {streams} \
         streams, {rounds} rounds; median µs per packet",
        plains.first().map_or(0, |p| p.bytes.len() + 10)
    );
    println!(
        "{:<22} {:<6} {:>10} {:>10} {:>8}",
        "profile", "step", "rtc µs", "own µs", "own/rtc"
    );
    for (profile, name) in [
        (
            ProtectionProfile::Aes128CmHmacSha1_80,
            "AES-CM/HMAC-SHA1-80",
        ),
        (ProtectionProfile::AeadAes128Gcm, "AES-128-GCM"),
    ] {
        let salt = [0x5a_u8; 14];
        let salt = salt.get(..profile.salt_len()).context("a salt")?;
        let keys = MasterKeys::new(profile, &[0x3c; 16], salt);
        // What `rtc` seals, to open; and a check that each side takes the other's.
        let mut sealer = rtc_context(&keys, false)?;
        let sealed: Vec<(Vec<u8>, &Plain)> = plains
            .iter()
            .map(|p| Ok((sealer.encrypt_rtp(&p.bytes)?.to_vec(), p)))
            .collect::<anyhow::Result<_>>()?;
        let mut own = RtpCrypto::new(&keys, false)?;
        for (datagram, plain) in &sealed {
            let mut here = plain.bytes.clone();
            let len = header_len(&here).context("a header")?;
            own.seal(
                &mut here,
                len,
                plain.header.ssrc,
                plain.header.sequence_number,
            )?;
            if &here != datagram {
                bail!("{name}: the own context sealed other bytes than rtc's");
            }
        }
        let (mut open_rtc, mut open_own, mut seal_rtc, mut seal_own) =
            (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let mut context = rtc_context(&keys, true)?;
            open_rtc.push(per_packet(&sealed, |(datagram, plain)| {
                context.decrypt_rtp_with_header(datagram, &plain.header)?;
                Ok(())
            })?);
            let mut own = RtpCrypto::new(&keys, true)?;
            open_own.push(per_packet(&sealed, |(datagram, plain)| {
                let len = header_len(datagram).context("a header")?;
                let opened = own.open(
                    datagram,
                    len,
                    plain.header.ssrc,
                    plain.header.sequence_number,
                )?;
                ensure!(opened.len() == plain.bytes.len(), "opened another length");
                Ok(())
            })?);
            let mut context = rtc_context(&keys, false)?;
            seal_rtc.push(per_packet(&plains, |plain| {
                context.encrypt_rtp_with_header(&plain.bytes, &plain.header)?;
                Ok(())
            })?);
            let mut own = RtpCrypto::new(&keys, false)?;
            seal_own.push(per_packet(&plains, |plain| {
                let mut datagram = Vec::with_capacity(plain.bytes.len() + own.tag_len());
                datagram.extend_from_slice(&plain.bytes);
                let len = header_len(&datagram).context("a header")?;
                own.seal(
                    &mut datagram,
                    len,
                    plain.header.ssrc,
                    plain.header.sequence_number,
                )?;
                Ok(())
            })?);
        }
        for (step, rtc_times, own_times) in
            [("open", open_rtc, open_own), ("seal", seal_rtc, seal_own)]
        {
            let (r, o) = (median(rtc_times) * 1e6, median(own_times) * 1e6);
            println!("{name:<22} {step:<6} {r:>10.3} {o:>10.3} {:>8.2}", o / r);
        }
    }
    Ok(())
}
