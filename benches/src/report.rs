//! What `dartmouth bench pipeline` measured, and its tables.

use std::fmt;
use std::time::Duration;

use dartmouth_voice::agent::TurnRecord;

use crate::stats::{header, row};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A model failed to load.
    #[error("loading models: {0}")]
    Load(String),
    /// Synthesising the questions failed.
    #[error("synthesising questions: {0}")]
    Speech(String),
}

/// One completed turn and its latency split.
#[derive(Debug, Clone)]
pub struct TurnSample {
    /// The agent's record.
    pub record: TurnRecord,
    /// Speech-to-text compute after the end-of-turn decision (a speculative transcription
    /// started earlier counts only from the decision): → final transcript.
    pub stt_compute: Option<Duration>,
    /// LLM compute to the first speakable chunk: call → first TTS call (after the decision).
    pub llm_to_first_chunk: Option<Duration>,
    /// Text-to-speech compute of the first chunk: call → first audio (after the decision).
    pub tts_compute: Option<Duration>,
    /// The pipeline's own time on the critical path: transcript → LLM call, and first audio
    /// (or the decision, if later) → queued.
    pub overhead: Option<Duration>,
    /// The answer was started on the speculative transcript before the end-of-turn decision.
    pub preemptive: bool,
    /// Word error rate of the transcript against the question asked.
    pub wer: f64,
}

/// A turn that gave no answer.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What was asked.
    pub question: String,
    /// What went wrong.
    pub reason: String,
}

/// The measured distributions.
#[derive(Debug, Clone, Default)]
pub struct PipelineReport {
    /// One sample per completed turn.
    pub turns: Vec<TurnSample>,
    /// Turns (and barge-in runs) that failed, with the question asked.
    pub failures: Vec<Failure>,
    /// User frames the sessions' listening queues dropped.
    pub dropped_frames: u64,
    /// Agent audio played after the barge-in speech's onset (playback time), per barge-in.
    pub barge_in_reactions: Vec<Duration>,
    /// Feed speed relative to real time.
    pub feed_speed: f64,
    /// Wall time the listening chain (resample 48→16 kHz + VAD + end-of-turn) took per second of audio.
    pub listening_cost_per_second: Duration,
}

impl PipelineReport {
    fn collect(&self, pick: impl Fn(&TurnSample) -> Option<Duration>) -> Vec<Duration> {
        self.turns.iter().filter_map(pick).collect()
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline benchmark: {} turns answered, {} failed, fed at {:.1}x real time, {} user frames dropped",
            self.turns.len(),
            self.failures.len(),
            self.feed_speed,
            self.dropped_frames
        )?;
        let wers: Vec<f64> = self.turns.iter().map(|t| t.wer).collect();
        writeln!(
            f,
            "transcripts: mean WER {:.1}% against the questions asked ({} exact)",
            100.0 * wers.iter().sum::<f64>() / wers.len().max(1) as f64,
            wers.iter().filter(|&&w| w == 0.0).count()
        )?;
        writeln!(f, "\n{}", header("stage (ms from end of user speech)"))?;
        let rows: [(&str, Vec<Duration>); 5] = [
            (
                "end-of-turn decision (media time)",
                self.collect(|t| Some(t.record.end_of_turn)),
            ),
            ("STT final", self.collect(|t| t.record.stt_final)),
            (
                "LLM first token",
                self.collect(|t| t.record.llm_first_token),
            ),
            (
                "TTS first audio queued",
                self.collect(|t| t.record.tts_first_audio),
            ),
            (
                "first frame out = voice-to-voice",
                self.collect(|t| t.record.first_frame_out),
            ),
        ];
        for (label, samples) in &rows {
            writeln!(f, "{}", row(label, samples))?;
        }
        writeln!(
            f,
            "\n{} of {} answers started before the end-of-turn decision (preemptive); their model \
             time before it is hidden behind the wait",
            self.turns.iter().filter(|t| t.preemptive).count(),
            self.turns.len()
        )?;
        writeln!(f, "\n{}", header("split after the decision (ms)"))?;
        let split: [(&str, Vec<Duration>); 7] = [
            (
                "end-of-turn wait",
                self.collect(|t| Some(t.record.end_of_turn)),
            ),
            (
                "decision lag (listening compute)",
                self.collect(|t| Some(t.record.decision_lag)),
            ),
            (
                "STT compute after the decision",
                self.collect(|t| t.stt_compute),
            ),
            ("LLM to first chunk", self.collect(|t| t.llm_to_first_chunk)),
            ("TTS first chunk", self.collect(|t| t.tts_compute)),
            ("pipeline overhead", self.collect(|t| t.overhead)),
            (
                "egress wait (queued → pulled)",
                self.collect(|t| {
                    let queued = t.record.tts_first_audio?;
                    Some(t.record.first_frame_out?.saturating_sub(queued))
                }),
            ),
        ];
        for (label, samples) in &split {
            writeln!(f, "{}", row(label, samples))?;
        }
        writeln!(f, "\n{}", header("barge-in (playback ms)"))?;
        writeln!(
            f,
            "{}",
            row("speech onset → last agent frame", &self.barge_in_reactions)
        )?;
        writeln!(
            f,
            "\nlistening chain (48→16 kHz resample + Silero VAD + Smart Turn): {:.1} ms per second of audio ({:.2}% of one core)",
            self.listening_cost_per_second.as_secs_f64() * 1000.0,
            self.listening_cost_per_second.as_secs_f64() * 100.0
        )?;
        if !self.failures.is_empty() {
            writeln!(f, "\nfailed:")?;
            for failure in &self.failures {
                writeln!(f, "- {:?}: {}", failure.question, failure.reason)?;
            }
        }
        Ok(())
    }
}
