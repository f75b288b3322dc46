//! Demultiplexing one UDP port among many peer connections.
//!
//! Every peer connection of the SFU advertises the same host candidate (one UDP port, as LiveKit's
//! `udp_port` / `rtc.udp_port` mode does), so a datagram must be routed to its connection before
//! `rtc` sees it. A client's first datagrams are STUN binding requests whose USERNAME attribute is
//! `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2); the ufrag names the connection and the source
//! address is remembered for everything after (DTLS, SRTP, SRTCP), which carries no identifier.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;

/// The STUN magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute type.
const ATTR_USERNAME: u16 = 0x0006;
/// Addresses remembered at most per connection (a client behind a changing NAT, ICE restarts).
/// Past it the oldest goes, except the one the connection sends to ([`Demux::handle_destination`]):
/// STUN with a connection's ufrag from new addresses, which anyone who sees the traffic can send,
/// must not push the client's own address out and cut its media.
const MAX_ADDRS_PER_KEY: usize = 8;
/// Binding requests remembered per connection, newest kept, for matching the responses. A
/// connection sends one per candidate pair every 200 ms while checking, and a consent check every
/// 2 s once connected; answers come within a round trip, retransmissions keep the ID.
const MAX_REQUESTS_PER_KEY: usize = 32;
/// What a STUN header says of a datagram, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stun {
    /// A request: routed by its USERNAME, dropped without a known one.
    Request,
    /// An indication (no answer expected, no integrity in ICE's use): routed by address.
    Indication,
    /// A response, success or error, to the request with this transaction ID.
    Response {
        success: bool,
        transaction: [u8; 12],
    },
}

/// Reads a STUN header (RFC 5389 §6; RFC 7983's first-byte rule), if `datagram` starts with one.
fn stun_kind(datagram: &[u8]) -> Option<Stun> {
    let header = datagram.first_chunk::<20>()?;
    if header[0] > 3 || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    // The class is in bits 8 and 4 of the message type: 0b10 success, 0b11 error response.
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let class = ((kind >> 7) & 0b10) | ((kind >> 4) & 0b01);
    let transaction = header[8..20].try_into().ok()?;
    Some(match class {
        0b10 => Stun::Response {
            success: true,
            transaction,
        },
        0b11 => Stun::Response {
            success: false,
            transaction,
        },
        0b01 => Stun::Indication,
        _ => Stun::Request,
    })
}

/// Whether `datagram` is RTCP (or SRTCP): RFC 7983's first byte 128..=191 for RTP and RTCP, and
/// RFC 5761's packet types 192..=223 for RTCP.
pub(crate) fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, second, ..] if (192..=223).contains(second))
}

/// The word of SRTCP `datagram` that holds its E flag (the top bit) and its index: the last 4
/// bytes before an authentication tag of `tag_len` bytes (10 for AES-CM, RFC 3711; none after it
/// for GCM, RFC 7714), when the datagram is long enough to hold an RTCP header before it.
pub(crate) fn srtcp_trailer(datagram: &[u8], tag_len: usize) -> Option<u32> {
    let at = datagram
        .len()
        .checked_sub(tag_len + 4)
        .filter(|&at| at >= 8)?;
    let word: [u8; 4] = datagram.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}

/// Whether `datagram` is STUN (RFC 7983: first byte 0..=3; the magic cookie).
pub fn is_stun(datagram: &[u8]) -> bool {
    stun_kind(datagram).is_some()
}

/// The transaction ID of `datagram` if it is a STUN binding request.
fn binding_request_id(datagram: &[u8]) -> Option<[u8; 12]> {
    let header = datagram.first_chunk::<20>()?;
    if header[..2] != [0x00, 0x01] || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    header[8..20].try_into().ok()
}

/// The local ufrag of a STUN message's USERNAME (`local:remote`), if `datagram` is STUN and has
/// one. Never panics, whatever the bytes.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let header = datagram.get(..20)?;
    // STUN messages start with a byte of 0-3 (RFC 7983 demultiplexing) and carry the cookie.
    if *header.first()? > 3 || header.get(4..8)? != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    let mut attributes = datagram.get(20..20usize.checked_add(length)?)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([*attributes.first()?, *attributes.get(1)?]);
        let len = usize::from(u16::from_be_bytes([
            *attributes.get(2)?,
            *attributes.get(3)?,
        ]));
        let value = attributes.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = (4 + len).div_ceil(4) * 4;
        attributes = attributes.get(padded..)?;
    }
    None
}

/// Routes datagrams to connections keyed by `K`.
///
/// Who may hold an address: a client's STUN naming its connection binds it, but only an answer to
/// one of the connection's own binding requests, from the address that request went to, proves
/// the client there is that connection's. The request's transaction ID is 96 random bits sent to
/// that address alone, so nobody off the path can answer it; a participant sees the IDs of the
/// requests its own connection sends it, and can forge a source address, so an answer counts only
/// from where its request went. Nor does STUN naming a connection prove anything about who sends
/// it: a participant knows its own ufrag and password. Hence:
/// - a success answer from the address its request went to goes to the connection that asked,
///   and binds the address to that connection, taking it from whoever held it (once: the request
///   is then forgotten);
/// - an error answer from there goes to the connection that asked and binds nothing (a new client
///   at a reused NAT port refuses the old connection's checks);
/// - an answer from anywhere else, or to no request remembered, goes by address;
/// - a request naming a connection binds its source address to it if no connection holds the
///   address; if one does, the request still reaches the connection it names, whose answer and
///   check (`rtc` checks back an address a request came from, or checks it with its other pairs
///   while connecting) go to the address, where only the client there can answer. A new client at
///   a departed client's NAT port so gets it at once, and a participant forging a present
///   client's address gets nothing. Where the holder last sent does not matter: that is any
///   address it answered or checked, which a forger can steer;
/// - a request naming no known connection is dropped: `rtc` would refuse it, but answers some
///   (an ICE role conflict) before it checks who sent them;
/// - everything else (indications, DTLS, SRTP, SRTCP) goes by address.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<SocketAddr, K>,
    addrs: HashMap<K, Vec<SocketAddr>>,
    /// Where each connection last sent: its selected pair's remote address once connected, any
    /// address it answered or checked before (or since, steered by a forged request).
    destinations: HashMap<K, SocketAddr>,
    /// The connection that sent each binding request still remembered, and where it went.
    requests: HashMap<[u8; 12], (K, SocketAddr)>,
    /// Each connection's remembered requests, oldest first.
    sent: HashMap<K, VecDeque<[u8; 12]>>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs: HashMap::new(),
            destinations: HashMap::new(),
            requests: HashMap::new(),
            sent: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// Datagrams whose STUN USERNAME starts with `ufrag` belong to `key`, from now on instead of
    /// any ufrag it had: after an ICE restart the old one no longer validates (`rtc` applies the
    /// restart with the description), and each resume would otherwise leave one behind.
    pub fn register(&mut self, ufrag: String, key: K) {
        self.by_ufrag
            .retain(|known, k| *k != key || *known == ufrag);
        self.by_ufrag.insert(ufrag, key);
    }

    /// Connection `key` sends to `to` now (call when that changes): that address is never the
    /// one dropped to make room.
    pub fn handle_destination(&mut self, key: K, to: SocketAddr) {
        self.destinations.insert(key, to);
    }

    /// Connection `key` sends `datagram` to `to`: a binding request's transaction ID is
    /// remembered, so that its answer from `to` reaches `key` and proves the client there is its.
    /// Cheap for anything else (two bytes compared).
    pub fn handle_sent(&mut self, key: K, to: SocketAddr, datagram: &[u8]) {
        let Some(id) = binding_request_id(datagram) else {
            return;
        };
        let sent = self.sent.entry(key).or_default();
        if sent.contains(&id) {
            return; // a retransmission
        }
        if sent.len() >= MAX_REQUESTS_PER_KEY
            && let Some(oldest) = sent.pop_front()
        {
            self.requests.remove(&oldest);
        }
        sent.push_back(id);
        self.requests.insert(id, (key, to));
    }

    /// Whether a connection other than `key` holds the address `to`. Then its client answered
    /// that connection's check from there, so `key`'s client is gone from it (a NAT gave its port
    /// to someone else), and `key`'s DTLS and media would only load the newcomer's link; its STUN
    /// may still go, for its checks to find its client elsewhere.
    pub fn held_by_another(&self, key: K, to: SocketAddr) -> bool {
        self.by_addr.get(&to).is_some_and(|holder| *holder != key)
    }

    /// Forgets `key`: its ufrags, addresses and requests.
    pub fn remove(&mut self, key: K) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.destinations.remove(&key);
        for addr in self.addrs.remove(&key).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
        for id in self.sent.remove(&key).unwrap_or_default() {
            self.requests.remove(&id);
        }
    }

    /// Which connection `datagram` from `from` belongs to (the rules are on [`Demux`]).
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<K> {
        match stun_kind(datagram) {
            Some(Stun::Response {
                success,
                transaction,
            }) => {
                let Some(&(key, _)) = self
                    .requests
                    .get(&transaction)
                    .filter(|(_, to)| *to == from)
                else {
                    return self.by_addr.get(&from).copied();
                };
                if success {
                    self.requests.remove(&transaction);
                    if self.by_addr.get(&from) != Some(&key) {
                        self.bind(from, key);
                    }
                }
                Some(key)
            }
            Some(Stun::Request) => {
                let &key = stun_local_ufrag(datagram).and_then(|u| self.by_ufrag.get(u))?;
                if !self.by_addr.contains_key(&from) {
                    self.bind(from, key);
                }
                Some(key)
            }
            Some(Stun::Indication) | None => self.by_addr.get(&from).copied(),
        }
    }

    fn bind(&mut self, from: SocketAddr, key: K) {
        if let Some(previous) = self.by_addr.insert(from, key)
            && let Some(list) = self.addrs.get_mut(&previous)
        {
            list.retain(|a| *a != from);
        }
        let list = self.addrs.entry(key).or_default();
        if list.len() >= MAX_ADDRS_PER_KEY {
            let in_use = self.destinations.get(&key);
            if let Some(oldest) = list.iter().position(|a| Some(a) != in_use) {
                let oldest = list.remove(oldest);
                self.by_addr.remove(&oldest);
            }
        }
        list.push(from);
    }

    /// Connections known (for tests and metrics).
    pub fn len(&self) -> usize {
        self.addrs.len().max(self.by_ufrag.len())
    }

    /// Whether no connection is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connection 1 with ufrag `aaaa`, connection 2 with `bbbb`.
    fn two_connections() -> Demux<u32> {
        let mut demux = Demux::default();
        demux.register("aaaa".to_owned(), 1);
        demux.register("bbbb".to_owned(), 2);
        demux
    }

    fn stun_request(username: &str) -> Vec<u8> {
        stun_request_with_id(username, [7; 12])
    }

    fn stun_request_with_id(username: &str, id: [u8; 12]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY first, as browsers send
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[0, 0, 0, 1]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&u16::try_from(username.len()).unwrap().to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&id);
        msg.extend_from_slice(&attrs);
        msg
    }

    /// A response to request `id`: success (0x0101) or error (0x0111), with an attribute.
    fn stun_response(id: [u8; 12], success: bool) -> Vec<u8> {
        let mut msg = vec![0x01, if success { 0x01 } else { 0x11 }, 0x00, 0x08];
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&id);
        msg.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'r', b't', b'c', 0]);
        msg
    }

    #[test]
    fn the_local_ufrag_is_read_from_stun_username() {
        assert_eq!(stun_local_ufrag(&stun_request("srv1:cli")), Some("srv1"));
        assert_eq!(stun_local_ufrag(&stun_request("abc:defgh")), Some("abc"));
        // DTLS (first byte 20..63) and RTP (128..191) are not STUN.
        assert_eq!(stun_local_ufrag(&[22; 40]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        // Truncated and lying lengths.
        let msg = stun_request("srv1:cli");
        for cut in 0..msg.len() {
            let _ = stun_local_ufrag(&msg[..cut]);
        }
        let mut lying = msg.clone();
        lying[2] = 0xff;
        assert_eq!(stun_local_ufrag(&lying), None);
    }

    #[test]
    fn addresses_follow_stun_then_route_media() {
        let mut demux = two_connections();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            demux.route(a, &[0x80; 20]),
            None,
            "media before STUN is unknown"
        );
        assert_eq!(demux.route(a, &stun_request("aaaa:x")), Some(1));
        assert_eq!(demux.route(b, &stun_request("bbbb:y")), Some(2));
        assert_eq!(demux.route(a, &[0x80; 20]), Some(1));
        assert_eq!(demux.route(b, &[22; 20]), Some(2));
        // A request naming nobody known is dropped; an indication goes by address.
        assert_eq!(
            demux.route(a, &stun_request("zzzz:x")),
            None,
            "unknown ufrag"
        );
        let mut no_username = stun_request("aaaa:x");
        no_username.truncate(20);
        no_username[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(demux.route(a, &no_username), None, "no USERNAME");
        no_username[1] = 0x11;
        assert_eq!(demux.route(a, &no_username), Some(1), "an indication");
        demux.remove(1);
        assert_eq!(demux.route(a, &[0x80; 20]), None);
        assert_eq!(demux.route(b, &[0x80; 20]), Some(2));
    }

    #[test]
    fn an_ice_restart_replaces_the_ufrag() {
        let mut demux = Demux::default();
        demux.register("old1".to_owned(), 1u32);
        demux.register("keep".to_owned(), 2u32);
        demux.register("new1".to_owned(), 1u32);
        demux.register("new1".to_owned(), 1u32);
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(demux.route(a, &stun_request("old1:x")), None);
        assert_eq!(demux.route(a, &stun_request("new1:x")), Some(1));
        assert_eq!(demux.route(a, &stun_request("keep:x")), Some(2));
        assert_eq!(demux.by_ufrag.len(), 2);
    }

    #[test]
    fn a_connection_keeps_a_bounded_number_of_addresses() {
        let mut demux = Demux::default();
        demux.register("aaaa".to_owned(), 1u32);
        for port in 0..100u16 {
            let from = SocketAddr::from(([127, 0, 0, 1], 7000 + port));
            assert_eq!(demux.route(from, &stun_request("aaaa:x")), Some(1));
        }
        assert_eq!(demux.by_addr.len(), MAX_ADDRS_PER_KEY);
    }

    /// Someone who sees a client's STUN can send its ufrag from many addresses, and a participant
    /// can forge the client's address on STUN for its own connection: the address the client's
    /// connection sends to stays bound to it, and its media keeps its route.
    #[test]
    fn stun_from_many_addresses_does_not_unbind_the_one_in_use() {
        let mut demux = Demux::default();
        demux.register("aaaa".to_owned(), 1u32);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(demux.route(client, &stun_request("aaaa:x")), Some(1));
        demux.handle_destination(1, client);
        for port in 0..100u16 {
            let spoofed = SocketAddr::from(([198, 51, 100, 7], 7000 + port));
            assert_eq!(demux.route(spoofed, &stun_request("aaaa:x")), Some(1));
        }
        assert_eq!(
            demux.route(client, &[0x80; 20]),
            Some(1),
            "media still routed"
        );
        assert_eq!(demux.by_addr.len(), MAX_ADDRS_PER_KEY);

        // Another participant forges the client's address on STUN for its own connection: its
        // connection hears of it (and checks the address back, which the client refuses), the
        // address stays the client's.
        demux.register("bbbb".to_owned(), 2u32);
        assert_eq!(demux.route(client, &stun_request("bbbb:y")), Some(2));
        demux.handle_sent(2, client, &stun_request_with_id("x:bbbb", [2; 12]));
        assert_eq!(demux.route(client, &stun_response([2; 12], false)), Some(2));
        assert_eq!(
            demux.route(client, &[0x80; 20]),
            Some(1),
            "still the client's"
        );
        demux.remove(1);
        assert!(demux.destinations.is_empty());
        // Once the client's connection is gone, its address is free for anyone.
        assert_eq!(demux.route(client, &stun_request("bbbb:y")), Some(2));
    }

    #[test]
    fn stun_headers_are_classified() {
        let request = stun_request_with_id("aaaa:x", [3; 12]);
        assert_eq!(stun_kind(&request), Some(Stun::Request));
        assert_eq!(binding_request_id(&request), Some([3; 12]));
        assert_eq!(
            stun_kind(&stun_response([4; 12], true)),
            Some(Stun::Response {
                success: true,
                transaction: [4; 12]
            })
        );
        assert_eq!(
            stun_kind(&stun_response([5; 12], false)),
            Some(Stun::Response {
                success: false,
                transaction: [5; 12]
            })
        );
        assert_eq!(binding_request_id(&stun_response([4; 12], true)), None);
        for not_stun in [&[22u8; 40][..], &[0x80; 40], &request[..19]] {
            assert_eq!(stun_kind(not_stun), None);
            assert_eq!(binding_request_id(not_stun), None);
        }
        // RFC 7983 gives STUN first bytes 0-3 alone: a DTLS record (20-63) or ZRTP (16-19) whose
        // epoch and sequence number spell the magic cookie is still not STUN.
        for first in [16, 20, 22, 63] {
            let mut record = [0u8; 40];
            record[0] = first;
            record[4..8].copy_from_slice(&MAGIC_COOKIE);
            assert_eq!(stun_kind(&record), None, "first byte {first}");
        }
    }

    /// The answer to a connection's own check, from where the check went, reaches it, binds the
    /// address to it and takes it from whoever held it; an error answer binds nothing.
    #[test]
    fn answers_go_to_the_connection_that_asked() {
        let mut demux = two_connections();
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:6000".parse().unwrap();
        assert_eq!(demux.route(a, &stun_request("aaaa:x")), Some(1));
        // Connection 2 checks address `a` (a candidate its client trickled): the answer is its.
        demux.handle_sent(2, a, &stun_request_with_id("x:bbbb", [9; 12]));
        demux.handle_sent(2, a, &[0x80; 40]);
        assert_eq!(demux.route(a, &stun_response([9; 12], false)), Some(2));
        assert_eq!(
            demux.route(a, &[0x80; 20]),
            Some(1),
            "an error binds nothing"
        );
        assert_eq!(demux.route(a, &stun_response([9; 12], true)), Some(2));
        assert_eq!(demux.route(a, &[0x80; 20]), Some(2), "a success does");
        // Once: the request is then forgotten, and a replay goes by address.
        assert_eq!(demux.route(b, &stun_response([9; 12], true)), None);
        // An answer nobody asked for goes by address and moves nothing.
        assert_eq!(demux.route(b, &stun_response([8; 12], true)), None);
        assert_eq!(demux.route(a, &stun_response([8; 12], true)), Some(2));
        // Requests are forgotten with their connection, and only the newest are kept.
        demux.handle_sent(2, b, &stun_request_with_id("x:bbbb", [7; 12]));
        demux.remove(2);
        assert_eq!(demux.route(b, &stun_response([7; 12], true)), None);
        for n in 0..100u8 {
            demux.handle_sent(1, b, &stun_request_with_id("x:aaaa", [n; 12]));
            demux.handle_sent(1, b, &stun_request_with_id("x:aaaa", [n; 12]));
        }
        assert_eq!(demux.requests.len(), MAX_REQUESTS_PER_KEY);
        assert_eq!(demux.route(b, &stun_response([99; 12], true)), Some(1));
        assert_eq!(demux.route(b, &[0x80; 20]), Some(1));
        demux.remove(1);
        demux.register("aaaa".to_owned(), 1);
        demux.handle_sent(1, b, &stun_request_with_id("x:aaaa", [5; 12]));
        assert_eq!(demux.route(b, &stun_response([0; 12], true)), None);
    }

    /// A participant sees the IDs of the checks its own connection sends it. Answering one of
    /// them with a present client's address forged as the source, again and again, must not
    /// move that address: the check did not go there.
    #[test]
    fn an_answer_from_where_the_check_did_not_go_moves_nothing() {
        let mut demux = two_connections();
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let forger: SocketAddr = "198.51.100.7:7000".parse().unwrap();
        assert_eq!(demux.route(client, &stun_request("aaaa:x")), Some(1));
        demux.handle_destination(1, client);
        assert_eq!(demux.route(forger, &stun_request("bbbb:y")), Some(2));
        demux.handle_destination(2, forger);
        demux.handle_sent(2, forger, &stun_request_with_id("y:bbbb", [6; 12]));
        for _ in 0..3 {
            assert_eq!(demux.route(client, &stun_response([6; 12], true)), Some(1));
            assert_eq!(
                demux.route(client, &[0x80; 20]),
                Some(1),
                "still the client's"
            );
        }
        // Its own answer, from its own address, is its connection's as ever.
        assert_eq!(demux.route(forger, &stun_response([6; 12], true)), Some(2));
        assert_eq!(demux.route(client, &[0x80; 20]), Some(1));
    }

    /// A client goes without a word (its connection kept for a resume) and its NAT gives the
    /// port to another client. That client's STUN reaches its connection without moving the
    /// address; the address moves when it answers its connection's check, and the old client's
    /// answer would take it back.
    #[test]
    fn an_address_goes_to_the_connection_its_client_answers() {
        let mut demux = two_connections();
        let nat: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(demux.route(nat, &stun_request("aaaa:x")), Some(1));
        demux.handle_destination(1, nat);
        demux.handle_sent(1, nat, &stun_request_with_id("x:aaaa", [1; 12]));
        assert_eq!(demux.route(nat, &stun_response([1; 12], true)), Some(1));
        // The new client's check, and its refusal of the old connection's consent check.
        assert_eq!(demux.route(nat, &stun_request("bbbb:y")), Some(2));
        demux.handle_sent(1, nat, &stun_request_with_id("x:aaaa", [3; 12]));
        assert_eq!(demux.route(nat, &stun_response([3; 12], false)), Some(1));
        assert_eq!(demux.route(nat, &[0x80; 20]), Some(1));
        // Its connection checks back; the answer moves the address, media included.
        demux.handle_sent(2, nat, &stun_request_with_id("y:bbbb", [2; 12]));
        assert_eq!(demux.route(nat, &stun_response([2; 12], true)), Some(2));
        assert_eq!(demux.route(nat, &[0x80; 20]), Some(2));
        assert_eq!(demux.route(nat, &stun_request("bbbb:y")), Some(2));
        // Had the old client been there after all, its answer would take the address back.
        demux.handle_sent(1, nat, &stun_request_with_id("x:aaaa", [4; 12]));
        assert_eq!(demux.route(nat, &stun_response([4; 12], true)), Some(1));
        assert_eq!(demux.route(nat, &[0x80; 20]), Some(1));
    }

    /// However the connection holding an address is steered to send elsewhere (a forged request
    /// from its client's other address makes `rtc` answer there), a request naming another
    /// connection never moves the address: only an answer from it does.
    #[test]
    fn where_the_holder_last_sent_does_not_matter() {
        let mut demux = two_connections();
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let second: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        assert_eq!(demux.route(client, &stun_request("aaaa:x")), Some(1));
        assert_eq!(demux.route(second, &stun_request("aaaa:x")), Some(1));
        demux.handle_destination(1, client);
        demux.handle_destination(1, second);
        assert_eq!(demux.route(client, &stun_request("bbbb:y")), Some(2));
        assert_eq!(
            demux.route(client, &[0x80; 20]),
            Some(1),
            "still the client's"
        );
        assert_eq!(demux.route(second, &[0x80; 20]), Some(1));
    }
}
