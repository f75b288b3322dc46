//! What the SFU's sending connections put on the wire under SRTP, opened with the connection's own
//! keys (read through `rtc`'s crypto provider: `consulta_media::keytap`).
//!
//! AES-GCM must never seal two different plaintexts under one nonce. SRTP's nonce is the stream's
//! SSRC and packet index (RFC 7714 §8.1), so a packet sent again under its own SSRC and sequence
//! number, as the SFU's NACK answers are (it negotiates no RTX towards subscribers), must be the same bytes. With
//! `rtc`'s own NACK responder it was not: the TWCC sender, wire-ward of that responder, gave the
//! resend a new transport-wide number (0x1f where the first copy had 0x14). The SFU answers NACKs
//! with `resend::Resender`, below the TWCC sender. The router tests check the same of everything
//! the router sends (`SrtpWatch` in router.rs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use consulta_media::keytap::{KeyTap, MasterKeys};
use consulta_media::rtp::{Header, Packet};
use consulta_media::{MediaConfig, MediaDirection, MediaKind, MediaPeer, PeerState, SrtpProfiles};

/// The packet the network loses on its first way.
const LOST: u16 = 20;

/// Opens one datagram with `keys`, with a context of its own.
fn open(keys: &MasterKeys, datagram: &[u8]) -> Option<Bytes> {
    let mut context = keys.context().unwrap();
    context.decrypt_rtp(datagram).ok().map(|b| b.freeze())
}

fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// A subscriber connection as the router makes it (sending only, GCM, bandwidth estimation on) sends
/// 40 VP8 packets to a receiving `rtc`; the network loses packet 20 once. The receiver asks for it
/// (NACK), the sender resends it, and every packet number the sender sealed more than once must
/// have been the same plaintext each time.
#[test]
fn a_packet_sent_again_is_sealed_as_it_was_the_first_time() {
    let mut now = Instant::now();
    let sender_addr: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let receiver_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let tap = KeyTap::new();
    let mut sender = MediaPeer::with_crypto(
        sender_addr,
        MediaConfig {
            direction: MediaDirection::SendOnly,
            srtp: SrtpProfiles::Gcm,
            ..MediaConfig::default()
        },
        Some(tap.clone()),
        now,
    )
    .unwrap();
    let mut receiver = MediaPeer::with_config(
        receiver_addr,
        MediaConfig {
            direction: MediaDirection::ReceiveOnly,
            ..MediaConfig::default()
        },
        now,
    )
    .unwrap();
    let track = sender
        .add_local_track(MediaKind::Video, "video/VP8", "stream", "video", 0x5eed)
        .unwrap();
    let offer = sender.create_offer(now).unwrap();
    let answer = receiver.accept_offer(offer, now).unwrap();
    sender.accept_answer(answer, now).unwrap();

    // Everything the sender seals, by packet number; `lose` drops the first copy of `LOST`.
    let mut sealed: HashMap<u16, Vec<Bytes>> = HashMap::new();
    let mut opener: Option<MasterKeys> = None;
    let mut connected = false;
    let mut step =
        |sender: &mut MediaPeer, receiver: &mut MediaPeer, now: Instant, connected: &mut bool| {
            loop {
                let mut moved = false;
                while let Some(t) = sender.poll_transmit() {
                    moved = true;
                    let datagram = &t.contents[..];
                    if datagram.first().is_some_and(|b| b >> 6 == 2) && !is_rtcp(datagram) {
                        let opener = opener.get_or_insert_with(|| {
                            let [client, server] = tap.aes128_gcm_keys().unwrap();
                            // The sender's half is the one that opens its first packet.
                            if open(&client, datagram).is_some() {
                                client
                            } else {
                                server
                            }
                        });
                        let plain =
                            open(opener, datagram).expect("the sender's keys open its packets");
                        let seq = u16::from_be_bytes([plain[2], plain[3]]);
                        let copies = sealed.entry(seq).or_default();
                        copies.push(plain);
                        if seq == LOST && copies.len() == 1 {
                            continue;
                        }
                    }
                    let _ = receiver.handle_receive(now, sender_addr, datagram);
                }
                while let Some(t) = receiver.poll_transmit() {
                    moved = true;
                    let _ = sender.handle_receive(now, receiver_addr, &t.contents);
                }
                for peer in [&mut *sender, &mut *receiver] {
                    while let Some(event) = peer.poll_event() {
                        moved = true;
                        if matches!(
                            event,
                            consulta_media::MediaEvent::StateChanged(PeerState::Connected)
                        ) {
                            *connected = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        };

    let start = now;
    while !connected {
        assert!(now - start < Duration::from_secs(10), "not connected");
        step(&mut sender, &mut receiver, now, &mut connected);
        now += Duration::from_millis(10);
        sender.handle_timeout(now).unwrap();
        receiver.handle_timeout(now).unwrap();
    }
    for number in 0..40u16 {
        let packet = Packet {
            header: Header {
                version: 2,
                marker: number % 4 == 3,
                sequence_number: number,
                timestamp: u32::from(number / 4) * 3_000,
                ..Default::default()
            },
            payload: Bytes::from(vec![0x10, 0, 0, 0, 0, 0, number as u8]),
        };
        sender
            .write_rtp(track, packet, "video/VP8", consulta_media::Keep::Copy, now)
            .unwrap();
        step(&mut sender, &mut receiver, now, &mut connected);
        now += Duration::from_millis(10);
        sender.handle_timeout(now).unwrap();
        receiver.handle_timeout(now).unwrap();
    }
    // Time for the receiver to ask and the sender to answer.
    for _ in 0..100 {
        step(&mut sender, &mut receiver, now, &mut connected);
        now += Duration::from_millis(10);
        sender.handle_timeout(now).unwrap();
        receiver.handle_timeout(now).unwrap();
    }

    let copies = &sealed[&LOST];
    assert!(
        copies.len() >= 2,
        "packet {LOST} was lost but never sent again ({} copies)",
        copies.len()
    );
    for (seq, copies) in &sealed {
        for copy in &copies[1..] {
            assert_eq!(
                copy, &copies[0],
                "packet {seq} was sealed again under the same SRTP nonce with another plaintext"
            );
        }
    }
}
