//! The "workflow steps" row of `dartmouth bench platform`: runs of a realistic six-step workflow
//! (HTTP calls to a local receiver, a condition, a parallel branch and a join) started through the
//! typed client; the row reports steps per second over the whole batch and each step's latency
//! from the moment it could start (its dependencies done) to its recorded end.

use crate::bench::{BenchOptions, BenchRow, percentile};
use crate::client::PlatformClient;
use crate::error::PlatformError;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps in each benchmark run.
pub const STEPS_PER_RUN: usize = 6;
/// The benchmark workflow's name.
const NAME: &str = "bench-order";
/// How long started runs may take to finish beyond the scenario's time limit.
const DRAIN: Duration = Duration::from_secs(30);

/// The steps: id and what it waits for (a condition's branch counts as waiting for it).
const SHAPE: [(&str, &[&str]); STEPS_PER_RUN] = [
    ("fetch", &[]),
    ("enrich", &["fetch"]),
    ("check", &["fetch"]),
    ("score", &["check"]),
    ("merge", &["enrich", "score"]),
    ("notify", &["merge"]),
];

/// Runs of the benchmark for a budget of `requests` steps.
pub fn runs_for(requests: usize) -> usize {
    (requests / STEPS_PER_RUN).max(1)
}

fn definition(receiver: &str) -> crate::workflow::routes::NewWorkflow {
    let call = |id: &str, deps: &[&str], body: Value| {
        json!({"id": id, "type": "http", "method": "POST", "url": format!("{receiver}/{id}"),
               "depends_on": deps, "body": body, "retry": {"max_attempts": 3, "backoff_ms": 10}})
    };
    let steps = vec![
        call("fetch", &[], json!({"order": "{{input.order}}"})),
        call(
            "enrich",
            &["fetch"],
            json!({"order": "{{steps.fetch.output.body.order}}"}),
        ),
        json!({"id": "check", "type": "condition", "depends_on": ["fetch"],
               "check": {"left": "{{steps.fetch.output.status}}", "op": "eq", "right": 200},
               "then": ["score"]}),
        call("score", &[], json!({"order": "{{input.order}}"})),
        json!({"id": "merge", "type": "join", "depends_on": ["enrich", "score"]}),
        call(
            "notify",
            &["merge"],
            json!({"order": "{{input.order}}", "score": "{{steps.merge.output.score.body.step}}"}),
        ),
    ];
    crate::workflow::routes::NewWorkflow {
        name: NAME.into(),
        description: Some("benchmark: an order checked, enriched and scored in parallel".into()),
        triggers: Vec::new(),
        steps,
    }
}

/// A loopback HTTP receiver answering every step; stopped when dropped.
struct Receiver {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receiver() -> Result<Receiver, PlatformError> {
    async fn answer(
        axum::extract::Path(step): axum::extract::Path<String>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        axum::Json(json!({"step": step, "order": body["order"]}))
    }
    let app = axum::Router::new().route("/{step}", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver { base, task })
}

/// Measures the row on the sidecar `client` (an admin) talks to.
pub(crate) async fn measure(
    backend: &str,
    client: &PlatformClient,
    options: &BenchOptions,
) -> Result<BenchRow, PlatformError> {
    let receiver = receiver().await?;
    client.workflow_define(&definition(&receiver.base)).await?;
    let runs = runs_for(options.requests);
    let deadline = Instant::now() + options.max_duration;
    let client = Arc::new(client.clone());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut starters = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.clamp(1, runs) {
        let (client, next) = (client.clone(), next.clone());
        starters.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs || Instant::now() >= deadline {
                    return Ok::<_, PlatformError>(ids);
                }
                let run = client
                    .workflow_start(NAME, json!({"order": i}), None, None)
                    .await?;
                ids.push(run.id);
            }
        });
    }
    let mut ids = Vec::new();
    while let Some(done) = starters.join_next().await {
        ids.extend(done.map_err(|e| PlatformError::Transport(e.to_string()))??);
    }
    let drain_until = Instant::now().max(deadline) + DRAIN;
    let mut finished = Vec::with_capacity(ids.len());
    for id in &ids {
        loop {
            let run = client.workflow_run(NAME, id).await?;
            if !crate::workflow::store::ACTIVE.contains(&run.status.as_str()) {
                finished.push(run);
                break;
            }
            if Instant::now() >= drain_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::new());
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for run in &finished {
        first = first.min(run.created_at);
        let done_at = |id: &str| {
            run.steps
                .iter()
                .find(|s| s.step == id)
                .and_then(|s| s.finished_at)
        };
        for (id, needs) in SHAPE {
            let Some(end) = done_at(id).filter(|_| {
                run.steps
                    .iter()
                    .any(|s| s.step == id && s.status == "succeeded")
            }) else {
                errors += 1;
                continue;
            };
            let ready = needs
                .iter()
                .filter_map(|n| done_at(n))
                .max()
                .unwrap_or(run.created_at);
            ok += 1;
            last = last.max(end);
            latencies.push(Duration::from_millis((end - ready).max(0) as u64));
        }
    }
    errors += (ids.len() - finished.len()) * STEPS_PER_RUN;
    latencies.sort();
    let elapsed = Duration::from_millis(last.saturating_sub(first).max(1) as u64).as_secs_f64();
    Ok(BenchRow {
        backend: backend.into(),
        scenario: "workflow steps".into(),
        ok,
        errors,
        requests_per_sec: ok as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}
