//! Any bytes a client sends as a WebSocket frame, or as the `join_request` query parameter, must decode
//! to a request or an error — never a panic, never unbounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = consulta_sfu::decode_request(data);
    let _ = consulta_sfu::signal::decode_join_request(&String::from_utf8_lossy(data));
});
