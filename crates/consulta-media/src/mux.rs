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

/// The STUN magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute type.
const ATTR_USERNAME: u16 = 0x0006;
/// Addresses remembered at most per connection (a client behind a changing NAT, ICE restarts).
/// Past it the oldest goes, except the one the connection sends to ([`Demux::handle_destination`]):
/// STUN with a connection's ufrag from new addresses, which anyone who sees the traffic can send,
/// must not push the client's own address out and cut its media.
const MAX_ADDRS_PER_KEY: usize = 8;

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

/// Routes datagrams to connections keyed by `K`.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<SocketAddr, K>,
    addrs: HashMap<K, Vec<SocketAddr>>,
    /// Where each connection last sent (its selected candidate pair's remote address).
    destinations: HashMap<K, SocketAddr>,
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
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Which connection `datagram` from `from` belongs to. A STUN message with a known ufrag
    /// (re)binds `from` to its connection; anything else goes by address. STUN from the address
    /// another connection sends to is dropped: that client is there, so the message, naming
    /// someone else's connection, carries a forged source (a participant knows its own ufrag and
    /// password), and taking the address would cut that client's media.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<K> {
        if let Some(ufrag) = stun_local_ufrag(datagram)
            && let Some(&key) = self.by_ufrag.get(ufrag)
        {
            match self.by_addr.get(&from) {
                Some(bound) if *bound == key => {}
                Some(other) if self.destinations.get(other) == Some(&from) => return None,
                _ => self.bind(from, key),
            }
            return Some(key);
        }
        self.by_addr.get(&from).copied()
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
            demux.route(a, &[0x80; 20]),
            None,
            "media before STUN is unknown"
        );
        assert_eq!(demux.route(a, &stun_request("aaaa:x")), Some(1));
        assert_eq!(demux.route(b, &stun_request("bbbb:y")), Some(2));
        assert_eq!(demux.route(a, &[0x80; 20]), Some(1));
        assert_eq!(demux.route(b, &[22; 20]), Some(2));
        assert_eq!(
            demux.route(a, &stun_request("zzzz:x")),
            Some(1),
            "unknown ufrag"
        );
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

        // Another participant forges the client's address on STUN for its own connection.
        demux.register("bbbb".to_owned(), 2u32);
        assert_eq!(demux.route(client, &stun_request("bbbb:y")), None);
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
}
