//! The own write path's record of what a connection sent, for bandwidth estimation: what
//! `rtc::interceptor::History` keeps for its TWCC sender, without its three hash maps.
//!
//! `History` indexes each packet by an id, by its transport-wide number and by its stream's
//! sequence number (for RFC 8888 feedback, which the SFU does not negotiate), three hashed inserts
//! a packet and three removals when its feedback came: 6.6 % of the node's time in fan-out
//! (`perf`, S3 with 100 subscribers). Here the records sit in a queue in the order they left,
//! which is their id order, and a second queue maps each transport-wide number to its newest
//! record: the own path gives numbers one after another, so both are indexed by subtraction.
//!
//! It reports as `History` does: everything up to the newest packet reported as arrived, in send
//! order, the ones never acknowledged as lost; what no feedback mentioned in time is forgotten. One
//! difference: a resend (a NACK's answer, sent again under its first transport-wide number) stays
//! matched to its number after the first sending was reported, where `History` unindexed the number
//! with the first sending and took the resend's feedback for an unknown packet's. And one more: a
//! packet sent again more than [`RESEND_REACH`] numbers after its own is not recorded.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Acknowledgement, PacketReport};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

/// How far behind the newest number a packet sent again may be and still be recorded: a NACK names
/// packets of the last few hundred milliseconds, and feedback on anything older than this has
/// long come (4 s at 1 000 packets a second). It also bounds how far a resend stretches the index.
const RESEND_REACH: u16 = 4_096;

/// Numbers this far ahead of the newest, or further, are taken for earlier ones (half the space).
const AHEAD: u16 = 1 << 15;

/// Records of sent packets, matched with transport-wide feedback.
#[derive(Debug, Default)]
pub(crate) struct SendLog {
    /// Each record by id from `first_id`; `None` once reported or forgotten.
    records: VecDeque<Option<PacketReport>>,
    first_id: u64,
    /// The newest record's id for each transport-wide number from `first_number`.
    by_number: VecDeque<Option<u64>>,
    first_number: u16,
    /// The newest number a packet left under for the first time.
    newest: Option<u16>,
    /// The newest id acknowledged as arrived.
    highest_arrived: Option<u64>,
    /// The oldest id not reported yet.
    next_to_report: u64,
}

impl SendLog {
    /// Records a packet of stream `ssrc` (its sequence number `seq`) as it leaves at `departure`,
    /// `size` bytes before sealing, under transport-wide `number`.
    pub(crate) fn add(
        &mut self,
        ssrc: u32,
        seq: u16,
        number: u16,
        size: usize,
        departure: Instant,
    ) {
        let fresh = match self.newest {
            None => true,
            Some(newest) => {
                let ahead = number.wrapping_sub(newest);
                if ahead == 0 || ahead >= AHEAD {
                    // Sent again (a NACK's answer) under its first number.
                    if newest.wrapping_sub(number) >= RESEND_REACH {
                        // Not recorded at all: unindexed, it would only come out as a loss.
                        return;
                    }
                    false
                } else {
                    true
                }
            }
        };
        let id = self.first_id + self.records.len() as u64;
        self.records.push_back(Some(PacketReport {
            ssrc,
            id,
            rtp_sequence_number: seq,
            is_twcc: true,
            twcc_sequence_number: number,
            size,
            arrived: false,
            departure,
            arrival: None,
            ecn: Ecn::NotEct,
        }));
        if fresh {
            if self.newest.is_none() {
                self.first_number = number;
            }
            self.newest = Some(number);
        }
        // The index covers `first_number` up to the newest number (empty once everything was
        // reported, `first_number` then one past the newest). A fresh number extends it at the back,
        // an earlier one sits inside it or, its first sending reported, before its front.
        let offset = usize::from(number.wrapping_sub(self.first_number));
        if fresh || offset < self.by_number.len() {
            if offset >= self.by_number.len() {
                self.by_number.resize(offset + 1, None);
            }
            if let Some(slot) = self.by_number.get_mut(offset) {
                *slot = Some(id);
            }
        } else {
            let back = self.first_number.wrapping_sub(number);
            for _ in 0..back {
                self.by_number.push_front(None);
            }
            self.first_number = number;
            if let Some(slot) = self.by_number.front_mut() {
                *slot = Some(id);
            }
        }
    }

    /// Records a packet sent again (a NACK's answer) under its first transport-wide `number`, as
    /// [`add`](Self::add) does; not at all unless `number` is the newest or at most
    /// [`RESEND_REACH`] behind it. From half the number space behind on, [`add`](Self::add)
    /// would take it for a fresh one, and a stream's datagrams stay kept however many numbers
    /// the connection's other streams used since (a silent microphone's for tens of seconds):
    /// answered so, it moved the newest back, stretched the index over the whole space, and the
    /// next 32 000 fresh packets went unrecorded as resends out of reach (review helper-101).
    pub(crate) fn add_again(
        &mut self,
        ssrc: u32,
        seq: u16,
        number: u16,
        size: usize,
        departure: Instant,
    ) {
        if self
            .newest
            .is_some_and(|newest| newest.wrapping_sub(number) < RESEND_REACH)
        {
            self.add(ssrc, seq, number, size, departure);
        }
    }

    /// Applies one acknowledgement from transport-wide feedback (ignored when it names no packet
    /// on record).
    pub(crate) fn acknowledge(&mut self, acknowledgement: Acknowledgement) {
        let offset = usize::from(
            acknowledgement
                .sequence_number
                .wrapping_sub(self.first_number),
        );
        let Some(&Some(id)) = self.by_number.get(offset) else {
            return;
        };
        let Some(index) = id
            .checked_sub(self.first_id)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(Some(record)) = self.records.get_mut(index) else {
            return;
        };
        record.arrived = acknowledgement.arrived;
        record.arrival = acknowledgement.arrival;
        record.ecn = acknowledgement.ecn;
        if record.arrived {
            self.highest_arrived = Some(self.highest_arrived.map_or(id, |h| h.max(id)));
        }
    }

    /// Everything up to the newest packet acknowledged as arrived, not reported before, in send
    /// order: the ones not acknowledged as arrived are losses.
    pub(crate) fn take_reports(&mut self) -> Vec<PacketReport> {
        let Some(highest) = self.highest_arrived else {
            return Vec::new();
        };
        let mut reports = Vec::new();
        let from = self.next_to_report.max(self.first_id);
        for id in from..=highest {
            let record = usize::try_from(id - self.first_id)
                .ok()
                .and_then(|index| self.records.get_mut(index))
                .and_then(Option::take);
            reports.extend(record);
        }
        self.next_to_report = self.next_to_report.max(highest + 1);
        self.trim();
        reports
    }

    /// Forgets the packets sent before `cutoff` that are still unreported (nothing acknowledged
    /// them in time).
    pub(crate) fn prune_before(&mut self, cutoff: Instant) {
        for record in self.records.iter_mut() {
            match record {
                Some(r) if r.departure >= cutoff => break,
                // Records leave in departure order: the older ones come first.
                Some(r) if !r.arrived => *record = None,
                _ => {}
            }
        }
        self.trim();
    }

    /// Drops the records at the front that are gone, and the numbers indexing only those.
    fn trim(&mut self) {
        while let Some(None) = self.records.front() {
            self.records.pop_front();
            self.first_id += 1;
        }
        while let Some(&front) = self.by_number.front()
            && front.is_none_or(|id| id < self.first_id)
        {
            self.by_number.pop_front();
            self.first_number = self.first_number.wrapping_add(1);
        }
    }

    /// How many records are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use rtc::interceptor::History;
    use std::time::Duration;

    fn arrived(number: u16, at_ms: u64) -> Acknowledgement {
        Acknowledgement::received(number, Some(Duration::from_millis(at_ms)), Ecn::NotEct)
    }

    /// A log of packets of stream 7 under `numbers`, sequence number 100 + number, sent at `at`.
    fn sent(numbers: std::ops::Range<u16>, at: Instant) -> SendLog {
        let mut log = SendLog::default();
        for n in numbers {
            log.add(7, 100 + n, n, 500, at);
        }
        log
    }

    /// A small deterministic generator (xorshift), for reproducible sequences.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % sides
        }
    }

    /// Without resends, the log reports exactly what `rtc`'s `History` does, through numbers
    /// wrapping past 65 535, lost and reordered feedback, and packets forgotten unacknowledged.
    #[test]
    fn it_reports_what_rtcs_history_reports() {
        for seed in 1..=20u64 {
            let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let start = Instant::now();
            let (mut log, mut history) = (SendLog::default(), History::new());
            let mut number = 65_000u16.wrapping_add(seed as u16 * 97);
            let mut sent: Vec<u16> = Vec::new();
            let (mut reported, mut lost) = (0, 0);
            for step in 0..4_000u64 {
                let now = start + Duration::from_millis(step * 2);
                let (ssrc, seq, size) = (7, step as u16, 200 + dice.roll(1_000) as usize);
                log.add(ssrc, seq, number, size, now);
                history.add_outgoing(ssrc, seq, true, number, size, now);
                sent.push(number);
                number = number.wrapping_add(1);
                if dice.roll(20) == 0 {
                    // Feedback on some of the last packets, in any order, some lost.
                    let mut acks = Vec::new();
                    for n in sent.drain(..) {
                        match dice.roll(15) {
                            0 => {}
                            1 => acks.push(Acknowledgement::lost(n)),
                            _ => acks.push(arrived(n, step)),
                        }
                    }
                    if dice.roll(3) == 0 {
                        acks.reverse();
                    }
                    for ack in acks {
                        log.acknowledge(ack);
                        history.on_twcc_feedback(now, ack);
                    }
                    let reports = log.take_reports();
                    assert_eq!(reports, history.take_reports(), "seed {seed}");
                    (reported, lost) = (
                        reported + reports.len(),
                        lost + reports.iter().filter(|r| !r.arrived).count(),
                    );
                }
                if dice.roll(50) == 0 {
                    let cutoff = now - Duration::from_millis(dice.roll(300));
                    log.prune_before(cutoff);
                    history.prune_before(cutoff);
                    assert_eq!(log.len(), history.len(), "seed {seed}");
                }
            }
            // Not a vacuous comparison: most packets were reported, some as lost.
            assert!(
                reported > 3_000 && lost > 100,
                "{reported} reported, {lost} lost"
            );
        }
    }

    /// A resend (sent again under its first number) is matched to its feedback, as the newest
    /// sending of its number, also after the first sending was reported lost.
    #[test]
    fn a_resend_is_matched_under_its_first_number() {
        let start = Instant::now();
        let mut log = sent(0..3, start);
        log.acknowledge(arrived(2, 10));
        let reports = log.take_reports();
        assert_eq!(
            reports.iter().map(|r| r.arrived).collect::<Vec<_>>(),
            [false, false, true],
            "0 and 1 were not acknowledged: lost"
        );
        // 1 is sent again (a NACK's answer), then the next packet under number 3.
        let later = start + Duration::from_millis(50);
        log.add(7, 101, 1, 500, later);
        log.add(7, 103, 3, 500, later);
        log.acknowledge(arrived(1, 60));
        log.acknowledge(arrived(3, 61));
        let reports = log.take_reports();
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|r| r.arrived && r.departure == later));
        assert_eq!(reports[0].rtp_sequence_number, 101);
        assert_eq!(log.len(), 0);
        // Feedback naming numbers long gone, or never sent, is ignored.
        log.acknowledge(arrived(0, 70));
        log.acknowledge(arrived(40_000, 70));
        assert!(log.take_reports().is_empty());
    }

    /// A resend after its first sending was reported, while later packets are in flight, is
    /// matched too (review helper-45: it was neither indexed nor forgotten, so it came out lost).
    #[test]
    fn a_resend_behind_what_was_reported_is_matched() {
        let start = Instant::now();
        let mut log = sent(0..5, start);
        log.acknowledge(arrived(2, 10));
        assert_eq!(log.take_reports().len(), 3, "0 and 1 lost, 2 arrived");
        // 3 and 4 are in flight; 1 is sent again, then 5.
        let later = start + Duration::from_millis(40);
        log.add(7, 101, 1, 500, later);
        log.add(7, 105, 5, 500, later);
        log.acknowledge(arrived(1, 50));
        log.acknowledge(arrived(5, 51));
        let reports = log.take_reports();
        let seen: Vec<(u16, bool)> = reports
            .iter()
            .map(|r| (r.rtp_sequence_number, r.arrived))
            .collect();
        assert_eq!(seen, [(103, false), (104, false), (101, true), (105, true)]);
    }

    /// A packet sent again long after its number (a NACK for something old) is not recorded: its
    /// feedback came long ago, and it neither comes out as a loss nor stretches the index.
    #[test]
    fn a_resend_from_long_ago_is_not_recorded() {
        let start = Instant::now();
        let mut log = SendLog::default();
        for n in 0..6_000u16 {
            log.add(7, n, n, 500, start);
            log.acknowledge(arrived(n, 1));
            assert_eq!(log.take_reports().len(), 1);
        }
        log.add(7, 10, 10, 500, start);
        log.add(7, 6_000, 6_000, 500, start);
        log.acknowledge(arrived(6_000, 2));
        let reports = log.take_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].rtp_sequence_number, 6_000);
        assert!(log.by_number.len() <= 1, "{}", log.by_number.len());
        // Within reach, and before everything indexed: indexed from its number on.
        log.add_again(7, 5_990, 5_990, 500, start);
        assert_eq!(log.by_number.len(), 11);
        // Half the number space or more behind (an old audio packet NACKed while video used the
        // numbers): `add` would take it for a fresh number; sent again, it is not recorded.
        for n in 6_001..=40_000u16 {
            log.add(7, n, n, 500, start);
            log.acknowledge(arrived(n, 3));
        }
        assert_eq!(
            log.take_reports().len(),
            34_001,
            "and 5 990 sent again, lost"
        );
        log.add_again(7, 5_000, 5_000, 500, start);
        assert_eq!(log.newest, Some(40_000));
        log.add(7, 40_001, 40_001, 500, start);
        log.acknowledge(arrived(40_001, 4));
        let reports = log.take_reports();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].arrived && reports[0].rtp_sequence_number == 40_001);
        assert!(log.by_number.len() <= 1, "{}", log.by_number.len());
    }

    /// Nothing acknowledged: the log is forgotten from the front as it ages, and holds nothing
    /// once everything is older than the cutoff.
    #[test]
    fn unacknowledged_packets_are_forgotten() {
        let start = Instant::now();
        let mut log = SendLog::default();
        for n in 0..100u16 {
            log.add(7, n, n, 500, start + Duration::from_millis(u64::from(n)));
        }
        log.prune_before(start + Duration::from_millis(40));
        assert_eq!(log.len(), 60);
        log.acknowledge(arrived(10, 5));
        assert!(log.take_reports().is_empty(), "10 was forgotten");
        log.prune_before(start + Duration::from_secs(1));
        assert_eq!((log.len(), log.by_number.len()), (0, 0));
    }
}
