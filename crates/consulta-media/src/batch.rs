//! The media socket's datagrams in and out by the batch: one `recvmmsg` reads up to [`BATCH`]
//! datagrams, one `sendmmsg` sends up to [`BATCH`], each to its own address.
//!
//! In a 1:1 room every incoming packet has one copy to send, so the node made two system calls
//! per packet forwarded. On this machine each call costs more than its work: the entry and exit,
//! the file lookup, tokio's readiness bookkeeping, libc's cancellation points, and the probes the
//! host attaches to system calls (docs/benchmarks.md, "Datagrams by the batch"). The kernel's work
//! per datagram (the UDP send path and the delivery into the receiver's socket) stays.
//!
//! Elsewhere than Linux a batch is one datagram (`recv_from` and `send_to`).

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::peer::Transmit;

/// Datagrams per system call at most.
pub(crate) const BATCH: usize = 32;

/// The largest datagram read whole: longer ones are cut there, as a single read's buffer did.
const DATAGRAM_MAX: usize = 2048;

/// Buffers for one batch of incoming datagrams, reused.
pub(crate) struct Inbox {
    data: Vec<u8>,
    /// Each datagram read: the chunk of `data` it is in, its length and its sender.
    read: Vec<(usize, usize, SocketAddr)>,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        Self {
            data: vec![0; BATCH * DATAGRAM_MAX],
            read: Vec::with_capacity(BATCH),
        }
    }

    /// The datagrams the last [`receive`](Self::receive) read, in order, with their senders.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.read.iter().map(|&(index, len, from)| {
            let start = index * DATAGRAM_MAX;
            (from, self.data.get(start..start + len).unwrap_or_default())
        })
    }

    /// Reads what the socket holds, up to [`BATCH`] datagrams, without waiting: how many the
    /// socket gave ([`datagrams`](Self::datagrams) leaves out any without an IP sender).
    ///
    /// # Errors
    /// `WouldBlock` when nothing is there (tokio then waits for readiness anew); the socket's
    /// error otherwise.
    pub(crate) fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.read.clear();
        let (data, read) = (&mut self.data, &mut self.read);
        socket.try_io(tokio::io::Interest::READABLE, || {
            sys::receive(socket, data, read)
        })
    }
}

/// Sends the first of `queue` (up to [`BATCH`]) without waiting: how many the kernel took, in
/// order. An error is the first datagram's: the ones before it were sent by an earlier call.
///
/// # Errors
/// `WouldBlock` when the socket's buffer is full; the first datagram's error otherwise.
pub(crate) fn send(socket: &UdpSocket, queue: &[Transmit]) -> io::Result<usize> {
    socket.try_io(tokio::io::Interest::WRITABLE, || sys::send(socket, queue))
}

#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "recvmmsg and sendmmsg on the node's own socket, with headers that point into \
              buffers this function holds; neither std nor socket2 offers them, and nix's \
              wrappers read address storage the kernel never wrote (uninitialised memory) when \
              they count what was sent or read"
)]
mod sys {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use nix::libc;
    use socket2::{SockAddr, SockAddrStorage};
    use tokio::net::UdpSocket;

    use super::{BATCH, DATAGRAM_MAX};
    use crate::peer::Transmit;

    /// Headers for `BATCH` messages, all zero: no address, no data, no control data.
    fn empty_headers() -> [libc::mmsghdr; BATCH] {
        // SAFETY: `mmsghdr` is plain data (pointers, lengths, flags), for which all zeros is a
        // valid value: null pointers with zero lengths.
        unsafe { std::mem::zeroed() }
    }

    /// Points `header` at one buffer (`slice`) and at an address of `name_len` bytes at `name`.
    /// Nothing is dereferenced here: the caller keeps all three alive for its call.
    fn point(
        header: &mut libc::mmsghdr,
        slice: &mut libc::iovec,
        name: *mut libc::c_void,
        name_len: libc::socklen_t,
    ) {
        header.msg_hdr.msg_name = name;
        header.msg_hdr.msg_namelen = name_len;
        header.msg_hdr.msg_iov = slice;
        header.msg_hdr.msg_iovlen = 1;
    }

    pub(super) fn receive(
        socket: &UdpSocket,
        data: &mut [u8],
        read: &mut Vec<(usize, usize, SocketAddr)>,
    ) -> io::Result<usize> {
        let mut addresses: [SockAddrStorage; BATCH] =
            std::array::from_fn(|_| SockAddrStorage::zeroed());
        let mut buffers = data.chunks_mut(DATAGRAM_MAX);
        let mut slices: [libc::iovec; BATCH] = std::array::from_fn(|_| {
            let buffer = buffers.next().unwrap_or_default();
            libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            }
        });
        let mut headers = empty_headers();
        for ((header, slice), address) in headers.iter_mut().zip(&mut slices).zip(&mut addresses) {
            let len = address.size_of();
            point(header, slice, std::ptr::from_mut(address).cast(), len);
        }
        // SAFETY: the descriptor is open for the borrow of `socket`. Each of the `BATCH` headers
        // points at one live iovec for a distinct `DATAGRAM_MAX`-byte chunk of `data` (or an
        // empty one) and at one live, zeroed address storage of the length it gives; all of them
        // outlive the call, which writes only within those lengths.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                // `c_int` on glibc, `c_uint` on musl.
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        let count = usize::try_from(count).map_err(|_| io::Error::last_os_error())?;
        for (index, (header, address)) in headers.iter().zip(addresses).take(count).enumerate() {
            let len = usize::try_from(header.msg_len)
                .unwrap_or(0)
                .min(DATAGRAM_MAX);
            // SAFETY: the storage was zeroed whole before the call, which wrote the sender's
            // address into its first `msg_namelen` bytes: every byte the address reads is
            // initialised.
            let address = unsafe { SockAddr::new(address, header.msg_hdr.msg_namelen) };
            // A datagram without an IP sender cannot be answered: skipped, as `recv_from` would
            // have failed on it.
            if let Some(from) = address.as_socket() {
                read.push((index, len, from));
            }
        }
        Ok(count)
    }

    pub(super) fn send(socket: &UdpSocket, queue: &[Transmit]) -> io::Result<usize> {
        let queue = queue.get(..queue.len().min(BATCH)).unwrap_or_default();
        if queue.is_empty() {
            return Ok(0);
        }
        let addresses: [Option<SockAddr>; BATCH] =
            std::array::from_fn(|i| queue.get(i).map(|t| SockAddr::from(t.destination)));
        let mut slices: [libc::iovec; BATCH] = std::array::from_fn(|i| match queue.get(i) {
            Some(transmit) => libc::iovec {
                // Only read by `sendmmsg`.
                iov_base: transmit.contents.as_ptr().cast_mut().cast(),
                iov_len: transmit.contents.len(),
            },
            None => libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        });
        let mut headers = empty_headers();
        for ((header, slice), address) in headers.iter_mut().zip(&mut slices).zip(&addresses) {
            let Some(address) = address else { break };
            point(
                header,
                slice,
                address.as_ptr().cast_mut().cast(),
                address.len(),
            );
        }
        // SAFETY: the descriptor is open for the borrow of `socket`. The first `queue.len()`
        // headers each point at one live iovec over a datagram of `queue` and at one live
        // address of the length they give; the kernel only reads them, during the call.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                queue.len() as libc::c_uint,
                // `c_int` on glibc, `c_uint` on musl.
                libc::MSG_DONTWAIT as _,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    use super::DATAGRAM_MAX;
    use crate::peer::Transmit;

    /// Up to a batch, one `recv_from` each, until the socket is empty.
    pub(super) fn receive(
        socket: &UdpSocket,
        data: &mut [u8],
        read: &mut Vec<(usize, usize, SocketAddr)>,
    ) -> io::Result<usize> {
        for (index, buffer) in data.chunks_mut(DATAGRAM_MAX).enumerate() {
            match socket.try_recv_from(buffer) {
                Ok((len, from)) => read.push((index, len, from)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && !read.is_empty() => {
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(read.len())
    }

    pub(super) fn send(socket: &UdpSocket, queue: &[Transmit]) -> io::Result<usize> {
        match queue.first() {
            Some(transmit) => socket
                .try_send_to(&transmit.contents, transmit.destination)
                .map(|_| 1),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::net::UdpSocket;

    use super::*;

    fn transmit(from: &UdpSocket, to: SocketAddr, n: usize) -> Transmit {
        Transmit {
            source: from.local_addr().unwrap(),
            destination: to,
            contents: Bytes::from(format!("datagram {n}").into_bytes()),
        }
    }

    /// Reads batches until `count` datagrams came, or a second passed.
    async fn read_all(
        inbox: &mut Inbox,
        socket: &UdpSocket,
        count: usize,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while got.len() < count && tokio::time::Instant::now() < deadline {
            if tokio::time::timeout_at(deadline, socket.readable())
                .await
                .is_err()
            {
                break;
            }
            match inbox.receive(socket) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    got.extend(inbox.datagrams().map(|(from, data)| (from, data.to_vec())));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
        }
        got
    }

    /// More datagrams than a batch, to three addresses in turn: each call sends at most a
    /// batch, in order, and each receiver reads its own in order with the sender's address.
    #[tokio::test]
    async fn datagrams_leave_and_arrive_by_the_batch_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let total = 2 * BATCH + 5;
        let mut queue: Vec<Transmit> = (0..total)
            .map(|n| transmit(&sender, receivers[n % 3].local_addr().unwrap(), n))
            .collect();
        let mut calls = 0;
        while !queue.is_empty() {
            sender.writable().await.unwrap();
            match send(&sender, &queue) {
                Ok(sent) => {
                    assert!((1..=BATCH).contains(&sent), "{sent}");
                    queue.drain(..sent);
                    calls += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
        }
        if cfg!(target_os = "linux") {
            assert_eq!(calls, 3, "{total} datagrams in batches of {BATCH}");
        }
        let mut inbox = Inbox::new();
        for (r, receiver) in receivers.iter().enumerate() {
            let expected: Vec<_> = (0..total).filter(|n| n % 3 == r).collect();
            let got = read_all(&mut inbox, receiver, expected.len()).await;
            let texts: Vec<String> = got
                .iter()
                .map(|(from, data)| {
                    assert_eq!(*from, sender.local_addr().unwrap());
                    String::from_utf8(data.clone()).unwrap()
                })
                .collect();
            let wanted: Vec<String> = expected.iter().map(|n| format!("datagram {n}")).collect();
            assert_eq!(texts, wanted);
        }
    }

    /// A dual-stack socket sends one batch to an IPv4 and an IPv6 address, and each receiver
    /// reads the datagram with the sender's address in its own family.
    #[tokio::test]
    async fn ipv4_and_ipv6_addresses_go_and_come_back_whole() {
        let sender = UdpSocket::bind("[::]:0").await.unwrap();
        let port = sender.local_addr().unwrap().port();
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v6 = UdpSocket::bind("[::1]:0").await.unwrap();
        let queue = [
            transmit(&sender, v4.local_addr().unwrap(), 4),
            transmit(&sender, v6.local_addr().unwrap(), 6),
        ];
        sender.writable().await.unwrap();
        let mut sent = 0;
        while sent < queue.len() {
            sent += send(&sender, &queue[sent..]).unwrap();
        }
        let mut inbox = Inbox::new();
        let got = read_all(&mut inbox, &v4, 1).await;
        let expected: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(got, [(expected, b"datagram 4".to_vec())]);
        let got = read_all(&mut inbox, &v6, 1).await;
        let expected: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        assert_eq!(got, [(expected, b"datagram 6".to_vec())]);
    }

    /// A datagram the kernel refuses (an IPv6 destination for an IPv4 socket) stops a batch
    /// there: the ones before it are sent, then it is named by the error, and after it goes
    /// the rest leave.
    #[tokio::test]
    async fn a_refused_datagram_ends_its_batch_and_is_the_next_calls_error() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let nowhere: SocketAddr = "[::1]:9".parse().unwrap();
        let mut queue = vec![
            transmit(&sender, to, 0),
            transmit(&sender, to, 1),
            transmit(&sender, nowhere, 2),
            transmit(&sender, to, 3),
        ];
        sender.writable().await.unwrap();
        let sent = send(&sender, &queue).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(sent, 2);
        }
        queue.drain(..sent);
        while queue.first().is_some_and(|t| t.destination != nowhere) {
            let sent = send(&sender, &queue).unwrap();
            queue.drain(..sent);
        }
        let error = send(&sender, &queue).expect_err("the IPv6 destination is refused");
        assert_ne!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        queue.remove(0);
        assert_eq!(send(&sender, &queue).unwrap(), 1);
        let got = read_all(&mut Inbox::new(), &receiver, 3).await;
        let texts: Vec<&[u8]> = got.iter().map(|(_, data)| data.as_slice()).collect();
        assert_eq!(texts, [&b"datagram 0"[..], b"datagram 1", b"datagram 3"]);
    }
}
