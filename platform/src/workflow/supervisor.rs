//! The supervisor: claims the runs nobody drives (a lease per run, renewed by its driver) and
//! owns one driver task per claimed run; and [`start_run`], which stores a new run and wakes it.

use super::driver::Driver;
use super::store;
use super::{TOPIC_RUN_STARTED, announce};
use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::{AppState, WeakState};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Removes a run from the engine's driven set when its driver ends (or is aborted).
struct Driven {
    weak: WeakState,
    id: String,
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Some(state) = self.weak.upgrade()
            && let Ok(mut runs) = state.workflows.runs.lock()
        {
            runs.remove(&self.id);
            // A run whose driver was stopped (a cancel) may need driving again at once.
            state.workflows.wake();
        }
    }
}

/// How often deleted workflows left by a restart are looked for.
const SWEEP: Duration = Duration::from_secs(60);

/// Claims unclaimed runs and drives them until the state is dropped; the drivers are owned
/// here (aborted when this ends).
pub(crate) async fn supervise(weak: WeakState, cancel: CancellationToken) {
    let mut drivers: JoinSet<()> = JoinSet::new();
    let mut swept_at: Option<Instant> = None;
    loop {
        while drivers.try_join_next().is_some() {}
        let (poll, wake) = {
            let Some(state) = weak.upgrade() else { return };
            let config = &state.config.workflows;
            if swept_at.is_none_or(|at| at.elapsed() >= SWEEP) {
                swept_at = Some(Instant::now());
                if let Err(e) = super::lifecycle::sweep(&state.db).await {
                    tracing::warn!(error = %e, "removing deleted workflows failed");
                }
            }
            if let Err(e) = claim_runs(&state, &weak, &mut drivers).await {
                tracing::warn!(error = %e, "claiming workflow runs failed");
            }
            (
                Duration::from_millis(config.poll_ms.max(10)),
                state.workflows.wake.clone(),
            )
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

async fn claim_runs(
    state: &AppState,
    weak: &WeakState,
    drivers: &mut JoinSet<()>,
) -> Result<(), ApiError> {
    let engine = &state.workflows;
    let config = &state.config.workflows;
    let driven = engine.runs.lock().map(|m| m.len()).unwrap_or(usize::MAX);
    let free = config.max_concurrent_runs.saturating_sub(driven);
    if free == 0 {
        return Ok(());
    }
    let now = now_ms();
    for id in store::unclaimed(&state.db, now, free as i64).await? {
        if engine
            .runs
            .lock()
            .map(|m| m.contains_key(&id))
            .unwrap_or(true)
        {
            continue;
        }
        if !store::claim(&state.db, &id, &engine.node, now + config.lease_ms as i64).await? {
            continue;
        }
        let stop = engine.cancel.child_token();
        if let Ok(mut runs) = engine.runs.lock() {
            runs.insert(id.clone(), stop.clone());
        }
        let guard = Driven {
            weak: weak.clone(),
            id: id.clone(),
        };
        let driver = Driver::new(state, id, stop);
        drivers.spawn(async move {
            let _guard = guard;
            if let Err(e) = driver.drive().await {
                tracing::warn!(error = %e, "workflow run driver stopped");
            }
        });
    }
    Ok(())
}

/// Starts a run of `workflow` (its latest version unless `version`), owned by the workflow's
/// owner; with a `dedup_key` already used, answers that run instead (`false`: not new).
pub(crate) async fn start_run(
    state: &AppState,
    workflow: &str,
    version: Option<i64>,
    trigger: &str,
    input: Value,
    dedup_key: Option<String>,
) -> Result<(String, bool), ApiError> {
    let stored = match version {
        Some(v) => store::get_version(&state.db, workflow, v).await?,
        None => store::latest(&state.db, workflow).await?,
    }
    .ok_or_else(|| ApiError::not_found(format!("no such workflow (version) {workflow}")))?;
    let size = input.to_string().len();
    if size > state.config.workflows.max_output_bytes {
        return Err(ApiError::payload_too_large(format!(
            "input is {size} bytes; at most {}",
            state.config.workflows.max_output_bytes
        )));
    }
    let def = super::definition::parse(&stored.definition)
        .map_err(|e| ApiError::internal(format!("stored workflow {workflow}: {e}")))?;
    let created = store::insert_run(
        &state.db,
        store::NewRun {
            workflow,
            version: stored.version,
            owner: &stored.owner,
            trigger,
            dedup_key,
            input: &input,
            steps: def.steps.iter().map(|s| s.id.as_str()).collect(),
        },
    )
    .await?;
    match created {
        Ok(id) => {
            announce(
                state,
                TOPIC_RUN_STARTED,
                json!({"run": id, "workflow": workflow, "version": stored.version, "trigger": trigger}),
            )
            .await;
            state.workflows.wake();
            Ok((id, true))
        }
        Err(existing) => Ok((existing, false)),
    }
}
