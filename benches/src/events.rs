//! `dartmouth bench events`: the event bus in-process and on NATS JetStream (`NATS_URL`).
//! Throughput: events published with several subscribers listening, at most a window of events
//! ahead of the slowest one (so nothing is lost to lag), until every subscriber has every event.
//! Latency: one event at a time, publish → delivery at each subscriber.

use crate::stats::percentile;
use dartmouth_platform::PlatformError;
use dartmouth_platform::events::{Event, EventBus};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Latency samples queued from the subscribers to the benchmark.
const SAMPLE_QUEUE_CAPACITY: usize = 1024;
/// Longest wait for a stage before it is reported as lost events.
const STAGE_LIMIT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct EventsBenchOptions {
    /// Subscribers listening at once. Default 4.
    pub subscribers: usize,
    /// Events of the in-process throughput stage. Default 200 000.
    pub local_events: usize,
    /// Events of the NATS throughput stage. Default 20 000.
    pub nats_events: usize,
    /// Events of each latency stage (one at a time). Default 1000.
    pub latency_events: usize,
    /// Events published ahead of the slowest subscriber at most. Default 1024.
    pub window: usize,
    /// Concurrent publishers on NATS (each waits for JetStream's acknowledgement). Default 8.
    pub nats_publishers: usize,
    /// The NATS server; `None` skips those rows. Default `NATS_URL`.
    pub nats_url: Option<String>,
}

impl Default for EventsBenchOptions {
    fn default() -> Self {
        Self {
            subscribers: 4,
            local_events: 200_000,
            nats_events: 20_000,
            latency_events: 1000,
            window: 1024,
            nats_publishers: 8,
            nats_url: std::env::var("NATS_URL").ok().filter(|u| !u.is_empty()),
        }
    }
}

impl EventsBenchOptions {
    /// A small run for smoke tests.
    pub fn quick() -> Self {
        Self {
            local_events: 5_000,
            nats_events: 1_000,
            latency_events: 100,
            ..Self::default()
        }
    }
}

/// One measured bus.
#[derive(Debug, Clone)]
pub struct EventsRow {
    /// `in-process` or `NATS JetStream`.
    pub path: String,
    /// Subscribers listening.
    pub subscribers: usize,
    /// Events published in the throughput stage.
    pub events: usize,
    /// Events published per second.
    pub published_per_sec: f64,
    /// Events per second delivered to every subscriber (first publish → last delivery).
    pub delivered_per_sec: f64,
    /// Deliveries that never arrived (throughput stage, summed over subscribers).
    pub lost: u64,
    /// Publish → delivery, one event at a time, every subscriber's sample.
    pub latency: Vec<Duration>,
}

/// The benchmark's result; `Display` prints the table.
#[derive(Debug, Clone, Default)]
pub struct EventsReport {
    /// Measured buses.
    pub rows: Vec<EventsRow>,
    /// Buses not measured, with why (printed as `SKIPPED:` lines).
    pub skipped: Vec<String>,
}

impl fmt::Display for EventsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: dartmouth bench events")?;
        writeln!(
            f,
            "| {:<16} | {:>4} | {:>8} | {:>12} | {:>12} | {:>6} | {:>8} | {:>8} |",
            "bus", "subs", "events", "published/s", "delivered/s", "lost", "p50 ms", "p99 ms"
        )?;
        writeln!(
            f,
            "|{}|{}|{}|{}|{}|{}|{}|{}|",
            "-".repeat(18),
            "-".repeat(6),
            "-".repeat(10),
            "-".repeat(14),
            "-".repeat(14),
            "-".repeat(8),
            "-".repeat(10),
            "-".repeat(10)
        )?;
        for r in &self.rows {
            let ms = |p| {
                percentile(&r.latency, p)
                    .map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
            };
            writeln!(
                f,
                "| {:<16} | {:>4} | {:>8} | {:>12.0} | {:>12.0} | {:>6} | {:>8} | {:>8} |",
                r.path,
                r.subscribers,
                r.events,
                r.published_per_sec,
                r.delivered_per_sec,
                r.lost,
                ms(50.0),
                ms(99.0)
            )?;
        }
        for why in &self.skipped {
            writeln!(f, "SKIPPED: {why}")?;
        }
        writeln!(
            f,
            "delivered/s: events every subscriber received per second; latency: one event at a time, \
             publish → each subscriber ({} samples per bus)",
            self.rows.first().map_or(0, |r| r.latency.len())
        )
    }
}

/// What a subscriber task reports.
enum Seen {
    /// It has every throughput event (or gave up), with how many it got.
    AllThroughput(u64),
    /// A latency-stage event arrived after this long.
    Latency(Duration),
}

/// Nanoseconds since `base`, as carried in an event.
fn stamp(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Measures one bus: subscribers first, then the throughput stage, then the latency stage.
async fn measure(
    bus: &EventBus,
    path: &str,
    prefix: &str,
    options: &EventsBenchOptions,
    events: usize,
    publishers: usize,
) -> Result<EventsRow, PlatformError> {
    let base = Instant::now();
    let subscribers = options.subscribers.max(1);
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let (seen_tx, mut seen) = mpsc::channel::<Seen>(SAMPLE_QUEUE_CAPACITY);
    let throughput_topic = format!("{prefix}.throughput");
    let mut tasks = Vec::new();
    for s in 0..subscribers {
        let mut subscription = bus.subscribe(&format!("{prefix}.>")).await?;
        let (received, seen_tx, throughput_topic) =
            (received.clone(), seen_tx.clone(), throughput_topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = false;
            while let Some(event) = subscription.next().await {
                if event.topic == throughput_topic {
                    let count = received[s].fetch_add(1, Ordering::Relaxed) + 1;
                    if count == events as u64 {
                        done = true;
                        if seen_tx.send(Seen::AllThroughput(count)).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let sent = event.data["t"].as_u64().unwrap_or(0);
                    let latency = Duration::from_nanos(stamp(base).saturating_sub(sent));
                    if seen_tx.send(Seen::Latency(latency)).await.is_err() {
                        return;
                    }
                }
            }
            if !done {
                let count = received[s].load(Ordering::Relaxed);
                let _ = seen_tx.send(Seen::AllThroughput(count)).await;
            }
        }));
    }
    drop(seen_tx);

    // Throughput: publishers share a counter of events; each stays within the window of the
    // slowest subscriber.
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut publishing = Vec::new();
    for _ in 0..publishers.max(1) {
        let (bus, issued, received, topic) = (
            bus.clone(),
            issued.clone(),
            received.clone(),
            throughput_topic.clone(),
        );
        let window = options.window.max(1) as u64;
        publishing.push(tokio::spawn(async move {
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= events as u64 {
                    return Ok::<(), PlatformError>(());
                }
                let deadline = Instant::now() + STAGE_LIMIT;
                while i >= window + slowest(&received) && Instant::now() < deadline {
                    tokio::task::yield_now().await;
                }
                bus.publish(&Event::new(
                    topic.clone(),
                    "bench",
                    serde_json::json!({"i": i}),
                ))
                .await?;
            }
        }));
    }
    for task in publishing {
        task.await
            .map_err(|e| PlatformError::Transport(e.to_string()))??;
    }
    let published = started.elapsed();
    let mut lost = 0;
    let mut finished = 0;
    while finished < subscribers {
        match tokio::time::timeout(STAGE_LIMIT, seen.recv()).await {
            Ok(Some(Seen::AllThroughput(count))) => {
                lost += (events as u64).saturating_sub(count);
                finished += 1;
            }
            Ok(Some(Seen::Latency(_))) => {}
            Ok(None) | Err(_) => {
                lost += received
                    .iter()
                    .map(|r| (events as u64).saturating_sub(r.load(Ordering::Relaxed)))
                    .sum::<u64>();
                break;
            }
        }
    }
    let delivered = started.elapsed();

    // Latency: one event at a time, waiting for every subscriber before the next.
    let latency_topic = format!("{prefix}.latency");
    let mut latency = Vec::with_capacity(options.latency_events * subscribers);
    for i in 0..options.latency_events {
        let event = Event::new(
            latency_topic.clone(),
            "bench",
            serde_json::json!({"i": i, "t": stamp(base)}),
        );
        bus.publish(&event).await?;
        let mut got = 0;
        while got < subscribers {
            match tokio::time::timeout(STAGE_LIMIT, seen.recv()).await {
                Ok(Some(Seen::Latency(d))) => {
                    latency.push(d);
                    got += 1;
                }
                Ok(Some(Seen::AllThroughput(_))) => {}
                Ok(None) | Err(_) => {
                    for task in &tasks {
                        task.abort();
                    }
                    return Err(PlatformError::Transport(format!(
                        "{path}: latency event {i} did not reach every subscriber"
                    )));
                }
            }
        }
    }
    for task in &tasks {
        task.abort();
    }
    Ok(EventsRow {
        path: path.into(),
        subscribers,
        events,
        published_per_sec: events as f64 / published.as_secs_f64().max(1e-9),
        delivered_per_sec: events as f64 / delivered.as_secs_f64().max(1e-9),
        lost,
        latency,
    })
}

fn slowest(received: &[AtomicU64]) -> u64 {
    received
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0)
}

/// Runs the benchmark: in-process always, NATS JetStream when `options.nats_url` is set.
pub async fn run(options: &EventsBenchOptions) -> Result<EventsReport, PlatformError> {
    let tag = format!(
        "r{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut report = EventsReport::default();
    let local = EventBus::local();
    report.rows.push(
        measure(
            &local,
            "in-process",
            &format!("bench.{tag}"),
            options,
            options.local_events,
            1,
        )
        .await?,
    );
    match &options.nats_url {
        Some(url) => {
            let nats = EventBus::nats(url).await?;
            report.rows.push(
                measure(
                    &nats,
                    "NATS JetStream",
                    &format!("bench.{tag}"),
                    options,
                    options.nats_events,
                    options.nats_publishers,
                )
                .await?,
            );
        }
        None => report
            .skipped
            .push("NATS JetStream row: NATS_URL is not set".into()),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quick_run_reports_each_bus() {
        let options = EventsBenchOptions::quick();
        let report = run(&options).await.expect("the benchmark runs");
        println!("{report}");
        let text = report.to_string();
        assert!(text.contains("command: dartmouth bench events"), "{text}");
        let local = &report.rows[0];
        assert_eq!(local.path, "in-process");
        match &options.nats_url {
            Some(_) => assert_eq!(report.rows[1].path, "NATS JetStream", "{text}"),
            None => assert!(text.contains("SKIPPED: NATS JetStream row"), "{text}"),
        }
        for row in &report.rows {
            assert_eq!(row.lost, 0, "flow control loses nothing: {text}");
            assert!(row.published_per_sec > 0.0 && row.delivered_per_sec > 0.0);
            // Every event is delivered after it is published: delivery can only be slower.
            assert!(
                row.delivered_per_sec <= row.published_per_sec * 1.0001,
                "{text}"
            );
            assert_eq!(
                row.latency.len(),
                options.latency_events * options.subscribers,
                "every subscriber timed every event"
            );
            let p50 = percentile(&row.latency, 50.0).unwrap();
            let p99 = percentile(&row.latency, 99.0).unwrap();
            assert!(p50 <= p99, "{text}");
        }
    }
}
