//! The idealised forwarder of `sfu-performance.md`: recv → SRTP open → K × AES-128-GCM seal →
//! send, with no RTP logic, no ICE and no DTLS. It opens and seals GCM, as the SFU's publisher
//! connections (whose clients resend on RTX, as the bench's publishers and browsers do) and
//! subscriber connections do (`SrtpProfiles`; from 2026-12-04 to 2026-12-05 it opened AES-CM
//! with HMAC-SHA1, as publisher connections then did). Its SRTP contexts (webrtc-rs `rtc::srtp`, the
//! SFU's own implementation) are keyed with a fixed master key instead of a DTLS handshake; that
//! changes setup, not the per-packet work measured.
//!
//! Sinks subscribe by sending `SUB!` + SSRC from their socket; each subscription gets its own
//! outbound context, as each SFU subscriber has its own keys.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context as _;
use bytes::BytesMut;
use consulta_media::keytap::MasterKeys;
use consulta_media::rtp::{Header, Packet};
use consulta_media::srtp::{RtpCrypto, header_len};
use rtc::crypto::providers::RingCrypto;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::media::{OutPacket, Recorder, Source};

const MASTER_KEY: [u8; 16] = *b"consulta-bench-k";
const GCM_SALT: [u8; 12] = *b"bench-salt12";
const SUBSCRIBE: &[u8; 4] = b"SUB!";

/// What publishers send with, as to the SFU's publisher connections when they offer RTX:
/// AES-128-GCM.
fn inbound_context() -> anyhow::Result<Context> {
    Context::new(
        &MASTER_KEY,
        &GCM_SALT,
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
        &RingCrypto,
    )
    .context("srtp context")
}

/// What sinks receive, as from the SFU's subscriber connections: AES-128-GCM.
fn outbound_context() -> anyhow::Result<Context> {
    Context::new(
        &MASTER_KEY,
        &GCM_SALT,
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
        &RingCrypto,
    )
    .context("srtp context")
}

/// The forwarder process: prints its address, then forwards until killed.
pub fn serve() -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    // As the SFU node's media socket.
    let buffers = socket2::SockRef::from(&socket);
    buffers.set_recv_buffer_size(consulta_media::node::UDP_BUFFER_BYTES)?;
    buffers.set_send_buffer_size(consulta_media::node::UDP_BUFFER_BYTES)?;
    #[allow(clippy::print_stdout, reason = "the parent reads the address")]
    {
        println!("IDEAL udp={}", socket.local_addr()?);
    }
    std::io::Write::flush(&mut std::io::stdout())?;
    // The node's own SRTP (`consulta_media::srtp`), as its read and write paths open and seal.
    let own = |profile: ProtectionProfile, salt: &[u8]| {
        RtpCrypto::new(&MasterKeys::new(profile, &MASTER_KEY, salt), false).context("srtp keys")
    };
    // One inbound context per stream, as each SFU publisher connection has its own for its few
    // streams. One for all of them took at most 256 streams (`consulta_media::srtp`'s limit per
    // connection) and looked each packet's stream up among them: at S1 with 80 rooms 64 of the
    // 320 streams were refused until 2026-12-05, and their packets cost a read and nothing else.
    let mut inbound: HashMap<u32, RtpCrypto> = HashMap::new();
    let mut subscribers: HashMap<u32, Vec<(SocketAddr, RtpCrypto)>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        let datagram = buf.get(..len).unwrap_or_default();
        if let Some(ssrc) = datagram.strip_prefix(SUBSCRIBE) {
            let ssrc = u32::from_be_bytes(ssrc.try_into().context("subscription")?);
            subscribers
                .entry(ssrc)
                .or_default()
                .push((from, own(ProtectionProfile::AeadAes128Gcm, &GCM_SALT)?));
            continue;
        }
        let (Some(&[s0, s1]), Some(&[a, b, c, d]), Some(header_len)) = (
            datagram.get(2..4),
            datagram.get(8..12),
            header_len(datagram),
        ) else {
            continue;
        };
        let (seq, ssrc) = (
            u16::from_be_bytes([s0, s1]),
            u32::from_be_bytes([a, b, c, d]),
        );
        let inbound = match inbound.entry(ssrc) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(own(ProtectionProfile::AeadAes128Gcm, &GCM_SALT)?)
            }
        };
        let Ok(plain) = inbound.open(datagram, header_len, ssrc, seq) else {
            continue;
        };
        for (to, outbound) in subscribers.get_mut(&ssrc).into_iter().flatten() {
            let mut sealed = Vec::with_capacity(plain.len() + outbound.tag_len());
            sealed.extend_from_slice(&plain);
            if outbound.seal(&mut sealed, header_len, ssrc, seq).is_ok() {
                let _ = socket.send_to(&sealed, *to);
            }
        }
    }
}

/// What flows where: stream ids with their kind, and per sink the streams it receives.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub streams: Vec<(u32, bool)>,
    pub sinks: Vec<Vec<u32>>,
}

fn ssrc_of(stream: u32) -> u32 {
    stream.wrapping_add(0x1000)
}

/// Drives the forwarder at `forwarder` with `topology`'s streams (video paced if `pace_video`, as
/// the SFU's publishers) and sinks until `stop`.
pub async fn drive(
    forwarder: SocketAddr,
    topology: &Topology,
    pace_video: bool,
    recorder: Rc<RefCell<Recorder>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut tasks = Vec::new();
    for (sink_index, streams) in topology.sinks.iter().enumerate() {
        let socket = crate::client::bind(std::net::Ipv4Addr::LOCALHOST.into()).await?;
        crate::stamp::enable(&socket)?;
        for stream in streams {
            let mut message = SUBSCRIBE.to_vec();
            message.extend_from_slice(&ssrc_of(*stream).to_be_bytes());
            socket.send_to(&message, forwarder).await?;
        }
        let recorder = recorder.clone();
        let mut stop = stop.clone();
        let sink = u32::try_from(sink_index)?;
        tasks.push(tokio::task::spawn_local(async move {
            let mut inbound = outbound_context()?;
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    received = crate::stamp::recv(&socket, &mut buf) => {
                        let received = received?;
                        let len = received.len;
                        let Ok(plain) = inbound.decrypt_rtp(buf.get(..len).unwrap_or_default()) else {
                            continue;
                        };
                        let Ok(packet) = Packet::unmarshal(&mut plain.as_ref()) else {
                            continue;
                        };
                        recorder.borrow_mut().record(
                            sink,
                            &packet.payload,
                            len,
                            Instant::now(),
                            received.arrived,
                        );
                    }
                }
            }
        }));
    }
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let now = Instant::now();
    // Each stream starts at its own moment, spread over one frame interval, as the SFU's
    // publishers start when each of them joins. Started together, every stream's frame left at
    // the same tick and reached the forwarder in one burst, which it read in one wake-up (≈120
    // datagrams each at S1 with 40 rooms, against ≈6 for the SFU): a floor with a kinder
    // arrival pattern than the SFU's.
    let spread = u32::try_from(topology.streams.len())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut sources: Vec<Source> = (0u32..)
        .zip(&topology.streams)
        .map(|(index, &(stream, video))| {
            let start = now + crate::media::VIDEO_PERIOD * index / spread;
            if video && pace_video {
                Source::paced_video(stream, start)
            } else if video {
                Source::video(stream, start)
            } else {
                Source::audio(stream, start)
            }
        })
        .collect();
    let mut stop = stop.clone();
    tasks.push(tokio::task::spawn_local(async move {
        let mut outbound = inbound_context()?;
        let mut out: Vec<OutPacket> = Vec::new();
        loop {
            let deadline = sources.iter().map(Source::due).min().unwrap_or(now);
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            recorder.borrow_mut().record_lag(deadline, now);
            let sent_ns = recorder.borrow().ns(now);
            for source in &mut sources {
                if source.due() > now {
                    continue;
                }
                out.clear();
                source.poll(now, sent_ns, &mut out);
                for p in out.drain(..) {
                    let packet = Packet {
                        header: Header {
                            version: 2,
                            marker: p.marker,
                            payload_type: if source.is_video() { 96 } else { 111 },
                            sequence_number: p.sequence_number,
                            timestamp: p.timestamp,
                            ssrc: ssrc_of(source.stream),
                            ..Header::default()
                        },
                        payload: p.payload,
                    };
                    let plain: BytesMut = packet.marshal()?;
                    let sealed = outbound.encrypt_rtp(&plain)?;
                    socket.send_to(&sealed, forwarder).await?;
                }
            }
        }
    }));
    Ok(tasks)
}
