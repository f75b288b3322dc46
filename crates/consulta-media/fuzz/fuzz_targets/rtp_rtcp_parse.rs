//! The RTP and RTCP parsers the SFU's media path relies on (webrtc-rs's, after SRTP), fed
//! arbitrary bytes, then through the SFU's own forwarding decision for the parsed payload.
#![no_main]

use std::time::{Duration, Instant};

use consulta_sfu::forward::{Codec, DownTrack, DownTrackConfig, IncomingPacket, Quality};
use libfuzzer_sys::fuzz_target;
use rtc::shared::marshal::Unmarshal;

fuzz_target!(|data: &[u8]| {
    let mut rtcp = data;
    let _ = rtc::rtcp::packet::unmarshal(&mut rtcp);
    let mut raw = data;
    if let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut raw) {
        let mut config = DownTrackConfig::new(Codec::Vp8);
        config.simulcast = true;
        let mut down = DownTrack::new(config);
        let now = Instant::now();
        for (i, quality) in [Quality::Low, Quality::High, Quality::Medium].into_iter().enumerate() {
            let _ = down.handle_packet(
                IncomingPacket {
                    quality,
                    ssrc: packet.header.ssrc.wrapping_add(i as u32),
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: &packet.payload,
                },
                now + Duration::from_millis(i as u64 * 400),
            );
            let _ = down.poll_keyframe_request(now);
        }
    }
});
