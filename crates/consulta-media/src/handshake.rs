//! Keeps a DTLS handshake alive when one of this side's flights is lost.
//!
//! A DTLS side that sent a flight waits for the peer's next one, and sends its own again when a
//! timer runs out (RFC 6347 §4.2.4). `rtc-dtls` 0.21 stops that timer whenever a handshake record
//! arrives, and starts it again only when the record completes the flight it waits for. So when
//! this side's flight is lost, the peer sends its own previous flight again; the repeat stops this
//! side's timer and completes nothing; nothing is sent any more. The peer repeats until it gives
//! up, and the connection stays "connecting" for good: ICE up, no media. A join storm on the
//! benchmark machine lost such flights to full socket buffers in 14 of 32 runs
//! (`docs/benchmarks.md`, "Flows missing after a join storm"), and a lossy mobile link loses them
//! too.
//!
//! The RFC's answer is also the cure: a peer that repeats its previous flight has not had ours, so
//! ours goes again. [`Flights`] remembers the datagrams of this side's last flight and tells a
//! repeat of the peer's from new handshake messages, by how far their messages reach (message
//! sequence, then fragment). When `rtc` answers a repeat with nothing, the connection sends its
//! last flight again itself, as it went: a peer that has none of its records takes them all, and
//! one that had them drops the copies as replays. A handshake the peer abandons ends, so that
//! the connection can say it failed: [`Flights::deadline`] ([`HANDSHAKE_STALL`]).

use std::time::{Duration, Instant};

use bytes::Bytes;

/// DTLS record content types.
const CHANGE_CIPHER_SPEC: u8 = 20;
const HANDSHAKE: u8 = 22;
/// A DTLS record header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// A handshake message header: type, length, message sequence, fragment offset and length.
const MESSAGE_HEADER: usize = 12;
/// The highest message sequence a DTLS 1.2 handshake reaches is about 10; a message numbered
/// above this is not read (a forged one would otherwise make every later one look old).
const MAX_MESSAGE_SEQUENCE: u16 = 32;
/// The least time between two resends of one flight: a peer repeating faster (or a forged
/// repeat) does not make this side send more than one flight in this time.
const RESEND_GAP: Duration = Duration::from_millis(250);
/// The most datagrams a flight is kept in (a server's flight with a certificate chain is a few).
const MAX_FLIGHT_DATAGRAMS: usize = 8;
/// How long a handshake may go without a new message from the peer before it counts as failed.
/// `rtc-dtls` gives up after sending a flight eight times, a second apart, but only while it
/// waits with its timer running: a server that sent its HelloVerifyRequest (which it never sends
/// again), or whose timer a repeat stopped, waits for good.
pub(crate) const HANDSHAKE_STALL: Duration = Duration::from_secs(15);

/// Whether `datagram` is DTLS (RFC 7983's demultiplexing: first byte 20 to 63).
pub(crate) fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

/// How far into the handshake a message fragment reaches: its message sequence, then where the
/// fragment ends in the message. A flight split over datagrams moves it on with each datagram.
type Reach = (u16, u32);

/// What a datagram carries of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carries {
    /// No plaintext handshake message.
    Nothing,
    /// Handshake messages, the furthest reach among them; `sealed` when records of a later epoch
    /// came with them (a Finished), which are new whatever the numbers say.
    Messages { reach: Reach, sealed: bool },
}

/// Reads the handshake messages of the epoch-0 records of `datagram`.
fn carries(datagram: &[u8]) -> Carries {
    let mut rest = datagram;
    let mut furthest: Option<Reach> = None;
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
            let u24 = |[a, b, c]: [u8; 3]| u32::from_be_bytes([0, a, b, c]);
            let offset = u24([message[6], message[7], message[8]]);
            let fragment = u24([message[9], message[10], message[11]]);
            if sequence <= MAX_MESSAGE_SEQUENCE {
                let reach = (sequence, offset.saturating_add(fragment));
                furthest = Some(furthest.map_or(reach, |f| f.max(reach)));
            }
            messages = usize::try_from(fragment)
                .ok()
                .and_then(|fragment| messages.get(MESSAGE_HEADER + fragment..))
                .unwrap_or_default();
        }
    }
    furthest.map_or(Carries::Nothing, |reach| Carries::Messages {
        reach,
        sealed,
    })
}

/// One connection's handshake as seen from outside `rtc`: the peer's progress and this side's
/// last flight. Dropped once the connection is up.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    /// How far the peer's messages have reached.
    peer_reach: Option<Reach>,
    /// How far this side's have.
    own_reach: Option<Reach>,
    /// This side's datagrams since the peer last sent a new message: its last flight.
    last_flight: Vec<Bytes>,
    /// When that flight last went again.
    resent_at: Option<Instant>,
    /// When the peer last sent a new message.
    progress_at: Option<Instant>,
}

impl Flights {
    /// A datagram arrived at `now`: whether it only repeats handshake messages the peer sent
    /// before. A datagram with a new message starts this side's next flight.
    pub(crate) fn received(&mut self, now: Instant, datagram: &[u8]) -> bool {
        if !is_dtls(datagram) {
            return false;
        }
        let Carries::Messages { reach, sealed } = carries(datagram) else {
            return false;
        };
        if !sealed && self.peer_reach.is_some_and(|peer| reach <= peer) {
            return true;
        }
        self.peer_reach = Some(self.peer_reach.map_or(reach, |peer| peer.max(reach)));
        self.last_flight.clear();
        self.resent_at = None;
        self.progress_at = Some(now);
        false
    }

    /// This side sent `datagram`. A flight `rtc` sends again on its own timer is not kept twice.
    pub(crate) fn sent(&mut self, datagram: &Bytes) {
        if !is_dtls(datagram) {
            return;
        }
        if let Carries::Messages { reach, .. } = carries(datagram) {
            if self.own_reach.is_some_and(|own| reach <= own) {
                return;
            }
            self.own_reach = Some(reach);
        }
        if self.last_flight.len() < MAX_FLIGHT_DATAGRAMS {
            self.last_flight.push(datagram.clone());
        }
    }

    /// The peer repeated its flight and `rtc` answered nothing: this side's last flight, to send
    /// again, unless it went again less than [`RESEND_GAP`] ago.
    pub(crate) fn resend(&mut self, now: Instant) -> &[Bytes] {
        if self.last_flight.is_empty()
            || self
                .resent_at
                .is_some_and(|at| now.saturating_duration_since(at) < RESEND_GAP)
        {
            return &[];
        }
        self.resent_at = Some(now);
        &self.last_flight
    }

    /// ICE came up (or up again, after a restart or a lost path) at `now`: the handshake may
    /// go on, and if the peer sends nothing new it counts as stalled from here (a DTLS server
    /// waits for a ClientHello that may never come, and `rtc` would wait for good).
    pub(crate) fn ice_connected(&mut self, now: Instant) {
        self.progress_at = Some(self.progress_at.map_or(now, |at| at.max(now)));
    }

    /// When the handshake counts as failed if the peer sends nothing new ([`HANDSHAKE_STALL`]):
    /// from its last new message or ICE last coming up, whichever was later.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.progress_at.map(|at| at + HANDSHAKE_STALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record of `epoch` holding handshake messages, each given as (message sequence,
    /// fragment offset), with 10-byte fragments.
    fn fragments(kind: u8, epoch: u16, messages: &[(u16, u32)]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(sequence, offset) in messages {
            body.push(1); // message type
            body.extend_from_slice(&[0, 0, 40]); // length of the whole message
            body.extend_from_slice(&sequence.to_be_bytes());
            body.extend_from_slice(&offset.to_be_bytes()[1..]);
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

    /// A record with whole messages of these sequence numbers (first fragments, for this test).
    fn record(kind: u8, epoch: u16, sequences: &[u16]) -> Vec<u8> {
        let messages: Vec<(u16, u32)> = sequences.iter().map(|&s| (s, 0)).collect();
        fragments(kind, epoch, &messages)
    }

    #[test]
    fn messages_are_read_across_records_and_later_epochs_count_as_new() {
        let mut datagram = record(HANDSHAKE, 0, &[1, 2]);
        datagram.extend(record(HANDSHAKE, 0, &[4, 3]));
        assert_eq!(
            carries(&datagram),
            Carries::Messages {
                reach: (4, 10),
                sealed: false
            }
        );
        // A ChangeCipherSpec, then a Finished under epoch 1 (its body is ciphertext).
        datagram.extend(record(CHANGE_CIPHER_SPEC, 0, &[]));
        datagram.extend(record(HANDSHAKE, 1, &[0]));
        assert_eq!(
            carries(&datagram),
            Carries::Messages {
                reach: (4, 10),
                sealed: true
            }
        );
        assert_eq!(carries(&record(21, 0, &[])), Carries::Nothing, "an alert");
        // A fragment further into a message reaches further.
        assert_eq!(
            carries(&fragments(HANDSHAKE, 0, &[(2, 30)])),
            Carries::Messages {
                reach: (2, 40),
                sealed: false
            }
        );
        // A message numbered past any handshake's is not read.
        assert_eq!(
            carries(&record(HANDSHAKE, 0, &[u16::MAX])),
            Carries::Nothing
        );
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
        assert_eq!(flights.deadline(), None, "nothing from the peer yet");
        // The client's ClientHello (0), our HelloVerifyRequest.
        assert!(!flights.received(now, &record(HANDSHAKE, 0, &[0])));
        assert_eq!(flights.deadline(), Some(now + HANDSHAKE_STALL));
        flights.sent(&Bytes::from(record(HANDSHAKE, 0, &[0])));
        // Its ClientHello with the cookie (1): new, so our next flight starts.
        let later = now + Duration::from_millis(40);
        assert!(!flights.received(later, &record(HANDSHAKE, 0, &[1])));
        assert_eq!(flights.deadline(), Some(later + HANDSHAKE_STALL));
        // Nothing to send again yet, and the first resend is not held back by that.
        assert!(flights.resend(later).is_empty());
        // A flight over two datagrams, the second only the rest of a message.
        let flight = [
            fragments(HANDSHAKE, 0, &[(1, 0), (2, 0)]),
            fragments(HANDSHAKE, 0, &[(2, 10)]),
        ]
        .map(Bytes::from);
        for datagram in &flight {
            flights.sent(datagram);
        }
        // STUN and media are not DTLS, and are not kept; nor is `rtc`'s own resend of the flight.
        flights.sent(&Bytes::from_static(&[0, 1, 0, 0]));
        flights.sent(&Bytes::from_static(&[0x80, 96]));
        for datagram in &flight {
            flights.sent(datagram);
        }
        // The same ClientHello again: a repeat, and our flight goes again, all of it.
        assert!(flights.received(later, &record(HANDSHAKE, 0, &[1])));
        assert_eq!(flights.resend(later), &flight);
        assert_eq!(
            flights.deadline(),
            Some(later + HANDSHAKE_STALL),
            "a repeat is no progress"
        );
        // Not again within the gap, again after it.
        assert!(flights.resend(later + RESEND_GAP / 2).is_empty());
        assert_eq!(flights.resend(later + RESEND_GAP), &flight);
        // A forged message numbered far ahead is not read, and changes nothing.
        assert!(!flights.received(later, &record(HANDSHAKE, 0, &[u16::MAX])));
        assert!(flights.received(later, &record(HANDSHAKE, 0, &[1])));
        // The peer's next flight is new, sealed part and all, and our next flight starts.
        let mut next = record(HANDSHAKE, 0, &[2, 3]);
        next.extend(record(CHANGE_CIPHER_SPEC, 0, &[]));
        next.extend(record(HANDSHAKE, 1, &[0]));
        assert!(!flights.received(later, &next));
        assert!(flights.resend(later + RESEND_GAP * 3).is_empty());
        // A repeat of that flight, Finished and all, is not told from a new one; `rtc`'s own
        // handling of a completed handshake answers it.
        assert!(!flights.received(later, &next));
        // Media is never a repeat.
        assert!(!flights.received(later, &[0x80, 96, 0, 1]));
    }

    #[test]
    fn a_handshake_the_peer_never_begins_stalls_from_ice_last_coming_up() {
        let now = Instant::now();
        let mut flights = Flights::default();
        flights.ice_connected(now);
        assert_eq!(flights.deadline(), Some(now + HANDSHAKE_STALL));
        // Up again later (an ICE restart, a path back): the peer gets its time again there.
        let again = now + Duration::from_secs(5);
        flights.ice_connected(again);
        assert_eq!(flights.deadline(), Some(again + HANDSHAKE_STALL));
        // The peer's first message moves it on, and a stale "up" does not take it back.
        let later = now + Duration::from_secs(6);
        assert!(!flights.received(later, &record(HANDSHAKE, 0, &[0])));
        assert_eq!(flights.deadline(), Some(later + HANDSHAKE_STALL));
        flights.ice_connected(again);
        assert_eq!(flights.deadline(), Some(later + HANDSHAKE_STALL));
    }

    #[test]
    fn a_flight_is_kept_in_a_bounded_number_of_datagrams() {
        let mut flights = Flights::default();
        let now = Instant::now();
        assert!(!flights.received(now, &record(HANDSHAKE, 0, &[0])));
        for sequence in 0..=MAX_MESSAGE_SEQUENCE {
            flights.sent(&Bytes::from(record(HANDSHAKE, 0, &[sequence])));
        }
        assert!(flights.received(now, &record(HANDSHAKE, 0, &[0])));
        assert_eq!(flights.resend(now).len(), MAX_FLIGHT_DATAGRAMS);
    }
}
