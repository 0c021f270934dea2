//! The measurements and tables of `dartmouth bench remote` ([`crate::bench_remote`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::bench_remote::RemoteBenchOptions;
use crate::remote_caller::{CallerResult, RemoteTurn};

/// CPU time per thread of this process at one moment, with each thread's group.
#[derive(Debug, Default)]
pub struct CpuSnapshot {
    threads: HashMap<String, (&'static str, f64)>,
}

/// CPU seconds per thread group over an interval.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// The gateway: its runtime (signaling, media driver, agent sessions, HTTP clients) and the
    /// listening threads (batched VAD, Smart Turn).
    pub gateway: f64,
    /// The callers' runtime.
    pub callers: f64,
    /// The mock services' runtime.
    pub mock: f64,
    /// Everything else (the benchmark's own thread).
    pub other: f64,
}

impl CpuSnapshot {
    /// Reads `/proc/self/task/*/{comm,stat}`; threads are grouped by name.
    pub fn take() -> Self {
        let mut threads = HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Self::default();
        };
        for task in tasks.flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let group = match name.trim() {
                n if n.starts_with("gw-io") || n.starts_with("listen-") => "gateway",
                n if n.starts_with("caller-io") => "callers",
                n if n.starts_with("mock-io") => "mock",
                _ => "other",
            };
            let cpu = thread_cpu(&path.join("stat"));
            threads.insert(
                task.file_name().to_string_lossy().into_owned(),
                (group, cpu),
            );
        }
        Self { threads }
    }

    /// CPU used per group since `before` (threads that ended in between are not counted).
    pub fn since(&self, before: &Self) -> CpuUse {
        let mut used = CpuUse::default();
        for (tid, (group, cpu)) in &self.threads {
            let was = before.threads.get(tid).map_or(0.0, |(_, c)| *c);
            let delta = (cpu - was).max(0.0);
            match *group {
                "gateway" => used.gateway += delta,
                "callers" => used.callers += delta,
                "mock" => used.mock += delta,
                _ => used.other += delta,
            }
        }
        used
    }
}

/// CPU seconds (user + system) of one thread from its `stat` file; 0 if unreadable.
fn thread_cpu(stat: &std::path::Path) -> f64 {
    let Ok(stat) = std::fs::read_to_string(stat) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces) start after the last ')';
    // utime and stime are the 12th and 13th of those, in clock ticks (100 per second).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = after.split_whitespace().skip(11);
    let mut next = || {
        fields
            .next()
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (next() + next()) / 100.0
}

/// One stage's measurements.
#[derive(Debug)]
pub struct RemoteStage {
    /// Sessions started.
    pub sessions: usize,
    /// Sessions whose media connected.
    pub connected: usize,
    /// Each caller's outcome.
    pub results: Vec<CallerResult>,
    /// The measured window.
    pub wall: Duration,
    /// CPU used in it.
    pub cpu: CpuUse,
    /// Agent egress ticks in it.
    pub egress_ticks: u64,
    /// Of those, ticks more than 20 ms late.
    pub egress_missed: u64,
    /// The latest egress tick in it.
    pub worst_lateness: Duration,
    /// Peak resident memory in it.
    pub rss_kib: u64,
    /// Resident memory before the first stage (gateway, models, mock, clips loaded).
    pub rss_base_kib: u64,
    /// The mock's delays on a turn's critical path.
    pub mock_delays: Duration,
    /// Audible frames an answer needs to count as heard.
    pub audible_needed: usize,
}

impl RemoteStage {
    /// Every question asked.
    pub fn turns(&self) -> impl Iterator<Item = &RemoteTurn> {
        self.results.iter().flat_map(|r| r.turns.iter())
    }

    /// Questions answered: the gateway's record came and the answer was heard.
    pub fn answered(&self) -> usize {
        self.turns()
            .filter(|t| t.failure.is_none() && t.latency.is_some() && t.v2v.is_some())
            .count()
    }

    /// Answers heard whole: audible from the start and at least 90 % of `answer_frames` long.
    pub fn audible_answers(&self, answer_frames: usize) -> usize {
        self.turns()
            .filter(|t| {
                t.audible_frames >= self.audible_needed && t.answer_frames * 10 >= answer_frames * 9
            })
            .count()
    }

    /// Added latency at the caller, ms: v2v − end-of-turn decision − the mock's delays.
    pub fn added_at_caller(&self) -> Vec<f64> {
        let mock = self.mock_delays.as_secs_f64() * 1000.0;
        self.turns()
            .filter_map(|t| Some(ms(t.v2v?) - t.latency.as_ref()?.end_of_turn_ms - mock))
            .collect()
    }

    /// Added latency in the gateway's record, ms: first packet out − end of turn − the mock's
    /// delays.
    pub fn added_in_gateway(&self) -> Vec<f64> {
        let mock = self.mock_delays.as_secs_f64() * 1000.0;
        self.turns()
            .filter_map(|t| {
                let latency = t.latency.as_ref()?;
                Some(latency.first_packet_out_ms? - latency.end_of_turn_ms - mock)
            })
            .collect()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (nearest rank) of `values`, formatted in whole ms; `-` when empty.
fn pick(values: &[f64], p: f64) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return "-".into();
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    format!("{:.0}", sorted[rank - 1])
}

/// The two tables and the failures.
pub fn render(
    options: &RemoteBenchOptions,
    stages: &[RemoteStage],
    answer_frames: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Remote providers: real OpenAI-compatible HTTP clients against a mock answering after \
         fixed delays (STT {} ms, LLM first token {} ms, TTS first audio {} ms); lean str0m \
         WebRTC callers on loopback asking for {} s per stage, 1–3 s of thought after each \
         answer; one process, three runtimes (gateway 2 workers, callers 2, mock 1) on this \
         machine's {} cores.\n",
        options.stt_delay.as_millis(),
        options.llm_delay.as_millis(),
        options.tts_delay.as_millis(),
        options.window.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        out,
        "| sessions | connected | questions | answered | lost | heard whole | v2v p50 ms | \
         end of turn p50 | added at caller p50 | p95 | p99 | added in gateway p50 | p95 | p99 |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in stages {
        let asked = s.turns().count();
        let answered = s.answered();
        let v2v: Vec<f64> = s.turns().filter_map(|t| t.v2v.map(ms)).collect();
        let eot: Vec<f64> = s
            .turns()
            .filter_map(|t| Some(t.latency.as_ref()?.end_of_turn_ms))
            .collect();
        let caller = s.added_at_caller();
        let gateway = s.added_in_gateway();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.sessions,
            s.connected,
            asked,
            answered,
            asked - answered,
            s.audible_answers(answer_frames),
            pick(&v2v, 0.5),
            pick(&eot, 0.5),
            pick(&caller, 0.5),
            pick(&caller, 0.95),
            pick(&caller, 0.99),
            pick(&gateway, 0.5),
            pick(&gateway, 0.95),
            pick(&gateway, 0.99),
        );
    }
    let _ = writeln!(
        out,
        "\n| sessions | egress ticks | missed 20 ms deadlines | latest tick ms | CPU gateway % | \
         callers % | mock % | other % | gateway CPU ms per session-second | RSS MB | \
         RSS per session MB | RSS per added session MB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut previous: Option<&RemoteStage> = None;
    for s in stages {
        // What each session beyond the previous stage's added (fixed costs cancel out).
        let marginal = previous
            .filter(|p| s.sessions > p.sessions)
            .map_or("-".to_string(), |p| {
                let kib = s.rss_kib as f64 - p.rss_kib as f64;
                format!("{:.2}", kib / (s.sessions - p.sessions) as f64 / 1024.0)
            });
        previous = Some(s);
        let wall = s.wall.as_secs_f64().max(1e-9);
        let pct = |cpu: f64| format!("{:.0}", cpu / wall * 100.0);
        let per_session = s.rss_kib.saturating_sub(s.rss_base_kib) as f64 / s.sessions as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {} |",
            s.sessions,
            s.egress_ticks,
            s.egress_missed,
            ms(s.worst_lateness),
            pct(s.cpu.gateway),
            pct(s.cpu.callers),
            pct(s.cpu.mock),
            pct(s.cpu.other),
            s.cpu.gateway * 1000.0 / (s.sessions as f64 * wall),
            s.rss_kib as f64 / 1024.0,
            per_session / 1024.0,
            marginal,
        );
    }
    let _ = writeln!(
        out,
        "\nCPU % is of one core. RSS per session = (peak RSS in the window − RSS before the \
         first stage) / sessions, which carries one-time costs (model arenas, pools, first-use \
         pages); RSS per added session = the RSS difference to the previous stage / the sessions \
         added. Both hold the gateway's session (WebRTC peer, agent session and \
         its buffers, listening slot, HTTP connections) and the in-process caller (str0m peer, \
         Opus decoder), so they bound the gateway's share from above."
    );
    for s in stages {
        let mut failures: Vec<String> = s
            .results
            .iter()
            .filter_map(|r| r.error.clone())
            .chain(s.turns().filter_map(|t| t.failure.clone()))
            .collect();
        failures.sort();
        failures.dedup();
        if !failures.is_empty() {
            let _ = writeln!(out, "\n{} sessions, failures:", s.sessions);
            for failure in failures.iter().take(10) {
                let _ = writeln!(out, "  {failure}");
            }
        }
    }
    out
}
