//! `dartmouth bench platform`: requests/s and latency percentiles of token verification, an
//! authenticated document insert and a filtered query, and workflow steps/s with each step's
//! latency (see `workflow::bench`), against an in-process sidecar on a loopback port, with SQLite
//! and (when a URL is given) PostgreSQL. The load generator is bounded in both request count and
//! time.

use crate::client::PlatformClient;
use crate::config::{BootstrapAdmin, PlatformConfig, RateLimitConfig};
use crate::documents::QueryRequest;
use crate::error::PlatformError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Requests per scenario (upper bound). Default 2000.
    pub requests: usize,
    /// Concurrent in-flight requests. Default 16.
    pub concurrency: usize,
    /// Time limit per scenario. Default 10 s.
    pub max_duration: Duration,
    /// PostgreSQL URL; `None` → SQLite only. Default: `DATABASE_URL` from the environment.
    pub database_url: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            requests: 2000,
            concurrency: 16,
            max_duration: Duration::from_secs(10),
            database_url: std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()),
        }
    }
}

/// One measured scenario.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Scenario name.
    pub scenario: String,
    /// Successful requests.
    pub ok: usize,
    /// Failed requests.
    pub errors: usize,
    /// Successful requests per second.
    pub requests_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
}

/// The benchmark's result; `Display` prints a table.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Measured rows.
    pub rows: Vec<BenchRow>,
    /// Remarks (e.g. why PostgreSQL was skipped).
    pub notes: Vec<String>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<9} {:<22} {:>7} {:>6} {:>10} {:>9} {:>9}",
            "backend", "scenario", "ok", "errors", "req/s", "p50 ms", "p99 ms"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<9} {:<22} {:>7} {:>6} {:>10.0} {:>9.2} {:>9.2}",
                r.backend,
                r.scenario,
                r.ok,
                r.errors,
                r.requests_per_sec,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// The `p` quantile (0-1) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs `op(i)` up to `requests` times on `concurrency` workers, stopping at `max_duration`.
async fn load<F, Fut>(backend: &str, scenario: &str, options: &BenchOptions, op: F) -> BenchRow
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), PlatformError>> + Send,
{
    let op = Arc::new(op);
    let issued = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + options.max_duration;
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let (op, issued, total) = (op.clone(), issued.clone(), options.requests);
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    latencies.sort();
    BenchRow {
        backend: backend.into(),
        scenario: scenario.into(),
        ok: latencies.len(),
        errors,
        requests_per_sec: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

async fn bench_backend(
    backend: &str,
    database_url: Option<String>,
    options: &BenchOptions,
) -> Result<Vec<BenchRow>, PlatformError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag = format!("{}_{nanos}", std::process::id());
    let data_dir: PathBuf = std::env::temp_dir().join(format!("dartmouth-bench-{tag}"));
    let schema = database_url.as_ref().map(|_| format!("dm_bench_{tag}"));
    let config = PlatformConfig {
        data_dir: data_dir.clone(),
        database_url: database_url.clone(),
        database_schema: schema.clone(),
        database_max_connections: 16,
        bootstrap_admin: Some(BootstrapAdmin {
            email: "bench@example.com".into(),
            password: "bench-password".into(),
        }),
        rate_limits: RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        },
        // The workflow steps call a receiver on loopback.
        workflows: crate::workflow::WorkflowConfig {
            allow_private_targets: true,
            ..crate::workflow::WorkflowConfig::default()
        },
        ..PlatformConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    let result = measure(backend, &format!("http://{addr}"), options).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    if let (Some(url), Some(schema)) = (database_url, schema) {
        use sqlx::{Connection, Executor};
        if let Ok(mut conn) = sqlx::AnyConnection::connect(&url).await {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .await;
        }
    }
    result
}

async fn measure(
    backend: &str,
    base: &str,
    options: &BenchOptions,
) -> Result<Vec<BenchRow>, PlatformError> {
    let client = PlatformClient::new(base)?;
    let mut ready = false;
    for _ in 0..200 {
        if client.health().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        return Err(PlatformError::Transport(format!(
            "sidecar at {base} did not come up"
        )));
    }
    let session = client.login("bench@example.com", "bench-password").await?;
    let admin = client.with_credential(&session.access_token);
    let key = admin
        .create_api_key(&crate::auth::routes::CreateApiKey {
            name: "bench".into(),
            role: crate::auth::Role::Agent,
            agent_id: Some("bench".into()),
            scopes: None,
        })
        .await?;
    let agent = Arc::new(client.with_credential(&key.key));
    let mut rows = Vec::new();
    let user = Arc::new(admin.clone());
    rows.push(
        load(backend, "token verification", options, move |_| {
            let user = user.clone();
            async move { user.me().await.map(drop) }
        })
        .await,
    );
    let inserter = agent.clone();
    rows.push(
        load(backend, "authenticated insert", options, move |i| {
            let agent = inserter.clone();
            async move {
                let doc = serde_json::json!({"n": (i % 100) as i64, "title": format!("task {i}"), "done": i % 2 == 0});
                agent.db("bench").insert("tasks", &doc).await.map(drop)
            }
        })
        .await,
    );
    rows.push(
        load(backend, "filtered query", options, move |i| {
            let agent = agent.clone();
            async move {
                let mut filter = serde_json::Map::new();
                filter.insert("n".into(), serde_json::json!((i % 100) as i64));
                let query = QueryRequest {
                    filter,
                    limit: Some(10),
                    offset: None,
                };
                agent.db("bench").query("tasks", &query).await.map(drop)
            }
        })
        .await,
    );
    rows.push(crate::workflow::bench::measure(backend, &admin, options).await?);
    Ok(rows)
}

/// Runs the benchmark: SQLite always, PostgreSQL when `options.database_url` is set.
pub async fn run(options: BenchOptions) -> Result<BenchReport, PlatformError> {
    let mut report = BenchReport::default();
    report
        .rows
        .extend(bench_backend("sqlite", None, &options).await?);
    match options.database_url.clone() {
        Some(url) => report
            .rows
            .extend(bench_backend("postgres", Some(url), &options).await?),
        None => report
            .notes
            .push("PostgreSQL skipped: DATABASE_URL is not set".into()),
    }
    report.notes.push(format!(
        "{} requests max per scenario, {} concurrent, {:?} limit; loopback HTTP/1.1 via the typed client",
        options.requests, options.concurrency, options.max_duration
    ));
    report.notes.push(format!(
        "workflow steps: req/s is steps/s over {} runs of {} steps (HTTP to a loopback receiver, a condition, a parallel branch, a join); p50/p99 per step, from its dependencies done to its own end (ms resolution)",
        crate::workflow::bench::runs_for(options.requests),
        crate::workflow::bench::STEPS_PER_RUN
    ));
    Ok(report)
}
