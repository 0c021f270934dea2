//! The `Stage` contract every synchronous pipeline step implements, and [`run_stage`], the helper
//! tests drive a stage with.
//!
//! A stage is a step machine: [`Stage::push`] gives it one input with the media time `now`,
//! [`Stage::poll`] takes its outputs one at a time, and [`Stage::on_interrupt`] (required: there is
//! no default) voids the work of a turn and every older one. Interrupts never go through `push`:
//! they reach the stage at once, however much data it holds (system frames bypass data queues).
//! Stages never read a clock and never block, so the same code runs in real and in virtual time.
//!
//! | stage | input | output | on interrupt |
//! |---|---|---|---|
//! | [`FrameResampler`] | [`AudioFrame`] | 20 ms [`AudioFrame`]s at the target rate | drops buffered audio and filter state |
//! | [`Ingest`](crate::ingest::Ingest) | client [`AudioFrame`] | [`IngestEvent`](crate::ingest::IngestEvent) | nothing: the person's speech is never void |
//! | [`SentenceChunker`](crate::chunker::SentenceChunker) | [`TextFrame`] tokens | [`TextFrame`] chunks | drops buffered text of the turn |
//! | [`Egress`](crate::egress::Egress) | [`SpeechSegment`] | 20 ms [`AudioFrame`]s | drops queued speech of the turn |
//!
//! ```
//! use dartmouth_voice::chunker::SentenceChunker;
//! use dartmouth_voice::frame::{SystemFrame, TurnId};
//! use dartmouth_voice::stage::{StageInput, TextFrame, run_stage};
//!
//! let token = |turn, text: &str| StageInput::Data(TextFrame::token(TurnId(turn), text));
//! let out = run_stage(
//!     &mut SentenceChunker::new(),
//!     [
//!         token(1, "It was late. There"),
//!         StageInput::System(SystemFrame::Interrupt { turn: TurnId(1) }),
//!         token(2, "Yes. "),
//!     ],
//! )
//! .unwrap();
//! let texts: Vec<_> = out.iter().map(|f| (f.turn, f.text.as_str())).collect();
//! assert_eq!(texts, [(TurnId(1), "It was late."), (TurnId(2), "Yes.")]);
//! ```

use std::time::Duration;

use crate::frame::{AudioFrame, FRAME_DURATION, FrameError, SystemFrame, TurnId, f32_to_i16};
use crate::resample::{ResampleError, StreamResampler};

/// One synchronous pipeline step.
pub trait Stage {
    /// What the stage consumes.
    type In;
    /// What the stage produces.
    type Out;
    /// Why an input could not be processed (the stage stays usable).
    type Error: std::error::Error;

    /// Processes one input at media time `now`; outputs wait for [`Stage::poll`].
    fn push(&mut self, now: Duration, input: Self::In) -> Result<(), Self::Error>;

    /// The next output, oldest first, or `None` until more input arrives.
    fn poll(&mut self) -> Option<Self::Out>;

    /// Voids the work of `turn` and all older turns: nothing of theirs comes out afterwards.
    fn on_interrupt(&mut self, turn: TurnId);
}

/// One step of a stage's input: data, or a system frame delivered around the data queue.
#[derive(Debug, Clone, PartialEq)]
pub enum StageInput<T> {
    /// Data for [`Stage::push`].
    Data(T),
    /// A control frame: `Interrupt` goes to [`Stage::on_interrupt`]; `Start`/`Stop` pass by.
    System(SystemFrame),
}

/// Text of an answer flowing from the LLM to TTS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextFrame {
    /// The turn the text answers.
    pub turn: TurnId,
    /// The text (a token going in, a speakable chunk coming out).
    pub text: String,
    /// The last text of the answer: the stage flushes what it holds.
    pub last: bool,
}

impl TextFrame {
    /// A piece of text that more will follow.
    pub fn token(turn: TurnId, text: impl Into<String>) -> Self {
        Self {
            turn,
            text: text.into(),
            last: false,
        }
    }

    /// The end of an answer (with any last text).
    pub fn last(turn: TurnId, text: impl Into<String>) -> Self {
        Self {
            turn,
            text: text.into(),
            last: true,
        }
    }
}

/// Synthesized speech for playback: mono samples at the track rate and the text they speak.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpeechSegment {
    /// The turn the speech answers.
    pub turn: TurnId,
    /// Mono samples at the egress rate.
    pub samples: Vec<i16>,
    /// The text the samples speak.
    pub text: String,
}

/// Drives `stage` through `frames_in` (the `n`-th data input at media time `n × 20 ms`), taking
/// every output after each step, and returns the outputs in order. An `Interrupt` system frame
/// calls [`Stage::on_interrupt`] between data inputs, as it would arrive in a live pipeline.
pub fn run_stage<S: Stage>(
    stage: &mut S,
    frames_in: impl IntoIterator<Item = StageInput<S::In>>,
) -> Result<Vec<S::Out>, S::Error> {
    let mut out = Vec::new();
    let mut now = Duration::ZERO;
    for input in frames_in {
        match input {
            StageInput::Data(data) => {
                stage.push(now, data)?;
                now += FRAME_DURATION;
            }
            StageInput::System(SystemFrame::Interrupt { turn }) => stage.on_interrupt(turn),
            StageInput::System(SystemFrame::Start | SystemFrame::Stop) => {}
        }
        out.extend(std::iter::from_fn(|| stage.poll()));
    }
    Ok(out)
}

/// Why a frame could not be resampled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameResampleError {
    /// The frame's rate is not the resampler's input rate.
    #[error("frame at {got} Hz given to a {expected} Hz resampler")]
    WrongRate {
        /// The resampler's input rate.
        expected: u32,
        /// The frame's rate.
        got: u32,
    },
    /// The resampler failed.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// An output frame could not be built.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// [`StreamResampler`] as a stage of audio frames: mono frames at one rate in, 20 ms mono frames
/// at another out (stereo input is averaged). Buffers are sized at construction.
#[derive(Debug)]
pub struct FrameResampler {
    resampler: StreamResampler,
    mono: Vec<f32>,
    /// Resampled samples not yet handed out as a whole frame.
    ready: Vec<f32>,
    /// Offset of the first sample of `ready` still to hand out.
    offset: usize,
    frame_samples: usize,
    /// Media time of the next output frame.
    next_timestamp: Option<Duration>,
}

impl FrameResampler {
    /// A stage converting `from_hz` frames to 20 ms `to_hz` frames.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        let resampler = StreamResampler::new(from_hz, to_hz, crate::frame::MAX_FRAME_SAMPLES)?;
        let capacity = resampler.max_output_len() * 2;
        Ok(Self {
            mono: Vec::with_capacity(crate::frame::MAX_FRAME_SAMPLES),
            ready: Vec::with_capacity(capacity),
            offset: 0,
            frame_samples: (to_hz / 50) as usize,
            next_timestamp: None,
            resampler,
        })
    }
}

impl Stage for FrameResampler {
    type In = AudioFrame;
    type Out = AudioFrame;
    type Error = FrameResampleError;

    fn push(&mut self, _now: Duration, frame: AudioFrame) -> Result<(), FrameResampleError> {
        if frame.sample_rate() != self.resampler.from_hz() {
            return Err(FrameResampleError::WrongRate {
                expected: self.resampler.from_hz(),
                got: frame.sample_rate(),
            });
        }
        self.next_timestamp.get_or_insert(frame.timestamp);
        self.mono.clear();
        frame.extend_mono_f32(&mut self.mono);
        self.ready.drain(..self.offset);
        self.offset = 0;
        self.resampler.process(&self.mono, &mut self.ready)?;
        Ok(())
    }

    fn poll(&mut self) -> Option<AudioFrame> {
        if self.ready.len() - self.offset < self.frame_samples {
            return None;
        }
        let mut samples = [0i16; crate::frame::MAX_FRAME_SAMPLES];
        let block = &self.ready[self.offset..self.offset + self.frame_samples];
        for (slot, &s) in samples.iter_mut().zip(block) {
            *slot = f32_to_i16(s);
        }
        self.offset += self.frame_samples;
        let timestamp = self.next_timestamp.unwrap_or_default();
        self.next_timestamp = Some(timestamp + FRAME_DURATION);
        AudioFrame::new(
            &samples[..self.frame_samples],
            self.resampler.to_hz(),
            1,
            timestamp,
        )
        .ok()
    }

    fn on_interrupt(&mut self, _turn: TurnId) {
        self.resampler.reset();
        self.ready.clear();
        self.offset = 0;
        self.next_timestamp = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, n: usize, at: Duration) -> AudioFrame {
        let samples: Vec<i16> = (0..rate as usize / 50)
            .map(|i| {
                let t = (n * rate as usize / 50 + i) as f32 / rate as f32;
                f32_to_i16(0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin())
            })
            .collect();
        AudioFrame::new(&samples, rate, 1, at).unwrap()
    }

    #[test]
    fn frames_come_out_whole_at_the_target_rate_with_running_timestamps() {
        let mut stage = FrameResampler::new(48_000, 16_000).unwrap();
        let input = (0..50).map(|n| StageInput::Data(tone(48_000, n, FRAME_DURATION * n as u32)));
        let out = run_stage(&mut stage, input).unwrap();
        // One second in; the filter delay (5 ms) holds back at most one frame.
        assert!((49..=50).contains(&out.len()), "{}", out.len());
        assert!(
            out.iter()
                .all(|f| f.sample_rate() == 16_000 && f.duration() == FRAME_DURATION)
        );
        assert_eq!(out[3].timestamp, FRAME_DURATION * 3);
        let loud = out[10]
            .samples()
            .iter()
            .map(|&s| i32::from(s).abs())
            .max()
            .unwrap();
        assert!(loud > 15_000, "the tone survives: peak {loud}");
    }

    #[test]
    fn after_an_interrupt_no_buffered_audio_comes_out() {
        let mut stage = FrameResampler::new(48_000, 24_000).unwrap();
        let out = run_stage(
            &mut stage,
            [
                StageInput::Data(tone(48_000, 0, Duration::ZERO)),
                StageInput::System(SystemFrame::Interrupt { turn: TurnId(1) }),
            ],
        )
        .unwrap();
        assert!(out.len() <= 1);
        assert!(
            stage.poll().is_none(),
            "nothing held back survives the interrupt"
        );
        let wrong = stage.push(Duration::ZERO, tone(16_000, 0, Duration::ZERO));
        assert!(matches!(
            wrong,
            Err(FrameResampleError::WrongRate {
                expected: 48_000,
                got: 16_000
            })
        ));
    }
}
