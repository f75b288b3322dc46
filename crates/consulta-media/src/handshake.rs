//! Keeps a DTLS handshake alive when one of this side's flights is lost.
//!
//! A DTLS side that sent a flight waits for the peer's next one, and sends its own again when a
//! timer runs out (RFC 6347 §4.2.4). `rtc-dtls` 0.21 stops that timer whenever a handshake record
//! arrives, and starts it again only when the record completes the flight it waits for. So when
//! this side's flight is lost, the peer sends its own previous flight again; the repeat stops this
//! side's timer and completes nothing; nothing is sent any more. The peer repeats until it gives
//! up, and the connection stays "connecting" for good: ICE up, no media. A join storm on the
//! benchmark machine lost such flights to full socket buffers in a third of its runs
//! (`docs/benchmarks.md`, "Flows missing after a join storm"), and a lossy mobile link loses them
//! too.
//!
//! The RFC's answer is also the cure: a peer that repeats its previous flight has not had ours, so
//! ours goes again. [`Flights`] remembers the datagrams of this side's last flight and tells a
//! repeat of the peer's from new handshake messages, by their message sequence numbers. When
//! `rtc` answers a repeat with nothing, the connection sends its last flight again itself, as it
//! went: a peer that has none of its records takes them all, and one that had them drops the
//! copies as replays.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// DTLS record content types.
const CHANGE_CIPHER_SPEC: u8 = 20;
const HANDSHAKE: u8 = 22;
/// A DTLS record header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// A handshake message header: type, length, message sequence, fragment offset and length.
const MESSAGE_HEADER: usize = 12;
/// The least time between two resends of one flight: a peer repeating faster (or a forged
/// repeat) does not make this side send more than one flight in this time.
const RESEND_GAP: Duration = Duration::from_millis(250);
/// The most datagrams a flight is kept in (a server's flight with a certificate chain is a few).
const MAX_FLIGHT_DATAGRAMS: usize = 8;

/// Whether `datagram` is DTLS (RFC 7983's demultiplexing: first byte 20 to 63).
pub(crate) fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

/// What a received datagram carries of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carries {
    /// No plaintext handshake message.
    Nothing,
    /// Handshake messages, the highest message sequence among them; `sealed` when records of a
    /// later epoch came with them (a Finished), which are new whatever the numbers say.
    Messages { highest: u16, sealed: bool },
}

/// Reads the handshake messages of the epoch-0 records of `datagram`.
fn carries(datagram: &[u8]) -> Carries {
    let mut rest = datagram;
    let mut highest: Option<u16> = None;
    let mut sealed = false;
    while let Some(header) = rest.first_chunk::<RECORD_HEADER>() {
        let kind = header[0];
        let epoch = u16::from_be_bytes([header[3], header[4]]);
        let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let (Some(body), Some(after)) = (
            rest.get(RECORD_HEADER..RECORD_HEADER + length),
            rest.get(RECORD_HEADER + length..),
        ) else {
            break;
        };
        rest = after;
        if epoch != 0 {
            sealed = true;
            continue;
        }
        if kind != HANDSHAKE {
            sealed |= kind == CHANGE_CIPHER_SPEC;
            continue;
        }
        let mut messages = body;
        while let Some(message) = messages.first_chunk::<MESSAGE_HEADER>() {
            let sequence = u16::from_be_bytes([message[4], message[5]]);
            let fragment = usize::from(message[9]) << 16
                | usize::from(message[10]) << 8
                | usize::from(message[11]);
            highest = Some(highest.map_or(sequence, |h| h.max(sequence)));
            messages = messages
                .get(MESSAGE_HEADER + fragment..)
                .unwrap_or_default();
        }
    }
    highest.map_or(Carries::Nothing, |highest| Carries::Messages {
        highest,
        sealed,
    })
}

/// One connection's handshake as seen from outside `rtc`: the peer's progress and this side's
/// last flight. Dropped once the connection is up.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    /// One above the highest message sequence the peer has sent.
    peer_next: u16,
    /// One above the highest message sequence this side has sent.
    own_next: u16,
    /// This side's datagrams since the peer last sent a new message: its last flight.
    last_flight: Vec<Bytes>,
    /// When that flight last went again.
    resent_at: Option<Instant>,
}

impl Flights {
    /// A datagram arrived: whether it only repeats handshake messages the peer sent before. A
    /// datagram with a new message starts this side's next flight.
    pub(crate) fn received(&mut self, datagram: &[u8]) -> bool {
        if !is_dtls(datagram) {
            return false;
        }
        match carries(datagram) {
            Carries::Nothing => false,
            Carries::Messages { highest, sealed } => {
                if !sealed && highest < self.peer_next {
                    return true;
                }
                self.peer_next = self.peer_next.max(highest.saturating_add(1));
                self.last_flight.clear();
                self.resent_at = None;
                false
            }
        }
    }

    /// This side sent `datagram`. A flight `rtc` sends again on its own timer is not kept twice.
    pub(crate) fn sent(&mut self, datagram: &Bytes) {
        if !is_dtls(datagram) {
            return;
        }
        if let Carries::Messages { highest, .. } = carries(datagram) {
            if highest < self.own_next {
                return;
            }
            self.own_next = highest.saturating_add(1);
        }
        if self.last_flight.len() < MAX_FLIGHT_DATAGRAMS {
            self.last_flight.push(datagram.clone());
        }
    }

    /// The peer repeated its flight and `rtc` answered nothing: this side's last flight, to send
    /// again, unless it went again less than [`RESEND_GAP`] ago.
    pub(crate) fn resend(&mut self, now: Instant) -> &[Bytes] {
        if self
            .resent_at
            .is_some_and(|at| now.saturating_duration_since(at) < RESEND_GAP)
        {
            return &[];
        }
        self.resent_at = Some(now);
        &self.last_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One epoch-0 record holding handshake messages with these sequence numbers (10-byte bodies).
    fn record(kind: u8, epoch: u16, sequences: &[u16]) -> Vec<u8> {
        let mut body = Vec::new();
        for &sequence in sequences {
            body.push(1); // message type
            body.extend_from_slice(&[0, 0, 10]); // length
            body.extend_from_slice(&sequence.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0]); // fragment offset
            body.extend_from_slice(&[0, 0, 10]); // fragment length
            body.extend_from_slice(&[0xAA; 10]);
        }
        let mut out = vec![kind, 0xFE, 0xFD];
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 7]);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn messages_are_read_across_records_and_later_epochs_count_as_new() {
        let mut datagram = record(HANDSHAKE, 0, &[1, 2]);
        datagram.extend(record(HANDSHAKE, 0, &[4, 3]));
        assert_eq!(
            carries(&datagram),
            Carries::Messages {
                highest: 4,
                sealed: false
            }
        );
        // A ChangeCipherSpec, then a Finished under epoch 1 (its body is ciphertext).
        datagram.extend(record(CHANGE_CIPHER_SPEC, 0, &[]));
        datagram.extend(record(HANDSHAKE, 1, &[0]));
        assert_eq!(
            carries(&datagram),
            Carries::Messages {
                highest: 4,
                sealed: true
            }
        );
        assert_eq!(carries(&record(21, 0, &[])), Carries::Nothing, "an alert");
        // Cut short: what is whole is read, the rest ignored.
        let whole = record(HANDSHAKE, 0, &[5]);
        assert_eq!(
            carries(&whole[..whole.len() - 1]),
            Carries::Nothing,
            "a record longer than the datagram"
        );
        assert_eq!(carries(&[HANDSHAKE, 0xFE]), Carries::Nothing);
    }

    #[test]
    fn a_repeat_of_the_peers_flight_gives_this_sides_last_flight_once_a_gap() {
        let now = Instant::now();
        let mut flights = Flights::default();
        // The client's ClientHello (0), our HelloVerifyRequest.
        assert!(!flights.received(&record(HANDSHAKE, 0, &[0])));
        flights.sent(&Bytes::from(record(HANDSHAKE, 0, &[0])));
        // Its ClientHello with the cookie (1): new, so our next flight starts.
        assert!(!flights.received(&record(HANDSHAKE, 0, &[1])));
        let flight =
            [record(HANDSHAKE, 0, &[1, 2]), record(HANDSHAKE, 0, &[3, 4])].map(Bytes::from);
        for datagram in &flight {
            flights.sent(datagram);
        }
        // STUN and media are not DTLS, and are not kept; nor is `rtc`'s own resend of the flight.
        flights.sent(&Bytes::from_static(&[0, 1, 0, 0]));
        flights.sent(&Bytes::from_static(&[0x80, 96]));
        flights.sent(&Bytes::from(record(HANDSHAKE, 0, &[3, 4])));
        // The same ClientHello again: a repeat, and our flight goes again, all of it.
        assert!(flights.received(&record(HANDSHAKE, 0, &[1])));
        assert_eq!(flights.resend(now), &flight);
        // Not again within the gap, again after it.
        assert!(flights.resend(now + RESEND_GAP / 2).is_empty());
        assert_eq!(flights.resend(now + RESEND_GAP), &flight);
        // The peer's next flight is new, sealed part and all, and our next flight starts.
        let mut next = record(HANDSHAKE, 0, &[2, 3]);
        next.extend(record(CHANGE_CIPHER_SPEC, 0, &[]));
        next.extend(record(HANDSHAKE, 1, &[0]));
        assert!(!flights.received(&next));
        assert!(flights.resend(now + RESEND_GAP * 3).is_empty());
        // A repeat of that flight, Finished and all, is not told from a new one; `rtc`'s own
        // handling of a completed handshake answers it.
        assert!(!flights.received(&next));
        // Media is never a repeat.
        assert!(!flights.received(&[0x80, 96, 0, 1]));
    }

    #[test]
    fn a_flight_is_kept_in_a_bounded_number_of_datagrams() {
        let mut flights = Flights::default();
        assert!(!flights.received(&record(HANDSHAKE, 0, &[0])));
        for sequence in 0..3 * MAX_FLIGHT_DATAGRAMS {
            flights.sent(&Bytes::from(record(
                HANDSHAKE,
                0,
                &[u16::try_from(sequence).unwrap()],
            )));
        }
        assert!(flights.received(&record(HANDSHAKE, 0, &[0])));
        assert_eq!(flights.resend(Instant::now()).len(), MAX_FLIGHT_DATAGRAMS);
    }
}
