//! RTP payloads from publishers reach the forwarding decisions unchecked: key frame detection for
//! every codec, the VP8 descriptor parser and rewriter, a DownTrack driven through layer
//! switches, pauses and clock jumps by the input, and the loss window counting the sequence
//! numbers. Never a panic; a rewrite keeps the length and what the descriptor says about the
//! frame; a packet adds at most 2999 to the loss (a longer jump restarts the count).
#![no_main]

use std::time::{Duration, Instant};

use consulta_sfu::forward::loss::ReceiveWindow;
use consulta_sfu::forward::{
    Codec, DownTrack, DownTrackConfig, Forward, IncomingPacket, Quality, is_keyframe, vp8,
};
use libfuzzer_sys::fuzz_target;

/// Reads the input front to back; runs dry as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

const CODECS: [Codec; 5] = [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1, Codec::Opus];

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.byte();
    let codec = CODECS[usize::from(setup % 5)];
    let mut dt = DownTrack::new(DownTrackConfig {
        simulcast: setup & 0x80 != 0,
        ..DownTrackConfig::new(codec)
    });
    let mut now = Instant::now();
    let mut window = ReceiveWindow::default();
    let (mut lost, mut packets) = (0u64, 0u64);

    while !input.0.is_empty() {
        let op = input.byte();
        now += Duration::from_millis(u64::from(input.byte()) * 8);
        match op % 8 {
            0 => dt.set_target(Quality::from_index(usize::from(input.byte() % 3))),
            1 => dt.set_paused(input.byte() & 1 == 1),
            2 => {
                let _ = dt.poll_keyframe_request(now);
            }
            _ => {
                let quality = Quality::from_index(usize::from(op >> 3 & 3));
                let ssrc = u32::from(input.byte() % 4);
                let seq = input.u16();
                let arrival = window.handle_sequence(seq);
                packets += 1;
                lost += arrival.lost;
                // Each packet moves the window at most 2999 numbers on (a longer jump restarts it).
                assert!(lost <= packets * 2999);
                assert!(!(arrival.late && arrival.repeat));
                let timestamp = input.u32();
                let len = usize::from(input.byte());
                let mut payload = input.bytes(len);

                for c in CODECS {
                    let _ = is_keyframe(c, &payload);
                }
                let mut copy = payload.clone();
                let (id, tl0) = (seq, (timestamp & 0xff) as u8);
                if let Some(before) = vp8::Descriptor::parse(&payload) {
                    let after = vp8::rewrite(&mut copy, id, tl0).expect("parsed, so rewritable");
                    assert_eq!(copy.len(), payload.len());
                    assert_eq!(after.keyframe, before.keyframe);
                    assert_eq!(after.len, before.len);
                    assert_eq!(vp8::Descriptor::parse(&copy), Some(after));
                    // The forwarder's way: the same rewrite, as a head over a shared payload.
                    let (told, head) = vp8::rewritten(&payload, id, tl0).expect("parsed");
                    assert_eq!(told, after);
                    let mut applied = payload.clone();
                    if let Some(head) = head {
                        head.apply(&mut applied);
                    }
                    assert_eq!(applied, copy);
                    if let Some(p) = after.picture_id {
                        assert_eq!(p.value(), id & p.mask());
                    }
                } else {
                    assert!(vp8::rewrite(&mut copy, id, tl0).is_none());
                    assert!(vp8::rewritten(&payload, id, tl0).is_none());
                    assert_eq!(copy, payload);
                }

                let f = dt.handle_packet(
                    IncomingPacket {
                        quality,
                        ssrc,
                        seq,
                        timestamp,
                        marker: op & 0x80 != 0,
                        payload: &payload,
                    },
                    now,
                );
                if let Forward::Send { head, .. } = f {
                    assert!(dt.current().is_some());
                    if let Some(head) = head {
                        let before = payload.clone();
                        head.apply(&mut payload);
                        assert_eq!(payload.len(), before.len());
                        assert_ne!(payload, before, "a head is named only for a change");
                        let after = vp8::Descriptor::parse(&payload).expect("a rewrite parses");
                        assert_eq!(Some(after.len), vp8::Descriptor::parse(&before).map(|d| d.len));
                    }
                }
            }
        }
    }
    let s = dt.stats();
    assert!(s.layer_switches <= s.packets_forwarded);
});
