//! The listening half of the pipeline as one synchronous step machine: client audio at any
//! supported rate → 16 kHz → Silero VAD → end-of-turn. Time is the 16 kHz sample position of the
//! audio pushed so far, so the same code runs in real time and in virtual time.

use std::collections::VecDeque;
use std::time::Duration;

use crate::frame::{AudioFrame, TurnId};
use crate::resample::{ResampleError, StreamResampler};
use crate::stage::Stage;
use crate::turn::{
    EndOfTurn, TranscriptForm, TurnConfig, TurnEnd, TurnError, TurnModel, VerdictRequest,
};
use crate::vad::{
    self, CHUNK_SAMPLES, SileroVad, VadConfig, VadError, VadEvent, VadSegmenter, VadStream,
};

/// Rate the listening models run at.
pub const MODEL_RATE: u32 = vad::SAMPLE_RATE;
/// Events an ingest step machine holds before the oldest are dropped (they are polled every frame).
const EVENT_CAPACITY: usize = 16;
/// Silence within speech that makes a pause worth reporting ([`IngestEvent::PauseStarted`]):
/// two VAD chunks, so a single quiet chunk inside a word does not count.
pub const PAUSE_REPORT_AFTER: Duration = Duration::from_millis(64);
/// Speech between two [`IngestEvent::SpeechSoFar`] reports.
pub const SPEECH_SO_FAR_EVERY: Duration = Duration::from_millis(400);

/// What the listening side reports.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// The first chunk that sounds like speech while nobody speaks: the VAD has not confirmed
    /// an onset yet (that takes [`VadConfig::min_speech_ms`]), but an agent talking should hold
    /// its breath now. A [`IngestEvent::SpeechStarted`] follows if it was speech.
    VoiceOnset {
        /// Media time of the chunk.
        at: Duration,
    },
    /// The person started speaking (VAD onset) at this media time.
    SpeechStarted {
        /// Media time of the onset.
        at: Duration,
    },
    /// The person may be stopping: silence began inside speech at `at` and has lasted
    /// [`PAUSE_REPORT_AFTER`], before the VAD confirms the end. A speculative transcription of
    /// `audio` can start now; if the [`IngestEvent::SpeechEnded`] that follows has the same
    /// `at`, no speech came in between and the turn's audio says the same.
    PauseStarted {
        /// Media time of the first silent chunk.
        at: Duration,
        /// The utterance so far at 16 kHz (pre-roll, speech and the pause's first chunks).
        audio: Vec<f32>,
    },
    /// Speech went on after a reported pause: a speculation started at that pause is stale.
    PauseEnded {
        /// Media time speech resumed.
        at: Duration,
    },
    /// The person has been speaking for another [`SPEECH_SO_FAR_EVERY`]: the utterance so far,
    /// for an interim transcript (which also serves as the next transcription's draft).
    SpeechSoFar {
        /// Media time of the end of `audio`.
        at: Duration,
        /// The utterance so far at 16 kHz.
        audio: Vec<f32>,
    },
    /// The person stopped speaking (VAD end) at this media time.
    SpeechEnded {
        /// Media time of the end.
        at: Duration,
    },
    /// A whole user turn is over.
    TurnEnded(TurnEnd),
}

/// Why audio could not be processed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The frame's rate cannot be converted.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// Voice activity detection failed.
    #[error(transparent)]
    Vad(#[from] VadError),
}

/// One session's listening state, without models: client audio in, resampled to 16 kHz and
/// cut into VAD chunks; the VAD's probability for each chunk drives the speech segmenter, the
/// pause and interim reports and the end-of-turn detector, whose model questions go out as
/// [`VerdictRequest`]s. Whoever holds the models (the synchronous [`Ingest`], or the
/// [`ListeningService`](crate::listening::ListeningService) batching many sessions) drives it:
///
/// 1. [`Listener::push`] a frame;
/// 2. while [`Listener::vad_input`] has a chunk, run the VAD on it and
///    [`Listener::on_probability`];
/// 3. answer [`Listener::take_verdict_request`] with [`Listener::on_verdict`] (now or later);
/// 4. [`Listener::poll`] the events.
pub struct Listener {
    resampler: Option<StreamResampler>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    /// 16 kHz samples not yet run through the VAD, from `consumed` on.
    pending: Vec<f32>,
    consumed: usize,
    vad: VadStream,
    segmenter: VadSegmenter,
    turn: EndOfTurn,
    /// 16 kHz samples processed by the VAD.
    position: u64,
    events: VecDeque<IngestEvent>,
    /// VAD thresholds, to follow pauses the way the segmenter does.
    speech_threshold: f32,
    silence_threshold: f32,
    /// Start of the silence run inside speech, and whether it was reported.
    pause: Option<(u64, bool)>,
    /// Speech samples (pauses excluded) since the last [`IngestEvent::SpeechSoFar`].
    speech_since_report: u64,
    /// A [`IngestEvent::VoiceOnset`] was reported for the run of speech-like chunks in progress.
    onset_reported: bool,
    /// The end-of-turn detector is judging the pause in progress (it lasted
    /// [`TurnConfig::judge_after_ms`]) before the VAD confirmed the end of speech.
    judging: bool,
    /// [`TurnConfig::judge_after_ms`] as a duration.
    judge_after: Duration,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener at media time zero.
    pub fn new(vad_config: VadConfig, turn_config: TurnConfig) -> Self {
        Self {
            resampler: None,
            mono: Vec::with_capacity(crate::frame::MAX_FRAME_SAMPLES),
            resampled: Vec::with_capacity(4 * crate::frame::MAX_FRAME_SAMPLES),
            pending: Vec::with_capacity(4 * CHUNK_SAMPLES),
            consumed: 0,
            vad: VadStream::default(),
            segmenter: VadSegmenter::new(vad_config),
            turn: EndOfTurn::new(turn_config),
            position: 0,
            events: VecDeque::with_capacity(EVENT_CAPACITY),
            speech_threshold: vad_config.threshold,
            silence_threshold: vad_config.negative_threshold,
            pause: None,
            speech_since_report: 0,
            onset_reported: false,
            judging: false,
            judge_after: Duration::from_millis(u64::from(turn_config.judge_after_ms)),
        }
    }

    /// Media time of the audio processed so far.
    pub fn now(&self) -> Duration {
        samples_to_time(self.position)
    }

    /// Whether the person is speaking, as far as the VAD knows.
    pub fn is_speech(&self) -> bool {
        self.segmenter.is_speaking()
    }

    /// Takes one frame of client audio (any supported rate, mono or stereo), resampled to
    /// 16 kHz and queued for the VAD.
    pub fn push(&mut self, frame: &AudioFrame) -> Result<(), IngestError> {
        if self.consumed > 0 {
            self.pending.drain(..self.consumed);
            self.consumed = 0;
        }
        self.mono.clear();
        frame.extend_mono_f32(&mut self.mono);
        let rate = frame.sample_rate();
        if self.resampler.as_ref().map(StreamResampler::from_hz) != Some(rate) {
            self.resampler = Some(StreamResampler::new(
                rate,
                MODEL_RATE,
                crate::frame::MAX_FRAME_SAMPLES,
            )?);
        }
        let resampler = self.resampler.as_mut().expect("set above");
        self.resampled.clear();
        resampler.process(&self.mono, &mut self.resampled)?;
        self.pending.extend_from_slice(&self.resampled);
        Ok(())
    }

    /// The VAD state and the next whole chunk, if one is waiting.
    pub fn vad_input(&mut self) -> Option<(&mut VadStream, &[f32])> {
        let chunk = self
            .pending
            .get(self.consumed..self.consumed + CHUNK_SAMPLES)?;
        Some((&mut self.vad, chunk))
    }

    /// The VAD's probability for the chunk [`Listener::vad_input`] gave: moves the segmenter,
    /// the pause and interim reports and the end-of-turn detector on by one chunk.
    pub fn on_probability(&mut self, probability: f32) {
        let Some(chunk) = self
            .pending
            .get(self.consumed..self.consumed + CHUNK_SAMPLES)
        else {
            return;
        };
        // The detector is told the time of the end of the chunk, like every event below.
        let now = self.chunk_end();
        self.turn.push_audio(now, chunk);
        self.consumed += CHUNK_SAMPLES;
        self.follow_onset(probability);
        self.follow_pause(probability);
        self.position += CHUNK_SAMPLES as u64;
        self.follow_speech();
        if let Some(event) = self.segmenter.push(probability) {
            self.turn.push_vad(now, event);
            self.emit(match event {
                VadEvent::SpeechStart { at_sample } => IngestEvent::SpeechStarted {
                    at: samples_to_time(at_sample),
                },
                VadEvent::SpeechEnd { at_sample } => IngestEvent::SpeechEnded {
                    at: samples_to_time(at_sample),
                },
            });
        }
        self.decide();
    }

    /// The question for the end-of-turn model, when a pause needs one.
    pub fn take_verdict_request(&mut self) -> Option<VerdictRequest> {
        self.turn.take_request()
    }

    /// The end-of-turn model's answer to request `id` (a stale one is ignored).
    pub fn on_verdict(&mut self, id: u64, verdict: Result<f32, TurnError>) {
        self.turn.on_verdict(id, verdict);
        self.decide();
    }

    /// The latest end-of-turn model failure, if any (silence timing took over).
    pub fn take_model_error(&mut self) -> Option<TurnError> {
        self.turn.take_model_error()
    }

    /// What a speculative transcript of the speech before the pause that began at `pause_at`
    /// reads like ([`IngestEvent::PauseStarted`]'s `at`): the end-of-turn detector weighs it.
    pub fn on_transcript(&mut self, pause_at: Duration, form: TranscriptForm) {
        self.turn.on_transcript(pause_at, form);
        self.decide();
    }

    fn decide(&mut self) {
        let now = samples_to_time(self.position);
        if let Some(end) = self.turn.poll_decision(now) {
            self.emit(IngestEvent::TurnEnded(end));
        }
    }

    /// Media time of the end of the chunk being processed.
    fn chunk_end(&self) -> Duration {
        samples_to_time(self.position + CHUNK_SAMPLES as u64)
    }

    /// Reports the first speech-like chunk of a run while nobody speaks.
    fn follow_onset(&mut self, probability: f32) {
        if self.segmenter.is_speaking() || probability < self.speech_threshold {
            self.onset_reported = false;
        } else if !self.onset_reported {
            self.onset_reported = true;
            self.emit(IngestEvent::VoiceOnset {
                at: samples_to_time(self.position),
            });
        }
    }

    /// Tracks silence inside speech (like the segmenter: a chunk between the thresholds neither
    /// starts nor breaks it) and reports a pause once it lasts [`PAUSE_REPORT_AFTER`].
    /// Once the pause lasts [`TurnConfig::judge_after_ms`], the end-of-turn detector starts
    /// judging it (ahead of the VAD's confirmation); if speech resumes, the turn goes on, or a
    /// new one starts if the detector had already ended it.
    fn follow_pause(&mut self, probability: f32) {
        if !self.segmenter.is_speaking() || probability >= self.speech_threshold {
            let resumed = self.segmenter.is_speaking();
            if let Some((_, true)) = self.pause.take()
                && resumed
            {
                self.emit(IngestEvent::PauseEnded {
                    at: samples_to_time(self.position),
                });
            }
            if std::mem::take(&mut self.judging) && resumed {
                let turn_ended = !self.turn.in_turn();
                let at_sample = self.position;
                self.turn
                    .push_vad(self.chunk_end(), VadEvent::SpeechStart { at_sample });
                if turn_ended {
                    // The person went on after the turn was given up: that is new speech.
                    self.emit(IngestEvent::SpeechStarted {
                        at: samples_to_time(at_sample),
                    });
                }
            }
            return;
        }
        if probability < self.silence_threshold {
            self.pause.get_or_insert((self.position, false));
        }
        let Some((since, reported)) = self.pause else {
            return;
        };
        let lasted = samples_to_time(self.position + CHUNK_SAMPLES as u64 - since);
        if !self.judging && lasted >= self.judge_after.max(PAUSE_REPORT_AFTER) {
            self.judging = true;
            self.turn
                .push_vad(self.chunk_end(), VadEvent::SpeechEnd { at_sample: since });
        }
        if !reported && lasted >= PAUSE_REPORT_AFTER {
            self.pause = Some((since, true));
            let audio = self.turn.utterance().to_vec();
            self.emit(IngestEvent::PauseStarted {
                at: samples_to_time(since),
                audio,
            });
        }
    }

    /// Counts speech outside pauses and reports the utterance so far every
    /// [`SPEECH_SO_FAR_EVERY`] of it.
    fn follow_speech(&mut self) {
        if !self.segmenter.is_speaking() {
            self.speech_since_report = 0;
            return;
        }
        if self.pause.is_some() {
            return;
        }
        self.speech_since_report += CHUNK_SAMPLES as u64;
        if samples_to_time(self.speech_since_report) >= SPEECH_SO_FAR_EVERY {
            self.speech_since_report = 0;
            let audio = self.turn.utterance().to_vec();
            self.emit(IngestEvent::SpeechSoFar {
                at: samples_to_time(self.position),
                audio,
            });
        }
    }

    /// The next event, oldest first.
    pub fn poll(&mut self) -> Option<IngestEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, event: IngestEvent) {
        if self.events.len() == EVENT_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// Resample → VAD → end-of-turn for one session, with its own models, run inline: a
/// [`Listener`] driven synchronously (tools, tests, single sessions).
pub struct Ingest {
    listener: Listener,
    vad: SileroVad,
    turn_model: Box<dyn TurnModel + Send>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Builds the listening chain around loaded models.
    pub fn new(
        vad: SileroVad,
        turn_model: Box<dyn TurnModel + Send>,
        vad_config: VadConfig,
        turn_config: TurnConfig,
    ) -> Self {
        Self {
            listener: Listener::new(vad_config, turn_config),
            vad,
            turn_model,
        }
    }

    /// Media time of the audio processed so far.
    pub fn now(&self) -> Duration {
        self.listener.now()
    }

    /// Whether the person is speaking, as far as the VAD knows.
    pub fn is_speech(&self) -> bool {
        self.listener.is_speech()
    }

    /// Processes one frame of client audio (any supported rate, mono or stereo).
    pub fn push(&mut self, frame: &AudioFrame) -> Result<(), IngestError> {
        self.listener.push(frame)?;
        let mut probability = [0.0];
        while let Some(input) = self.listener.vad_input() {
            let batch: &mut [(&mut VadStream, &[f32])] = &mut [input];
            self.vad.run_batch(batch, &mut probability)?;
            self.listener.on_probability(probability[0]);
            if let Some(request) = self.listener.take_verdict_request() {
                let verdict = self.turn_model.predict(&request.audio);
                self.listener.on_verdict(request.id, verdict);
            }
        }
        Ok(())
    }

    /// The next event, oldest first.
    pub fn poll(&mut self) -> Option<IngestEvent> {
        self.listener.poll()
    }

    /// See [`Listener::on_transcript`].
    pub fn on_transcript(&mut self, pause_at: Duration, form: TranscriptForm) {
        self.listener.on_transcript(pause_at, form);
    }
}

impl Stage for Ingest {
    type In = AudioFrame;
    type Out = IngestEvent;
    type Error = IngestError;

    /// Time is the position of the audio pushed, so `now` is not needed.
    fn push(&mut self, _now: Duration, frame: AudioFrame) -> Result<(), IngestError> {
        Ingest::push(self, &frame)
    }

    fn poll(&mut self) -> Option<IngestEvent> {
        Ingest::poll(self)
    }

    /// Nothing to void: the listening side holds the person's speech, never an agent's answer,
    /// and the speech that caused the interrupt must go on being heard.
    fn on_interrupt(&mut self, _turn: TurnId) {}
}

fn samples_to_time(samples: u64) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(MODEL_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener fed silence-valued audio whose VAD probabilities the test scripts.
    struct Scripted {
        listener: Listener,
        events: Vec<IngestEvent>,
    }

    impl Scripted {
        fn new() -> Self {
            Self {
                listener: Listener::new(VadConfig::default(), TurnConfig::default()),
                events: Vec::new(),
            }
        }

        /// `chunks` VAD chunks (32 ms) at `probability`; the end-of-turn model answers
        /// `verdict` to every question at once.
        fn chunks(&mut self, chunks: usize, probability: f32, verdict: f32) {
            let frame = AudioFrame::new(&[0; CHUNK_SAMPLES], MODEL_RATE, 1, Duration::ZERO)
                .expect("a valid frame");
            for _ in 0..chunks {
                self.listener.push(&frame).unwrap();
                while self.listener.vad_input().is_some() {
                    self.listener.on_probability(probability);
                    if let Some(request) = self.listener.take_verdict_request() {
                        self.listener.on_verdict(request.id, Ok(verdict));
                    }
                }
                while let Some(event) = self.listener.poll() {
                    self.events.push(event);
                }
            }
        }

        fn turns(&self) -> Vec<&TurnEnd> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    IngestEvent::TurnEnded(end) => Some(end),
                    _ => None,
                })
                .collect()
        }

        fn position_of(&self, wanted: impl Fn(&IngestEvent) -> bool) -> Option<usize> {
            self.events.iter().position(wanted)
        }
    }

    #[test]
    fn a_pause_is_judged_before_the_vad_confirms_the_end_of_speech() {
        let mut s = Scripted::new();
        s.chunks(5, 0.0, 0.9);
        s.chunks(30, 0.9, 0.9); // ~1 s of speech
        s.chunks(15, 0.0, 0.9); // 480 ms of silence
        let ended = s
            .position_of(|e| matches!(e, IngestEvent::TurnEnded(_)))
            .expect("the turn ended");
        let vad_end = s
            .position_of(|e| matches!(e, IngestEvent::SpeechEnded { .. }))
            .expect("the VAD ended speech");
        assert!(
            ended < vad_end,
            "decided before the VAD's 320 ms: {:?}",
            s.events
        );
        let IngestEvent::TurnEnded(end) = &s.events[ended] else {
            unreachable!()
        };
        let silence = end.decided_at - end.speech_end;
        assert!(
            silence >= Duration::from_millis(200) && silence < Duration::from_millis(260),
            "judged at {silence:?} of silence"
        );
    }

    #[test]
    fn speech_resuming_after_an_early_decision_is_a_new_turn() {
        let mut s = Scripted::new();
        s.chunks(30, 0.9, 0.9);
        s.chunks(8, 0.0, 0.9); // 256 ms: the detector decided, the VAD has not ended speech
        assert!(
            s.events
                .iter()
                .any(|e| matches!(e, IngestEvent::TurnEnded(_)))
        );
        s.events.clear();
        s.chunks(20, 0.9, 0.9);
        s.chunks(15, 0.0, 0.9);
        assert!(
            matches!(s.events.first(), Some(IngestEvent::PauseEnded { .. })),
            "{:?}",
            s.events
        );
        assert!(
            s.events
                .iter()
                .any(|e| matches!(e, IngestEvent::SpeechStarted { .. })),
            "the resumed speech is reported as new speech"
        );
        let turns = s.turns();
        assert_eq!(turns.len(), 1, "the rest is a turn of its own");
        assert!(turns[0].audio.len() >= 20 * CHUNK_SAMPLES);
    }

    #[test]
    fn a_pause_that_speech_interrupts_keeps_one_turn() {
        let mut s = Scripted::new();
        s.chunks(30, 0.9, 0.1); // the model says "not finished"
        s.chunks(8, 0.0, 0.1);
        s.chunks(20, 0.9, 0.9);
        s.chunks(15, 0.0, 0.9);
        let turns = s.turns();
        assert_eq!(turns.len(), 1);
        assert!(turns[0].audio.len() >= 58 * CHUNK_SAMPLES, "both parts");
    }
}
