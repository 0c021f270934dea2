//! `dartmouth bench pipeline`: many spoken turns through the whole embedded pipeline, with the
//! per-stage latency distribution, and the CPU cost of the listening chain per second of audio.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dartmouth_models::ModelStore;
use dartmouth_voice::agent::{AgentConfig, AgentEvent, AgentSession, Providers, TurnRecord};
use dartmouth_voice::embedded::{
    EmbeddedLlmProvider, EspeakProvider, MoonshineProvider, PiperProvider,
};
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION, f32_to_i16, i16_to_f32};
use dartmouth_voice::ingest::Ingest;
use dartmouth_voice::provider::{CancellationToken, Tts, TtsEvent};
use dartmouth_voice::resample::resample_all;
use dartmouth_voice::turn::{SmartTurn, TurnConfig};
use dartmouth_voice::vad::{SileroVad, VadConfig};

/// Questions the benchmark asks, in turn.
const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky on a clear day?",
    "Can you recommend a good book?",
    "What is two plus two?",
    "Where is the Eiffel Tower?",
    "What do cats like to eat?",
    "How do I make a cup of tea?",
    "What is the largest ocean?",
    "Why do leaves fall in autumn?",
];
/// Input rate of the simulated client (WebRTC's Opus rate).
const CLIENT_RATE: u32 = 48_000;
/// Wall-clock pace of one fed 20 ms frame in fast mode.
const FAST_PACE: Duration = Duration::from_millis(4);

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

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    /// Turns to run (at least 50 for stable p99).
    pub turns: usize,
    /// Feed audio 5× faster than real time (latencies are still measured in wall time from the
    /// end-of-turn decision; the end-of-turn wait itself is media time).
    pub fast: bool,
}

impl Default for PipelineBenchOptions {
    fn default() -> Self {
        Self {
            turns: 50,
            fast: true,
        }
    }
}

/// The measured distributions.
#[derive(Debug, Clone, Default)]
pub struct PipelineReport {
    /// One record per completed turn.
    pub records: Vec<TurnRecord>,
    /// Turns that produced no answer in time.
    pub failed_turns: usize,
    /// Wall time the listening chain (resample 48→16 kHz + VAD + end-of-turn) took per second of audio.
    pub listening_cost_per_second: Duration,
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let collect = |pick: fn(&TurnRecord) -> Option<Duration>| -> Vec<Duration> {
            self.records.iter().filter_map(pick).collect()
        };
        writeln!(
            f,
            "pipeline benchmark: {} turns ({} failed)",
            self.records.len(),
            self.failed_turns
        )?;
        writeln!(f, "{}", crate::stats::header())?;
        writeln!(
            f,
            "{}",
            crate::stats::row(
                "end-of-turn decision (media time)",
                &collect(|r| Some(r.end_of_turn))
            )
        )?;
        writeln!(
            f,
            "{}",
            crate::stats::row("STT final", &collect(|r| r.stt_final))
        )?;
        writeln!(
            f,
            "{}",
            crate::stats::row("LLM first token", &collect(|r| r.llm_first_token))
        )?;
        writeln!(
            f,
            "{}",
            crate::stats::row(
                "TTS first audio = voice-to-voice",
                &collect(|r| r.tts_first_audio)
            )
        )?;
        writeln!(
            f,
            "listening chain (48→16 kHz resample + Silero VAD + Smart Turn): {:.1} ms per second of audio ({:.2}% of one core)",
            self.listening_cost_per_second.as_secs_f64() * 1000.0,
            self.listening_cost_per_second.as_secs_f64() * 100.0
        )
    }
}

fn load<T, E: fmt::Display>(result: Result<T, E>) -> Result<T, BenchError> {
    result.map_err(|e| BenchError::Load(e.to_string()))
}

/// Runs the benchmark (needs a tokio runtime with at least two worker threads).
pub async fn run(
    store: &ModelStore,
    options: &PipelineBenchOptions,
) -> Result<PipelineReport, BenchError> {
    let questions = synthesize_questions().await?;
    let listening_cost_per_second = listening_cost(store, &questions)?;
    let providers = Providers {
        stt: Arc::new(load(MoonshineProvider::load(store))?),
        llm: Arc::new(load(EmbeddedLlmProvider::load(store, Default::default()))?),
        tts: Arc::new(load(PiperProvider::load(store))?),
    };
    let mut report = PipelineReport {
        listening_cost_per_second,
        ..PipelineReport::default()
    };
    let config = AgentConfig {
        output_rate: CLIENT_RATE,
        max_tokens: 48,
        ..AgentConfig::default()
    };
    let pace = if options.fast {
        FAST_PACE
    } else {
        FRAME_DURATION
    };
    for i in 0..options.turns {
        // A fresh session per turn: each turn starts from an empty conversation, like a new caller.
        let ingest = Ingest::new(
            load(SileroVad::load(store))?,
            Box::new(load(SmartTurn::load(store))?),
            VadConfig::default(),
            TurnConfig::default(),
        );
        let mut session = AgentSession::start(config.clone(), providers.clone(), ingest);
        match one_turn(&mut session, &questions[i % questions.len()], pace).await {
            Some(record) => report.records.push(record),
            None => report.failed_turns += 1,
        }
        session.stop().await;
        eprint!("\rturn {}/{}", i + 1, options.turns);
    }
    eprintln!();
    Ok(report)
}

async fn one_turn(
    session: &mut AgentSession,
    question: &[i16],
    pace: Duration,
) -> Option<TurnRecord> {
    let frame_len = CLIENT_RATE as usize / 50;
    let mut clock = Duration::ZERO;
    let silence = vec![0i16; frame_len];
    let deadline = Instant::now() + Duration::from_secs(60);
    let frames = question
        .chunks(frame_len)
        .chain(std::iter::repeat(silence.as_slice()));
    for block in frames {
        if Instant::now() > deadline {
            return None;
        }
        let mut frame = [0i16; 960];
        frame[..block.len()].copy_from_slice(block);
        session.push_audio(AudioFrame::new(&frame, CLIENT_RATE, 1, clock).ok()?);
        clock += FRAME_DURATION;
        let _ = session.pull_frame(clock);
        while let Some(event) = session.try_event() {
            if let AgentEvent::TurnComplete(record) = event {
                return Some(record);
            }
        }
        tokio::time::sleep(pace).await;
    }
    None
}

/// Spoken questions at the client rate, made with espeak-ng (fast and deterministic).
async fn synthesize_questions() -> Result<Vec<Vec<i16>>, BenchError> {
    let tts = EspeakProvider::new("en-us").map_err(|e| BenchError::Speech(e.to_string()))?;
    let mut out = Vec::new();
    for question in QUESTIONS {
        let mut stream = tts.synthesize(question.to_string(), CancellationToken::new());
        let mut samples = Vec::new();
        while let Some(event) = stream.recv().await {
            match event {
                TtsEvent::Audio(chunk) => {
                    samples.extend(chunk.samples.iter().map(|&s| i16_to_f32(s)))
                }
                TtsEvent::Done => break,
                TtsEvent::Error(e) => return Err(BenchError::Speech(e.to_string())),
            }
        }
        let resampled = resample_all(&samples, tts.sample_rate(), CLIENT_RATE)
            .map_err(|e| BenchError::Speech(e.to_string()))?;
        out.push(resampled.into_iter().map(f32_to_i16).collect());
    }
    Ok(out)
}

/// Wall time of the listening chain per second of 48 kHz audio (questions and pauses, looped to a minute).
fn listening_cost(store: &ModelStore, questions: &[Vec<i16>]) -> Result<Duration, BenchError> {
    let mut ingest = Ingest::new(
        load(SileroVad::load(store))?,
        Box::new(load(SmartTurn::load(store))?),
        VadConfig::default(),
        TurnConfig::default(),
    );
    let mut audio = Vec::new();
    while audio.len() < CLIENT_RATE as usize * 60 {
        for question in questions {
            audio.extend_from_slice(question);
            audio.extend(std::iter::repeat_n(0i16, CLIENT_RATE as usize));
        }
    }
    let frame_len = CLIENT_RATE as usize / 50;
    let started = Instant::now();
    let mut clock = Duration::ZERO;
    for block in audio.chunks_exact(frame_len) {
        let frame = AudioFrame::new(block, CLIENT_RATE, 1, clock)
            .map_err(|e| BenchError::Speech(e.to_string()))?;
        ingest
            .push(&frame)
            .map_err(|e| BenchError::Load(e.to_string()))?;
        while ingest.poll().is_some() {}
        clock += FRAME_DURATION;
    }
    let seconds = audio.len() as f64 / f64::from(CLIENT_RATE);
    Ok(started.elapsed().div_f64(seconds))
}
