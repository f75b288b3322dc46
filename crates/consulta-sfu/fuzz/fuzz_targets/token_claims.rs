//! Access tokens: fuzzed whole (header, payload, signature), and with a fuzzed payload under a valid
//! HS256 signature, so that the claims parser and the join checks behind the signature are reached too.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consulta_sfu::{ApiKeys, ApiSecret};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let keys = ApiKeys::new().with("fuzzkey", ApiSecret::new(SECRET));
    let now = 1_800_000_000;
    let _ = consulta_sfu::auth::verify_join(&String::from_utf8_lossy(data), &keys, now, None);

    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(data)
    );
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()) else {
        return;
    };
    mac.update(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let _ = consulta_sfu::auth::verify_join(&token, &keys, now, Some("room"));
});
