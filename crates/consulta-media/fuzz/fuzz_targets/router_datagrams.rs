//! Arbitrary datagrams into a media router that has one participant with an offered subscriber
//! connection: STUN (with the right ufrag, so the datagrams reach `rtc`), DTLS, RTP and RTCP
//! lookalikes from several addresses must never panic the router.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use consulta_media::engine::{Command, Router};
use consulta_media::peer::MediaConfig;
use consulta_sfu::ids::{ParticipantSid, RoomName};
use consulta_sfu::media::MediaEvent;
use libfuzzer_sys::fuzz_target;

fn stun_with_ufrag(ufrag: &str, tail: &[u8]) -> Vec<u8> {
    let username = format!("{ufrag}:fuzz");
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(tail);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[9; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    let now = epoch();
    let mut router = Router::new(SocketAddr::from(([127, 0, 0, 1], 7882)), MediaConfig::default());
    let (Some(room), Some(sid)) = (RoomName::parse("fuzz"), ParticipantSid::parse("PA_fuzz")) else {
        return;
    };
    router.handle_command(
        now,
        Command::Joined {
            room,
            participant: sid.clone(),
            identity: "fuzz".to_owned(),
            can_publish_data: true,
        },
    );
    router.handle_command(now, Command::NeedsOffer(sid));
    let mut ufrag = String::new();
    while let Some(event) = router.poll_event() {
        if let MediaEvent::SubscriberOffer { offer, .. } = event {
            ufrag = offer
                .sdp
                .lines()
                .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
                .unwrap_or_default()
                .to_owned();
        }
    }
    let mut at = now;
    for chunk in data.split(|b| *b == 0xFF) {
        let Some((&selector, rest)) = chunk.split_first() else {
            continue;
        };
        let from = SocketAddr::from(([127, 0, 0, 1], 40000 + u16::from(selector & 3)));
        let datagram = if selector & 4 != 0 {
            stun_with_ufrag(&ufrag, rest)
        } else {
            rest.to_vec()
        };
        router.handle_datagram(at, from, &datagram);
        at += Duration::from_millis(u64::from(selector >> 3));
        router.handle_timeout(at);
        while router.poll_transmit().is_some() {}
        while router.poll_event().is_some() {}
    }
});
