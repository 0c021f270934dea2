//! `dartmouth bench load`: many callers at once. For each count N (1, 2, 4, 8, 16 by default),
//! N real WebRTC clients join at the same moment and each asks several questions, the next one
//! a "think" pause after the previous answer ends. Questions are generated from templates with
//! a seed (none is a question of the other benchmarks), spoken by espeak-ng. Reported per N:
//! voice-to-voice at the client (end of the caller's speech → first audible answer frame)
//! p50/p95/p99, questions answered, callers refused (the gateway's admission control says
//! `unavailable` rather than answer late), and the process's resident memory per caller.

use std::fmt::Write as _;
use std::time::Duration;

use dartmouth_signaling::agent::SharedAgentFactory;

use crate::bench::rss_kib;
use crate::{CallOptions, RtcClient, TestGateway, speak_48k};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadBenchOptions {
    /// Callers at once, one stage each.
    pub callers: Vec<usize>,
    /// Questions each caller asks.
    pub questions: usize,
    /// Pause between an answer's end and the caller's next question.
    pub think: Duration,
    /// Seed of the questions.
    pub seed: u64,
}

impl Default for LoadBenchOptions {
    fn default() -> Self {
        Self {
            callers: vec![1, 2, 4, 8, 16],
            questions: 3,
            think: Duration::from_secs(2),
            seed: 11,
        }
    }
}

const SUBJECTS: &[&str] = &[
    "a rainbow",
    "the tide",
    "a volcano",
    "thunder",
    "a glacier",
    "the moon",
    "a desert",
    "an earthquake",
    "a comet",
    "the wind",
    "a coral reef",
    "a hurricane",
];
const ANIMALS: &[&str] = &[
    "an owl",
    "a camel",
    "a dolphin",
    "a beaver",
    "a penguin",
    "a squirrel",
    "a bat",
    "a goat",
];
const TEMPLATES: &[&str] = &[
    "What causes {s}?",
    "Why does {a} sleep during the day?",
    "How big can {s} get?",
    "Where would I find {a}?",
    "What does {a} eat in winter?",
    "Can you explain {s} in one sentence?",
    "How old is {s} usually?",
    "Is {a} a good pet?",
];

/// The `index`-th generated question (deterministic for a seed).
pub fn question(seed: u64, index: usize) -> String {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(index as u64 * 1_442_695_040_888_963_407 + 1);
    let mut next = |n: usize| {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % n as u64) as usize
    };
    let template = TEMPLATES[next(TEMPLATES.len())];
    template
        .replace("{s}", SUBJECTS[next(SUBJECTS.len())])
        .replace("{a}", ANIMALS[next(ANIMALS.len())])
}

/// One stage's outcome.
struct Stage {
    callers: usize,
    latencies: Vec<Duration>,
    asked: usize,
    refused: usize,
    failed: Vec<String>,
    rss_per_caller_kib: Option<f64>,
}

/// Runs every stage against an in-process gateway with `agents` and returns the report.
pub async fn run_load(agents: SharedAgentFactory, options: LoadBenchOptions) -> String {
    let gateway = TestGateway::start(agents).await;
    let mut stages = Vec::new();
    let mut asked_so_far = 0;
    for &n in &options.callers {
        let before = rss_kib();
        let mut calls = Vec::new();
        for caller in 0..n {
            let mut clips = Vec::new();
            for q in 0..options.questions {
                let text = question(options.seed, asked_so_far + caller * options.questions + q);
                let Some(clip) = speak_48k(&text) else {
                    return "espeak-ng is required for the load benchmark".into();
                };
                clips.push(clip);
            }
            let speech = clips.remove(0);
            let token = gateway.token(&format!("load-{n}-{caller}"), "caller");
            calls.push(tokio::spawn(RtcClient::call(
                gateway.ws_url(),
                token,
                CallOptions {
                    speech,
                    follow_ups: clips,
                    think: options.think,
                    limit: Duration::from_secs(60 + 20 * options.questions as u64),
                    ..CallOptions::default()
                },
            )));
        }
        asked_so_far += n * options.questions;
        // Memory while every call is up (clients included: they run in this process).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let during = rss_kib();
        let mut stage = Stage {
            callers: n,
            latencies: Vec::new(),
            asked: 0,
            refused: 0,
            failed: Vec::new(),
            rss_per_caller_kib: before
                .zip(during)
                .map(|(b, d)| d.saturating_sub(b) as f64 / n as f64),
        };
        for call in calls {
            match call.await {
                Ok(Ok(call)) => {
                    // A one-question call keeps no per-question record: its first answer is it.
                    for i in 0..call.questions.len().max(1) {
                        stage.asked += 1;
                        let latency = if call.questions.is_empty() {
                            call.first_answer_latency()
                        } else {
                            call.answer_latency(i)
                        };
                        match latency {
                            Some(latency) => stage.latencies.push(latency),
                            None => stage
                                .failed
                                .push(format!("question {i}: no audible answer")),
                        }
                    }
                }
                Ok(Err(e)) if e.contains("Unavailable") || e.contains("unavailable") => {
                    stage.refused += 1;
                }
                Ok(Err(e)) => stage.failed.push(e),
                Err(e) => stage.failed.push(e.to_string()),
            }
        }
        let _ = gateway.wait_idle(Duration::from_secs(20)).await;
        stages.push(stage);
    }
    gateway.stop().await;
    report(&options, &stages)
}

fn report(options: &LoadBenchOptions, stages: &[Stage]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Many callers at once ({} questions each, {} ms to think after each answer; str0m WebRTC \
         clients on loopback, espeak-ng voices, generated questions)\n",
        options.questions,
        options.think.as_millis()
    );
    let _ = writeln!(
        out,
        "| callers | questions asked | answered | callers refused | v2v p50 ms | p95 | p99 | RSS per caller (MB) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for stage in stages {
        let mut sorted = stage.latencies.clone();
        sorted.sort();
        let pick = |p: f64| {
            if sorted.is_empty() {
                return "-".to_string();
            }
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            format!("{:.0}", sorted[rank - 1].as_secs_f64() * 1000.0)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            stage.callers,
            stage.asked,
            stage.latencies.len(),
            stage.refused,
            pick(0.5),
            pick(0.95),
            pick(0.99),
            stage
                .rss_per_caller_kib
                .map_or("-".into(), |k| format!("{:.1}", k / 1024.0))
        );
    }
    for stage in stages.iter().filter(|s| !s.failed.is_empty()) {
        let _ = writeln!(out, "\n{} callers, failures:", stage.callers);
        for failure in &stage.failed {
            let _ = writeln!(out, "  {failure}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_generated_reproducibly_and_vary() {
        assert_eq!(question(11, 3), question(11, 3));
        let distinct: std::collections::HashSet<String> =
            (0..48).map(|i| question(11, i)).collect();
        assert!(distinct.len() >= 30, "{} distinct of 48", distinct.len());
        assert!(!question(11, 0).contains('{'));
    }
}
