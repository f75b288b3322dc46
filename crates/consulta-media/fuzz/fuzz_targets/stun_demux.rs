//! The UDP demultiplexer reads the STUN header and USERNAME of any datagram: arbitrary bytes from
//! arbitrary addresses must never panic it, and routing must stay consistent.
#![no_main]

use std::net::SocketAddr;

use consulta_media::mux::{Demux, stun_local_ufrag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stun_local_ufrag(data);
    let mut demux = Demux::default();
    demux.register("ufrag1".to_owned(), 1u8);
    demux.register("ufrag2".to_owned(), 2u8);
    for (i, chunk) in data.chunks(64).enumerate() {
        let first = chunk.first().copied().unwrap_or(0);
        let port = 1000 + u16::from(first % 8);
        let from = SocketAddr::from(([127, 0, 0, 1], port));
        // Some chunks are what a connection sends to `from` (its binding requests are
        // remembered), and some set where it sends; which connection, by the chunk's length.
        let key = 1 + u8::from(chunk.len() % 2 == 1);
        match first % 5 {
            0 => demux.handle_sent(key, from, chunk),
            1 => demux.handle_destination(key, from),
            _ => {}
        }
        let routed = demux.route(from, chunk);
        // A request (class 0b00: bit 8 of the type is the first byte's lowest, bit 4 is in the
        // second byte) naming a known connection reaches it, wherever it comes from.
        let request = first & 0x01 == 0 && chunk.get(1).is_some_and(|b| b & 0x10 == 0);
        if request
            && let Some(ufrag) = stun_local_ufrag(chunk)
        {
            let expected = match ufrag {
                "ufrag1" => Some(1),
                "ufrag2" => Some(2),
                _ => routed,
            };
            assert_eq!(routed, expected, "chunk {i}");
        }
        if i % 7 == 6 {
            demux.remove(1);
            demux.register("ufrag1".to_owned(), 1);
        }
    }
});
