//! Any bytes a client sends on a data channel must be relayed (stamped with the sender, still a
//! valid DataPacket) or refused with an error — never a panic.
#![no_main]

use consulta_sfu::ParticipantSid;
use consulta_sfu::data::{DataKind, DataSender, relay_data_packet};
use libfuzzer_sys::fuzz_target;
use livekit_protocol::DataPacket;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some(sid) = ParticipantSid::parse("PA_fuzz") else {
        return;
    };
    let sender = DataSender {
        identity: "@fuzz:hs.example:DEV",
        sid: &sid,
        can_publish_data: data.first().is_some_and(|b| b & 1 == 0),
    };
    let kind = if data.len() % 2 == 0 {
        DataKind::Reliable
    } else {
        DataKind::Lossy
    };
    if let Ok(relayed) = relay_data_packet(data, kind, &sender) {
        let out = DataPacket::decode(relayed.bytes.as_slice()).expect("our own output decodes");
        assert_eq!(out.participant_identity, sender.identity);
        assert_eq!(out.participant_sid, "PA_fuzz");
        assert_eq!(out.sequence, relayed.sequence);
        let again = relay_data_packet(&relayed.bytes, kind, &sender).expect("and is relayed again");
        assert_eq!(again.destinations, relayed.destinations);
    }
});
