//! `dartmouth bench soak`: N sessions talking to agents for M minutes over real WebRTC, the
//! process's resident memory sampled over time, and file descriptors, threads and tokio tasks
//! compared with their baseline once every session has ended.
//!
//! Each session is a caller that asks a question, hears the answer, hangs up and calls again
//! until the time is up, so sessions start and end all through the run (the churn is where leaks
//! show). Memory is "flat" when, after the warm-up (the first fifth of the run, at least one
//! minute when the run is long enough), no sample differs from the warm-up's last by more than
//! 5 %.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dartmouth_signaling::agent::SharedAgentFactory;

use crate::bench::rss_kib;
use crate::{CallOptions, RtcClient, TestGateway, speak_48k};

/// Questions the callers ask, in turn.
const QUESTIONS: [&str; 6] = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What do bees make?",
    "Name a fruit that is yellow.",
    "What is two plus three?",
    "Which planet is closest to the sun?",
];
/// Largest relative RSS change after warm-up still called flat.
pub const FLAT_TOLERANCE: f64 = 0.05;

/// Options of the soak run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Sessions talking at once.
    pub sessions: usize,
    /// How long they talk.
    pub duration: Duration,
    /// How often resources are sampled.
    pub sample_every: Duration,
}

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            sessions: 20,
            duration: Duration::from_secs(600),
            sample_every: Duration::from_secs(10),
        }
    }
}

/// What the process holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// OS threads.
    pub threads: usize,
    /// Live tokio tasks of the runtime the soak runs on.
    pub tasks: usize,
}

impl Resources {
    /// Samples this process now (tasks of the current tokio runtime).
    pub fn sample() -> Self {
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0);
        Self {
            rss_kib: rss_kib().unwrap_or(0),
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
            threads,
            tasks: tokio::runtime::Handle::try_current()
                .map_or(0, |h| h.metrics().num_alive_tasks()),
        }
    }
}

/// The result of a soak run.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// The options it ran with.
    pub options: SoakOptions,
    /// Before any session (gateway started, models loaded).
    pub baseline: Resources,
    /// `(seconds since start, resources)` while the sessions talked.
    pub samples: Vec<(f64, Resources)>,
    /// After every session ended and the gateway was idle again.
    pub after: Resources,
    /// Calls that were answered.
    pub answered: usize,
    /// Calls that failed or were not answered, with why (first few).
    pub failures: Vec<String>,
    /// Calls made.
    pub calls: usize,
    /// Whether the gateway reported no session and no peer at the end.
    pub idle_at_end: bool,
}

impl SoakReport {
    /// Index of the first sample after warm-up.
    fn warm_index(&self) -> usize {
        let total = self.options.duration.as_secs_f64();
        let warm_up = (total / 5.0).max(total.min(60.0) / 2.0);
        self.samples
            .iter()
            .position(|(t, _)| *t >= warm_up)
            .unwrap_or(self.samples.len().saturating_sub(1))
    }

    /// Largest relative RSS difference from the first sample after warm-up (None: too few samples).
    pub fn rss_drift(&self) -> Option<f64> {
        let warm = self.warm_index();
        let reference = self.samples.get(warm)?.1.rss_kib as f64;
        if reference <= 0.0 || self.samples.len() < warm + 2 {
            return None;
        }
        self.samples[warm..]
            .iter()
            .map(|(_, r)| (r.rss_kib as f64 - reference).abs() / reference)
            .reduce(f64::max)
    }

    /// Growth of resident memory after warm-up: the median RSS of the last fifth of the samples
    /// relative to the median of the first fifth (None: fewer than ten samples after warm-up).
    /// Unlike [`SoakReport::rss_drift`], memory a model allocates for one run and frees after it
    /// (so a sample may or may not catch it) does not count; memory that stays does.
    pub fn rss_trend(&self) -> Option<f64> {
        let warm = &self.samples[self.warm_index()..];
        if warm.len() < 10 {
            return None;
        }
        let fifth = warm.len() / 5;
        let median = |window: &[(f64, Resources)]| {
            let mut kib: Vec<u64> = window.iter().map(|(_, r)| r.rss_kib).collect();
            kib.sort_unstable();
            kib[kib.len() / 2] as f64
        };
        let first = median(&warm[..fifth]);
        (first > 0.0).then(|| (median(&warm[warm.len() - fifth..]) - first) / first)
    }

    /// File descriptors, threads and tasks are back to the baseline (threads may stay: pools
    /// keep idle workers for a while).
    pub fn released(&self) -> bool {
        self.after.fds <= self.baseline.fds && self.after.tasks <= self.baseline.tasks
    }
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak: {} sessions talking for {:.1} min; {} calls, {} answered, {} failed",
            self.options.sessions,
            self.options.duration.as_secs_f64() / 60.0,
            self.calls,
            self.answered,
            self.failures.len()
        );
        let _ = writeln!(
            out,
            "{:>8} {:>10} {:>6} {:>8} {:>7}",
            "t (s)", "RSS (MiB)", "fds", "threads", "tasks"
        );
        let row = |out: &mut String, label: String, r: &Resources| {
            let _ = writeln!(
                out,
                "{label:>8} {:>10.1} {:>6} {:>8} {:>7}",
                r.rss_kib as f64 / 1024.0,
                r.fds,
                r.threads,
                r.tasks
            );
        };
        row(&mut out, "before".into(), &self.baseline);
        for (t, r) in &self.samples {
            row(&mut out, format!("{t:.0}"), r);
        }
        row(&mut out, "after".into(), &self.after);
        match (self.rss_trend(), self.rss_drift()) {
            (Some(trend), Some(drift)) => {
                let _ = writeln!(
                    out,
                    "RSS after warm-up ({:.0} s): trend {:+.1} % (median of the last fifth vs the first: {}); \
                     largest change from the first sample {:.1} % (includes memory held only while a model runs)",
                    self.samples[self.warm_index()].0,
                    trend * 100.0,
                    if trend.abs() <= FLAT_TOLERANCE {
                        "flat within 5 %"
                    } else {
                        "NOT flat"
                    },
                    drift * 100.0,
                );
            }
            _ => {
                let _ = writeln!(out, "RSS: too few samples after warm-up to judge");
            }
        }
        let _ = writeln!(
            out,
            "after the sessions: fds {} (baseline {}), tasks {} (baseline {}), threads {} (baseline {}); gateway idle: {}; {}",
            self.after.fds,
            self.baseline.fds,
            self.after.tasks,
            self.baseline.tasks,
            self.after.threads,
            self.baseline.threads,
            self.idle_at_end,
            if self.released() {
                "released"
            } else {
                "NOT released"
            }
        );
        // A refusal at capacity is admission control doing its job; anything else is a call lost.
        let (refused, lost): (Vec<&String>, Vec<&String>) = self
            .failures
            .iter()
            .partition(|f| f.contains(REFUSED_AT_CAPACITY));
        let _ = writeln!(
            out,
            "failed calls: {} refused at join (gateway at capacity), {} lost otherwise",
            refused.len(),
            lost.len()
        );
        for failure in lost.iter().chain(refused.iter().take(1)).take(5) {
            let _ = writeln!(out, "failure: {failure}");
        }
        f.write_str(&out)
    }
}

/// How the gateway words a join refused because every agent session is taken.
const REFUSED_AT_CAPACITY: &str = "the gateway is at its capacity";

/// Runs the soak against an in-process gateway with `agents`.
pub async fn run_soak(
    agents: SharedAgentFactory,
    options: SoakOptions,
) -> Result<SoakReport, String> {
    let speech: Vec<Vec<i16>> = QUESTIONS
        .iter()
        .map(|q| speak_48k(q).ok_or("espeak-ng is required for the soak"))
        .collect::<Result<_, _>>()?;
    let speech = Arc::new(speech);
    let gateway = Arc::new(TestGateway::start(agents).await);
    // One call first, so lazily built state (model sessions, pools) is in the baseline.
    let _ = call_once(&gateway, &speech, 0, "warm").await;
    let _ = gateway.wait_idle(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = Resources::sample();

    let started = Instant::now();
    let deadline = started + options.duration;
    let answered = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for session in 0..options.sessions {
        let (gateway, speech) = (gateway.clone(), speech.clone());
        let (answered, calls, failures) = (answered.clone(), calls.clone(), failures.clone());
        callers.push(tokio::spawn(async move {
            let mut turn = session;
            while Instant::now() < deadline {
                calls.fetch_add(1, Ordering::Relaxed);
                match call_once(&gateway, &speech, turn, &format!("soak-{session}")).await {
                    Ok(()) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let Ok(mut list) = failures.lock() {
                            list.push(format!("session {session}: {e}"));
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                turn += 1;
            }
        }));
        // Stagger the starts so the turns do not all land at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(options.sample_every.min(deadline - Instant::now())).await;
        samples.push((started.elapsed().as_secs_f64(), Resources::sample()));
    }
    for caller in callers {
        let _ = caller.await;
    }
    let idle_at_end = gateway.wait_idle(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = Resources::sample();
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.stop().await;
    }
    Ok(SoakReport {
        options,
        baseline,
        samples,
        after,
        answered: answered.load(Ordering::Relaxed),
        calls: calls.load(Ordering::Relaxed),
        failures,
        idle_at_end,
    })
}

/// One call: ask a question, hear an answer, hang up.
async fn call_once(
    gateway: &TestGateway,
    speech: &[Vec<i16>],
    turn: usize,
    room: &str,
) -> Result<(), String> {
    let call = RtcClient::call(
        gateway.ws_url(),
        gateway.token(room, "caller"),
        CallOptions {
            speech: speech[turn % speech.len()].clone(),
            limit: Duration::from_secs(45),
            ..CallOptions::default()
        },
    )
    .await?;
    if call.first_answer_latency().is_some() {
        return Ok(());
    }
    // Say why, when the gateway did: a failed or shed turn comes as an error message.
    let reason = call.messages.iter().rev().find_map(|m| match m {
        dartmouth_signaling::proto::ServerMessage::Error { code, message } => {
            Some(format!("{code:?}: {message}"))
        }
        _ => None,
    });
    Err(match reason {
        Some(reason) => format!("no answer heard ({reason})"),
        None if call.user_transcripts().is_empty() => {
            "no answer heard (nothing transcribed)".into()
        }
        None => "no answer heard (transcribed, no answer within the call)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rss_mib: &[u64]) -> SoakReport {
        let sample = |mib: u64| Resources {
            rss_kib: mib * 1024,
            fds: 10,
            threads: 4,
            tasks: 2,
        };
        SoakReport {
            options: SoakOptions {
                duration: Duration::from_secs(rss_mib.len() as u64 * 10),
                ..SoakOptions::default()
            },
            baseline: sample(1000),
            samples: rss_mib
                .iter()
                .enumerate()
                .map(|(i, mib)| ((i as f64 + 1.0) * 10.0, sample(*mib)))
                .collect(),
            after: sample(1000),
            answered: 1,
            failures: Vec::new(),
            calls: 1,
            idle_at_end: true,
        }
    }

    #[test]
    fn a_staircase_is_growth_and_a_swing_around_one_level_is_not() {
        // Warm-up is the first fifth; then 1200 MiB with a 100 MiB step two thirds of the way.
        let mut stairs = vec![1100; 12];
        stairs.extend(std::iter::repeat_n(1200, 32));
        stairs.extend(std::iter::repeat_n(1300, 16));
        let trend = report(&stairs).rss_trend().unwrap();
        assert!(trend > FLAT_TOLERANCE, "{trend}");

        // The same level, with every third sample catching 120 MiB of a model's working memory.
        let swing: Vec<u64> = (0..60)
            .map(|i| if i % 3 == 0 { 1320 } else { 1200 })
            .collect();
        let trend = report(&swing).rss_trend().unwrap();
        assert!(trend.abs() <= FLAT_TOLERANCE, "{trend}");
        assert!(report(&swing).rss_drift().unwrap() > FLAT_TOLERANCE);
        assert!(report(&swing).to_string().contains("flat within 5 %"));
        assert!(report(&stairs).to_string().contains("NOT flat"));
    }
}
