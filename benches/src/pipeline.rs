//! `dartmouth bench pipeline`: many spoken turns through the whole embedded pipeline, with the
//! per-stage latency distribution, the pipeline's own overhead (end to end minus model compute
//! minus the end-of-turn wait), barge-in reaction times, and the CPU cost of the listening chain
//! per second of audio.
//!
//! Audio is fed at most twice as fast as real time (one 20 ms frame per 10 ms): faster, and the
//! listening thread (Silero + Smart Turn, sharing two cores with the models) overflows its
//! one-second queue, loses audio and mishears questions. Every dropped frame is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dartmouth_models::ModelStore;
use dartmouth_voice::agent::{
    AgentConfig, AgentEvent, AgentSession, AgentState, Providers, TurnRecord,
};
use dartmouth_voice::embedded::{
    EmbeddedLlmProvider, EspeakProvider, MoonshineProvider, PiperProvider,
};
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION, f32_to_i16, i16_to_f32};
use dartmouth_voice::ingest::Ingest;
use dartmouth_voice::listening::ListeningService;
use dartmouth_voice::provider::{CancellationToken, Tts, TtsEvent, TtsRequest};
use dartmouth_voice::resample::resample_all;
use dartmouth_voice::text::word_error_rate;
use dartmouth_voice::turn::{SmartTurn, TurnConfig};
use dartmouth_voice::vad::{SileroVad, VadConfig};

pub use crate::report::{BenchError, PipelineReport};
use crate::report::{Failure, TurnSample};
use crate::timing::{Recorder, TimedLlm, TimedStt, TimedTts, Timeline};

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
/// What the barge-in turns ask first (a long answer), and what they say over it.
const STORY: &str = "Tell me a long story about a dragon.";
const BARGE_IN: &str = "Stop, what is two plus two?";
/// Input rate of the simulated client (WebRTC's Opus rate).
const CLIENT_RATE: u32 = 48_000;
const FRAME_SAMPLES: usize = CLIENT_RATE as usize / 50;
/// Wall-clock pace of one fed 20 ms frame in fast mode: 2× real time.
const FAST_PACE: Duration = Duration::from_millis(10);
/// A turn that has not completed in this much wall time fails.
const TURN_TIMEOUT: Duration = Duration::from_secs(60);
/// Agent speech played before the barge-in turns talk over it.
const PLAY_BEFORE_BARGE_IN: Duration = Duration::from_secs(1);
/// A frame louder than this (RMS) is the barge-in's speech onset.
const ONSET_RMS: f64 = 300.0;

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    /// Turns to run (at least 50 for stable p99).
    pub turns: usize,
    /// Barge-in turns to run after them.
    pub barge_ins: usize,
    /// Feed audio twice as fast as real time (latencies are wall time; the end-of-turn wait is
    /// media time).
    pub fast: bool,
    /// Start work before the end of the turn is decided: interim and speculative transcripts
    /// and preemptive answers ([`AgentConfig::interim_transcripts`],
    /// [`AgentConfig::speculative_stt`], [`AgentConfig::preemptive_answer`]).
    pub early_work: bool,
}

impl Default for PipelineBenchOptions {
    fn default() -> Self {
        Self {
            turns: 50,
            barge_ins: 5,
            fast: true,
            early_work: true,
        }
    }
}

fn load<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, BenchError> {
    result.map_err(|e| BenchError::Load(e.to_string()))
}

/// Loaded models and the spoken inputs.
struct Bench {
    listening: ListeningService,
    providers: Providers,
    recorder: Recorder,
    pace: Duration,
}

/// Runs the benchmark (needs a tokio runtime with at least two worker threads).
pub async fn run(
    store: &ModelStore,
    options: &PipelineBenchOptions,
) -> Result<PipelineReport, BenchError> {
    let questions = synthesize(QUESTIONS).await?;
    let listening_cost_per_second = listening_cost(store, &questions)?;
    let recorder = Recorder::default();
    let bench = Bench {
        listening: load(ListeningService::start(store))?,
        providers: Providers::new(
            Arc::new(TimedStt(
                Arc::new(load(MoonshineProvider::load(store))?),
                recorder.clone(),
            )),
            Arc::new(TimedLlm(
                Arc::new(load(EmbeddedLlmProvider::load(store, Default::default()))?),
                recorder.clone(),
            )),
            Arc::new(TimedTts(
                Arc::new(load(PiperProvider::load(store))?),
                recorder.clone(),
            )),
        ),
        recorder,
        pace: if options.fast {
            FAST_PACE
        } else {
            FRAME_DURATION
        },
    };
    let mut report = PipelineReport {
        listening_cost_per_second,
        feed_speed: FRAME_DURATION.as_secs_f64() / bench.pace.as_secs_f64(),
        ..PipelineReport::default()
    };
    let config = AgentConfig {
        output_rate: CLIENT_RATE,
        max_tokens: 48,
        speculative_stt: options.early_work,
        interim_transcripts: options.early_work,
        preemptive_answer: options.early_work,
        ..AgentConfig::default()
    };
    for i in 0..options.turns {
        // A fresh session per turn: each turn starts from an empty conversation, like a new caller.
        let question = i % questions.len();
        let mut session = bench.session(config.clone())?;
        bench.recorder.take();
        let outcome = bench.one_turn(&mut session, &questions[question]).await;
        report.dropped_frames += session.dropped_frames();
        session.stop().await;
        let timeline = bench.recorder.take();
        match outcome {
            Ok(record) => {
                let wer = word_error_rate(QUESTIONS[question], &record.transcript);
                report.turns.push(TurnSample::new(record, &timeline, wer));
            }
            Err(reason) => report.failures.push(Failure {
                question: QUESTIONS[question].to_string(),
                reason,
            }),
        }
        eprint!("\rturn {}/{}", i + 1, options.turns);
    }
    eprintln!();
    let story = synthesize(&[STORY, BARGE_IN]).await?;
    let storyteller = AgentConfig {
        system_prompt: "You are a storyteller. Tell a long story of at least five sentences."
            .into(),
        max_tokens: 160,
        ..config
    };
    for i in 0..options.barge_ins {
        let mut session = bench.session(storyteller.clone())?;
        let outcome = bench.barge_in(&mut session, &story[0], &story[1]).await;
        report.dropped_frames += session.dropped_frames();
        session.stop().await;
        match outcome {
            Ok(reaction) => report.barge_in_reactions.push(reaction),
            Err(reason) => report.failures.push(Failure {
                question: format!("{STORY} / {BARGE_IN}"),
                reason,
            }),
        }
        eprint!("\rbarge-in {}/{}", i + 1, options.barge_ins);
    }
    eprintln!();
    Ok(report)
}

impl Bench {
    fn session(&self, config: AgentConfig) -> Result<AgentSession, BenchError> {
        Ok(AgentSession::start(
            config,
            self.providers.clone(),
            &self.listening,
        ))
    }

    /// Asks one question and waits for the answer to finish playing.
    async fn one_turn(
        &self,
        session: &mut AgentSession,
        question: &[i16],
    ) -> Result<TurnRecord, String> {
        let mut feed = Feed::new(session, question, self.pace);
        let mut transcript = None;
        let mut states = Vec::new();
        let deadline = Instant::now() + TURN_TIMEOUT;
        while Instant::now() < deadline {
            for event in feed.step().await {
                match event {
                    AgentEvent::TurnComplete(record) => return Ok(*record),
                    AgentEvent::UserTranscript { text, .. } => transcript = Some(text),
                    AgentEvent::State(state) => states.push(format!("{state:?}")),
                    AgentEvent::Error(e) => return Err(format!("error: {e}")),
                    _ => {}
                }
            }
        }
        let states = states.join("→");
        Err(match transcript {
            Some(text) => {
                format!("heard {text:?} but no answer within {TURN_TIMEOUT:?} ({states})")
            }
            None => format!("no transcript within {TURN_TIMEOUT:?} ({states})"),
        })
    }

    /// Lets the agent tell a story for a second, talks over it, and measures how much agent
    /// audio played after the speech onset (playback time).
    async fn barge_in(
        &self,
        session: &mut AgentSession,
        story: &[i16],
        interruption: &[i16],
    ) -> Result<Duration, String> {
        let mut feed = Feed::new(session, story, self.pace);
        let deadline = Instant::now() + TURN_TIMEOUT;
        while feed.played < PLAY_BEFORE_BARGE_IN {
            if Instant::now() > deadline {
                return Err("the story never played for a second".into());
            }
            feed.step().await;
        }
        let onset = interruption
            .chunks(FRAME_SAMPLES)
            .position(|frame| rms(frame) > ONSET_RMS)
            .ok_or("the interruption is silent")?;
        feed.input = interruption.to_vec();
        feed.fed = 0;
        let mut after_onset = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let before = feed.played;
            let events = feed.step().await;
            if feed.fed > onset {
                after_onset += feed.played - before;
            }
            if events
                .iter()
                .any(|e| matches!(e, AgentEvent::State(AgentState::Interrupted)))
            {
                return Ok(after_onset);
            }
        }
        Err("the agent was never interrupted".into())
    }
}

/// Feeds one input (then silence) frame by frame at the pace, pulling one agent frame per step.
struct Feed<'a> {
    session: &'a mut AgentSession,
    input: Vec<i16>,
    /// Frames of `input` fed so far.
    fed: usize,
    clock: Duration,
    pace: Duration,
    /// Agent audio pulled so far.
    played: Duration,
}

impl<'a> Feed<'a> {
    fn new(session: &'a mut AgentSession, input: &[i16], pace: Duration) -> Self {
        Self {
            session,
            input: input.to_vec(),
            fed: 0,
            clock: Duration::ZERO,
            pace,
            played: Duration::ZERO,
        }
    }

    /// One 20 ms step: a frame in, a frame out; returns the events that arrived.
    async fn step(&mut self) -> Vec<AgentEvent> {
        let mut frame = [0i16; FRAME_SAMPLES];
        let start = self.fed * FRAME_SAMPLES;
        if start < self.input.len() {
            let block = &self.input[start..(start + FRAME_SAMPLES).min(self.input.len())];
            frame[..block.len()].copy_from_slice(block);
        }
        self.fed += 1;
        if let Ok(frame) = AudioFrame::new(&frame, CLIENT_RATE, 1, self.clock) {
            self.session.push_audio(frame);
        }
        self.clock += FRAME_DURATION;
        if let Some(out) = self.session.pull_frame(self.clock) {
            self.played += out.duration();
        }
        let events = std::iter::from_fn(|| self.session.try_event()).collect();
        tokio::time::sleep(self.pace).await;
        events
    }
}

impl TurnSample {
    /// Splits a turn's latency into model compute on the critical path and overhead, using the
    /// provider timeline. Transcription and even the answer may start before the end-of-turn
    /// decision (speculative transcript, preemptive answer): only their parts after the decision
    /// count as waiting on a model. The overhead is the pipeline's own time on the path: from
    /// the transcript to the LLM call, and from the first audio (or the decision, if later) to
    /// queueing it.
    fn new(record: TurnRecord, timeline: &Timeline, wer: f64) -> Self {
        let llm = timeline.llm.last();
        let stt = timeline
            .stt
            .iter()
            .rfind(|job| llm.is_none_or(|llm| job.started <= llm.started));
        let tts = timeline
            .tts
            .iter()
            .find(|job| llm.is_some_and(|llm| job.started >= llm.started));
        // The runner's clock: its first-token stamp and the wrapper's mark the same event.
        let speech_end = llm
            .and_then(|job| job.first)
            .zip(record.llm_first_token)
            .and_then(|(first, rel)| first.checked_sub(rel));
        // When the runner had the decision: the listening chain's time on it is model compute.
        let decided = speech_end.map(|at| at + record.end_of_turn + record.decision_lag);
        let after_decision = |from: Instant, to: Instant, decided: Instant| {
            to.saturating_duration_since(from.max(decided))
        };
        let stt_compute = stt
            .zip(decided)
            .and_then(|(job, decided)| Some(after_decision(job.started, job.first?, decided)));
        let tts_compute = tts
            .zip(decided)
            .and_then(|(job, decided)| Some(after_decision(job.started, job.first?, decided)));
        let llm_to_first_chunk = llm
            .zip(tts)
            .zip(decided)
            .map(|((llm, tts), decided)| after_decision(llm.started, tts.started, decided));
        let overhead = (|| {
            let (stt, llm, tts, decided) = (stt?, llm?, tts?, decided?);
            let (transcript, first_audio) = (stt.first?, tts.first?);
            let queued = speech_end? + record.tts_first_audio?;
            let to_llm = if llm.started < decided {
                llm.started.saturating_duration_since(transcript)
            } else {
                llm.started
                    .saturating_duration_since(transcript.max(decided))
            };
            Some(to_llm + queued.saturating_duration_since(first_audio.max(decided)))
        })();
        Self {
            stt_compute,
            llm_to_first_chunk,
            tts_compute,
            overhead,
            preemptive: llm.zip(decided).is_some_and(|(llm, at)| llm.started < at),
            record,
            wer,
        }
    }
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// Spoken texts at the client rate, made with espeak-ng (fast and deterministic).
async fn synthesize(texts: &[&str]) -> Result<Vec<Vec<i16>>, BenchError> {
    let tts = EspeakProvider::new("en-us").map_err(|e| BenchError::Speech(e.to_string()))?;
    let mut out = Vec::new();
    for text in texts {
        let mut stream = tts.synthesize(TtsRequest::new(*text), CancellationToken::new());
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
        TurnConfig::default().without_transcripts(),
    );
    let mut audio = Vec::new();
    while audio.len() < CLIENT_RATE as usize * 60 {
        for question in questions {
            audio.extend_from_slice(question);
            audio.extend(std::iter::repeat_n(0i16, CLIENT_RATE as usize));
        }
    }
    let started = Instant::now();
    let mut clock = Duration::ZERO;
    for block in audio.chunks_exact(FRAME_SAMPLES) {
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
