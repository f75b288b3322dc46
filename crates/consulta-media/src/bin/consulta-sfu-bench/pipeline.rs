//! `consulta-sfu-bench pipeline`: what `rtc`'s per-packet pipeline costs, without sockets or a
//! second process. Two `MediaPeer`s are connected in memory (ICE, DTLS, SRTP-GCM, in simulated
//! time); the sender writes VP8 packets into a track and the receiver takes them in. What is
//! timed is the SFU's own per-packet work on each side:
//!
//! - **write**: `write_rtp` and `poll_transmit` (interceptors, SRTP seal), as for each copy the
//!   SFU sends to a subscriber;
//! - **read**: `handle_receive` and `poll_event` (demultiplexing, SRTP open, interceptors), as for
//!   each packet a publisher sends to the SFU;
//! - **timers**: both sides' timers every 500 packets (reports, NACK checks) and the RTCP they
//!   send each other, among it the receiver's TWCC feedback and the sender's estimate from it.
//!
//! Every setting runs one-way connections, as the SFU does. The first two differ in whether the
//! sender estimates the bandwidth (`MediaConfig::congestion_control`: TWCC sequence numbers, a
//! send history and GCC). The third bypasses `rtc`'s write path: the bench seals each packet
//! itself with the connection's own SRTP keys, read through `rtc`'s crypto-provider interface
//! ([`KeyTap`]), and hands the datagram to the receiving `rtc`, which must take every one in.
//! It is the floor of what forwarding outside `rtc`'s write path could cost per copy (no NACK
//! history, sender-report counts or transport-wide numbers, which that path would still need).
//!
//! By default each pair writes 500 packets and then reads them, one phase at a time;
//! `--interleave` reads each packet as soon as it is written, as a node handles one datagram after
//! another. With many pairs the second costs more: the pipeline's code and state leave the caches
//! between packets.
//!
//! One thread and no system calls, so the figures are steadier than the end-to-end scenarios'
//! CPU shares, which move by ±15 % between runs on this machine. Each setting is measured in
//! alternating rounds, and the median round is reported.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use consulta_media::rtp::{Header, Packet};
use consulta_media::{
    LocalTrack, MediaConfig, MediaDirection, MediaEvent, MediaKind, MediaPeer, PeerState,
    SrtpProfiles,
};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context as SrtpContext;

use consulta_media::keytap::KeyTap;

/// Packets per timed batch; timers (RTCP reports, NACK checks) run between batches.
const BATCH: u32 = 500;
/// Simulated time between packets: 1 000 packets/s, a 1 Mbit/s stream.
const PACKET_INTERVAL: Duration = Duration::from_millis(1);
const PAYLOAD_BYTES: usize = 1_100;

/// Who seals the sender's packets.
#[derive(Clone, Copy)]
enum Sealer {
    /// `rtc`'s write path (`write_rtp`, `poll_transmit`): interceptors, SRTP, its handlers.
    Rtc { congestion_control: bool },
    /// `MediaPeer`'s own write path (`MediaConfig::own_write_path`, with bandwidth estimation, as
    /// the SFU): `write_rtp` numbers, records and seals, `poll_transmit` hands the datagram out.
    OwnPath,
    /// The bench, with the connection's own SRTP keys: marshal and seal only.
    OwnKeys,
}

/// The sender's own sealing: its SRTP context, and the header `rtc` writes on the track (payload
/// type, SSRC), learnt from the first packet `rtc` sealed.
struct OwnSeal {
    context: SrtpContext,
    header: Header,
}

impl OwnSeal {
    /// Keys the context from what `tap` kept, checks them by opening a datagram `rtc` sealed
    /// with the same keys, and keeps that packet's header.
    fn from_sealed(tap: &KeyTap, sealed: &[u8]) -> anyhow::Result<Self> {
        // The sender offers, and the receiver answers as DTLS server (`MediaPeer`'s rule), so
        // the sender is the client and its writes use the client's keys.
        let [client, _server] = tap
            .aes128_gcm_keys()
            .context("no DTLS-SRTP keying material was seen")?;
        let context = || client.context().context("srtp context");
        let plain = context()?
            .decrypt_rtp(sealed)
            .context("the kept keys do not open what rtc sealed")?;
        let header = Packet::unmarshal(&mut &plain[..])?.header;
        Ok(Self {
            context: context()?,
            header,
        })
    }

    fn seal(&mut self, mut packet: Packet) -> anyhow::Result<bytes::BytesMut> {
        packet.header.payload_type = self.header.payload_type;
        packet.header.ssrc = self.header.ssrc;
        Ok(self.context.encrypt_rtp(&packet.marshal()?)?)
    }
}

/// A connected sender and receiver.
struct Pair {
    sender: MediaPeer,
    receiver: MediaPeer,
    sender_addr: SocketAddr,
    receiver_addr: SocketAddr,
    track: LocalTrack,
    own_seal: Option<OwnSeal>,
    now: Instant,
    received: u64,
}

impl Pair {
    fn connect(sealer: Sealer) -> anyhow::Result<Self> {
        let congestion_control = matches!(
            sealer,
            Sealer::Rtc {
                congestion_control: true
            } | Sealer::OwnPath
        );
        let tap = matches!(sealer, Sealer::OwnKeys).then(KeyTap::new);
        let now = Instant::now();
        let sender_addr: SocketAddr = "10.0.0.1:4000".parse()?;
        let receiver_addr: SocketAddr = "10.0.0.2:5000".parse()?;
        let config = |direction| MediaConfig {
            direction,
            // As the router's subscriber connections: what the SFU sends is sealed with GCM.
            srtp: SrtpProfiles::Gcm,
            congestion_control,
            own_write_path: matches!(sealer, Sealer::OwnPath),
            ..MediaConfig::default()
        };
        let mut sender = MediaPeer::with_crypto(
            sender_addr,
            config(MediaDirection::SendOnly),
            tap.clone()
                .map(|tap| tap as std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider>),
            now,
        )?;
        let mut receiver =
            MediaPeer::with_config(receiver_addr, config(MediaDirection::ReceiveOnly), now)?;
        let track =
            sender.add_local_track(MediaKind::Video, "video/VP8", "stream", "video", 0x5eed)?;
        let offer = sender.create_offer(now)?;
        let answer = receiver.accept_offer(offer, now)?;
        sender.accept_answer(answer, now)?;
        let mut pair = Self {
            sender,
            receiver,
            sender_addr,
            receiver_addr,
            track,
            own_seal: None,
            now,
            received: 0,
        };
        let mut connected = [false, false];
        let start = pair.now;
        while connected != [true, true] {
            if pair.now - start > Duration::from_secs(10) {
                bail!("the in-memory peers did not connect within 10 s of simulated time");
            }
            pair.exchange(&mut connected)?;
            let next = [pair.sender.poll_timeout(), pair.receiver.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(pair.now + Duration::from_millis(50));
            pair.now = next.clamp(pair.now, pair.now + Duration::from_millis(50));
            pair.sender.handle_timeout(pair.now)?;
            pair.receiver.handle_timeout(pair.now)?;
        }
        if let Some(tap) = tap {
            // One packet through `rtc`, numbered just before the rounds' first (they start at 1
            // for this setting), to learn its header and check the kept keys.
            pair.sender.write_rtp(
                pair.track,
                vp8_packet(0, &bytes::Bytes::new()),
                "video/VP8",
                consulta_media::Keep::Copy,
                pair.now,
            )?;
            let sealed = pair
                .sender
                .poll_transmit()
                .context("rtc sent nothing for the first packet")?
                .contents;
            pair.own_seal = Some(OwnSeal::from_sealed(&tap, &sealed)?);
            pair.take_in(&sealed)?;
        }
        Ok(pair)
    }

    /// Delivers everything queued both ways, noting connection and received packets.
    fn exchange(&mut self, connected: &mut [bool; 2]) -> anyhow::Result<()> {
        loop {
            let mut moved = false;
            while let Some(t) = self.sender.poll_transmit() {
                let _ = self
                    .receiver
                    .handle_receive(self.now, self.sender_addr, &t.contents);
                moved = true;
            }
            while let Some(t) = self.receiver.poll_transmit() {
                let _ = self
                    .sender
                    .handle_receive(self.now, self.receiver_addr, &t.contents);
                moved = true;
            }
            for (i, peer) in [&mut self.sender, &mut self.receiver]
                .into_iter()
                .enumerate()
            {
                while let Some(event) = peer.poll_event() {
                    moved = true;
                    match event {
                        MediaEvent::StateChanged(PeerState::Connected) => {
                            if let Some(flag) = connected.get_mut(i) {
                                *flag = true;
                            }
                        }
                        MediaEvent::Rtp(_) => self.received += 1,
                        _ => {}
                    }
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// The receiver takes in one datagram and its events.
    fn take_in(&mut self, datagram: &[u8]) -> anyhow::Result<()> {
        self.receiver
            .handle_receive(self.now, self.sender_addr, datagram)?;
        while let Some(event) = self.receiver.poll_event() {
            if matches!(event, MediaEvent::Rtp(_)) {
                self.received += 1;
            }
        }
        Ok(())
    }

    /// Untimed: `elapsed` of simulated time passes, timers fire, reports cross.
    fn settle(&mut self, elapsed: Duration) -> anyhow::Result<()> {
        self.now += elapsed;
        self.sender.handle_timeout(self.now)?;
        self.receiver.handle_timeout(self.now)?;
        self.exchange(&mut [true, true])
    }
}

/// Sends `count` packets per pair, from packet number `first`, in batches, interleaved across the
/// pairs as an SFU's node interleaves its connections; returns the time spent writing, reading and
/// in timers. With `interleave`, each packet is read as soon as it is written (as a node handles
/// one datagram after another) and the time of both is returned as writing.
fn send_round(
    pairs: &mut [Pair],
    first: u32,
    count: u32,
    interleave: bool,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let mut write = Duration::ZERO;
    let mut read = Duration::ZERO;
    let mut timers = Duration::ZERO;
    let payload = bytes::Bytes::from(vec![0x5a; PAYLOAD_BYTES]);
    let mut datagrams: Vec<(usize, bytes::Bytes)> = Vec::new();
    let mut sent = 0u32;
    while sent < count {
        let batch = BATCH.min(count - sent);
        datagrams.clear();
        let packets: Vec<(usize, Packet)> = (sent..sent + batch)
            .flat_map(|i| (0..pairs.len()).map(move |p| (p, i)))
            .map(|(p, i)| {
                // The own-keys setting's first packet went through `rtc` when it connected.
                let own = pairs.get(p).is_some_and(|pair| pair.own_seal.is_some());
                (p, vp8_packet(first + i + u32::from(own), &payload))
            })
            .collect();
        let start = Instant::now();
        for (p, packet) in packets {
            let Some(pair) = pairs.get_mut(p) else {
                continue;
            };
            if let Some(own_seal) = &mut pair.own_seal {
                let sealed = own_seal.seal(packet)?;
                if interleave {
                    pair.take_in(&sealed)?;
                } else {
                    datagrams.push((p, sealed.freeze()));
                }
                continue;
            }
            pair.sender.write_rtp(
                pair.track,
                packet,
                "video/VP8",
                consulta_media::Keep::Copy,
                pair.now,
            )?;
            while let Some(t) = pair.sender.poll_transmit() {
                if interleave {
                    pair.take_in(&t.contents)?;
                } else {
                    datagrams.push((p, t.contents));
                }
            }
        }
        write += start.elapsed();
        let start = Instant::now();
        for (p, datagram) in &datagrams {
            let Some(pair) = pairs.get_mut(*p) else {
                continue;
            };
            pair.take_in(datagram)?;
        }
        read += start.elapsed();
        let start = Instant::now();
        for pair in pairs.iter_mut() {
            pair.settle(PACKET_INTERVAL * batch)?;
        }
        timers += start.elapsed();
        sent += batch;
    }
    Ok((write, read, timers))
}

/// The `number`th packet of the bench's VP8 stream: a frame every 10 packets.
fn vp8_packet(number: u32, payload: &bytes::Bytes) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker: number % 10 == 9,
            payload_type: 96,
            sequence_number: number as u16,
            timestamp: number / 10 * 3_000,
            ssrc: 1,
            ..Default::default()
        },
        payload: payload.clone(),
    }
}

/// One setting's rounds, in nanoseconds per packet.
#[derive(Default)]
struct Rounds {
    write: Vec<f64>,
    read: Vec<f64>,
    timers: Vec<f64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Measures every setting in `rounds` alternating rounds of `packets` packets each, spread over
/// `connections` connected pairs, and prints the medians.
pub fn run(packets: u32, rounds: u32, connections: u32, interleave: bool) -> anyhow::Result<()> {
    let settings = [
        (
            "rtc, no congestion control",
            Sealer::Rtc {
                congestion_control: false,
            },
        ),
        (
            "rtc, congestion control",
            Sealer::Rtc {
                congestion_control: true,
            },
        ),
        ("MediaPeer's own path (the SFU)", Sealer::OwnPath),
        ("own keys, no rtc write path", Sealer::OwnKeys),
    ];
    let connections = connections.max(1);
    let per_pair = (packets / connections).max(1);
    let packets = per_pair * connections;
    let mut sets = settings
        .iter()
        .map(|(_, sealer)| {
            (0..connections)
                .map(|_| Pair::connect(*sealer))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .context("connecting the in-memory peers")?;
    let mut results: Vec<Rounds> = settings.iter().map(|_| Rounds::default()).collect();
    // A warm-up round each, then the measured ones.
    for round in 0..=rounds {
        for (pairs, result) in sets.iter_mut().zip(&mut results) {
            let before: u64 = pairs.iter().map(|p| p.received).sum();
            let (write, read, timers) = send_round(pairs, round * per_pair, per_pair, interleave)?;
            let arrived = pairs.iter().map(|p| p.received).sum::<u64>() - before;
            if arrived != u64::from(packets) {
                bail!("{arrived} of {packets} packets arrived; the measurement is void");
            }
            if round > 0 {
                let per = |d: Duration| d.as_nanos() as f64 / f64::from(packets);
                result.write.push(per(write));
                result.read.push(per(read));
                result.timers.push(per(timers));
            }
        }
    }
    let order = if interleave {
        "each packet read as soon as it is written"
    } else {
        "500 packets per pair written, then read"
    };
    println!(
        "rtc pipeline, in memory: VP8 packets of {PAYLOAD_BYTES} B, SRTP AES-128-GCM, over \
         {connections} connection pair(s), {order}; median of {rounds} rounds of {packets} packets"
    );
    println!(
        "{:<32} {:>14} {:>14} {:>14} {:>14}",
        "sender", "write ns/pkt", "read ns/pkt", "timers ns/pkt", "sum ns/pkt"
    );
    let mut sums = Vec::new();
    for ((name, _), result) in settings.iter().zip(&mut results) {
        let write = median(&mut result.write);
        let read = median(&mut result.read);
        let timers = median(&mut result.timers);
        let sum = write + read + timers;
        sums.push(sum);
        if interleave {
            // One clock around both halves: only their sum is known.
            println!(
                "{name:<32} {:>14} {:>14} {timers:>14.0} {sum:>14.0}",
                "-", "-"
            );
        } else {
            println!("{name:<32} {write:>14.0} {read:>14.0} {timers:>14.0} {sum:>14.0}");
        }
    }
    if let [without, with, path, own] = sums[..] {
        println!("with / without congestion control: {:.3}", with / without);
        println!(
            "MediaPeer's own path / rtc's, both with congestion control: {:.3}",
            path / with
        );
        println!(
            "own keys (seal only) / rtc with congestion control: {:.3}",
            own / with
        );
    }
    Ok(())
}
