//! Workflows: versioned DAGs of steps (call an agent, call HTTP, prompt an LLM, wait for an
//! event, branch on a condition, join) defined as JSON, started by the API, by an event on the
//! bus, or by a cron schedule, and executed by a durable engine.
//!
//! Every run and every step is persisted (SQLite or PostgreSQL) at each transition, so a sidecar
//! that stops mid-run resumes the run when it (or another sidecar on the same database) starts
//! again. Steps whose dependencies are done run concurrently; a step that depends on several
//! waits for all of them (a join). A step retries with exponential back-off up to its
//! `max_attempts`, each attempt bounded by its timeout; when a step fails for good, the
//! `compensate` action of every completed step runs, most recently completed first, and the run
//! fails.
//!
//! **Exactly once.** A completed step's recorded result is final: it never runs again. Each
//! step has an idempotency key (`<run id>:<step id>`) that every attempt sends (the
//! `Idempotency-Key` header of HTTP calls, the message id of agent calls), so a target that
//! honours it applies an effect once. An attempt interrupted by a stopped sidecar (a step found
//! `running` when a run is resumed) is run again with the same key — unless the step says
//! `"on_resume": "fail"`, for targets that cannot deduplicate; then the step fails and the run
//! compensates. Interrupted attempts do not count against `max_attempts` (at most
//! [`MAX_INTERRUPTIONS`] of them). One sidecar at a time drives a run: it holds a lease on it,
//! renewed while it works.
//!
//! **Ending on request.** Cancelling a run stops its step in flight and runs the compensations
//! of its completed steps, newest first and once each (resumed like any step after a restart),
//! before it ends `cancelled`. Deleting a workflow cancels its unfinished runs that way, then
//! removes its versions, runs and steps (see [`lifecycle`]).

pub mod bench;
mod client;
pub mod cron;
pub mod definition;
mod driver;
pub mod lifecycle;
mod plan;
pub mod routes;
mod steps;
pub mod store;
mod supervisor;
pub mod template;
mod triggers;

pub use cron::Cron;
pub use definition::Definition;

use crate::error::ApiError;
use crate::events::{Event, publish};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use utoipa_axum::router::OpenApiRouter;

/// Times a step's attempt may be interrupted by a stopped sidecar before the step fails.
pub const MAX_INTERRUPTIONS: i64 = 3;
/// Most triggers on one workflow.
pub const MAX_TRIGGERS: usize = 10;
/// Longest step timeout (7 days), in ms.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most attempts of one step.
pub const MAX_ATTEMPTS: u32 = 20;
/// Longest back-off between attempts (1 h), in ms.
pub const MAX_BACKOFF_MS: u64 = 3600 * 1000;
/// Topic of a run that started.
pub const TOPIC_RUN_STARTED: &str = "workflow.run.started";
/// Topic of a step that finished (succeeded, failed or skipped).
pub const TOPIC_STEP_FINISHED: &str = "workflow.step.finished";
/// Topic of a run that finished (succeeded, failed or cancelled).
pub const TOPIC_RUN_FINISHED: &str = "workflow.run.finished";

/// Settings of the workflow engine (`[platform.workflows]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct WorkflowConfig {
    /// Allow HTTP steps to call loopback/private addresses (tests, on-premises). Default false.
    pub allow_private_targets: bool,
    /// Most steps in one definition. Default 100.
    pub max_steps: usize,
    /// Runs one sidecar drives at once. Default 64.
    pub max_concurrent_runs: usize,
    /// Steps of one run in flight at once. Default 16.
    pub max_parallel_steps: usize,
    /// Timeout of a step attempt that sets none, in ms. Default 30 000.
    pub default_timeout_ms: u64,
    /// How long a sidecar's claim on a run lasts unless renewed, in ms. Default 30 000.
    pub lease_ms: u64,
    /// How often unclaimed runs are looked for when nothing wakes the engine, in ms. Default 1000.
    pub poll_ms: u64,
    /// Largest step output or run input (JSON text), in bytes. Default 64 KiB.
    pub max_output_bytes: usize,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            max_steps: 100,
            max_concurrent_runs: 64,
            max_parallel_steps: 16,
            default_timeout_ms: 30_000,
            lease_ms: 30_000,
            poll_ms: 1_000,
            max_output_bytes: 64 * 1024,
        }
    }
}

/// The time schedules are evaluated against: the system clock, or a manual one tests drive.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// Wall-clock time.
    #[default]
    System,
    /// Virtual time, moved only by [`ManualClock::set`] and [`ManualClock::advance`].
    Manual(Arc<ManualClock>),
}

/// A clock that stands still until moved.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    /// A clock showing unix ms `start`.
    pub fn new(start: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: watch::Sender::new(start),
        })
    }
    /// The time shown, unix ms.
    pub fn now(&self) -> i64 {
        *self.now.borrow()
    }
    /// Moves the clock to unix ms `to`.
    pub fn set(&self, to: i64) {
        self.now.send_replace(to);
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now.send_modify(|now| *now += ms);
    }
}

impl Clock {
    /// Unix ms now.
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => crate::db::now_ms(),
            Clock::Manual(clock) => clock.now(),
        }
    }
    /// A receiver that sees every move of a manual clock.
    fn changes(&self) -> Option<watch::Receiver<i64>> {
        match self {
            Clock::System => None,
            Clock::Manual(clock) => Some(clock.now.subscribe()),
        }
    }
}

/// The engine's shared parts, held by the state; dropping it stops every workflow task.
pub struct Engine {
    /// This sidecar's id in run leases.
    node: String,
    clock: Clock,
    http: reqwest::Client,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    _stop: DropGuard,
    triggers_dirty: AtomicBool,
    schedules_checked_at: AtomicI64,
    runs: Mutex<HashMap<String, CancellationToken>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.node)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for `config`, evaluating schedules against `clock`.
    pub fn new(config: &WorkflowConfig, clock: Clock) -> Result<Engine, String> {
        let http = crate::webhooks::ssrf::outbound_client(
            std::time::Duration::from_millis(MAX_TIMEOUT_MS),
            config.allow_private_targets,
        )
        .map_err(|e| format!("workflow HTTP client: {e}"))?;
        let cancel = CancellationToken::new();
        Ok(Engine {
            node: uuid::Uuid::new_v4().simple().to_string(),
            clock,
            http,
            wake: Arc::new(Notify::new()),
            _stop: cancel.clone().drop_guard(),
            cancel,
            triggers_dirty: AtomicBool::new(true),
            schedules_checked_at: AtomicI64::new(i64::MIN),
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// The clock schedules are evaluated against.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The clock time (unix ms) of the last completed pass over the schedules (tests wait for
    /// it to reach the time they moved a manual clock to).
    pub fn schedules_checked_at(&self) -> i64 {
        self.schedules_checked_at.load(Ordering::Acquire)
    }

    /// Makes the engine look for runs to drive now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the local driver of run `id`, if this sidecar drives it.
    pub(crate) fn interrupt(&self, id: &str) {
        if let Some(token) = self.runs.lock().ok().and_then(|m| m.get(id).cloned()) {
            token.cancel();
        }
    }
}

/// Version `version` of workflow `name`, parsed (a deleted workflow's too, while its runs
/// compensate).
pub(crate) async fn definition_of(
    db: &crate::db::Db,
    name: &str,
    version: i64,
) -> Result<Definition, ApiError> {
    let stored = store::get_version(db, name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no version {version} of workflow {name}")))?;
    definition::parse(&stored.definition)
        .map_err(|e| ApiError::internal(format!("stored workflow {name}: {e}")))
}

/// Starts the engine's tasks (the run driver, the schedule and the event triggers); they hold
/// the state weakly and end when it is dropped.
pub(crate) fn start(state: &AppState) {
    let cancel = state.workflows.cancel.clone();
    tokio::spawn(supervisor::supervise(state.downgrade(), cancel.clone()));
    tokio::spawn(triggers::schedules(state.downgrade(), cancel.clone()));
    tokio::spawn(triggers::events(state.downgrade(), cancel));
}

/// Publishes a `workflow.*` event; a failure is logged, the run goes on.
pub(crate) async fn announce(state: &AppState, topic: &str, data: serde_json::Value) {
    if let Err(e) = publish(state, Event::new(topic, "platform", data)).await {
        tracing::warn!(error = %e, topic, "workflow event not published");
    }
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    routes::router()
}
