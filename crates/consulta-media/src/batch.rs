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
    /// Each datagram read: its length and sender.
    read: Vec<(usize, SocketAddr)>,
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
        self.data
            .chunks(DATAGRAM_MAX)
            .zip(&self.read)
            .map(|(buffer, &(len, from))| (from, buffer.get(..len).unwrap_or_default()))
    }

    /// Reads what the socket holds, up to [`BATCH`] datagrams, without waiting: how many.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is there (tokio then waits for readiness anew); the socket's
    /// error otherwise.
    pub(crate) fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.read.clear();
        let (data, read) = (&mut self.data, &mut self.read);
        socket.try_io(tokio::io::Interest::READABLE, || {
            sys::receive(socket, data, read)
        })?;
        Ok(self.read.len())
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
mod sys {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
    };
    use tokio::net::UdpSocket;

    use super::{BATCH, DATAGRAM_MAX};
    use crate::peer::Transmit;

    thread_local! {
        /// The kernel's headers for one batch sent, made once per thread: each call sets every
        /// field it uses (the datagram, its address and the address's length). Reading gets its
        /// own per call, since the kernel writes the sender's address length into them.
        static SEND_HEADERS: std::cell::RefCell<Option<MultiHeaders<SockaddrStorage>>> =
            const { std::cell::RefCell::new(None) };
    }

    fn with_send_headers<R>(
        f: impl FnOnce(&mut MultiHeaders<SockaddrStorage>) -> io::Result<R>,
    ) -> io::Result<R> {
        SEND_HEADERS.with(|cell| {
            let mut cell = cell.borrow_mut();
            let headers = cell.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
            f(headers)
        })
    }

    fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = address.as_sockaddr_in() {
            return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
        }
        address
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }

    pub(super) fn receive(
        socket: &UdpSocket,
        data: &mut [u8],
        read: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<()> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut buffers = data.chunks_mut(DATAGRAM_MAX);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(buffers.next().unwrap_or_default())]);
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for message in received {
            // A datagram without an IP sender cannot be answered: skipped, as `recv_from` would
            // have failed on it.
            if let Some(from) = message.address.as_ref().and_then(socket_addr) {
                read.push((message.bytes, from));
            }
        }
        Ok(())
    }

    pub(super) fn send(socket: &UdpSocket, queue: &[Transmit]) -> io::Result<usize> {
        let count = queue.len().min(BATCH);
        if count == 0 {
            return Ok(0);
        }
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(
                queue.get(i).map_or(&[][..], |transmit| &transmit.contents),
            )]
        });
        let addresses: [Option<SockaddrStorage>; BATCH] = std::array::from_fn(|i| {
            queue
                .get(i)
                .map(|transmit| SockaddrStorage::from(transmit.destination))
        });
        let addresses = addresses.get(..count).unwrap_or_default();
        with_send_headers(|headers| {
            let sent = sendmmsg(
                socket.as_raw_fd(),
                headers,
                slices.iter().take(count),
                addresses,
                [] as [ControlMessage<'_>; 0],
                MsgFlags::MSG_DONTWAIT,
            )?;
            Ok(sent.count())
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    use super::DATAGRAM_MAX;
    use crate::peer::Transmit;

    pub(super) fn receive(
        socket: &UdpSocket,
        data: &mut [u8],
        read: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<()> {
        let buffer = data.get_mut(..DATAGRAM_MAX).unwrap_or_default();
        let (len, from) = socket.try_recv_from(buffer)?;
        read.push((len, from));
        Ok(())
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
