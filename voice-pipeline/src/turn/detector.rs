//! The end-of-turn step machine: VAD events and silence timing, with one model verdict per pause.

use std::collections::VecDeque;
use std::time::Duration;

use super::{TurnError, TurnModel};
use crate::vad::{SAMPLE_RATE, VadEvent};

/// Samples per millisecond at 16 kHz.
const SAMPLES_PER_MS: usize = SAMPLE_RATE as usize / 1000;
/// Audio kept while nobody speaks beyond the pre-roll: the VAD reports an onset only after
/// confirming it, so its `at_sample` lies in the past (by ~130 ms with the default VAD config).
const ONSET_SLACK_MS: u32 = 1_000;
/// Shortest accepted [`TurnConfig::max_turn_ms`].
const MIN_TURN_MS: u32 = 1_000;
/// Finished turns held until polled; when more pile up, the oldest is dropped (with a warning).
pub const MAX_PENDING_TURNS: usize = 4;

/// When a turn ends. Deserialises with these defaults for missing keys.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TurnConfig {
    /// The turn ends as soon as the model's probability of "finished" reaches this (0.5).
    pub complete_threshold: f32,
    /// The turn ends anyway after this much silence, whatever the model said (1500 ms).
    pub max_silence_ms: u32,
    /// Longest utterance, pre-roll included: a monologue is split into turns of this length,
    /// which also fixes the detector's memory (30 000 ms; at least 1000 ms is used).
    pub max_turn_ms: u32,
    /// Audio kept from before the VAD's speech onset, so the first syllable is whole (200 ms;
    /// at most half of `max_turn_ms` is used).
    pub pre_roll_ms: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            complete_threshold: 0.5,
            max_silence_ms: 1_500,
            max_turn_ms: 30_000,
            pre_roll_ms: 200,
        }
    }
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnEndReason {
    /// The model judged the utterance complete with this probability.
    Complete {
        /// The model's probability that the turn is complete.
        probability: f32,
    },
    /// Silence lasted [`TurnConfig::max_silence_ms`] without a confident model verdict.
    SilenceTimeout,
    /// The utterance reached [`TurnConfig::max_turn_ms`]; speech that goes on is a new turn.
    MaxDuration,
}

/// A finished user turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEnd {
    /// The utterance at 16 kHz: pre-roll, speech and pauses, up to the decision.
    pub audio: Vec<f32>,
    /// When speech ended (for [`TurnEndReason::MaxDuration`]: where the turn was split).
    pub speech_end: Duration,
    /// When the detector decided the turn was over.
    pub decided_at: Duration,
    /// Why the turn ended.
    pub reason: TurnEndReason,
}

/// Where the detector is in a turn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// No turn in progress; the buffer holds recent audio for the next pre-roll.
    Idle,
    /// The user is speaking.
    Speaking,
    /// Speech ended at `speech_end`; `asked` once the model has judged this pause.
    Paused { speech_end: Duration, asked: bool },
}

/// End-of-turn detection as a synchronous step machine: push audio and VAD events with their
/// time, then [`poll`](EndOfTurn::poll) for finished turns. Reads no clock, starts no thread;
/// `poll` runs the model inline, so call it where blocking inference is allowed (a model
/// thread, never an async task).
#[derive(Debug)]
pub struct EndOfTurn {
    config: TurnConfig,
    /// Fixed size of `buffer`, in samples.
    capacity: usize,
    /// Samples of pre-roll.
    pre_roll: usize,
    /// Samples kept while idle when the buffer fills.
    idle_keep: usize,
    /// Idle: recent audio. In a turn: the utterance. Never grows beyond `capacity`.
    buffer: Vec<f32>,
    /// Stream position (in samples) of `buffer[0]`.
    buffer_start: u64,
    /// Stream position just after the last pushed sample.
    position: u64,
    /// Earliest position a new turn may start at (no audio belongs to two turns).
    floor: u64,
    /// Time of the end of the latest audio push: maps stream positions to times.
    clock: Duration,
    phase: Phase,
    finished: VecDeque<TurnEnd>,
    model_error: Option<TurnError>,
}

impl EndOfTurn {
    /// A detector at stream position 0 with its buffer allocated for `max_turn_ms`.
    pub fn new(config: TurnConfig) -> Self {
        let capacity = config.max_turn_ms.max(MIN_TURN_MS) as usize * SAMPLES_PER_MS;
        let pre_roll = (config.pre_roll_ms as usize * SAMPLES_PER_MS).min(capacity / 2);
        let idle_keep = (pre_roll + ONSET_SLACK_MS as usize * SAMPLES_PER_MS).min(capacity / 2);
        Self {
            config,
            capacity,
            pre_roll,
            idle_keep,
            buffer: Vec::with_capacity(capacity),
            buffer_start: 0,
            position: 0,
            floor: 0,
            clock: Duration::ZERO,
            phase: Phase::Idle,
            finished: VecDeque::with_capacity(MAX_PENDING_TURNS),
            model_error: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// The most samples the utterance buffer ever holds (`max_turn_ms` at 16 kHz).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The utterance so far (pre-roll and speech up to the latest audio); empty between turns.
    pub fn utterance(&self) -> &[f32] {
        if self.in_turn() { &self.buffer } else { &[] }
    }

    /// Samples buffered now (the utterance in a turn, recent audio otherwise).
    pub fn buffered_samples(&self) -> usize {
        self.buffer.len()
    }

    /// Whether a turn is in progress (speech, or a pause the detector is still judging).
    pub fn in_turn(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// Samples pushed since construction or [`reset`](EndOfTurn::reset).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The latest model failure, if any (the detector fell back to silence timing).
    pub fn take_model_error(&mut self) -> Option<TurnError> {
        self.model_error.take()
    }

    /// Feeds the next 16 kHz samples of the user's audio, speech or not; `now` is the time of
    /// the end of `samples`. Splits a turn that reaches `max_turn_ms` (see
    /// [`TurnEndReason::MaxDuration`]).
    pub fn push_audio(&mut self, now: Duration, samples_16k: &[f32]) {
        self.clock = now;
        let end = self.position + samples_16k.len() as u64;
        let mut rest = samples_16k;
        while !rest.is_empty() {
            if self.buffer.len() == self.capacity {
                match self.phase {
                    Phase::Idle => self.compact_idle(),
                    Phase::Speaking | Phase::Paused { .. } => {
                        let split_at = self.time_at(self.position, end);
                        self.split(now, split_at);
                    }
                }
            }
            let n = (self.capacity - self.buffer.len()).min(rest.len());
            self.buffer.extend_from_slice(&rest[..n]);
            self.position += n as u64;
            rest = &rest[n..];
            if self.buffer.len() == self.capacity && self.phase != Phase::Idle {
                let split_at = self.time_at(self.position, end);
                self.split(now, split_at);
            }
        }
    }

    /// Feeds a VAD event (positions in samples of the same stream as the audio).
    pub fn push_vad(&mut self, now: Duration, event: VadEvent) {
        match (event, self.phase) {
            (VadEvent::SpeechStart { at_sample }, Phase::Idle) => {
                let lowest = self.floor.max(self.buffer_start);
                let start = at_sample
                    .saturating_sub(self.pre_roll as u64)
                    .clamp(lowest, self.position);
                self.buffer.drain(..(start - self.buffer_start) as usize);
                self.buffer_start = start;
                self.phase = Phase::Speaking;
                tracing::trace!(?now, start, "turn starts");
            }
            (VadEvent::SpeechStart { .. }, Phase::Paused { .. }) => {
                // The pause was mid-turn: the same turn goes on.
                self.phase = Phase::Speaking;
            }
            (VadEvent::SpeechEnd { at_sample }, Phase::Speaking) => {
                if at_sample <= self.buffer_start {
                    // Speech ended before a split: what follows it is silence, not a turn.
                    self.floor = self.position;
                    self.phase = Phase::Idle;
                    return;
                }
                let speech_end = self.time_at(at_sample, self.position).min(now);
                self.phase = Phase::Paused {
                    speech_end,
                    asked: false,
                };
            }
            _ => {}
        }
    }

    /// The next finished turn, if any. After speech ends this asks `model` once, on the whole
    /// utterance so far (pre-roll, speech, and the silence the VAD took to confirm the end, as
    /// pipecat feeds Smart Turn); a probability at or above the threshold ends the turn now, otherwise
    /// the turn ends when silence reaches `max_silence_ms`. Model errors are kept for
    /// [`take_model_error`](EndOfTurn::take_model_error) and leave silence timing in charge.
    pub fn poll(&mut self, now: Duration, model: &mut dyn TurnModel) -> Option<TurnEnd> {
        if let Some(turn) = self.finished.pop_front() {
            return Some(turn);
        }
        let Phase::Paused { speech_end, asked } = self.phase else {
            return None;
        };
        if !asked {
            self.phase = Phase::Paused {
                speech_end,
                asked: true,
            };
            match model.predict(&self.buffer) {
                Ok(probability) if probability >= self.config.complete_threshold => {
                    let reason = TurnEndReason::Complete { probability };
                    return Some(self.end_turn(now, speech_end, reason));
                }
                Ok(probability) => tracing::trace!(probability, "turn not complete yet"),
                Err(error) => {
                    tracing::warn!(%error, "end-of-turn model failed; using silence timing");
                    self.model_error = Some(error);
                }
            }
        }
        let max_silence = Duration::from_millis(u64::from(self.config.max_silence_ms));
        if now >= speech_end + max_silence {
            return Some(self.end_turn(now, speech_end, TurnEndReason::SilenceTimeout));
        }
        None
    }

    /// Forgets the turn in progress and any unpolled turns (on interruption). The stream goes
    /// on: if the user is speaking, a new turn starts with the next audio.
    pub fn clear(&mut self) {
        self.finished.clear();
        self.buffer.clear();
        self.buffer_start = self.position;
        self.floor = self.position;
        if self.phase != Phase::Speaking {
            self.phase = Phase::Idle;
        }
    }

    /// Back to the state after construction, for a new stream starting at position 0.
    pub fn reset(&mut self) {
        self.finished.clear();
        self.buffer.clear();
        self.buffer_start = 0;
        self.position = 0;
        self.floor = 0;
        self.clock = Duration::ZERO;
        self.phase = Phase::Idle;
        self.model_error = None;
    }

    /// Time of stream position `position`, given that `clock` is the time of `clock_position`.
    fn time_at(&self, position: u64, clock_position: u64) -> Duration {
        let nanos = |samples: u64| Duration::from_nanos(samples * 1_000_000_000 / 16_000);
        if position >= clock_position {
            self.clock + nanos(position - clock_position)
        } else {
            self.clock.saturating_sub(nanos(clock_position - position))
        }
    }

    /// Keeps only the newest `idle_keep` samples.
    fn compact_idle(&mut self) {
        let drop = self.buffer.len() - self.idle_keep;
        self.buffer.copy_within(drop.., 0);
        self.buffer.truncate(self.idle_keep);
        self.buffer_start += drop as u64;
    }

    /// Ends the full turn with `MaxDuration`; speech in progress continues as a new turn.
    fn split(&mut self, now: Duration, split_at: Duration) {
        let speaking = self.phase == Phase::Speaking;
        let turn = self.end_turn(now, split_at, TurnEndReason::MaxDuration);
        if self.finished.len() == MAX_PENDING_TURNS {
            self.finished.pop_front();
            tracing::warn!("end-of-turn output not polled: dropping the oldest finished turn");
        }
        self.finished.push_back(turn);
        if speaking {
            self.phase = Phase::Speaking;
        }
    }

    /// Takes the utterance out as a finished turn and goes idle.
    fn end_turn(&mut self, now: Duration, speech_end: Duration, reason: TurnEndReason) -> TurnEnd {
        let audio = self.buffer.clone();
        self.buffer.clear();
        self.buffer_start = self.position;
        self.floor = self.position;
        self.phase = Phase::Idle;
        TurnEnd {
            audio,
            speech_end,
            decided_at: now,
            reason,
        }
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
