//! Loss on one incoming RTP stream, for the SFU's metrics: a sequence number counts as lost once
//! it is too old to still come ([`WINDOW`] newer numbers have), not as soon as a gap shows. A
//! packet that arrives after a newer one (reordered, or repaired by a retransmission the SFU asked
//! for) fills its gap and is not loss, which a count of gaps as they show would call it.

/// Sequence numbers a late packet may lag behind the newest and still fill its gap: at a camera's
/// 100–600 packets per second, 0.2–1.3 s, more than a NACK's round trip; at Opus's 50, 2.5 s.
pub const WINDOW: u32 = 128;

/// A jump at least this far, forward or back, is the publisher numbering afresh (a restart), not
/// loss: the window starts again at the new number.
const RESTART_DISTANCE: u16 = 3000;

/// What one packet told about the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrival {
    /// Sequence numbers that left the window without having arrived.
    pub lost: u64,
    /// The packet came after a newer one and filled its gap.
    pub late: bool,
    /// The packet's number had arrived already (or is too old to tell).
    pub repeat: bool,
}

/// The newest sequence number of a stream and which of the [`WINDOW`] before it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveWindow {
    newest: Option<u16>,
    /// Bit `i`: `newest - i` arrived.
    arrived: u128,
    /// Bit `i`: `newest - i` is at or after the stream's first packet (older numbers were never
    /// sent, or not since the last restart).
    counted: u128,
}

impl ReceiveWindow {
    /// Takes the sequence number of one received packet.
    pub fn handle_sequence(&mut self, seq: u16) -> Arrival {
        let Some(newest) = self.newest else {
            self.restart(seq);
            return Arrival::default();
        };
        let ahead = seq.wrapping_sub(newest);
        let behind = newest.wrapping_sub(seq);
        if ahead == 0 {
            return Arrival {
                repeat: true,
                ..Arrival::default()
            };
        }
        if ahead < RESTART_DISTANCE {
            return Arrival {
                lost: self.advance(seq, u32::from(ahead)),
                ..Arrival::default()
            };
        }
        if behind < RESTART_DISTANCE {
            let bit = 1u128.checked_shl(u32::from(behind)).unwrap_or(0);
            let late = self.counted & bit != 0 && self.arrived & bit == 0;
            self.arrived |= bit;
            return Arrival {
                late,
                repeat: !late,
                ..Arrival::default()
            };
        }
        self.restart(seq);
        Arrival::default()
    }

    fn restart(&mut self, seq: u16) {
        self.newest = Some(seq);
        self.arrived = 1;
        self.counted = 1;
    }

    /// Moves the window `ahead` numbers on to `seq`; returns the numbers that left it unreceived.
    fn advance(&mut self, seq: u16, ahead: u32) -> u64 {
        let missing = self.counted & !self.arrived;
        let lost = match missing.checked_shr(WINDOW - ahead.min(WINDOW)) {
            // The top `ahead` bits leave the window.
            Some(leaving) if ahead < WINDOW => leaving.count_ones(),
            _ => missing.count_ones(),
        };
        // Numbers skipped so far that they never enter the window.
        let skipped_past = ahead.saturating_sub(WINDOW);
        self.newest = Some(seq);
        self.arrived = self.arrived.checked_shl(ahead).unwrap_or(0) | 1;
        let fresh = 1u128
            .checked_shl(ahead)
            .map_or(u128::MAX, |b| b.wrapping_sub(1));
        self.counted = self.counted.checked_shl(ahead).unwrap_or(0) | fresh;
        u64::from(lost) + u64::from(skipped_past)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seqs`; returns the loss counted and the late packets.
    fn feed(window: &mut ReceiveWindow, seqs: impl IntoIterator<Item = u16>) -> (u64, u64) {
        seqs.into_iter()
            .map(|s| window.handle_sequence(s))
            .fold((0, 0), |(lost, late), a| {
                (lost + a.lost, late + u64::from(a.late))
            })
    }

    #[test]
    fn a_gap_is_loss_only_once_it_leaves_the_window() {
        let mut w = ReceiveWindow::default();
        // 10 and 11 missing: nothing counted while they may still come.
        let (lost, _) = feed(&mut w, (0..10).chain(12..137));
        assert_eq!(lost, 0);
        // The window holds the newest and the 127 before it: 10 leaves at 138, 11 at 139.
        assert_eq!(feed(&mut w, [137, 138]), (1, 0));
        assert_eq!(feed(&mut w, [139]), (1, 0));
        assert_eq!(feed(&mut w, 140..2000), (0, 0), "counted once");
    }

    #[test]
    fn a_late_or_repaired_packet_is_not_loss() {
        let mut w = ReceiveWindow::default();
        feed(&mut w, (0..50).chain(51..60));
        let late = w.handle_sequence(50);
        assert!(late.late && !late.repeat);
        assert!(w.handle_sequence(50).repeat, "a second copy is a repeat");
        assert_eq!(feed(&mut w, 60..1000), (0, 0));
        // Too late to fill its gap: already counted lost, and not counted again.
        let mut w = ReceiveWindow::default();
        assert_eq!(feed(&mut w, (0..5).chain(6..300)), (1, 0));
        assert!(w.handle_sequence(5).repeat);
    }

    #[test]
    fn a_jump_skips_the_numbers_between_and_a_restart_is_not_loss() {
        let mut w = ReceiveWindow::default();
        feed(&mut w, 0..10);
        // 10..=1009 never came: 1000 lost once the window passes them.
        assert_eq!(feed(&mut w, 1010..1200), (1000, 0));
        // The publisher numbers afresh: nothing lost, and the new numbers count from there.
        assert_eq!(feed(&mut w, 40_000..40_010), (0, 0));
        assert_eq!(feed(&mut w, (40_011..40_100).chain([40_010])), (0, 1));
    }

    #[test]
    fn numbers_before_the_first_packet_are_not_loss_and_wrapping_is_seamless() {
        let mut w = ReceiveWindow::default();
        assert_eq!(feed(&mut w, 65_500..=65_535), (0, 0));
        assert_eq!(feed(&mut w, (0..3).chain(4..400)), (1, 0));
    }
}
