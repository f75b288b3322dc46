//! The thin tokio shell around a [`MediaPeer`]: it owns the UDP socket and the clock, and nothing else.
//!
//! All decisions stay in the peer and in the application's event handler, which both take `now`.

use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::peer::{Error, MediaEvent, MediaPeer, PeerState};

/// How long to sleep when `rtc` has no timer pending (it always has one once ICE starts).
const IDLE: Duration = Duration::from_secs(1);

/// Drives `peer` on `socket` until the connection fails or closes, or `stop` turns true.
///
/// `on_event` sees every event with the time it was taken out, and may write to the peer (forward
/// RTP, request keyframes). Errors from single datagrams (a stray packet, a replayed SRTP packet) are
/// logged and do not stop the loop; errors from `on_event` do.
pub async fn drive<F>(
    mut peer: MediaPeer,
    socket: UdpSocket,
    mut stop: watch::Receiver<bool>,
    mut on_event: F,
) -> Result<(), Error>
where
    F: FnMut(&mut MediaPeer, MediaEvent, Instant) -> Result<(), Error>,
{
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(transmit) = peer.poll_transmit() {
            if let Err(error) = socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                tracing::debug!(%error, destination = %transmit.destination, "udp send failed");
            }
        }
        let mut finished = false;
        while let Some(event) = peer.poll_event() {
            if let MediaEvent::StateChanged(PeerState::Failed | PeerState::Closed) = event {
                finished = true;
            }
            on_event(&mut peer, event, Instant::now())?;
        }
        if finished {
            let _ = peer.close();
            return Ok(());
        }
        // Writes made by `on_event` may have queued datagrams.
        let mut sent_any = false;
        while let Some(transmit) = peer.poll_transmit() {
            sent_any = true;
            if let Err(error) = socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                tracing::debug!(%error, destination = %transmit.destination, "udp send failed");
            }
        }
        if sent_any {
            continue;
        }

        let now = Instant::now();
        let deadline = peer.poll_timeout().unwrap_or(now + IDLE);
        if deadline <= now {
            if let Err(error) = peer.handle_timeout(now) {
                tracing::debug!(%error, "timeout handling failed");
            }
            continue;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = peer.close();
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if let Err(error) = peer.handle_timeout(Instant::now()) {
                    tracing::debug!(%error, "timeout handling failed");
                }
            }
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received?;
                let datagram = buf.get(..len).unwrap_or_default();
                if let Err(error) = peer.handle_receive(Instant::now(), from, datagram) {
                    tracing::debug!(%error, %from, "datagram rejected");
                }
            }
        }
    }
}
