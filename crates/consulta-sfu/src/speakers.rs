//! Active speaker detection from the RTP audio level header extension (RFC 6464), producing
//! LiveKit `speakers_changed` deltas (spec `matrixrtc-livekit.md` §2.8; Element Call's speaking
//! indicator and spotlight follow them).
//!
//! Each audio packet carries its level as 0..=127 -dBov (0 is the loudest, 127 silence). The
//! method, ours:
//! - a packet is *speech* when its level is at most [`SpeakerConfig::speech_dbov`] (40 -dBov by
//!   default: speech into a browser microphone sits around 20–35, room noise well above 50);
//! - over a sliding [`SpeakerConfig::window`] (1 s), a participant is *active* when at least
//!   [`SpeakerConfig::min_speech_fraction`] (a quarter) of the packets expected in the window were
//!   speech. Packets missing from the window count as silence: with Opus DTX a quiet participant
//!   sends almost nothing. Expected = window / [`SpeakerConfig::packet_interval`] (20 ms, the
//!   browsers' Opus frame), or the packets actually received if more;
//! - the reported level (0..1, 1 loudest) is the mean linear amplitude (10^(−dBov/20)) over the
//!   expected packets, non-speech ones counted as 0: loud, sustained speech ranks first.
//!
//! At most every [`SpeakerConfig::update_interval`] (300 ms) [`ActiveSpeakers::poll_speakers_changed`]
//! reports the participants whose state changed: became active, became inactive (level 0), or
//! stayed active with a level that moved by [`SpeakerConfig::level_step`] or more.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use livekit_protocol::{SpeakerInfo, SpeakersChanged};

use crate::ids::ParticipantSid;

/// Tunables; see the module documentation for how they are used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerConfig {
    /// Sliding window the decision looks at.
    pub window: Duration,
    /// Least time between two deltas.
    pub update_interval: Duration,
    /// Loudest level (in -dBov) that still counts as silence is this + 1.
    pub speech_dbov: u8,
    /// Share of the window's expected packets that must be speech for "active".
    pub min_speech_fraction: f32,
    /// Expected time between audio packets.
    pub packet_interval: Duration,
    /// Least level change worth a delta for a speaker who stays active.
    pub level_step: f32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(1),
            update_interval: Duration::from_millis(300),
            speech_dbov: 40,
            min_speech_fraction: 0.25,
            packet_interval: Duration::from_millis(20),
            level_step: 0.05,
        }
    }
}

#[derive(Debug, Default)]
struct Speaker {
    /// (arrival, level in -dBov), oldest first.
    samples: VecDeque<(Instant, u8)>,
    /// What was last reported: (active, level).
    reported: Option<(bool, f32)>,
    left: bool,
}

/// Active speaker detection for one room.
#[derive(Debug)]
pub struct ActiveSpeakers {
    config: SpeakerConfig,
    speakers: BTreeMap<ParticipantSid, Speaker>,
    next_update: Option<Instant>,
}

impl ActiveSpeakers {
    /// No participants yet.
    pub fn new(config: SpeakerConfig) -> Self {
        Self {
            config,
            speakers: BTreeMap::new(),
            next_update: None,
        }
    }

    /// Most packets kept per participant, so a sender flooding packets costs bounded memory.
    fn max_samples(&self) -> usize {
        (self.expected() * 4.0) as usize
    }

    fn expected(&self) -> f32 {
        let packet = self.config.packet_interval.as_secs_f32();
        if packet > 0.0 {
            (self.config.window.as_secs_f32() / packet).max(1.0)
        } else {
            1.0
        }
    }

    /// The audio level (0..=127 -dBov; larger values are clamped) of one packet from
    /// `participant`'s microphone track.
    pub fn handle_audio_level(&mut self, participant: &ParticipantSid, level: u8, now: Instant) {
        let max = self.max_samples();
        let speaker = self.speakers.entry(participant.clone()).or_default();
        speaker.left = false;
        speaker.samples.push_back((now, level.min(127)));
        while speaker.samples.len() > max {
            speaker.samples.pop_front();
        }
    }

    /// The participant left or unpublished its microphone: reported inactive (if it was active)
    /// in the next delta, then forgotten.
    pub fn remove_participant(&mut self, participant: &ParticipantSid) {
        if let Some(speaker) = self.speakers.get_mut(participant) {
            speaker.samples.clear();
            speaker.left = true;
        }
    }

    /// When [`Self::poll_speakers_changed`] may next have something; `None` while nobody is
    /// tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.speakers.is_empty() {
            None
        } else {
            self.next_update
        }
    }

    /// The `speakers_changed` delta, loudest first, if the update interval has passed and anything
    /// changed since the last one.
    pub fn poll_speakers_changed(&mut self, now: Instant) -> Option<SpeakersChanged> {
        if self.next_update.is_some_and(|t| now < t) {
            return None;
        }
        self.next_update = Some(now + self.config.update_interval);
        let expected_in_window = self.expected();
        let config = self.config;
        let mut speakers = Vec::new();
        for (sid, speaker) in &mut self.speakers {
            while speaker
                .samples
                .front()
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= config.window)
            {
                speaker.samples.pop_front();
            }
            let expected = expected_in_window.max(speaker.samples.len() as f32);
            let (count, sum) = speaker
                .samples
                .iter()
                .filter(|&&(_, level)| level <= config.speech_dbov)
                .fold((0u32, 0f32), |(n, sum), &(_, level)| {
                    (n + 1, sum + 10f32.powf(-f32::from(level) / 20.0))
                });
            let active = count as f32 >= config.min_speech_fraction * expected_in_window;
            let level = if active {
                (sum / expected).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (was_active, was_level) = speaker.reported.unwrap_or((false, 0.0));
            let changed =
                active != was_active || active && (level - was_level).abs() >= config.level_step;
            if changed {
                speaker.reported = Some((active, level));
                speakers.push(SpeakerInfo {
                    sid: sid.to_string(),
                    level,
                    active,
                });
            }
        }
        self.speakers.retain(|_, s| {
            !(s.left || s.samples.is_empty() && s.reported.is_none_or(|(active, _)| !active))
        });
        if speakers.is_empty() {
            return None;
        }
        speakers.sort_by(|a, b| b.level.total_cmp(&a.level).then_with(|| a.sid.cmp(&b.sid)));
        Some(SpeakersChanged { speakers })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use super::*;

    const PACKET: Duration = Duration::from_millis(20);

    struct Room {
        speakers: ActiveSpeakers,
        now: Instant,
        deltas: Vec<(Duration, SpeakersChanged)>,
        start: Instant,
    }

    impl Room {
        fn new() -> Self {
            let now = Instant::now();
            Self {
                speakers: ActiveSpeakers::new(SpeakerConfig::default()),
                now,
                deltas: Vec::new(),
                start: now,
            }
        }

        /// `ms` of audio: every 20 ms a packet from each (participant, level) with a level, and a
        /// poll after each packet time, as a shell would on its timer.
        fn run(&mut self, ms: u64, levels: &[(&ParticipantSid, Option<u8>)]) {
            for _ in 0..ms / 20 {
                for (p, level) in levels {
                    if let Some(level) = level {
                        self.speakers.handle_audio_level(p, *level, self.now);
                    }
                }
                if let Some(d) = self.speakers.poll_speakers_changed(self.now) {
                    self.deltas.push((self.now - self.start, d));
                }
                self.now += PACKET;
            }
        }
    }

    fn sid(s: &str) -> ParticipantSid {
        ParticipantSid::parse(s).unwrap()
    }

    #[test]
    fn a_talker_becomes_active_and_inactive_silent_ones_never_appear() {
        let (alice, bob) = (sid("PA_alice"), sid("PA_bob"));
        let mut room = Room::new();
        // Bob's microphone picks up room noise only; Alice talks at -25 dBov.
        room.run(2000, &[(&alice, Some(25)), (&bob, Some(70))]);
        assert_eq!(room.deltas.len(), 1, "{:?}", room.deltas);
        let (at, first) = &room.deltas[0];
        assert!(*at <= Duration::from_millis(400), "active after {at:?}");
        assert_eq!(first.speakers.len(), 1);
        assert_eq!(first.speakers[0].sid, "PA_alice");
        assert!(first.speakers[0].active);
        // Sustained speech at -25 dBov: the level settles at 10^(-25/20) ≈ 0.056 with no more
        // deltas, as it moved less than the step.
        assert!(first.speakers[0].level > 0.0 && first.speakers[0].level <= 0.057);

        // Alice stops; with DTX her packets stop too.
        room.deltas.clear();
        room.run(2000, &[(&bob, Some(70))]);
        assert_eq!(room.deltas.len(), 1);
        let (at, last) = &room.deltas[0];
        assert!(
            *at >= Duration::from_millis(2700),
            "inactive too early: {at:?}"
        );
        assert_eq!(
            last.speakers,
            vec![SpeakerInfo {
                sid: "PA_alice".to_owned(),
                level: 0.0,
                active: false
            }]
        );
    }

    #[test]
    fn deltas_are_rate_limited_and_ordered_loudest_first() {
        let (alice, bob) = (sid("PA_alice"), sid("PA_bob"));
        let mut room = Room::new();
        room.run(1000, &[(&alice, Some(10)), (&bob, Some(30))]);
        for w in room.deltas.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= Duration::from_millis(300),
                "{:?}",
                room.deltas
            );
        }
        let both = room
            .deltas
            .iter()
            .find(|(_, d)| d.speakers.len() == 2)
            .unwrap();
        assert_eq!(both.1.speakers[0].sid, "PA_alice");
        assert!(both.1.speakers[0].level > both.1.speakers[1].level);
        // A level change of a speaker who stays active is reported (Alice gets much quieter but
        // still speaks).
        room.deltas.clear();
        room.run(1500, &[(&alice, Some(38)), (&bob, Some(30))]);
        let alice_updates: Vec<_> = room
            .deltas
            .iter()
            .flat_map(|(_, d)| &d.speakers)
            .filter(|s| s.sid == "PA_alice")
            .collect();
        assert!(!alice_updates.is_empty());
        assert!(alice_updates.iter().all(|s| s.active));
    }

    #[test]
    fn brief_noise_is_not_speech_and_leavers_are_reported_inactive() {
        let (alice, bob) = (sid("PA_alice"), sid("PA_bob"));
        let mut room = Room::new();
        // A cough: 100 ms loud, then silence.
        room.run(100, &[(&bob, Some(20))]);
        room.run(1000, &[(&bob, Some(90))]);
        assert!(room.deltas.is_empty(), "{:?}", room.deltas);

        room.run(1000, &[(&alice, Some(20))]);
        assert_eq!(room.deltas.len(), 1);
        room.speakers.remove_participant(&alice);
        room.run(400, &[]);
        assert_eq!(room.deltas.len(), 2);
        assert!(!room.deltas[1].1.speakers[0].active);
        // Forgotten afterwards (and Bob, silent, too): no timer needed.
        room.run(400, &[]);
        assert_eq!(room.speakers.poll_timeout(), None);
        assert_eq!(room.deltas.len(), 2);
    }

    #[test]
    fn floods_and_out_of_range_levels_are_bounded() {
        let alice = sid("PA_alice");
        let mut s = ActiveSpeakers::new(SpeakerConfig::default());
        let now = Instant::now();
        for _ in 0..10_000 {
            s.handle_audio_level(&alice, 255, now);
        }
        assert_eq!(s.speakers[&alice].samples.len(), 200);
        assert!(s.speakers[&alice].samples.iter().all(|&(_, l)| l == 127));
        assert_eq!(s.poll_speakers_changed(now), None);
        // A zero packet interval does not divide by zero.
        let mut s = ActiveSpeakers::new(SpeakerConfig {
            packet_interval: Duration::ZERO,
            ..SpeakerConfig::default()
        });
        s.handle_audio_level(&alice, 0, now);
        let d = s.poll_speakers_changed(now).unwrap();
        assert!(d.speakers[0].active && d.speakers[0].level <= 1.0);
    }
}
