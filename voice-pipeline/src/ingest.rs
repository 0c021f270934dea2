//! The listening half of the pipeline as one synchronous step machine: client audio at any
//! supported rate → 16 kHz → Silero VAD → end-of-turn. Time is the 16 kHz sample position of the
//! audio pushed so far, so the same code runs in real time and in virtual time.

use std::collections::VecDeque;
use std::time::Duration;

use crate::frame::{AudioFrame, TurnId};
use crate::resample::{ResampleError, StreamResampler};
use crate::stage::Stage;
use crate::turn::{EndOfTurn, TurnConfig, TurnEnd, TurnModel};
use crate::vad::{self, CHUNK_SAMPLES, SileroVad, VadConfig, VadError, VadEvent, VadSegmenter};

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

/// Resample → VAD → end-of-turn.
pub struct Ingest {
    resampler: Option<StreamResampler>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    /// 16 kHz samples not yet making a whole VAD chunk.
    pending: Vec<f32>,
    vad: SileroVad,
    segmenter: VadSegmenter,
    turn: EndOfTurn,
    turn_model: Box<dyn TurnModel + Send>,
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
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("position", &self.position)
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
            resampler: None,
            mono: Vec::with_capacity(crate::frame::MAX_FRAME_SAMPLES),
            resampled: Vec::with_capacity(4 * crate::frame::MAX_FRAME_SAMPLES),
            pending: Vec::with_capacity(2 * CHUNK_SAMPLES),
            vad,
            segmenter: VadSegmenter::new(vad_config),
            turn: EndOfTurn::new(turn_config),
            turn_model,
            position: 0,
            events: VecDeque::with_capacity(EVENT_CAPACITY),
            speech_threshold: vad_config.threshold,
            silence_threshold: vad_config.negative_threshold,
            pause: None,
            speech_since_report: 0,
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

    /// Processes one frame of client audio (any supported rate, mono or stereo).
    pub fn push(&mut self, frame: &AudioFrame) -> Result<(), IngestError> {
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
        let mut offset = 0;
        while self.pending.len() - offset >= CHUNK_SAMPLES {
            let chunk = &self.pending[offset..offset + CHUNK_SAMPLES];
            offset += CHUNK_SAMPLES;
            let probability = self.vad.probability(chunk)?;
            let now = samples_to_time(self.position);
            self.turn.push_audio(now, chunk);
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
            let now = samples_to_time(self.position);
            if let Some(end) = self.turn.poll(now, self.turn_model.as_mut()) {
                self.emit(IngestEvent::TurnEnded(end));
            }
        }
        self.pending.drain(..offset);
        Ok(())
    }

    /// Tracks silence inside speech (like the segmenter: a chunk between the thresholds neither
    /// starts nor breaks it) and reports a pause once it lasts [`PAUSE_REPORT_AFTER`].
    fn follow_pause(&mut self, probability: f32) {
        if !self.segmenter.is_speaking() || probability >= self.speech_threshold {
            if let Some((_, true)) = self.pause.take()
                && self.segmenter.is_speaking()
            {
                self.emit(IngestEvent::PauseEnded {
                    at: samples_to_time(self.position),
                });
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
