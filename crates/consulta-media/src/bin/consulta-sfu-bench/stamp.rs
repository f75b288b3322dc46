//! When the kernel received a datagram (`SO_TIMESTAMPNS`), for the sinks' latency.
//!
//! A sink stamps a packet when it has read, decrypted and parsed it. On the generator's busy core
//! that comes after whatever the generator was doing when the datagram arrived, so the figure
//! includes the generator's own delays. The kernel's stamp, taken as the datagram reaches the
//! sink's socket, leaves them out: it is the latency of the path from the publisher's send to the
//! sink's socket, through the server under test.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A datagram read with [`try_recv`]: its length, sender, and when the kernel received it
/// (`CLOCK_REALTIME`, since the Unix epoch), if it said.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub arrived: Option<Duration>,
}

/// Asks the kernel to stamp every datagram `socket` receives.
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// Reads one datagram into `buf` without waiting (`WouldBlock` when none is queued).
pub fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket.try_io(Interest::READABLE, || read(socket, buf))
}

/// Waits for a datagram and reads it into `buf`.
pub async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || read(socket, buf))
        .await
}

fn read(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let from = message
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| io::Error::other("datagram without an IP sender"))?;
    let arrived = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(at) => Some(Duration::from(at)),
            _ => None,
        })
    });
    Ok(Received {
        len: message.bytes,
        from,
        arrived,
    })
}
