//! The end-of-turn step machine: VAD events and silence timing, with one model verdict per pause.

use std::collections::VecDeque;
use std::time::Duration;

use super::{TranscriptForm, TurnError, TurnModel};
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

/// How readily the agent takes a pause for the end of the turn: `high` answers sooner and cuts
/// in more often, `low` waits longer for people who pause to think.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eagerness {
    /// Waits: thresholds higher, silence limits longer.
    Low,
    /// The default balance.
    #[default]
    Normal,
    /// Answers sooner: thresholds lower, silence limits shorter.
    High,
}

/// When a turn ends. The model is asked when speech ends and again every `reask_every_ms` of
/// silence; its latest probability ends the turn once it reaches a threshold that falls from
/// `complete_threshold` to `final_threshold` as the silence grows to `max_silence_ms`. The
/// transcript's form moves the threshold and the silence limit (see [`TranscriptForm`]).
/// Deserialises from the `eagerness` preset, each key given overriding it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "TurnConfigFile")]
pub struct TurnConfig {
    /// The preset the values below came from (reported in turn records).
    pub eagerness: Eagerness,
    /// Silence inside speech after which the pause is judged (200 ms normal), before the VAD
    /// confirms the end of speech; speech that resumes continues the turn. Used by
    /// [`Listener`](crate::ingest::Listener), which sees the silence as it grows.
    pub judge_after_ms: u32,
    /// Threshold on the model's probability of "finished" when silence begins (0.5 normal).
    pub complete_threshold: f32,
    /// Threshold reached as silence reaches `max_silence_ms` (0.15 normal).
    pub final_threshold: f32,
    /// Silence between two questions to the model about the same pause (200 ms).
    pub reask_every_ms: u32,
    /// Silence up to which a verdict short of sure waits for the pause's speculative
    /// transcript (600 ms normal; 0 when no transcripts come, e.g. speculative STT is off).
    pub transcript_wait_ms: u32,
    /// Silence after which a pause whose transcript reads as a question ends the turn (500 ms
    /// normal).
    pub question_silence_ms: u32,
    /// Silence after which a pause whose transcript reads as a whole statement ends the turn
    /// (1000 ms normal).
    pub statement_silence_ms: u32,
    /// The turn ends anyway after this much silence, whatever the model said (1500 ms normal).
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
        Self::with_eagerness(Eagerness::Normal)
    }
}

impl TurnConfig {
    /// The thresholds and silence limits of an eagerness preset.
    pub fn with_eagerness(eagerness: Eagerness) -> Self {
        let (judge_after, complete_threshold, final_threshold) = match eagerness {
            Eagerness::Low => (320, 0.65, 0.3),
            Eagerness::Normal => (200, 0.5, 0.15),
            Eagerness::High => (160, 0.35, 0.1),
        };
        let (transcript_wait, question, statement, max_silence) = match eagerness {
            Eagerness::Low => (800, 800, 1_400, 2_000),
            Eagerness::Normal => (600, 500, 1_000, 1_500),
            Eagerness::High => (450, 350, 700, 1_000),
        };
        Self {
            eagerness,
            judge_after_ms: judge_after,
            complete_threshold,
            final_threshold,
            reask_every_ms: 200,
            transcript_wait_ms: transcript_wait,
            question_silence_ms: question,
            statement_silence_ms: statement,
            max_silence_ms: max_silence,
            max_turn_ms: 30_000,
            pre_roll_ms: 200,
        }
    }
}

impl TurnConfig {
    /// The same, for a listener whose pauses nobody transcribes: verdicts never wait for a
    /// transcript.
    pub fn without_transcripts(self) -> Self {
        Self {
            transcript_wait_ms: 0,
            ..self
        }
    }
}

/// [`TurnConfig`] as written in a configuration file: a preset and any overrides.
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TurnConfigFile {
    eagerness: Eagerness,
    judge_after_ms: Option<u32>,
    complete_threshold: Option<f32>,
    final_threshold: Option<f32>,
    reask_every_ms: Option<u32>,
    transcript_wait_ms: Option<u32>,
    question_silence_ms: Option<u32>,
    statement_silence_ms: Option<u32>,
    max_silence_ms: Option<u32>,
    max_turn_ms: Option<u32>,
    pre_roll_ms: Option<u32>,
}

impl Default for TurnConfigFile {
    fn default() -> Self {
        Self {
            eagerness: Eagerness::Normal,
            judge_after_ms: None,
            complete_threshold: None,
            final_threshold: None,
            reask_every_ms: None,
            transcript_wait_ms: None,
            question_silence_ms: None,
            statement_silence_ms: None,
            max_silence_ms: None,
            max_turn_ms: None,
            pre_roll_ms: None,
        }
    }
}

impl From<TurnConfigFile> for TurnConfig {
    fn from(file: TurnConfigFile) -> Self {
        let preset = TurnConfig::with_eagerness(file.eagerness);
        Self {
            eagerness: file.eagerness,
            judge_after_ms: file.judge_after_ms.unwrap_or(preset.judge_after_ms),
            complete_threshold: file.complete_threshold.unwrap_or(preset.complete_threshold),
            final_threshold: file.final_threshold.unwrap_or(preset.final_threshold),
            reask_every_ms: file.reask_every_ms.unwrap_or(preset.reask_every_ms),
            transcript_wait_ms: file.transcript_wait_ms.unwrap_or(preset.transcript_wait_ms),
            question_silence_ms: file
                .question_silence_ms
                .unwrap_or(preset.question_silence_ms),
            statement_silence_ms: file
                .statement_silence_ms
                .unwrap_or(preset.statement_silence_ms),
            max_silence_ms: file.max_silence_ms.unwrap_or(preset.max_silence_ms),
            max_turn_ms: file.max_turn_ms.unwrap_or(preset.max_turn_ms),
            pre_roll_ms: file.pre_roll_ms.unwrap_or(preset.pre_roll_ms),
        }
    }
}

/// What the decision rested on, for the turn record.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TurnSignals {
    /// The model's latest probability of "finished" (none if it was not asked or failed).
    pub probability: Option<f32>,
    /// Times the model was asked about the final pause.
    pub asks: u32,
    /// The threshold in force when the turn ended.
    pub threshold: f32,
    /// The form of the pause's speculative transcript, if one came in time.
    pub form: TranscriptForm,
    /// The preset in use.
    pub eagerness: Eagerness,
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnEndReason {
    /// The model judged the utterance complete with this probability.
    Complete {
        /// The model's probability that the turn is complete.
        probability: f32,
    },
    /// The transcript read as a question or a statement and the silence reached its limit
    /// ([`TurnConfig::question_silence_ms`], [`TurnConfig::statement_silence_ms`]).
    TranscriptComplete,
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
    /// The signals the decision rested on.
    pub signals: TurnSignals,
}

/// Where the detector is in a turn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// No turn in progress; the buffer holds recent audio for the next pre-roll.
    Idle,
    /// The user is speaking.
    Speaking,
    /// Speech ended at `speech_end`.
    Paused(Pause),
}

/// What the detector knows of the pause in progress.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pause {
    speech_end: Duration,
    /// A question to the model is out.
    in_flight: bool,
    /// Silence at which the model is asked next.
    next_ask: Duration,
    /// The model's latest answer.
    probability: Option<f32>,
    asks: u32,
}

impl Pause {
    fn new(speech_end: Duration) -> Self {
        Self {
            speech_end,
            in_flight: false,
            next_ask: Duration::ZERO,
            probability: None,
            asks: 0,
        }
    }
}

/// A transcript hint applies to the pause that began within this of the hint's time.
const HINT_TOLERANCE: Duration = Duration::from_millis(40);
/// How much a question's or a statement's form lowers the threshold.
const QUESTION_RELIEF: f32 = 0.2;
const STATEMENT_RELIEF: f32 = 0.1;
/// The threshold while the transcript reads incomplete: the words overrule the model (Smart
/// Turn is sure that espeak-ng's "my account number is" is finished), and only the silence
/// limit ends the turn. Above any probability.
const INCOMPLETE_THRESHOLD: f32 = 1.01;
/// A verdict this sure ends the turn without waiting for the transcript.
const SURE_THRESHOLD: f32 = 0.9;

/// A question for the end-of-turn model: is the utterance in `audio` complete? Answer it with
/// [`EndOfTurn::on_verdict`], quoting `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRequest {
    /// Identifies the pause asked about; a verdict for an older pause is ignored.
    pub id: u64,
    /// The last [`SMART_TURN_SAMPLES`](super::SMART_TURN_SAMPLES) of the utterance so far.
    pub audio: Vec<f32>,
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
    /// Id of the latest [`VerdictRequest`] (the pause it asks about, while it lasts).
    asked_id: u64,
    /// The latest transcript form and the time of the pause it was read at.
    hint: Option<(Duration, TranscriptForm)>,
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
            asked_id: 0,
            hint: None,
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
                    Phase::Speaking | Phase::Paused(_) => {
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
            (VadEvent::SpeechStart { .. }, Phase::Paused(_)) => {
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
                self.phase = Phase::Paused(Pause::new(speech_end));
            }
            _ => {}
        }
    }

    /// The next finished turn, if any. While a pause lasts this asks `model` about the whole
    /// utterance so far (pre-roll, speech, and the silence so far, as pipecat feeds Smart Turn)
    /// when speech ends and again every [`TurnConfig::reask_every_ms`]; the turn ends once the
    /// latest probability reaches the threshold in force, or silence reaches its limit. Model
    /// errors are kept for [`take_model_error`](EndOfTurn::take_model_error) and leave silence
    /// timing in charge.
    pub fn poll(&mut self, now: Duration, model: &mut dyn TurnModel) -> Option<TurnEnd> {
        if let Some(request) = self.take_request() {
            let verdict = model.predict(&request.audio);
            self.on_verdict(request.id, verdict);
        }
        self.poll_decision(now)
    }

    /// The question for the end-of-turn model the pause needs now, if any: when speech ends,
    /// then every [`TurnConfig::reask_every_ms`] of silence, one at a time (the asynchronous form
    /// of [`EndOfTurn::poll`]: ask the model elsewhere, answer with [`EndOfTurn::on_verdict`],
    /// and call [`EndOfTurn::poll_decision`] as time goes on).
    pub fn take_request(&mut self) -> Option<VerdictRequest> {
        let Phase::Paused(pause) = &mut self.phase else {
            return None;
        };
        let silence = self.clock.saturating_sub(pause.speech_end);
        if pause.in_flight || silence < pause.next_ask {
            return None;
        }
        pause.in_flight = true;
        pause.asks += 1;
        pause.next_ask = silence + Duration::from_millis(u64::from(self.config.reask_every_ms));
        self.asked_id += 1;
        let window = super::SMART_TURN_SAMPLES.min(self.buffer.len());
        Some(VerdictRequest {
            id: self.asked_id,
            audio: self.buffer[self.buffer.len() - window..].to_vec(),
        })
    }

    /// The model's answer to request `id`: the turn ends at the next
    /// [`EndOfTurn::poll_decision`] if the probability reaches the threshold then. An answer
    /// about a pause that is over (speech resumed, the turn ended) is ignored; an error leaves
    /// silence timing in charge and is kept for [`EndOfTurn::take_model_error`].
    pub fn on_verdict(&mut self, id: u64, verdict: Result<f32, TurnError>) {
        let Phase::Paused(pause) = &mut self.phase else {
            return;
        };
        if id != self.asked_id || !pause.in_flight {
            return;
        }
        pause.in_flight = false;
        match verdict {
            Ok(probability) => {
                tracing::trace!(probability, asks = pause.asks, "end-of-turn verdict");
                pause.probability = Some(probability);
            }
            Err(error) => {
                tracing::warn!(%error, "end-of-turn model failed; using silence timing");
                // No more questions about this pause: silence timing decides it.
                pause.next_ask = Duration::MAX;
                self.model_error = Some(error);
            }
        }
    }

    /// What the words before the pause that began at `pause_at` read like (from a speculative
    /// transcript): moves the threshold and the silence limit of that pause, if it is still
    /// the one in progress or about to be reported.
    pub fn on_transcript(&mut self, pause_at: Duration, form: TranscriptForm) {
        self.hint = Some((pause_at, form));
    }

    /// The next finished turn, if any, at time `now`: a split monologue, a pause whose latest
    /// probability reached the threshold in force, or one whose silence reached its limit.
    pub fn poll_decision(&mut self, now: Duration) -> Option<TurnEnd> {
        if let Some(turn) = self.finished.pop_front() {
            return Some(turn);
        }
        let Phase::Paused(pause) = self.phase else {
            return None;
        };
        let silence = now.saturating_sub(pause.speech_end);
        let form = self.form_of(&pause);
        let threshold = self.threshold(silence, form);
        let signals = TurnSignals {
            probability: pause.probability,
            asks: pause.asks,
            threshold,
            form,
            eagerness: self.config.eagerness,
        };
        // Unless the model is sure, its verdict waits a while for the pause's transcript: a
        // voice it misjudges ("my account number is", in espeak-ng) is read right by the words.
        let transcript_due = self.hint_of(&pause).is_none()
            && silence < Duration::from_millis(u64::from(self.config.transcript_wait_ms));
        if let Some(probability) = pause
            .probability
            .filter(|p| *p >= threshold && (*p >= SURE_THRESHOLD || !transcript_due))
        {
            let reason = TurnEndReason::Complete { probability };
            return Some(self.end_turn(now, pause.speech_end, reason, signals));
        }
        let (limit, reason) = self.silence_limit(form);
        if silence >= limit {
            return Some(self.end_turn(now, pause.speech_end, reason, signals));
        }
        None
    }

    /// The transcript form known for `pause`.
    fn form_of(&self, pause: &Pause) -> TranscriptForm {
        self.hint_of(pause).unwrap_or_default()
    }

    /// The transcript form that came in for `pause`, if one did.
    fn hint_of(&self, pause: &Pause) -> Option<TranscriptForm> {
        match self.hint {
            Some((at, form)) if at.abs_diff(pause.speech_end) <= HINT_TOLERANCE => Some(form),
            _ => None,
        }
    }

    /// The probability that ends the turn after `silence`, given the transcript's form.
    fn threshold(&self, silence: Duration, form: TranscriptForm) -> f32 {
        let config = &self.config;
        let max_silence = Duration::from_millis(u64::from(config.max_silence_ms.max(1)));
        let progress = (silence.as_secs_f32() / max_silence.as_secs_f32()).min(1.0);
        let decayed = config.complete_threshold
            - (config.complete_threshold - config.final_threshold) * progress;
        let lowest = config.final_threshold / 2.0;
        match form {
            TranscriptForm::Unclear => decayed,
            TranscriptForm::Question => (decayed - QUESTION_RELIEF).max(lowest),
            TranscriptForm::Statement => (decayed - STATEMENT_RELIEF).max(lowest),
            TranscriptForm::Incomplete => INCOMPLETE_THRESHOLD.max(config.complete_threshold),
        }
    }

    /// The silence that ends the turn whatever the model says, given the transcript's form.
    fn silence_limit(&self, form: TranscriptForm) -> (Duration, TurnEndReason) {
        let config = &self.config;
        let ms = |ms: u32| Duration::from_millis(u64::from(ms));
        let max = ms(config.max_silence_ms);
        match form {
            TranscriptForm::Question => (
                ms(config.question_silence_ms).min(max),
                TurnEndReason::TranscriptComplete,
            ),
            TranscriptForm::Statement => (
                ms(config.statement_silence_ms).min(max),
                TurnEndReason::TranscriptComplete,
            ),
            TranscriptForm::Incomplete => (max, TurnEndReason::SilenceTimeout),
            TranscriptForm::Unclear => (max, TurnEndReason::SilenceTimeout),
        }
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
        self.hint = None;
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
        let signals = TurnSignals {
            eagerness: self.config.eagerness,
            ..TurnSignals::default()
        };
        let turn = self.end_turn(now, split_at, TurnEndReason::MaxDuration, signals);
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
    fn end_turn(
        &mut self,
        now: Duration,
        speech_end: Duration,
        reason: TurnEndReason,
        signals: TurnSignals,
    ) -> TurnEnd {
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
            signals,
        }
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
