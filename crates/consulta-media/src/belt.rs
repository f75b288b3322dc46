//! What one of our `rtc` interceptors passes on. `rtc`'s chain hands each interceptor a packet
//! (`handle_read`, `handle_write`) and then polls what it passes on (`poll_read`, `poll_write`);
//! ours pass on every packet, in order, changed or not, plus what they add themselves.

use std::collections::VecDeque;

use rtc::interceptor::TaggedPacket;

/// The packets an interceptor passes on, each way, in order.
#[derive(Default)]
pub(crate) struct Belt {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Belt {
    /// Passes an inbound packet on, application-ward.
    pub(crate) fn read(&mut self, packet: TaggedPacket) {
        self.reads.push_back(packet);
    }

    /// Passes an outbound packet on, wire-ward.
    pub(crate) fn write(&mut self, packet: TaggedPacket) {
        self.writes.push_back(packet);
    }

    /// The next inbound packet passed on (the interceptor's `poll_read`).
    pub(crate) fn next_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    /// The next outbound packet passed on (the interceptor's `poll_write`).
    pub(crate) fn next_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl std::fmt::Debug for Belt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Belt")
            .field("reads", &self.reads.len())
            .field("writes", &self.writes.len())
            .finish()
    }
}
