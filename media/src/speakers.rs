//! Active-speaker selection for a room: which sources are forwarded when there are more voices
//! than a subscriber has audio slots.
//!
//! Every audio packet reports its source's level (RFC 6464 `ssrc-audio-level`, in -dBov, 0 loudest,
//! 127 silence; in-process participants report the level of the PCM they encoded). Levels are
//! smoothed (fast attack, slow release, so the pauses between words do not drop a speaker), and
//! the room's sources are kept in a *ranking*. A speaking source passes a silent one at once; it
//! passes another speaker only after being louder by [`SpeakerConfig::switch_margin`] for
//! [`SpeakerConfig::switch_dwell`] (hysteresis: two voices of similar loudness never flap). Subscribers take the first N sources of
//! the ranking that are not themselves, so the loudest current speakers fill their N slots.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dartmouth_media::speakers::{ActiveSpeakers, SpeakerConfig};
//! use dartmouth_media::PeerId;
//!
//! let mut room = ActiveSpeakers::new(SpeakerConfig::default());
//! let t0 = Instant::now();
//! room.observe(t0, PeerId(1), 127); // quiet
//! room.observe(t0, PeerId(2), 127);
//! for i in 0..30u32 {
//!     let now = t0 + Duration::from_millis(20 * u64::from(i));
//!     room.observe(now, PeerId(1), 127);
//!     room.observe(now, PeerId(2), 25); // speaking
//!     room.update(now);
//! }
//! assert_eq!(room.ranking()[0], PeerId(2));
//! assert_eq!(room.speaking(), &[PeerId(2)]);
//! ```

use std::time::{Duration, Instant};

use crate::core::PeerId;

/// The level of silence in RFC 6464 units (-dBov).
pub const SILENT_DBOV: u8 = 127;
/// Nominal packet interval the smoothing constants are tuned for.
const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// Tuning of active-speaker selection.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerConfig {
    /// A source whose smoothed level is at least this loud (-dBov) starts speaking.
    pub speaking_on_dbov: u8,
    /// A speaking source stops speaking below this level (-dBov): the gap is the hysteresis.
    pub speaking_off_dbov: u8,
    /// How much louder (dB) a source must be than the one above it to overtake it.
    pub switch_margin: f32,
    /// How long it must stay that much louder.
    pub switch_dwell: Duration,
    /// A source not heard for this long leaves the ranking.
    pub forget_after: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            speaking_on_dbov: 50,
            speaking_off_dbov: 60,
            switch_margin: 6.0,
            switch_dwell: Duration::from_millis(200),
            forget_after: Duration::from_secs(2),
        }
    }
}

/// Smoothing per packet while the level rises (fast attack: speaking within two packets).
const ATTACK: f32 = 0.6;
/// Smoothing per packet while it falls (slow release: ~0.5 s to forget a word).
const RELEASE: f32 = 0.04;

#[derive(Debug, Clone)]
struct Source {
    id: PeerId,
    /// Smoothed loudness, `127 - dBov` (0 silent, 127 full scale).
    loudness: f32,
    last_heard: Instant,
    speaking: bool,
    /// Since when it has been louder than the source ranked just above it by the margin.
    ahead_since: Option<Instant>,
}

impl Source {
    /// Loudness now, decayed for the packets that did not come (DTX, a paused agent).
    fn loudness_at(&self, now: Instant) -> f32 {
        let silent = now.saturating_duration_since(self.last_heard);
        if silent <= PACKET_INTERVAL * 3 {
            return self.loudness;
        }
        let missed = (silent.as_secs_f32() / PACKET_INTERVAL.as_secs_f32()).min(500.0);
        self.loudness * (1.0 - RELEASE).powf(missed)
    }
}

/// What an [`ActiveSpeakers::update`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeakerChange {
    /// The ranking's order changed (subscribers' slots may need new sources).
    pub ranking: bool,
    /// The set of speaking sources changed (a room event).
    pub speaking: bool,
}

/// One room's sources, ranked with hysteresis.
#[derive(Debug, Clone)]
pub struct ActiveSpeakers {
    config: SpeakerConfig,
    /// In rank order: loudest (by hysteresis) first.
    sources: Vec<Source>,
    ranking: Vec<PeerId>,
    speaking: Vec<PeerId>,
}

impl ActiveSpeakers {
    /// An empty room.
    pub fn new(config: SpeakerConfig) -> Self {
        Self {
            config,
            sources: Vec::new(),
            ranking: Vec::new(),
            speaking: Vec::new(),
        }
    }

    /// One packet of `source` at `dbov` (RFC 6464: 0 loudest, 127 silent). Returns `true` when
    /// the source is new to the ranking (it joins at the bottom).
    pub fn observe(&mut self, now: Instant, source: PeerId, dbov: u8) -> bool {
        let loudness = f32::from(SILENT_DBOV - dbov.min(SILENT_DBOV));
        match self.sources.iter_mut().find(|s| s.id == source) {
            Some(s) => {
                let current = s.loudness_at(now);
                let alpha = if loudness > current { ATTACK } else { RELEASE };
                s.loudness = current + alpha * (loudness - current);
                s.last_heard = now;
                false
            }
            None => {
                self.sources.push(Source {
                    id: source,
                    loudness,
                    last_heard: now,
                    speaking: false,
                    ahead_since: None,
                });
                self.ranking.push(source);
                true
            }
        }
    }

    /// Removes a source (it left, or was muted). Returns whether it was ranked.
    pub fn remove(&mut self, source: PeerId) -> bool {
        let Some(i) = self.sources.iter().position(|s| s.id == source) else {
            return false;
        };
        self.sources.remove(i);
        self.ranking.remove(i);
        self.speaking.retain(|s| *s != source);
        true
    }

    /// Re-evaluates the ranking and who is speaking (call every few tens of milliseconds).
    pub fn update(&mut self, now: Instant) -> SpeakerChange {
        let mut change = SpeakerChange::default();
        let forget = self.config.forget_after;
        let before = self.sources.len();
        self.sources
            .retain(|s| now.saturating_duration_since(s.last_heard) < forget);
        if self.sources.len() != before {
            change.ranking = true;
        }
        let margin = self.config.switch_margin;
        let (on, off) = (
            f32::from(SILENT_DBOV - self.config.speaking_on_dbov.min(SILENT_DBOV)),
            f32::from(SILENT_DBOV - self.config.speaking_off_dbov.min(SILENT_DBOV)),
        );
        let levels: Vec<f32> = self.sources.iter().map(|s| s.loudness_at(now)).collect();
        // Hysteresis: who has been ahead of the source above it for long enough moves up, above
        // every source it beats by the margin.
        let mut promote = None;
        for i in 1..self.sources.len() {
            if levels[i] > levels[i - 1] + margin {
                let since = *self.sources[i].ahead_since.get_or_insert(now);
                // Passing a silent source needs no dwell: nobody is cut off.
                let dwell = if levels[i] >= on && levels[i - 1] < off {
                    Duration::ZERO
                } else {
                    self.config.switch_dwell
                };
                if promote.is_none() && now.saturating_duration_since(since) >= dwell {
                    promote = Some((i, dwell.is_zero()));
                }
            } else {
                self.sources[i].ahead_since = None;
            }
        }
        if let Some((i, silent_pass)) = promote {
            // Above every source it beats by the margin (only silent ones without a dwell).
            let mut to = i;
            while to > 0
                && levels[i] > levels[to - 1] + margin
                && (!silent_pass || levels[to - 1] < off)
            {
                to -= 1;
            }
            let mut moved = self.sources.remove(i);
            moved.ahead_since = None;
            self.sources.insert(to, moved);
            if let Some(next) = self.sources.get_mut(to + 1) {
                next.ahead_since = None;
            }
            change.ranking = true;
        }
        if change.ranking {
            self.ranking.clear();
            self.ranking.extend(self.sources.iter().map(|s| s.id));
        }
        for s in &mut self.sources {
            let level = s.loudness_at(now);
            s.speaking = if s.speaking {
                level >= off
            } else {
                level >= on
            };
        }
        let speaking = self.sources.iter().filter(|s| s.speaking).map(|s| s.id);
        if !speaking.clone().eq(self.speaking.iter().copied()) {
            self.speaking.clear();
            self.speaking.extend(speaking);
            change.speaking = true;
        }
        change
    }

    /// Every source, in rank order (loudest first, by hysteresis).
    pub fn ranking(&self) -> &[PeerId] {
        &self.ranking
    }

    /// The sources speaking now, in rank order.
    pub fn speaking(&self) -> &[PeerId] {
        &self.speaking
    }

    /// The top-ranked speaking source other than `except` (what an agent listening to "the
    /// active speaker" hears).
    pub fn loudest_except(&self, except: PeerId) -> Option<PeerId> {
        self.speaking.iter().copied().find(|s| *s != except)
    }
}

/// The RFC 6464 level (-dBov, 0 loudest … 127 silent) of 16-bit PCM.
pub fn level_dbov(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return SILENT_DBOV;
    }
    let energy: f64 = pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64;
    let rms = energy.sqrt() / 32768.0;
    if rms <= 0.0 {
        return SILENT_DBOV;
    }
    (-20.0 * rms.log10()).clamp(0.0, 127.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerId = PeerId(1);
    const B: PeerId = PeerId(2);
    const C: PeerId = PeerId(3);

    /// Feeds 20 ms packets for `ms` at the given levels, updating every packet.
    fn run(room: &mut ActiveSpeakers, t: &mut Instant, ms: u64, levels: &[(PeerId, u8)]) {
        for _ in 0..ms / 20 {
            *t += PACKET_INTERVAL;
            for (id, level) in levels {
                room.observe(*t, *id, *level);
            }
            room.update(*t);
        }
    }

    #[test]
    fn the_loudest_voice_moves_to_the_top_after_the_dwell() {
        let mut room = ActiveSpeakers::new(SpeakerConfig::default());
        let mut t = Instant::now();
        run(&mut room, &mut t, 200, &[(A, 127), (B, 127), (C, 127)]);
        assert_eq!(
            room.ranking(),
            &[A, B, C],
            "arrival order while all are quiet"
        );
        assert!(room.speaking().is_empty());
        // C speaks while the others are silent: it goes to the top at once.
        run(&mut room, &mut t, 60, &[(A, 127), (B, 127), (C, 30)]);
        assert_eq!(room.ranking(), &[C, A, B]);
        assert_eq!(room.speaking(), &[C]);
        // B speaks louder than C: it passes C only after the dwell.
        run(&mut room, &mut t, 100, &[(A, 127), (B, 10), (C, 30)]);
        assert_eq!(room.ranking(), &[C, B, A], "B passed silent A at once");
        run(&mut room, &mut t, 100, &[(A, 127), (B, 10), (C, 30)]);
        assert_eq!(room.ranking()[0], C, "no switch before the dwell");
        run(&mut room, &mut t, 200, &[(A, 127), (B, 10), (C, 30)]);
        assert_eq!(room.ranking(), &[B, C, A]);
    }

    #[test]
    fn similar_voices_do_not_flap() {
        let mut room = ActiveSpeakers::new(SpeakerConfig::default());
        let mut t = Instant::now();
        run(&mut room, &mut t, 1000, &[(A, 30), (B, 127)]);
        assert_eq!(room.ranking(), &[A, B]);
        // B talks as loud as A, a little louder at times: within the margin, no switch.
        for round in 0..50 {
            let (a, b) = if round % 2 == 0 { (32, 28) } else { (28, 32) };
            run(&mut room, &mut t, 100, &[(A, a), (B, b)]);
            assert_eq!(room.ranking(), &[A, B], "round {round}");
        }
        assert_eq!(room.speaking(), &[A, B], "both speak");
    }

    #[test]
    fn a_pause_between_words_keeps_the_speaker_and_silence_ends_it() {
        let mut room = ActiveSpeakers::new(SpeakerConfig::default());
        let mut t = Instant::now();
        run(&mut room, &mut t, 600, &[(A, 25), (B, 127)]);
        assert_eq!(room.speaking(), &[A]);
        run(&mut room, &mut t, 200, &[(A, 127), (B, 127)]);
        assert_eq!(room.speaking(), &[A], "a 200 ms pause does not end speech");
        run(&mut room, &mut t, 2000, &[(A, 127), (B, 127)]);
        assert!(room.speaking().is_empty(), "two seconds of silence do");
    }

    #[test]
    fn a_source_that_stops_sending_decays_and_is_forgotten() {
        let mut room = ActiveSpeakers::new(SpeakerConfig::default());
        let mut t = Instant::now();
        run(&mut room, &mut t, 500, &[(A, 20), (B, 127)]);
        assert_eq!(room.ranking(), &[A, B]);
        // A (an agent, or DTX) stops sending; B starts to speak and overtakes it.
        run(&mut room, &mut t, 1000, &[(B, 30)]);
        assert_eq!(room.ranking(), &[B, A]);
        assert_eq!(room.speaking(), &[B]);
        run(&mut room, &mut t, 2000, &[(B, 30)]);
        assert_eq!(room.ranking(), &[B], "A is forgotten");
        assert!(room.remove(B));
        assert!(room.ranking().is_empty());
    }

    #[test]
    fn levels_of_pcm() {
        assert_eq!(level_dbov(&[0; 960]), 127);
        assert_eq!(level_dbov(&[32767; 960]), 0);
        let quiet: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { 328 } else { -328 })
            .collect();
        assert_eq!(level_dbov(&quiet), 40);
    }
}
