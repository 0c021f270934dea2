//! `dartmouth bench remote`: many agent sessions on remote providers. The agents use the real
//! OpenAI-compatible HTTP clients (speech to text, chat completions, speech) against
//! [`MockOpenAi`], a test double that answers after fixed delays with canned replies, so what is
//! left of the voice-to-voice time after those delays and the end-of-turn decision is the
//! gateway's own work. The listening chain (48→16 kHz, batched Silero VAD, Smart Turn) is the
//! real one.
//!
//! Per stage of N sessions: N lean WebRTC callers ([`crate::remote_caller`]) join, then for a
//! measured window each asks questions (pre-encoded espeak-ng speech) with 1–3 s of thought after
//! each answer. Reported: the added latency at the caller (v2v − end-of-turn decision − mock
//! delays) and in the gateway's own record (first packet out − end of turn − mock delays),
//! p50/p95/p99; egress ticks that ran more than a 20 ms frame late; CPU per thread group (the
//! gateway's runtime and listening threads, the callers, the mock — three runtimes in one
//! process, told apart by thread name); resident memory per session.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use dartmouth_models::ModelStore;
use dartmouth_signaling::limits::LimitsConfig;
use dartmouth_signaling::{AgentFactory, AgentInfo, AgentRefusal, AgentRequest};
use dartmouth_voice::agent::{AgentConfig, AgentSession, Providers};
use dartmouth_voice::http::HttpProviderConfig;
use dartmouth_voice::http::openai_llm::OpenAiLlm;
use dartmouth_voice::http::openai_stt::OpenAiStt;
use dartmouth_voice::http::openai_tts::OpenAiTts;
use dartmouth_voice::listening::ListeningService;
use dartmouth_voice::provider::{Llm, Stt, Tts};
use tokio::sync::watch;

use crate::bench::rss_kib;
use crate::client::FRAME;
use crate::mock_openai::{MOCK_TTS_RATE, MockOpenAi, MockReplies, canned_speech};
use crate::remote_caller::{
    AUDIBLE_FRAMES, CallerPlan, CallerResult, CallerSignals, EncodedClip, run_caller,
    silence_packet,
};
use crate::remote_report::{CpuSnapshot, RemoteStage, render};
use crate::{TestGateway, speak_48k};

/// What every transcription of the mock says.
pub const CANNED_TRANSCRIPT: &str = "What makes a rainbow appear after the rain?";
/// What every answer of the mock says (one sentence: one speech request per answer).
pub const CANNED_ANSWER: &str = "Sunlight bends inside the raindrops and splits into colours.";
/// Distinct questions the callers take turns with.
const QUESTIONS: usize = 6;

/// What to run.
#[derive(Debug, Clone)]
pub struct RemoteBenchOptions {
    /// Sessions at once, one stage each.
    pub sessions: Vec<usize>,
    /// Measured window per stage: questions are asked during it (answers may finish after).
    pub window: Duration,
    /// The mock's delay before a transcription.
    pub stt_delay: Duration,
    /// The mock's delay before the first token of an answer.
    pub llm_delay: Duration,
    /// The mock's delay before the first audio of a speech request.
    pub tts_delay: Duration,
    /// Seed of the questions and the callers' timing.
    pub seed: u64,
}

impl Default for RemoteBenchOptions {
    fn default() -> Self {
        Self {
            sessions: vec![1, 50, 100, 200],
            window: Duration::from_secs(30),
            stt_delay: Duration::from_millis(150),
            llm_delay: Duration::from_millis(250),
            tts_delay: Duration::from_millis(150),
            seed: 11,
        }
    }
}

impl RemoteBenchOptions {
    /// The mock's delays on a turn's critical path, together.
    pub fn mock_delays(&self) -> Duration {
        self.stt_delay + self.llm_delay + self.tts_delay
    }
}

/// The benchmark's outcome: the stages and the printed report.
#[derive(Debug)]
pub struct RemoteReport {
    /// One per session count.
    pub stages: Vec<RemoteStage>,
    /// Frames of the canned answer audio (20 ms at 48 kHz).
    pub answer_frames: usize,
    /// The tables.
    pub text: String,
}

/// Agents on remote providers: the real HTTP clients, one shared connection pool, pointed at
/// `base_url`; the paid-service settings (no speculative or interim transcripts, no preemptive
/// answers: each stage waits for the one before, one request of each kind per turn).
pub struct RemoteAgents {
    listening: ListeningService,
    stt: Arc<dyn Stt>,
    llm: Arc<dyn Llm>,
    tts: Arc<dyn Tts>,
}

impl RemoteAgents {
    /// Providers against `base_url`, the listening service from `store`.
    pub fn new(store: &ModelStore, base_url: &str) -> Result<Self, String> {
        let config = |model: &str| HttpProviderConfig::new(base_url, model).with_api_key("bench");
        let client =
            dartmouth_voice::http::http_client(&config("any")).map_err(|e| e.to_string())?;
        Ok(Self {
            listening: ListeningService::start(store)
                .map_err(|e| format!("listening models: {e}"))?,
            stt: Arc::new(OpenAiStt::with_client(config("whisper-1"), client.clone())),
            llm: Arc::new(OpenAiLlm::with_client(
                config("gpt-4o-mini"),
                client.clone(),
            )),
            tts: Arc::new(OpenAiTts::with_client(config("tts-1"), client)),
        })
    }
}

impl AgentFactory for RemoteAgents {
    fn agents(&self) -> Vec<AgentInfo> {
        vec![AgentInfo {
            name: "remote".into(),
            description: "remote speech, language and voice services".into(),
        }]
    }
    fn default_agent(&self, _room: &str) -> Option<String> {
        Some("remote".into())
    }
    fn start(&self, request: &AgentRequest) -> Result<AgentSession, AgentRefusal> {
        let config = AgentConfig {
            system_prompt: "You are a helpful voice assistant. Answer in one sentence.".into(),
            max_tokens: 60,
            output_rate: request.output_rate,
            speech_output: true,
            onset_hold: !request.echo_path,
            speculative_stt: false,
            interim_transcripts: false,
            preemptive_answer: false,
            ..AgentConfig::default()
        };
        let providers = Providers::new(self.stt.clone(), self.llm.clone(), self.tts.clone());
        Ok(AgentSession::start(config, providers, &self.listening))
    }
}

fn runtime(name: &str, workers: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime {name}: {e}"))
}

/// Deterministic pseudo-random numbers for the callers' timing.
fn mix(seed: u64, i: u64) -> u64 {
    let mut x = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Runs every stage (needs espeak-ng and the listening models) and returns the report.
pub fn run_remote(
    store: &ModelStore,
    options: &RemoteBenchOptions,
) -> Result<RemoteReport, String> {
    dartmouth_voice::http::ensure_crypto_provider();
    let speech = canned_speech(CANNED_ANSWER).ok_or("espeak-ng is required")?;
    let answer_frames = speech.len() * 48_000 / MOCK_TTS_RATE as usize / FRAME;
    let mut questions = Vec::new();
    for i in 0..QUESTIONS {
        let text = crate::bench_load::question(options.seed, 1_000 + i);
        let pcm = speak_48k(&text).ok_or("espeak-ng is required")?;
        questions.push(Arc::new(EncodedClip::encode(&pcm)?));
    }
    let silence = Arc::new(silence_packet()?);

    let mock_rt = runtime("mock-io", 1)?;
    let gateway_rt = runtime("gw-io", 2)?;
    let caller_rt = runtime("caller-io", 2)?;
    let replies = MockReplies {
        stt_delay: options.stt_delay,
        llm_delay: options.llm_delay,
        tts_delay: options.tts_delay,
        transcript: CANNED_TRANSCRIPT.into(),
        answer: CANNED_ANSWER.into(),
        speech,
    };
    let mock = mock_rt
        .block_on(MockOpenAi::start(replies))
        .map_err(|e| format!("mock server: {e}"))?;
    let agents = Arc::new(RemoteAgents::new(store, &mock.url())?);
    // Every caller comes from 127.0.0.1: lift the per-address limits (they guard against one
    // abusive address, which is not what this measures).
    let limits = LimitsConfig {
        pending_per_ip: 4_096,
        pending_total: 4_096,
        connections_per_ip: 4_096,
        connects_per_minute: 1_000_000,
        joins_per_minute: 1_000_000,
        http_sessions_per_minute: 1_000_000,
        join_deadline: Duration::from_secs(60),
    };
    let gateway = gateway_rt.block_on(TestGateway::start_with_limits(agents, limits));
    let rss_base = rss_kib().unwrap_or(0);

    let mut stages = Vec::new();
    for (stage_index, &n) in options.sessions.iter().enumerate() {
        let stage = caller_rt.block_on(run_stage(
            &gateway,
            options,
            n,
            stage_index,
            &questions,
            &silence,
            rss_base,
        ));
        stages.push(stage);
        let idle = caller_rt.block_on(gateway.wait_idle(Duration::from_secs(30)));
        if !idle {
            eprintln!("bench remote: sessions of the {n}-session stage still open after 30 s");
        }
    }
    gateway_rt.block_on(gateway.stop());
    drop(mock);
    let text = render(options, &stages, answer_frames);
    Ok(RemoteReport {
        stages,
        answer_frames,
        text,
    })
}

async fn run_stage(
    gateway: &TestGateway,
    options: &RemoteBenchOptions,
    n: usize,
    stage_index: usize,
    questions: &[Arc<EncodedClip>],
    silence: &Arc<Vec<u8>>,
    rss_base: u64,
) -> RemoteStage {
    let connected = Arc::new(AtomicUsize::new(0));
    let (ask_tx, ask) = watch::channel(false);
    let (hang_up_tx, hang_up) = watch::channel(false);
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let r = mix(options.seed, (stage_index * 10_000 + i) as u64);
        let plan = CallerPlan {
            questions: (0..QUESTIONS)
                .map(|q| questions[(i + q) % QUESTIONS].clone())
                .collect(),
            silence: silence.clone(),
            start_delay: Duration::from_millis(r % 3_000),
            think: (0..4)
                .map(|k| Duration::from_millis(1_000 + (r >> (8 * (k + 1))) % 2_000))
                .collect(),
        };
        let signals = CallerSignals {
            connected: connected.clone(),
            ask: ask.clone(),
            hang_up: hang_up.clone(),
        };
        let token = gateway.token(&format!("remote-{stage_index}-{i}"), "caller");
        calls.push(tokio::spawn(run_caller(
            gateway.ws_url(),
            token,
            plan,
            signals,
        )));
        // Join in waves of 10 every 100 ms (a crowd arriving, not one instant).
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ramp = Instant::now();
    while connected.load(std::sync::atomic::Ordering::Relaxed) < n
        && ramp.elapsed() < Duration::from_secs(60)
        && !calls.iter().all(|c| c.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected_sessions = connected.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The measured window.
    let cpu_before = CpuSnapshot::take();
    let egress_before = dartmouth_voice::metrics::egress_timing();
    let _ = dartmouth_voice::metrics::take_egress_worst_lateness();
    let started = Instant::now();
    let _ = ask_tx.send(true);
    let mut rss_peak = 0;
    while started.elapsed() < options.window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_peak = rss_peak.max(rss_kib().unwrap_or(0));
    }
    let _ = ask_tx.send(false);
    let cpu = CpuSnapshot::take().since(&cpu_before);
    let wall = started.elapsed();
    let egress_after = dartmouth_voice::metrics::egress_timing();
    let worst_lateness = dartmouth_voice::metrics::take_egress_worst_lateness();
    // Answers in progress finish; then everyone leaves.
    let _ = hang_up_tx.send(true);
    let mut results: Vec<CallerResult> = Vec::with_capacity(n);
    for call in calls {
        match call.await {
            Ok(result) => results.push(result),
            Err(e) => results.push(CallerResult {
                error: Some(e.to_string()),
                ..CallerResult::default()
            }),
        }
    }
    RemoteStage {
        sessions: n,
        connected: connected_sessions,
        results,
        wall,
        cpu,
        egress_ticks: egress_after.ticks - egress_before.ticks,
        egress_missed: egress_after.missed - egress_before.missed,
        worst_lateness,
        rss_kib: rss_peak,
        rss_base_kib: rss_base,
        mock_delays: options.mock_delays(),
        audible_needed: AUDIBLE_FRAMES,
    }
}
