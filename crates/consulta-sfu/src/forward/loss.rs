//! Loss on one incoming RTP stream, for the SFU's metrics: a sequence number counts as lost once
//! it is too old to still come ([`WINDOW`] newer numbers have), not as soon as a gap shows. A
//! packet that arrives after a newer one (reordered, or repaired by a retransmission the SFU asked
//! for) fills its gap and is not loss, which a count of gaps as they show would call it.

use std::time::{Duration, Instant};

/// Sequence numbers a late packet may lag behind the newest and still fill its gap: at a camera's
/// 150–600 packets per second, 0.85–3.4 s, room for a NACK's round trip on a mobile link even
/// during a key frame's burst; at Opus's 50, 10 s. Loss is counted that much later.
pub const WINDOW: u16 = 512;

/// The window in 64-bit words, indexed by sequence number modulo [`WINDOW`] (which divides 65 536,
/// so the index carries across the wrap).
const WORDS: usize = WINDOW as usize / 64;

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

/// The newest sequence number of a stream and which of the [`WINDOW`] up to it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveWindow {
    newest: Option<u16>,
    /// The slot of each number in the window: it arrived.
    arrived: [u64; WORDS],
    /// The slot of each number in the window: it is at or after the stream's first packet (older
    /// numbers were never sent, or not since the last restart).
    counted: [u64; WORDS],
}

/// The word and bit of `seq`'s slot.
fn slot(seq: u16) -> (usize, u64) {
    let index = usize::from(seq % WINDOW);
    (index / 64, 1 << (index % 64))
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
                lost: self.advance(newest, ahead),
                ..Arrival::default()
            };
        }
        if behind < RESTART_DISTANCE {
            if behind >= WINDOW {
                return Arrival {
                    repeat: true,
                    ..Arrival::default()
                };
            }
            return self.take(seq);
        }
        self.restart(seq);
        Arrival::default()
    }

    fn restart(&mut self, seq: u16) {
        self.newest = Some(seq);
        self.arrived = [0; WORDS];
        self.counted = [0; WORDS];
        let (word, bit) = slot(seq);
        if let (Some(arrived), Some(counted)) =
            (self.arrived.get_mut(word), self.counted.get_mut(word))
        {
            *arrived |= bit;
            *counted |= bit;
        }
    }

    /// Marks `seq` (in the window, behind the newest) arrived: it filled a gap, or it had come
    /// already. One older than the stream's first packet (or its restart) is neither: it is
    /// counted from now on, as arrived.
    fn take(&mut self, seq: u16) -> Arrival {
        let (word, bit) = slot(seq);
        let (Some(arrived), Some(counted)) =
            (self.arrived.get_mut(word), self.counted.get_mut(word))
        else {
            return Arrival::default();
        };
        let (had, was_counted) = (*arrived & bit != 0, *counted & bit != 0);
        *arrived |= bit;
        *counted |= bit;
        Arrival {
            late: was_counted && !had,
            repeat: was_counted && had,
            ..Arrival::default()
        }
    }

    /// Moves the window `ahead` numbers on from `newest`; returns the numbers that left it
    /// unreceived.
    fn advance(&mut self, newest: u16, ahead: u16) -> u64 {
        let seq = newest.wrapping_add(ahead);
        let mut lost = 0u64;
        if ahead >= WINDOW {
            // Everything in the window leaves, and the numbers between it and the new window
            // never enter it.
            lost = self
                .counted
                .iter()
                .zip(&self.arrived)
                .map(|(c, a)| u64::from((c & !a).count_ones()))
                .sum::<u64>()
                + u64::from(ahead - WINDOW);
            self.counted = [u64::MAX; WORDS];
            self.arrived = [0; WORDS];
        } else {
            for n in 1..=ahead {
                // A number's slot is the one of the number `WINDOW` before it, which leaves.
                let (word, bit) = slot(newest.wrapping_add(n));
                if let (Some(counted), Some(arrived)) =
                    (self.counted.get_mut(word), self.arrived.get_mut(word))
                {
                    if *counted & bit != 0 && *arrived & bit == 0 {
                        lost += 1;
                    }
                    *counted |= bit;
                    *arrived &= !bit;
                }
            }
        }
        self.newest = Some(seq);
        self.take(seq);
        lost
    }
}

/// A run's first and last number as offsets from `from` (a report interval's start).
fn run_offsets((first, len): (u16, u16), from: u16) -> (i32, i32) {
    let start = i32::from(first.wrapping_sub(from) as i16);
    (start, start + i32::from(len) - 1)
}

/// How many of a run's numbers lie at offsets 1..=`upto` from `from`.
fn run_within(run: (u16, u16), from: u16, upto: i32) -> i32 {
    let (start, end) = run_offsets(run, from);
    (end.min(upto) - start.max(1) + 1).max(0)
}

/// Most runs [`SkippedNumbers`] keeps; past that the oldest is forgotten.
const MAX_RUNS: usize = 16;

/// The sequence numbers a sender skipped in what it sent, as runs (first, length): an SFU's
/// subscriber stream carries the gaps its publisher left, so that a late retransmission can
/// still fill them, and the subscriber's receiver reports count them lost. They were lost before
/// the SFU, and say nothing of the subscriber's link. Runs of any length are kept (a publisher's
/// outage of seconds is hundreds of numbers), at most [`MAX_RUNS`] of them; a number sent late
/// shortens or splits its run.
///
/// The numbers sent just before the stream was paused that no report had covered by then count
/// here too ([`handle_paused`](Self::handle_paused)): a receiver counts a gap lost only once a
/// later packet shows it, so the tail the link lost before a pause is reported with the first
/// packets after it, seconds later. That loss is old news: taken as the link's now, it failed the
/// probe that resumed the stream (`consulta_sfu::bandwidth`; 72 % "lost" at the first report after
/// a second camera resumed, in the Chromium test of two paused cameras, 2026-12-06).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkippedNumbers {
    newest: Option<u16>,
    runs: Vec<(u16, u16)>,
    /// The newest number sent when the stream was last paused, and when, until a report covers
    /// a number after it.
    paused: Option<(u16, Instant)>,
    /// A report came during that pause, [`PIN_AFTER`] or more after it began: its head is where
    /// the receiver stood then, so what was sent after it before the pause had not arrived.
    pinned: bool,
}

/// How long after a pause began a receiver report about its stream shows where the receiver
/// stood during it. One sooner may have been written before the last packets arrived (still
/// queued on a congested link, which is when streams are paused for bandwidth); they leave the
/// bucket of a policed mobile link within half a second.
pub const PIN_AFTER: Duration = Duration::from_secs(1);

impl SkippedNumbers {
    /// Takes the sequence number of one packet sent.
    pub fn handle_sent(&mut self, seq: u16) {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            return;
        };
        let ahead = seq.wrapping_sub(newest);
        if ahead == 0 {
            return;
        }
        if ahead < 0x8000 {
            if ahead > 1 {
                if self.runs.len() >= MAX_RUNS {
                    self.runs.remove(0);
                }
                self.runs.push((newest.wrapping_add(1), ahead - 1));
            }
            self.newest = Some(seq);
            // Runs that ended half the number space ago would alias into later intervals.
            self.runs.retain(|&(first, len)| {
                seq.wrapping_sub(first.wrapping_add(len).wrapping_sub(1)) < 0x8000
            });
            return;
        }
        // Behind the newest: a late number fills its place in a run.
        let Some(i) = self
            .runs
            .iter()
            .position(|&(first, len)| seq.wrapping_sub(first) < len)
        else {
            return;
        };
        let Some(run) = self.runs.get_mut(i) else {
            return;
        };
        let (first, len) = *run;
        let offset = seq.wrapping_sub(first);
        let before = (first, offset);
        let after = (seq.wrapping_add(1), len - offset - 1);
        match (before.1, after.1) {
            (0, 0) => {
                self.runs.remove(i);
            }
            (0, _) => *run = after,
            (_, 0) => *run = before,
            _ => {
                *run = before;
                self.runs.insert(i + 1, after);
                if self.runs.len() > MAX_RUNS {
                    self.runs.remove(0);
                }
            }
        }
    }

    /// How many of the numbers after `from` up to `to` (a receiver report's interval, `expected`
    /// numbers long in the extended numbering) were skipped; forgets the runs that end by `to`,
    /// which a later report (from `to` on) does not cover. An interval of half the number space
    /// or more covers every run kept (none is older than that), and forgets them all.
    pub fn skipped_between(&mut self, from: u16, to: u16, expected: u32) -> u32 {
        if expected >= 0x8000 {
            let all = self.runs.iter().map(|&(_, len)| u32::from(len)).sum();
            self.runs.clear();
            self.paused = None;
            return all;
        }
        let span = i32::from(to.wrapping_sub(from));
        if span == 0 || span >= 0x8000 {
            return 0;
        }
        let mut skipped = 0;
        self.runs.retain(|&run| {
            skipped += run_within(run, from, span) as u32;
            run_offsets(run, from).1 > span
        });
        skipped
    }

    /// How many of the numbers after `from` up to `to` (a receiver report's interval) were sent
    /// before the stream's last pause and not skipped, once the interval reaches past the pause:
    /// then they were not received by the time it began, and the receiver counted them only now.
    /// Call before [`skipped_between`](Self::skipped_between), which forgets the runs it covers.
    pub fn before_pause(&mut self, from: u16, to: u16) -> u32 {
        let Some((last, _)) = self.paused else {
            return 0;
        };
        let span = i32::from(to.wrapping_sub(from));
        if span == 0 || span >= 0x8000 {
            return 0;
        }
        let offset = i32::from(last.wrapping_sub(from) as i16);
        if offset < span {
            self.paused = None;
        }
        // Without a report during the pause, `from` may be older than where the receiver stood
        // when it began (a pause shorter than the reports' interval, or their reports lost):
        // what came after it may have arrived, and nothing is left out.
        if !self.pinned || !(1..span).contains(&offset) {
            return 0;
        }
        // Offsets 1..=offset, less the runs among them (counted by `skipped_between`).
        let skipped: i32 = self
            .runs
            .iter()
            .map(|&run| run_within(run, from, offset))
            .sum();
        (offset - skipped).max(0) as u32
    }

    /// The stream stopped flowing (paused for bandwidth, switched off, muted) at `now`: what was
    /// sent until then and not yet reported received is counted with the first report after it
    /// resumes ([`before_pause`](Self::before_pause)). A pause pinned by a report keeps its place
    /// until a report reaches past it: the numbers since were sent after it. One not pinned is
    /// moved to this pause.
    pub fn handle_paused(&mut self, now: Instant) {
        if self.paused.is_none() || !self.pinned {
            self.paused = self.newest.map(|last| (last, now));
            self.pinned = false;
        }
    }

    /// The last number sent at the stream's last pause, once a report during it pinned it and
    /// until a report reaches past it.
    pub fn pinned_pause(&self) -> Option<u16> {
        self.paused.map(|(last, _)| last).filter(|_| self.pinned)
    }

    /// A receiver report block about the stream arriving at `now` states `head` (its highest
    /// number received), whether or not it counts: one at or before the last number sent at the
    /// pause, [`PIN_AFTER`] or more after it began, came during it
    /// ([`before_pause`](Self::before_pause)).
    pub fn handle_report(&mut self, now: Instant, head: u16) {
        if let Some((last, at)) = self.paused
            && last.wrapping_sub(head) < 0x8000
            && now.saturating_duration_since(at) >= PIN_AFTER
        {
            self.pinned = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds what was sent; returns the numbers skipped in each report interval in turn.
    fn skipped(sent: impl IntoIterator<Item = u16>, reports: &[(u16, u16)]) -> Vec<u32> {
        let mut numbers = SkippedNumbers::default();
        sent.into_iter().for_each(|s| numbers.handle_sent(s));
        reports
            .iter()
            .map(|&(from, to)| numbers.skipped_between(from, to, u32::from(to.wrapping_sub(from))))
            .collect()
    }

    /// 100..=120 sent, the last report before the pause at 110: 111..=120 were lost on the way
    /// and show only when 121 on arrive after the pause. They count with the first report that
    /// reaches past 120, once, less the numbers skipped among them; a report during the pause
    /// (late arrivals) counts nothing.
    #[test]
    fn what_was_lost_before_a_pause_counts_with_the_first_report_after_it() {
        let start = Instant::now();
        let during = start + PIN_AFTER;
        let paused = |sent: &mut dyn Iterator<Item = u16>| {
            let mut numbers = SkippedNumbers::default();
            sent.for_each(|s| numbers.handle_sent(s));
            numbers.handle_paused(start);
            numbers.handle_report(during, 110);
            (121..=140).for_each(|s| numbers.handle_sent(s));
            numbers
        };
        let mut numbers = paused(&mut (100..=120));
        assert_eq!(numbers.before_pause(110, 130), 10);
        assert_eq!(numbers.skipped_between(110, 130, 20), 0);
        assert_eq!(numbers.before_pause(130, 140), 0);
        let mut numbers = paused(&mut (100..=120));
        assert_eq!(numbers.before_pause(110, 115), 0, "during the pause");
        assert_eq!(numbers.before_pause(115, 125), 5);
        // All received before the pause: nothing.
        let mut numbers = paused(&mut (100..=120));
        assert_eq!(numbers.before_pause(120, 130), 0);
        // 111..=115 skipped (lost before the SFU): counted once, as skipped.
        let mut numbers = paused(&mut (100..=110).chain(116..=120));
        assert_eq!(numbers.before_pause(110, 130), 5);
        assert_eq!(numbers.skipped_between(110, 130, 20), 5);
        // No report during the pause, or one within a second of its start (written, perhaps,
        // before the last packets arrived): 111..=120 may have arrived, and nothing is left out.
        for report in [None, Some(during - Duration::from_millis(1))] {
            let mut numbers = SkippedNumbers::default();
            (100..=120).for_each(|s| numbers.handle_sent(s));
            numbers.handle_paused(start);
            if let Some(at) = report {
                numbers.handle_report(at, 110);
            }
            (121..=140).for_each(|s| numbers.handle_sent(s));
            assert_eq!(numbers.before_pause(110, 130), 0);
            assert_eq!(numbers.before_pause(130, 140), 0);
        }
        // A second pause before any report reached past the first keeps the first's place.
        let mut numbers = paused(&mut (100..=120));
        numbers.handle_paused(during);
        (141..=150).for_each(|s| numbers.handle_sent(s));
        assert_eq!(numbers.before_pause(115, 145), 5);
        // Unless the first was never pinned: then the second's is the place.
        let mut numbers = SkippedNumbers::default();
        (100..=120).for_each(|s| numbers.handle_sent(s));
        numbers.handle_paused(start);
        (121..=130).for_each(|s| numbers.handle_sent(s));
        numbers.handle_paused(during);
        numbers.handle_report(during + PIN_AFTER, 125);
        (131..=140).for_each(|s| numbers.handle_sent(s));
        assert_eq!(numbers.before_pause(125, 135), 5);
        // Across the wrap.
        let mut numbers = SkippedNumbers::default();
        (65_530..=65_535).for_each(|s| numbers.handle_sent(s));
        numbers.handle_paused(start);
        numbers.handle_report(during, 65_532);
        (0..=5).for_each(|s| numbers.handle_sent(s));
        assert_eq!(numbers.before_pause(65_532, 3), 3);
    }

    #[test]
    fn the_numbers_skipped_in_a_report_interval_are_counted_once() {
        // 100..=110 sent, 111..=140 skipped, 141..=150 sent, 120 late.
        let sent = || (100..=110).chain(141..=150).chain([120]);
        assert_eq!(skipped(sent(), &[(99, 150)]), [29]);
        assert_eq!(skipped(sent(), &[(105, 115), (115, 150)]), [5, 24]);
        assert_eq!(skipped(sent(), &[(105, 125), (125, 150)]), [14, 15]);
        // An interval that covers the same numbers again (a report going back) counts them no
        // more; nor does an empty one.
        assert_eq!(
            skipped(sent(), &[(99, 150), (99, 150), (150, 150)]),
            [29, 0, 0]
        );
        // Across the wrap.
        assert_eq!(skipped([65_530, 65_531, 2, 3], &[(65_529, 3)]), [6]);
        // A long gap counts whole (a publisher gone for seconds), whatever came after it.
        let long = (0..10).chain(1010..3000);
        assert_eq!(skipped(long, &[(0, 2999)]), [1000]);
        // Late numbers at a run's ends and in its middle.
        let filled = [0, 10, 1, 9, 5];
        assert_eq!(skipped(filled, &[(0, 10)]), [6]);
        // The oldest runs go past 16, also when a late number splits a run.
        let sparse = (0..40u16).map(|n| n * 2);
        assert_eq!(skipped(sparse, &[(0, 78)]), [MAX_RUNS as u32]);
        let split = (0..17u16).map(|n| n * 10).chain([5]);
        assert_eq!(skipped(split, &[(0, 160)]), [4 + 15 * 9]);
        // Runs from half the number space ago are gone; a longer interval counts all that is
        // left and forgets it.
        let mut numbers = SkippedNumbers::default();
        (0..10)
            .chain(20..40_000)
            .for_each(|s| numbers.handle_sent(s));
        assert_eq!(numbers.skipped_between(0, 39_999, 39_999), 0);
        let mut numbers = SkippedNumbers::default();
        (0..10)
            .chain(20..30_000)
            .for_each(|s| numbers.handle_sent(s));
        assert_eq!(numbers.skipped_between(0, 29_999, 70_000), 10);
        assert_eq!(numbers.skipped_between(0, 29_999, 29_999), 0);
    }

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
        let (lost, _) = feed(&mut w, (0..10).chain(12..10 + WINDOW));
        assert_eq!(lost, 0);
        // The window holds the newest and the WINDOW - 1 before it.
        assert_eq!(feed(&mut w, [10 + WINDOW]), (1, 0));
        assert_eq!(feed(&mut w, [11 + WINDOW]), (1, 0));
        assert_eq!(feed(&mut w, 12 + WINDOW..5000), (0, 0), "counted once");
    }

    #[test]
    fn a_late_or_repaired_packet_is_not_loss() {
        let mut w = ReceiveWindow::default();
        feed(&mut w, (0..50).chain(51..60));
        let late = w.handle_sequence(50);
        assert!(late.late && !late.repeat);
        assert!(w.handle_sequence(50).repeat, "a second copy is a repeat");
        assert_eq!(feed(&mut w, 60..3000), (0, 0));
        // Too late to fill its gap: already counted lost, and not counted again.
        let mut w = ReceiveWindow::default();
        assert_eq!(feed(&mut w, (0..5).chain(6..WINDOW + 300)), (1, 0));
        assert!(w.handle_sequence(5).repeat);
    }

    #[test]
    fn a_packet_from_before_the_first_is_neither_late_nor_a_repeat() {
        // 100 came first; 98, reordered around it (a key frame's first packets), came after.
        let mut w = ReceiveWindow::default();
        feed(&mut w, [100, 101]);
        assert_eq!(w.handle_sequence(98), Arrival::default());
        assert!(w.handle_sequence(98).repeat, "its copy is a repeat");
        // 99 never came, and is no loss: it was before the first packet.
        assert_eq!(feed(&mut w, 102..102 + WINDOW), (0, 0));
    }

    #[test]
    fn a_jump_skips_the_numbers_between_and_a_restart_is_not_loss() {
        let mut w = ReceiveWindow::default();
        feed(&mut w, 0..10);
        // 10..=1009 never came: 1000 lost once the window has passed them.
        assert_eq!(feed(&mut w, 1010..1010 + WINDOW), (1000, 0));
        // The same below the window's width.
        let mut w = ReceiveWindow::default();
        feed(&mut w, 0..10);
        assert_eq!(feed(&mut w, 110..110 + WINDOW), (100, 0));
        // The publisher numbers afresh: nothing lost, and the new numbers count from there.
        assert_eq!(feed(&mut w, 40_000..40_010), (0, 0));
        assert_eq!(feed(&mut w, (40_011..40_100).chain([40_010])), (0, 1));
    }

    #[test]
    fn numbers_before_the_first_packet_are_not_loss_and_wrapping_is_seamless() {
        let mut w = ReceiveWindow::default();
        assert_eq!(feed(&mut w, 65_500..=65_535), (0, 0));
        assert_eq!(feed(&mut w, (0..3).chain(4..4 + WINDOW)), (1, 0));
        // A late packet across the wrap fills its gap.
        let mut w = ReceiveWindow::default();
        feed(&mut w, (65_530..=65_535).chain(1..20));
        assert!(w.handle_sequence(0).late);
    }
}
