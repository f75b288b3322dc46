//! The media socket's datagrams in and out by the batch: one `recvmmsg` reads up to [`BATCH`]
//! datagrams, one `sendmmsg` sends up to [`BATCH`], each to its own address.
//!
//! In a 1:1 room every incoming packet has one copy to send, so the node made two system calls
//! per packet forwarded. On this machine each call costs more than its work: the entry and exit,
//! the file lookup, tokio's readiness bookkeeping, libc's cancellation points, and the probes the
//! host attaches to system calls (docs/benchmarks.md, "Datagrams by the batch"). The kernel's work
//! per datagram (the UDP send path and the delivery into the receiver's socket) stays.
//!
//! Where the kernel takes them (Linux 4.18 on), consecutive datagrams of one size to one address
//! leave as one segmented message (UDP GSO: the `UDP_SEGMENT` control message), which the kernel
//! takes through its UDP and IP layers once and cuts into the datagrams at the end: a video
//! frame's packets to one subscriber. Receivers see the datagrams as they were.
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

/// Bytes of one segmented message at most: what one UDP datagram can carry over IPv6, less its
/// headers, with room to spare.
const SEGMENTED_BYTES_MAX: usize = 60_000;

/// Destinations whose segmented messages the kernel refused, at most: past them, segmenting is
/// off for the socket.
const REFUSED_MAX: usize = 16;

/// Sends datagrams on one socket, and knows whether its kernel takes segmented messages, and to
/// where not.
#[derive(Debug)]
pub(crate) struct Sender {
    segments: bool,
    /// Where a segmented message was refused while single datagrams went (a route whose MTU is
    /// below a datagram and its headers, or whose device cannot compute checksums): each
    /// datagram its own message there.
    refused: Vec<SocketAddr>,
}

impl Sender {
    /// For `socket`: segmented messages where its kernel knows them.
    pub(crate) fn new(socket: &UdpSocket) -> Self {
        Self {
            segments: sys::takes_segments(socket),
            refused: Vec::new(),
        }
    }

    /// For `socket`, one datagram a message, whatever the kernel takes.
    #[cfg(test)]
    pub(crate) fn unsegmented() -> Self {
        Self {
            segments: false,
            refused: Vec::new(),
        }
    }

    /// Whether consecutive datagrams of one size to one address leave as one message.
    pub(crate) fn segments(&self) -> bool {
        self.segments
    }

    /// Whether datagrams to `to` may leave as one message.
    fn segments_to(&self, to: SocketAddr) -> bool {
        self.segments && !self.refused.contains(&to)
    }

    /// Sends the first of `queue` (up to [`BATCH`]) without waiting: how many datagrams the
    /// kernel took, in order. An error is the first datagram's, or its message's: the ones
    /// before it were sent by an earlier call.
    ///
    /// When the kernel refuses a segmented message with one of the errors its checks of
    /// segmenting give (before anything is sent: `EINVAL`, `EMSGSIZE`, `EIO`), the call is made
    /// again with that message's datagrams one a message. If the first then goes, segmenting was
    /// what was refused, on that route: its destination gets single datagrams from then on (past
    /// [`REFUSED_MAX`] such destinations, every one does). If not, the error is that datagram's.
    ///
    /// # Errors
    /// `WouldBlock` when the socket's buffer is full; the first datagram's error otherwise.
    pub(crate) fn send(&mut self, socket: &UdpSocket, queue: &[Transmit]) -> io::Result<usize> {
        let mut groups = Groups::new();
        groups.split(queue, |to| self.segments_to(to));
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
            sys::send(socket, queue, &groups)
        });
        let first = queue.first().map(|t| t.destination);
        let segmented = groups.sizes().first().is_some_and(|&(count, _)| count > 1);
        match (sent, first) {
            (Err(error), Some(to)) if segmented && sys::refuses_segments(&error) => {
                groups.split(queue, |other| other != to && self.segments_to(other));
                let again = socket.try_io(tokio::io::Interest::WRITABLE, || {
                    sys::send(socket, queue, &groups)
                });
                if matches!(again, Ok(sent) if sent > 0) {
                    if self.refused.len() < REFUSED_MAX {
                        tracing::debug!(%error, destination = %to, "segmented UDP sends refused on one route");
                        self.refused.push(to);
                    } else {
                        tracing::info!(%error, "segmented UDP sends refused on many routes: one datagram a message from now on");
                        self.segments = false;
                    }
                }
                again
            }
            (sent, _) => sent,
        }
    }
}

/// How the first [`BATCH`] datagrams of a queue go out: consecutive runs, each one message.
#[derive(Debug)]
pub(crate) struct Groups {
    /// Per message: how many datagrams, and the size of each but the last (which may be
    /// shorter; the size is that of a lone datagram's too, as far as it fits).
    sizes: [(usize, u16); BATCH],
    len: usize,
}

impl Groups {
    pub(crate) fn new() -> Self {
        Self {
            sizes: [(0, 0); BATCH],
            len: 0,
        }
    }

    /// The messages, in order.
    pub(crate) fn sizes(&self) -> &[(usize, u16)] {
        self.sizes.get(..self.len).unwrap_or_default()
    }

    /// Splits the first [`BATCH`] datagrams of `queue` into messages. Where `segments` allows
    /// it for their address, a message takes the datagrams after its first while they go to the
    /// same address and are as long as the first; one shorter ends it, as the kernel cuts the
    /// last segment short. Empty datagrams, and any longer than a segment can be, go alone.
    pub(crate) fn split(&mut self, queue: &[Transmit], segments: impl Fn(SocketAddr) -> bool) {
        let queue = queue.get(..queue.len().min(BATCH)).unwrap_or_default();
        self.len = 0;
        let mut rest = queue;
        while let Some((first, after)) = rest.split_first() {
            let len = first.contents.len();
            let size = u16::try_from(len).ok().filter(|&size| size > 0);
            let mut count = 1;
            if size.is_some() && segments(first.destination) {
                let mut bytes = len;
                for next in after {
                    let next_len = next.contents.len();
                    if next.destination != first.destination
                        || next_len == 0
                        || next_len > len
                        || bytes + next_len > SEGMENTED_BYTES_MAX
                    {
                        break;
                    }
                    count += 1;
                    bytes += next_len;
                    if next_len < len {
                        break;
                    }
                }
            }
            if let Some(slot) = self.sizes.get_mut(self.len) {
                *slot = (count, size.unwrap_or(0));
                self.len += 1;
            }
            rest = rest.get(count..).unwrap_or_default();
        }
    }
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

    use super::{BATCH, DATAGRAM_MAX, Groups};
    use crate::peer::Transmit;

    /// Headers for `BATCH` messages, all zero: no address, no data, no control data.
    fn empty_headers() -> [libc::mmsghdr; BATCH] {
        // SAFETY: `mmsghdr` is plain data (pointers, lengths, flags), for which all zeros is a
        // valid value: null pointers with zero lengths.
        unsafe { std::mem::zeroed() }
    }

    /// Points `header` at `iov_len` buffers from `iov` and at an address of `name_len` bytes at
    /// `name`. Nothing is dereferenced here: the caller keeps them alive for its call.
    fn point(
        header: &mut libc::mmsghdr,
        iov: *mut libc::iovec,
        iov_len: usize,
        name: *mut libc::c_void,
        name_len: libc::socklen_t,
    ) {
        header.msg_hdr.msg_name = name;
        header.msg_hdr.msg_namelen = name_len;
        header.msg_hdr.msg_iov = iov;
        // `size_t` on glibc, `c_int` on musl; at most `BATCH`, so the cast keeps it.
        header.msg_hdr.msg_iovlen = iov_len as _;
    }

    /// Room for one control message: a `UDP_SEGMENT` header and its two-byte segment size.
    // SAFETY: `CMSG_SPACE` only computes a length.
    const CONTROL_LEN: usize =
        unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) } as usize;

    /// One message's control data, aligned as `cmsghdr` needs.
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct Control([u8; CONTROL_LEN]);

    // One header with two bytes of data fits: `CMSG_FIRSTHDR` finds it.
    const _: () = assert!(CONTROL_LEN >= size_of::<libc::cmsghdr>() + size_of::<u16>());

    /// Has `header` (already pointed at its datagrams) ask the kernel to cut it into segments of
    /// `size` bytes, with its control data in `control`.
    fn segment(header: &mut libc::mmsghdr, control: &mut Control, size: u16) {
        header.msg_hdr.msg_control = std::ptr::from_mut(control).cast();
        // `size_t` on glibc, `socklen_t` on musl.
        header.msg_hdr.msg_controllen = CONTROL_LEN as _;
        // SAFETY: `msg_control` points at `CONTROL_LEN` zeroed, aligned bytes that live as long
        // as `control`, room for one header with two bytes of data (asserted above):
        // `CMSG_FIRSTHDR` returns its start, non-null as the length is nonzero, and `CMSG_DATA`
        // a pointer inside it, written unaligned.
        unsafe {
            let message = libc::CMSG_FIRSTHDR(&raw const header.msg_hdr);
            (*message).cmsg_level = libc::SOL_UDP;
            (*message).cmsg_type = libc::UDP_SEGMENT;
            (*message).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as _;
            libc::CMSG_DATA(message).cast::<u16>().write_unaligned(size);
        }
    }

    /// Whether `error` is one the kernel's checks of a segmented message give, before anything
    /// of it is sent: a segment longer than the route's MTU allows (`EMSGSIZE` since Linux 6.x,
    /// `EINVAL` before), too many segments or no checksums (`EINVAL`), a route through IPsec or
    /// a device that cannot compute checksums (`EIO`).
    pub(super) fn refuses_segments(error: &io::Error) -> bool {
        matches!(
            error.raw_os_error(),
            Some(libc::EINVAL | libc::EMSGSIZE | libc::EIO)
        )
    }

    /// Whether the kernel knows segmented sends (Linux 4.18 on) and cuts them as asked: the
    /// socket's default segment size can be read, and [two segments arrive as two
    /// datagrams](segments_arrive_apart). An older kernel would ignore the control message and
    /// send a message's datagrams as one; so might a layer that stands in for Linux's sockets.
    pub(super) fn takes_segments(socket: &UdpSocket) -> bool {
        knows_segments(socket) && segments_arrive_apart()
    }

    /// Sends one message of two segments from one loopback socket of its own to another, and
    /// reads them back: two datagrams, whole and in order, or not segmented. On loopback they
    /// are in the receiver's queue when the send returns; a read waits 200 ms at most, once, at
    /// start, only where something is wrong.
    pub(super) fn segments_arrive_apart() -> bool {
        let bind = || std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0));
        let (Ok(from), Ok(to)) = (bind(), bind()) else {
            return false;
        };
        let (Ok(source), Ok(destination)) = (from.local_addr(), to.local_addr()) else {
            return false;
        };
        if to
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .is_err()
        {
            return false;
        }
        let segments: [&'static [u8]; 2] = [b"first", b"other"];
        let queue = segments.map(|contents| Transmit {
            source,
            destination,
            contents: bytes::Bytes::from_static(contents),
        });
        let mut groups = Groups::new();
        groups.split(&queue, |_| true);
        if groups.sizes() != [(2, 5)] || !matches!(send(&from, &queue, &groups), Ok(2)) {
            return false;
        }
        let mut buffer = [0; 16];
        segments.iter().all(|segment| {
            matches!(to.recv(&mut buffer), Ok(len) if buffer.get(..len) == Some(*segment))
        })
    }

    /// Whether the kernel knows the `UDP_SEGMENT` option: the socket's default segment size can
    /// be read.
    fn knows_segments(socket: &UdpSocket) -> bool {
        crate::node::int_option(socket, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
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
            point(header, slice, 1, std::ptr::from_mut(address).cast(), len);
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

    pub(super) fn send(
        socket: &impl AsRawFd,
        queue: &[Transmit],
        groups: &Groups,
    ) -> io::Result<usize> {
        let queue = queue.get(..queue.len().min(BATCH)).unwrap_or_default();
        let sizes = groups.sizes();
        if sizes.iter().map(|&(count, _)| count).sum::<usize>() > queue.len() {
            debug_assert!(false, "messages split from another queue");
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        if sizes.is_empty() {
            return Ok(0);
        }
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
        let mut addresses: [Option<SockAddr>; BATCH] = std::array::from_fn(|_| None);
        let mut controls = [Control([0; CONTROL_LEN]); BATCH];
        let mut headers = empty_headers();
        let all = slices.as_mut_ptr();
        // The index of each message's first datagram, whose address it goes to.
        let mut first = 0;
        for (((header, address), control), &(count, size)) in headers
            .iter_mut()
            .zip(&mut addresses)
            .zip(&mut controls)
            .zip(sizes)
        {
            let Some(transmit) = queue.get(first) else {
                break;
            };
            let address = address.insert(SockAddr::from(transmit.destination));
            // `first + count` is at most `queue.len()`, itself at most `BATCH` (checked above):
            // the message's iovecs are within `slices`.
            let iov = all.wrapping_add(first);
            point(
                header,
                iov,
                count,
                address.as_ptr().cast_mut().cast(),
                address.len(),
            );
            if count > 1 {
                segment(header, control, size);
            }
            first += count;
        }
        // SAFETY: the descriptor is open for the borrow of `socket`. The first `sizes.len()`
        // headers each point at `count` consecutive live iovecs over datagrams of `queue`
        // (within `slices`, as the counts sum to at most `queue.len()`), at one live address of
        // the length they give, and at no control data or at one live `Control` of the length
        // they give; the kernel only reads them, during the call.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                sizes.len() as libc::c_uint,
                // `c_int` on glibc, `c_uint` on musl.
                libc::MSG_DONTWAIT as _,
            )
        };
        let sent = usize::try_from(sent).map_err(|_| io::Error::last_os_error())?;
        Ok(sizes.iter().take(sent).map(|&(count, _)| count).sum())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    use super::{DATAGRAM_MAX, Groups};
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

    /// No segmented sends here.
    pub(super) fn takes_segments(_socket: &UdpSocket) -> bool {
        false
    }

    /// Nothing is segmented here.
    pub(super) fn refuses_segments(_error: &io::Error) -> bool {
        false
    }

    pub(super) fn send(
        socket: &UdpSocket,
        queue: &[Transmit],
        _groups: &Groups,
    ) -> io::Result<usize> {
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

    /// One call of a sender for `socket` that segments where the kernel can.
    fn send(socket: &UdpSocket, queue: &[Transmit]) -> io::Result<usize> {
        Sender::new(socket).send(socket, queue)
    }

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

    /// A datagram of `len` bytes, each `n`.
    fn sized(to: SocketAddr, n: u8, len: usize) -> Transmit {
        Transmit {
            source: "127.0.0.1:9".parse().unwrap(),
            destination: to,
            contents: Bytes::from(vec![n; len]),
        }
    }

    /// Messages are runs of datagrams to one address, as long as the first or one shorter last,
    /// within a batch; without segments each datagram is a message.
    #[test]
    fn a_message_is_a_run_of_equal_datagrams_to_one_address() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let lens = [
            (a, 1200),
            (a, 1200),
            (a, 1200),
            (a, 900), // shorter: ends the run
            (a, 900),
            (a, 1000), // longer than the run's first: a new one
            (b, 1000), // another address
            (b, 0),    // empty: alone
            (b, 0),
            (b, 50),
        ];
        let queue: Vec<Transmit> = lens
            .iter()
            .enumerate()
            .map(|(n, &(to, len))| sized(to, n as u8, len))
            .collect();
        let mut groups = Groups::new();
        groups.split(&queue, |_| true);
        assert_eq!(
            groups.sizes(),
            [
                (4, 1200),
                (1, 900),
                (1, 1000),
                (1, 1000),
                (1, 0),
                (1, 0),
                (1, 50)
            ]
        );
        groups.split(&queue, |_| false);
        assert_eq!(groups.sizes().len(), queue.len());
        assert!(groups.sizes().iter().all(|&(count, _)| count == 1));
        // Never more than a batch, nor more bytes than one message carries.
        let long: Vec<Transmit> = (0..BATCH + 8).map(|n| sized(a, n as u8, 1200)).collect();
        groups.split(&long, |_| true);
        assert_eq!(groups.sizes(), [(BATCH, 1200)]);
        groups.split(&long, |to| to != a);
        assert_eq!(groups.sizes(), [(1, 1200); BATCH]);
        let big: Vec<Transmit> = (0..BATCH).map(|n| sized(a, n as u8, 2000)).collect();
        groups.split(&big, |_| true);
        assert_eq!(groups.sizes(), [(30, 2000), (2, 2000)]);
    }

    /// A video frame's packets to one subscriber and two to another leave in one call, as two
    /// messages where the kernel segments; each receiver reads every datagram whole, in order,
    /// the last shorter one too. The same without segments.
    #[tokio::test]
    async fn a_run_to_one_address_arrives_as_its_datagrams() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let one = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let two = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to_one, to_two) = (one.local_addr().unwrap(), two.local_addr().unwrap());
        let queue = [
            sized(to_one, 0, 1216),
            sized(to_one, 1, 1216),
            sized(to_one, 2, 1216),
            sized(to_one, 3, 700),
            sized(to_two, 4, 1216),
            sized(to_two, 5, 1216),
        ];
        for mut sender in [Sender::new(&socket), Sender::unsegmented()] {
            if cfg!(target_os = "linux") && sender.segments() {
                let mut groups = Groups::new();
                groups.split(&queue, |_| true);
                assert_eq!(groups.sizes(), [(4, 1216), (2, 1216)]);
            }
            socket.writable().await.unwrap();
            let mut sent = sender.send(&socket, &queue).unwrap();
            if cfg!(target_os = "linux") {
                assert_eq!(sent, queue.len(), "one call");
            }
            if sender.segments() {
                // Not refused and sent again one a message: segmented.
                assert!(sender.segments_to(to_one) && sender.segments_to(to_two));
            }
            while sent < queue.len() {
                sent += sender.send(&socket, &queue[sent..]).unwrap();
            }
            let mut inbox = Inbox::new();
            for (receiver, wanted) in [(&one, &queue[..4]), (&two, &queue[4..])] {
                let got = read_all(&mut inbox, receiver, wanted.len()).await;
                let got: Vec<Vec<u8>> = got
                    .into_iter()
                    .map(|(from, data)| {
                        assert_eq!(from, socket.local_addr().unwrap());
                        data
                    })
                    .collect();
                let wanted: Vec<Vec<u8>> = wanted.iter().map(|t| t.contents.to_vec()).collect();
                assert_eq!(got, wanted);
            }
        }
        if cfg!(target_os = "linux") {
            assert!(Sender::new(&socket).segments(), "Linux 4.18 on segments");
        }
    }

    /// A route that refuses segmented messages (here: a socket without UDP checksums) gets the
    /// same datagrams one a message, in the same call, and from then on; past `REFUSED_MAX`
    /// such routes segmenting is off. A destination refused either way is the call's error, and
    /// segmenting stays on for it.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn refused_segments_go_one_a_message_and_lose_nothing() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut receivers = Vec::new();
        for _ in 0..=REFUSED_MAX {
            receivers.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let to = receivers[0].local_addr().unwrap();
        let nowhere: SocketAddr = "[::1]:9".parse().unwrap();
        socket.writable().await.unwrap();

        let mut sender = Sender::new(&socket);
        assert!(sender.segments());
        let refused = [
            sized(nowhere, 0, 100),
            sized(nowhere, 1, 100),
            sized(to, 2, 100),
        ];
        sender
            .send(&socket, &refused)
            .expect_err("no IPv6 from an IPv4 socket");
        assert!(
            sender.segments_to(nowhere),
            "the destination was refused, not the segments"
        );

        // No UDP checksums on what it sends (`SO_NO_CHECK`): the kernel then refuses segmented
        // messages, and still sends datagrams one a message.
        crate::node::set_int_option(&socket, nix::libc::SOL_SOCKET, nix::libc::SO_NO_CHECK, 1)
            .unwrap();
        let queue = [sized(to, 3, 100), sized(to, 4, 100), sized(to, 5, 60)];
        assert_eq!(sender.send(&socket, &queue).unwrap(), 3);
        assert!(sender.segments() && !sender.segments_to(to));
        assert_eq!(
            sender.send(&socket, &queue).unwrap(),
            3,
            "no error the second time"
        );
        let got = read_all(&mut Inbox::new(), &receivers[0], 6).await;
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, data)| data).collect();
        let wanted: Vec<Vec<u8>> = queue
            .iter()
            .chain(&queue)
            .map(|t| t.contents.to_vec())
            .collect();
        assert_eq!(got, wanted);

        for (n, receiver) in receivers.iter().enumerate().skip(1) {
            let to = receiver.local_addr().unwrap();
            let pair = [sized(to, 6, 100), sized(to, 7, 100)];
            assert_eq!(sender.send(&socket, &pair).unwrap(), 2);
            assert_eq!(sender.segments(), n < REFUSED_MAX, "after {n} more routes");
            let got = read_all(&mut Inbox::new(), receiver, 2).await;
            assert_eq!(got.len(), 2);
        }
    }

    /// The start-up check of segmenting finds that the kernel cuts a message as asked.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_cuts_segmented_messages_as_asked() {
        assert!(sys::segments_arrive_apart());
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
