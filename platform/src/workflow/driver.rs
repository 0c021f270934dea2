//! The driver of one run: while this sidecar holds the run's lease it reads the stored state,
//! asks [`decide`] what to do, records each transition, and runs step attempts concurrently
//! (bounded), each with its timeout. Compensation runs one step at a time, most recently
//! completed first.

use super::definition::{Action, Definition};
use super::lifecycle::{DELETED_PREFIX, original_name, purge_if_idle};
use super::plan::{Move, compensation_of, decide};
use super::steps::{Attempt, StepError, execute};
use super::store::{self, StepKey, StepState, WorkflowRun};
use super::{MAX_INTERRUPTIONS, TOPIC_RUN_FINISHED, TOPIC_STEP_FINISHED, announce, definition_of};
use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::{AppState, WeakState};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// What applying a move did.
enum Applied {
    /// The run is over.
    Over,
    /// Stored state changed: decide again.
    Changed,
    /// Nothing changed (another driver or a cancellation got there first).
    Nothing,
}

/// Drives one run while this sidecar holds its lease.
pub(super) struct Driver {
    weak: WeakState,
    db: crate::db::Db,
    node: String,
    config: super::WorkflowConfig,
    http: reqwest::Client,
    events: crate::events::EventBus,
    id: String,
    /// The workflow's name (as it was before a deletion renamed it).
    workflow: String,
    owner: String,
    stop: CancellationToken,
    inflight: JoinSet<(String, Result<Value, StepError>)>,
    /// The steps (or compensation rows) with an attempt in flight here.
    names: HashMap<String, AbortHandle>,
}

impl Driver {
    pub(super) fn new(state: &AppState, id: String, stop: CancellationToken) -> Driver {
        Driver {
            weak: state.downgrade(),
            db: state.db.clone(),
            node: state.workflows.node.clone(),
            config: state.config.workflows.clone(),
            http: state.workflows.http.clone(),
            events: state.events.clone(),
            id,
            workflow: String::new(),
            owner: String::new(),
            stop,
            inflight: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    fn key<'a>(&'a self, step: &'a str) -> StepKey<'a> {
        StepKey {
            run: &self.id,
            node: &self.node,
            step,
        }
    }

    async fn announce(&self, topic: &str, data: Value) {
        if let Some(state) = self.weak.upgrade() {
            announce(&state, topic, data).await;
        }
    }

    pub(super) async fn drive(mut self) -> Result<(), ApiError> {
        let lease = self.config.lease_ms.max(30) as i64;
        let Some(run) = store::load_run(&self.db, &self.id).await? else {
            return Ok(());
        };
        // A run keeps the version it started with: its definition is read once.
        let def = Arc::new(definition_of(&self.db, &run.workflow, run.version).await?);
        self.workflow = original_name(&run.workflow).to_string();
        self.owner = run_owner(&self.db, &self.id).await?;
        self.resume(&run, &def).await?;
        let mut seq = run.steps.iter().map(|s| s.seq).max().unwrap_or(0);
        let mut renew_at = now_ms() + lease / 3;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let now = now_ms();
            if now >= renew_at {
                if !store::claim(&self.db, &self.id, &self.node, now + lease).await? {
                    tracing::warn!(run = %self.id, "workflow run lease lost; another sidecar drives it");
                    return Ok(());
                }
                renew_at = now + lease / 3;
            }
            let Some(run) = store::load_run(&self.db, &self.id).await? else {
                return Ok(());
            };
            if !store::ACTIVE.contains(&run.status.as_str()) {
                return Ok(());
            }
            if run.status == "cancelling" {
                self.abandon_forward_steps();
            }
            let steps: HashMap<String, StepState> = run
                .steps
                .iter()
                .map(|s| (s.step.clone(), s.clone()))
                .collect();
            let inflight: HashSet<String> = self.names.keys().cloned().collect();
            let plan = decide(
                &def,
                &run.status,
                &steps,
                &inflight,
                now,
                self.config.max_parallel_steps.max(1),
            );
            let mut changed = false;
            for step in plan.moves {
                match self.apply(step, &run, &def, &steps).await? {
                    Applied::Over => return Ok(()),
                    Applied::Changed => changed = true,
                    Applied::Nothing => {}
                }
            }
            if changed {
                continue;
            }
            let wake_at = plan.wake_at.unwrap_or(i64::MAX).min(renew_at);
            let sleep = Duration::from_millis((wake_at - now_ms()).clamp(1, lease) as u64);
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    match done {
                        Ok((name, result)) => {
                            self.names.remove(&name);
                            seq += 1;
                            self.record(&name, result, &def, &steps, seq).await?;
                        }
                        // An attempt abandoned because the run was cancelled.
                        Err(e) if e.is_cancelled() => {}
                        // A panicked attempt: start over, the next driver resumes the run.
                        Err(e) => return Err(ApiError::internal(format!("a workflow step panicked: {e}"))),
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Stops the attempts of forward steps in flight here (the run was cancelled; their rows are
    /// `cancelled` already). Compensations in flight go on.
    fn abandon_forward_steps(&mut self) {
        self.names.retain(|name, attempt| {
            let forward = !name.starts_with("compensate:");
            if forward {
                attempt.abort();
            }
            !forward
        });
    }

    /// Attempts a stopped sidecar interrupted: run them again, or fail them (`on_resume: fail`,
    /// or interrupted too often).
    async fn resume(&self, run: &WorkflowRun, def: &Definition) -> Result<(), ApiError> {
        for step in run.steps.iter().filter(|s| s.status == "running") {
            let id = step.step.trim_start_matches("compensate:");
            let refuses = def.position(id).is_some_and(|i| {
                !step.step.starts_with("compensate:")
                    && def.steps[i].on_resume == super::definition::OnResume::Fail
            });
            store::interrupt(&self.db, self.key(&step.step)).await?;
            if refuses || step.interruptions + 1 > MAX_INTERRUPTIONS {
                let why = if refuses {
                    "interrupted by a stopped sidecar; not run again (on_resume: fail)"
                } else {
                    "interrupted by a stopped sidecar too many times"
                };
                store::fail(&self.db, self.key(&step.step), why, now_ms()).await?;
                self.announce(
                    TOPIC_STEP_FINISHED,
                    json!({"run": self.id, "workflow": self.workflow, "step": step.step, "status": "failed", "attempts": step.attempts}),
                )
                .await;
            } else {
                tracing::info!(run = %self.id, step = %step.step, "resuming an interrupted workflow step");
            }
        }
        Ok(())
    }

    /// Applies one move.
    async fn apply(
        &mut self,
        step: Move,
        run: &WorkflowRun,
        def: &Arc<Definition>,
        steps: &HashMap<String, StepState>,
    ) -> Result<Applied, ApiError> {
        let changed = match step {
            Move::Skip(i) => {
                let id = def.steps[i].id.clone();
                let skipped = store::skip(&self.db, self.key(&id), now_ms()).await?;
                if skipped {
                    self.announce(
                        TOPIC_STEP_FINISHED,
                        json!({"run": self.id, "workflow": self.workflow, "step": id, "status": "skipped", "attempts": 0}),
                    )
                    .await;
                }
                skipped
            }
            Move::Start(i) => {
                let step = &def.steps[i];
                self.launch(
                    run,
                    def,
                    steps,
                    &step.id,
                    i,
                    step.action.clone(),
                    step.timeout_ms,
                )
                .await?
            }
            Move::StartCompensation(i) => match &def.steps[i].compensate {
                Some(c) => {
                    let name = compensation_of(&def.steps[i].id);
                    self.launch(run, def, steps, &name, i, c.action.clone(), c.timeout_ms)
                        .await?
                }
                None => false,
            },
            Move::Compensate(order) => {
                let ids: Vec<String> = order.iter().map(|&i| def.steps[i].id.clone()).collect();
                let failed = def
                    .steps
                    .iter()
                    .find(|s| steps.get(&s.id).is_some_and(|r| r.status == "failed"));
                let error = failed.map(|s| {
                    format!(
                        "step {} failed: {}",
                        s.id,
                        steps[&s.id].error.clone().unwrap_or_default()
                    )
                });
                let first = steps.values().map(|s| s.seq).max().unwrap_or(0) + 1;
                store::insert_compensations(&self.db, &self.id, &ids, first).await?;
                tracing::info!(run = %self.id, steps = ?ids, "workflow run compensates");
                store::set_run_status(
                    &self.db,
                    &self.id,
                    "running",
                    "compensating",
                    None,
                    error.as_deref(),
                )
                .await?
            }
            Move::Finish { status, error } => {
                let output = (status == "succeeded").then(|| leaf_outputs(def, steps));
                let mut error = error.or_else(|| run.error.clone());
                let failed_compensations: Vec<&str> = steps
                    .values()
                    .filter(|s| s.step.starts_with("compensate:") && s.status == "failed")
                    .map(|s| s.step.as_str())
                    .collect();
                if !failed_compensations.is_empty() {
                    error = Some(format!(
                        "{}; also failed: {}",
                        error.unwrap_or_default(),
                        failed_compensations.join(", ")
                    ));
                }
                let moved = store::set_run_status(
                    &self.db,
                    &self.id,
                    &run.status,
                    status,
                    output.as_ref(),
                    error.as_deref(),
                )
                .await?;
                if moved {
                    self.announce(
                        TOPIC_RUN_FINISHED,
                        json!({"run": self.id, "workflow": self.workflow, "version": run.version, "status": status, "error": error}),
                    )
                    .await;
                    // The last run of a deleted workflow takes the workflow's rows with it.
                    if run.workflow.starts_with(DELETED_PREFIX) {
                        purge_if_idle(&self.db, &run.workflow).await?;
                    }
                }
                return Ok(Applied::Over);
            }
        };
        Ok(if changed {
            Applied::Changed
        } else {
            Applied::Nothing
        })
    }

    /// Marks an attempt of `name` started and runs it in the background; `false` when the
    /// step was not pending (or the lease is gone).
    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &mut self,
        run: &WorkflowRun,
        def: &Definition,
        steps: &HashMap<String, StepState>,
        name: &str,
        index: usize,
        action: Action,
        timeout_ms: Option<u64>,
    ) -> Result<bool, ApiError> {
        if !store::start_attempt(&self.db, self.key(name), now_ms()).await? {
            return Ok(false);
        }
        let mut outputs = Map::new();
        for (id, s) in steps {
            if s.status == "succeeded" && !id.starts_with("compensate:") {
                outputs.insert(id.clone(), json!({"output": s.output}));
            }
        }
        let inputs: Map<String, Value> = def.needs[index]
            .iter()
            .filter_map(|&d| {
                let id = &def.steps[d].id;
                steps
                    .get(id)
                    .and_then(|s| s.output.clone())
                    .map(|o| (id.clone(), o))
            })
            .collect();
        let context = json!({
            "input": run.input,
            "run": {"id": run.id},
            "workflow": {"name": self.workflow, "version": run.version},
            "steps": outputs,
        });
        let attempt = Attempt {
            weak: self.weak.clone(),
            db: self.db.clone(),
            http: self.http.clone(),
            events: self.events.clone(),
            config: self.config.clone(),
            run: self.id.clone(),
            workflow: self.workflow.clone(),
            owner: self.owner.clone(),
            key: format!("{}:{name}", self.id),
            since: run.created_at,
        };
        let timeout =
            Duration::from_millis(timeout_ms.unwrap_or(self.config.default_timeout_ms).max(1));
        let name = name.to_string();
        let attempt_name = name.clone();
        let handle = self.inflight.spawn(async move {
            let result =
                match tokio::time::timeout(timeout, execute(&attempt, &action, &context, inputs))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(StepError::retry(format!(
                        "timed out after {} ms",
                        timeout.as_millis()
                    ))),
                };
            (name, result)
        });
        self.names.insert(attempt_name, handle);
        Ok(true)
    }

    /// Records the outcome of an attempt: success, a retry later, or failure.
    async fn record(
        &mut self,
        name: &str,
        result: Result<Value, StepError>,
        def: &Definition,
        before: &HashMap<String, StepState>,
        seq: i64,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        let id = name.trim_start_matches("compensate:");
        let Some(index) = def.position(id) else {
            return Ok(());
        };
        let retry = match (
            &def.steps[index].compensate,
            name.starts_with("compensate:"),
        ) {
            (Some(c), true) => c.retry,
            _ => def.steps[index].retry,
        };
        let result = result.and_then(|output| {
            let size = output.to_string().len();
            if size > self.config.max_output_bytes {
                Err(StepError::fatal(format!(
                    "the output is {size} bytes; at most {}",
                    self.config.max_output_bytes
                )))
            } else {
                Ok(output)
            }
        });
        // `before` was read after the attempt that just ended was started (every move is
        // followed by a fresh read), so it counts that attempt.
        let row = before.get(name);
        let attempts = row.map_or(1, |r| r.attempts);
        let interruptions = row.map_or(0, |r| r.interruptions);
        let counted = attempts - interruptions;
        let workflow = self.workflow.clone();
        let (status, stored) = match result {
            Ok(output) => (
                "succeeded",
                store::succeed(&self.db, self.key(name), &output, seq, now).await?,
            ),
            Err(e) if e.retriable && counted < i64::from(retry.max_attempts) => {
                let at = now + retry.backoff(counted) as i64;
                tracing::debug!(run = %self.id, step = name, attempt = counted, error = %e.message, "workflow step retries");
                store::retry_later(&self.db, self.key(name), &e.message, at).await?;
                return Ok(());
            }
            Err(e) => (
                "failed",
                store::fail(&self.db, self.key(name), &e.message, now).await?,
            ),
        };
        if stored {
            self.announce(
                TOPIC_STEP_FINISHED,
                json!({"run": self.id, "workflow": workflow, "step": name, "status": status, "attempts": attempts}),
            )
            .await;
        }
        Ok(())
    }
}

async fn run_owner(db: &crate::db::Db, run: &str) -> Result<String, ApiError> {
    use sqlx::Row;
    Ok(sqlx::query("SELECT owner FROM workflow_runs WHERE id = $1")
        .bind(run)
        .fetch_one(&db.pool)
        .await?
        .try_get(0)?)
}

/// The outputs of the steps nothing waits for, by step id.
fn leaf_outputs(def: &Definition, steps: &HashMap<String, StepState>) -> Value {
    let mut waited: HashSet<usize> = HashSet::new();
    for needs in &def.needs {
        waited.extend(needs);
    }
    let mut out = Map::new();
    for (i, step) in def.steps.iter().enumerate() {
        if waited.contains(&i) {
            continue;
        }
        if let Some(s) = steps.get(&step.id).filter(|s| s.status == "succeeded") {
            out.insert(step.id.clone(), s.output.clone().unwrap_or(Value::Null));
        }
    }
    Value::Object(out)
}
