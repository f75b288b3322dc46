//! Demultiplexing one UDP port among many peer connections.
//!
//! Every peer connection of the SFU advertises the same host candidate (one UDP port, as LiveKit's
//! `udp_port` / `rtc.udp_port` mode does), so a datagram must be routed to its connection before
//! `rtc` sees it. A client's first datagrams are STUN binding requests whose USERNAME attribute is
//! `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2); the ufrag names the connection and the source
//! address is remembered for everything after (DTLS, SRTP, SRTCP), which carries no identifier.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The STUN magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute type.
const ATTR_USERNAME: u16 = 0x0006;
/// Addresses remembered at most per connection (a client behind a changing NAT, ICE restarts).
/// Past it the oldest goes, except the one the connection sends to ([`Demux::handle_destination`]):
/// STUN with a connection's ufrag from new addresses, which anyone who sees the traffic can send,
/// must not push the client's own address out and cut its media.
const MAX_ADDRS_PER_KEY: usize = 8;
/// Silence after which the address a connection sends to may be taken by STUN naming another
/// connection. A client that is still there sends at least its consent checks from it: every
/// 5 s ± 20 % (RFC 7675 §5.1), every 2.5 s from Chromium on a stable connection. Until then such
/// STUN is taken for a forged source; after, for a new client behind the same NAT port (a NAT
/// that reuses a port soon after its client went, whose connection the SFU still keeps for a
/// resume).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(8);

/// The local ufrag of a STUN message's USERNAME (`local:remote`), if `datagram` is STUN and has
/// one. Never panics, whatever the bytes.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let header = datagram.get(..20)?;
    // STUN messages start with two zero bits (RFC 7983 demultiplexing) and carry the cookie.
    if header.first()? & 0xC0 != 0 || header.get(4..8)? != MAGIC_COOKIE {
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

/// Whether `datagram` is a STUN response (success or error class, RFC 5389 §6). A new client the
/// NAT gave a departed one's port answers the old connection's keepalive checks with errors, so a
/// response does not show that the old client is still there; its own requests and media do.
fn is_stun_response(datagram: &[u8]) -> bool {
    // The class's high bit is bit 8 of the message type: the low bit of the first byte.
    match datagram.get(..8) {
        Some([first, _, _, _, cookie @ ..]) => {
            datagram.len() >= 20
                && first & 0xC0 == 0
                && first & 0x01 != 0
                && *cookie == MAGIC_COOKIE
        }
        _ => false,
    }
}

/// Routes datagrams to connections keyed by `K`.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<SocketAddr, Bound<K>>,
    addrs: HashMap<K, Vec<SocketAddr>>,
    /// Where each connection last sent (its selected candidate pair's remote address).
    destinations: HashMap<K, SocketAddr>,
}

/// The connection an address belongs to, and when a datagram from it last came.
#[derive(Debug, Clone, Copy)]
struct Bound<K> {
    key: K,
    heard: Instant,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs: HashMap::new(),
            destinations: HashMap::new(),
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

    /// Forgets `key`: its ufrags and addresses.
    pub fn remove(&mut self, key: K) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.destinations.remove(&key);
        for addr in self.addrs.remove(&key).unwrap_or_default() {
            if self.by_addr.get(&addr).is_some_and(|b| b.key == key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Which connection `datagram` from `from`, received at `now`, belongs to. A STUN message
    /// with a known ufrag (re)binds `from` to its connection; anything else goes by address.
    /// STUN from the address another connection sends to is dropped while that connection still
    /// hears from it: that client is there, so the message, naming someone else's connection,
    /// carries a forged source (a participant knows its own ufrag and password), and taking the
    /// address would cut that client's media. After [`ABANDONED_AFTER`] of silence the address
    /// goes to the connection the STUN names.
    pub fn route(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<K> {
        if let Some(ufrag) = stun_local_ufrag(datagram)
            && let Some(&key) = self.by_ufrag.get(ufrag)
        {
            match self.by_addr.get_mut(&from) {
                Some(bound) if bound.key == key => bound.heard = now,
                Some(other)
                    if self.destinations.get(&other.key) == Some(&from)
                        && now.saturating_duration_since(other.heard) < ABANDONED_AFTER =>
                {
                    return None;
                }
                _ => self.bind(now, from, key),
            }
            return Some(key);
        }
        let bound = self.by_addr.get_mut(&from)?;
        if !is_stun_response(datagram) {
            bound.heard = now;
        }
        Some(bound.key)
    }

    fn bind(&mut self, now: Instant, from: SocketAddr, key: K) {
        if let Some(previous) = self.by_addr.insert(from, Bound { key, heard: now })
            && let Some(list) = self.addrs.get_mut(&previous.key)
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

    /// A fixed "now" for the tests where time does not matter.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn stun_request(username: &str) -> Vec<u8> {
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
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
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
        let mut demux = Demux::default();
        demux.register("aaaa".to_owned(), 1u32);
        demux.register("bbbb".to_owned(), 2u32);
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            demux.route(t0(), a, &[0x80; 20]),
            None,
            "media before STUN is unknown"
        );
        assert_eq!(demux.route(t0(), a, &stun_request("aaaa:x")), Some(1));
        assert_eq!(demux.route(t0(), b, &stun_request("bbbb:y")), Some(2));
        assert_eq!(demux.route(t0(), a, &[0x80; 20]), Some(1));
        assert_eq!(demux.route(t0(), b, &[22; 20]), Some(2));
        assert_eq!(
            demux.route(t0(), a, &stun_request("zzzz:x")),
            Some(1),
            "unknown ufrag"
        );
        demux.remove(1);
        assert_eq!(demux.route(t0(), a, &[0x80; 20]), None);
        assert_eq!(demux.route(t0(), b, &[0x80; 20]), Some(2));
    }

    #[test]
    fn an_ice_restart_replaces_the_ufrag() {
        let mut demux = Demux::default();
        demux.register("old1".to_owned(), 1u32);
        demux.register("keep".to_owned(), 2u32);
        demux.register("new1".to_owned(), 1u32);
        demux.register("new1".to_owned(), 1u32);
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(demux.route(t0(), a, &stun_request("old1:x")), None);
        assert_eq!(demux.route(t0(), a, &stun_request("new1:x")), Some(1));
        assert_eq!(demux.route(t0(), a, &stun_request("keep:x")), Some(2));
        assert_eq!(demux.by_ufrag.len(), 2);
    }

    #[test]
    fn a_connection_keeps_a_bounded_number_of_addresses() {
        let mut demux = Demux::default();
        demux.register("aaaa".to_owned(), 1u32);
        for port in 0..100u16 {
            let from = SocketAddr::from(([127, 0, 0, 1], 7000 + port));
            assert_eq!(demux.route(t0(), from, &stun_request("aaaa:x")), Some(1));
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
        assert_eq!(demux.route(t0(), client, &stun_request("aaaa:x")), Some(1));
        demux.handle_destination(1, client);
        for port in 0..100u16 {
            let spoofed = SocketAddr::from(([198, 51, 100, 7], 7000 + port));
            assert_eq!(demux.route(t0(), spoofed, &stun_request("aaaa:x")), Some(1));
        }
        assert_eq!(
            demux.route(t0(), client, &[0x80; 20]),
            Some(1),
            "media still routed"
        );
        assert_eq!(demux.by_addr.len(), MAX_ADDRS_PER_KEY);

        // Another participant forges the client's address on STUN for its own connection.
        demux.register("bbbb".to_owned(), 2u32);
        assert_eq!(demux.route(t0(), client, &stun_request("bbbb:y")), None);
        assert_eq!(
            demux.route(t0(), client, &[0x80; 20]),
            Some(1),
            "still the client's"
        );
        demux.remove(1);
        assert!(demux.destinations.is_empty());
        // Once the client's connection is gone, its address is free for anyone.
        assert_eq!(demux.route(t0(), client, &stun_request("bbbb:y")), Some(2));
    }

    /// A client goes without a word (its connection kept for a resume) and its NAT gives the
    /// port to another client at once: that one's STUN is taken for a forged source only while
    /// the address is still heard from, and gets it after [`ABANDONED_AFTER`] of silence (STUN
    /// responses from it do not count).
    #[test]
    fn an_address_silent_long_enough_goes_to_the_connection_its_stun_names() {
        let mut demux = Demux::default();
        demux.register("aaaa".to_owned(), 1u32);
        demux.register("bbbb".to_owned(), 2u32);
        let nat: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let at = |secs: u64| t0() + Duration::from_secs(secs);
        assert_eq!(demux.route(at(0), nat, &stun_request("aaaa:x")), Some(1));
        demux.handle_destination(1, nat);
        assert_eq!(demux.route(at(5), nat, &[0x80; 20]), Some(1));
        // Heard 4 s ago, 12 s ago, 13 s ago: the first client may still be there.
        assert_eq!(demux.route(at(9), nat, &stun_request("bbbb:y")), None);
        assert_eq!(demux.route(at(12), nat, &stun_request("bbbb:y")), None);
        assert_eq!(demux.route(at(12), nat, &[0x80; 20]), Some(1));
        // The new client answers the old connection's keepalive checks with errors: routed to
        // the old connection, but not a sign of its client.
        let mut unauthorized = stun_request("");
        unauthorized[..2].copy_from_slice(&0x0111u16.to_be_bytes());
        assert!(is_stun_response(&unauthorized) && !is_stun_response(&stun_request("a:b")));
        assert_eq!(demux.route(at(15), nat, &unauthorized), Some(1));
        assert_eq!(demux.route(at(19), nat, &stun_request("bbbb:y")), None);
        // 8 s without a datagram: the port is the new client's, media included.
        assert_eq!(demux.route(at(20), nat, &stun_request("bbbb:y")), Some(2));
        assert_eq!(demux.route(at(20), nat, &[0x80; 20]), Some(2));
    }
}
