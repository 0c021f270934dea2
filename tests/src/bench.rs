//! `dartmouth bench webrtc`: voice-to-voice latency measured at a real WebRTC client, next to the
//! pipeline's own per-stage numbers, and the memory an idle and an active session costs.

use std::fmt::Write as _;
use std::time::Duration;

use dartmouth_signaling::agent::SharedAgentFactory;
use dartmouth_signaling::proto::{ServerMessage, TurnLatency};

use crate::impair::ImpairProfile;
use crate::{CallOptions, RtcClient, TestGateway, speak_48k};

/// Questions asked, in turn (cycled).
const QUESTIONS: [&str; 10] = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Name a fruit that is yellow.",
    "What is two plus three?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "How many days are in a week?",
    "What is the opposite of cold?",
    "What animal says moo?",
];

/// Options of the WebRTC benchmark.
#[derive(Debug, Clone)]
pub struct WebrtcBenchOptions {
    /// Turns to measure (one call per turn).
    pub turns: usize,
    /// Idle sessions opened to measure memory per session.
    pub idle_sessions: usize,
    /// Media through an impairing relay ([`ImpairProfile::named`]).
    pub impair: Option<ImpairProfile>,
}

impl Default for WebrtcBenchOptions {
    fn default() -> Self {
        Self {
            turns: 20,
            idle_sessions: 40,
            impair: None,
        }
    }
}

/// Runs the benchmark against an in-process gateway with `agents` and returns the report.
pub async fn run_webrtc(agents: SharedAgentFactory, options: WebrtcBenchOptions) -> String {
    let gateway = TestGateway::start(agents).await;
    // Memory first, while the heap has no freed space from earlier calls to hide growth in.
    let memory = measure_memory(&gateway, options.idle_sessions).await;
    let mut client_v2v = Vec::new();
    let mut stages: Vec<TurnLatency> = Vec::new();
    let mut failures = Vec::new();
    let mut connects = Vec::new();
    for turn in 0..options.turns {
        let question = QUESTIONS[turn % QUESTIONS.len()];
        let Some(speech) = speak_48k(question) else {
            return "espeak-ng is required for the WebRTC benchmark".into();
        };
        let token = gateway.token(&format!("bench-{turn}"), "bench");
        let result = RtcClient::call(
            gateway.ws_url(),
            token,
            CallOptions {
                speech,
                limit: Duration::from_secs(40),
                impair: options.impair.clone(),
                ..CallOptions::default()
            },
        )
        .await;
        match result {
            Ok(call) => {
                connects.push(call.connect_time);
                let latency = call.messages.iter().find_map(|m| match m {
                    ServerMessage::Latency { latency, .. } => Some(latency.clone()),
                    _ => None,
                });
                match (call.first_answer_latency(), latency) {
                    (Some(v2v), Some(latency)) => {
                        client_v2v.push(v2v.as_secs_f64() * 1000.0);
                        stages.push(latency);
                    }
                    _ => failures.push(format!("{question:?}: no audible answer")),
                }
            }
            Err(e) => failures.push(format!("{question:?}: {e}")),
        }
        let _ = gateway.wait_idle(Duration::from_secs(10)).await;
    }
    gateway.stop().await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "WebRTC voice-to-voice ({} turns, {} answered; str0m client on loopback, Opus 20 ms; {})\n",
        options.turns,
        client_v2v.len(),
        match &options.impair {
            Some(profile) => format!(
                "network: {} through the impairment relay, {} ms of mean added delay",
                profile.name,
                profile.mean_added_delay().as_millis()
            ),
            None => "network: direct".into(),
        }
    );
    let _ = writeln!(
        out,
        "| ms after end of the client's speech | n | p50 | p95 | max |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let column =
        |f: fn(&TurnLatency) -> Option<f64>| -> Vec<f64> { stages.iter().filter_map(f).collect() };
    let rows: [(&str, Vec<f64>); 6] = [
        (
            "end-of-turn decision (pipeline)",
            column(|l| Some(l.end_of_turn_ms)),
        ),
        ("STT final (pipeline)", column(|l| l.stt_ms)),
        (
            "LLM first token (pipeline)",
            column(|l| l.llm_first_token_ms),
        ),
        (
            "TTS first audio (pipeline)",
            column(|l| l.tts_first_audio_ms),
        ),
        (
            "first packet out (pipeline)",
            column(|l| l.first_packet_out_ms),
        ),
        ("first audible frame at the client", client_v2v.clone()),
    ];
    for (name, values) in rows {
        let _ = writeln!(out, "{}", row(name, values));
    }
    let network: Vec<f64> = stages
        .iter()
        .zip(&client_v2v)
        .filter_map(|(l, v)| l.first_packet_out_ms.map(|p| v - p))
        .collect();
    let _ = writeln!(
        out,
        "{}",
        row(
            "network + jitter buffer + decode (client − first packet out)",
            network
        )
    );
    let connect_ms: Vec<f64> = connects.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let _ = writeln!(
        out,
        "{}",
        row("join → media connected (ICE + DTLS)", connect_ms)
    );
    let _ = writeln!(out, "\n{memory}");
    if !failures.is_empty() {
        let _ = writeln!(out, "failed turns:");
        for failure in failures {
            let _ = writeln!(out, "  {failure}");
        }
    }
    out
}

fn row(name: &str, mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return format!("| {name} | 0 | - | - | - |");
    }
    values.sort_by(f64::total_cmp);
    let pick = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
        values.len(),
        pick(0.5),
        pick(0.95),
        values[values.len() - 1]
    )
}

/// Resident memory of this process, in KiB (Linux).
pub fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// Memory of `n` idle sessions (joined, media connected, no agent) and of one active agent
/// session, from the process's resident set.
async fn measure_memory(gateway: &TestGateway, n: usize) -> String {
    let before = rss_kib().unwrap_or(0);
    let mut calls = Vec::new();
    for i in 0..n {
        let token = gateway.token(&format!("idle-{i}"), "idle");
        calls.push(tokio::spawn(RtcClient::call(
            gateway.ws_url(),
            token,
            CallOptions {
                agent: Some("none".into()),
                limit: Duration::from_secs(6),
                hang_up_after_answer: None,
                ..CallOptions::default()
            },
        )));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = rss_kib().unwrap_or(0);
    for call in calls {
        let _ = call.await;
    }
    let _ = gateway.wait_idle(Duration::from_secs(10)).await;
    let per_idle = during.saturating_sub(before) as f64 / n.max(1) as f64;
    // The harness's clients live in this process too: the figure bounds gateway + client.
    let active_before = rss_kib().unwrap_or(0);
    let token = gateway.token("active", "active");
    let active = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        token,
        CallOptions {
            limit: Duration::from_secs(5),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let active_during = rss_kib().unwrap_or(0);
    let _ = active.await;
    format!(
        "memory (process RSS, includes the in-process test clients): {per_idle:.0} KiB per idle session ({n} sessions); \
         {} KiB for one active agent session (its VAD + end-of-turn models; shared STT/LLM/TTS excluded)",
        active_during.saturating_sub(active_before)
    )
}
