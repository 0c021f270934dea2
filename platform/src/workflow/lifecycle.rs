//! Ending runs and workflows on request: cancelling a run (its in-flight step is stopped, then
//! the compensations of its completed steps run, newest first, and it ends `cancelled`),
//! deleting a workflow (its unfinished runs cancelled the same way, then its versions, runs and
//! steps removed), and a principal's workflows in a GDPR export or erasure.
//!
//! A deleted workflow is renamed at once into a form no API name can take
//! (`~deleted~<name>~<id>`): the name is free again, its schedules are gone and its triggers stop,
//! while the runs still compensating go on under the new name with the same definitions. The
//! remnant is removed when its last run ends (or by the supervisor's sweep after a restart).

use super::store::{self, ACTIVE, WorkflowRun, WorkflowVersion};
use super::{TOPIC_RUN_FINISHED, announce, definition_of};
use crate::db::{Db, now_ms};
use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

/// The start of a deleted workflow's name while its cancelled runs compensate.
pub const DELETED_PREFIX: &str = "~deleted~";

/// The `IN (…)` list of the run states still driven.
fn active_list() -> String {
    ACTIVE.map(|s| format!("'{s}'")).join(", ")
}

/// What a cancellation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// Nothing needed undoing: the run is `cancelled`.
    Done,
    /// The run is `cancelling`: this many compensations run before it ends `cancelled`.
    Compensating(usize),
    /// The run was not running; its status.
    NotRunning(String),
}

/// The 409 for cancelling a run in `status`.
pub(crate) fn not_cancellable(id: &str, status: &str) -> ApiError {
    ApiError::conflict(match status {
        "compensating" => format!(
            "run {id} is compensating after a failed step; it ends failed once its compensations are done"
        ),
        "cancelling" => {
            format!("run {id} is already being cancelled; its compensations are running")
        }
        other => format!("run {id} is already {other}; only a running run can be cancelled"),
    })
}

/// Cancels `run`: its pending and in-flight steps become `cancelled` (this sidecar's driver stops
/// at once, aborting its attempts; another sidecar's loses its lease), the compensations of its
/// completed steps are queued newest first, and the run is driven again to run them.
pub(crate) async fn cancel(
    state: &AppState,
    run: &WorkflowRun,
    why: &str,
) -> Result<Cancel, ApiError> {
    let def = definition_of(&state.db, &run.workflow, run.version).await?;
    let compensable: Vec<&str> = def
        .steps
        .iter()
        .filter(|s| s.compensate.is_some())
        .map(|s| s.id.as_str())
        .collect();
    let Some(queued) = begin_cancel(&state.db, &run.id, why, &compensable).await? else {
        let status = store::load_run(&state.db, &run.id)
            .await?
            .map_or_else(|| "gone".to_string(), |r| r.status);
        return Ok(Cancel::NotRunning(status));
    };
    state.workflows.interrupt(&run.id);
    tracing::info!(run = %run.id, compensations = queued, "workflow run cancelled");
    if queued > 0 {
        state.workflows.wake();
        return Ok(Cancel::Compensating(queued));
    }
    if store::set_run_status(&state.db, &run.id, "cancelling", "cancelled", None, None).await? {
        announce(
            state,
            TOPIC_RUN_FINISHED,
            json!({"run": run.id, "workflow": original_name(&run.workflow), "version": run.version, "status": "cancelled", "error": why}),
        )
        .await;
    }
    Ok(Cancel::Done)
}

/// The name a workflow had before it was deleted (itself when it was not).
pub(crate) fn original_name(name: &str) -> &str {
    name.strip_prefix(DELETED_PREFIX)
        .and_then(|rest| rest.rsplit_once('~'))
        .map_or(name, |(original, _)| original)
}

/// In one transaction: run `id` from `running` to `cancelling` with `why` and no lease, its
/// unfinished steps `cancelled`, and a compensation row for each completed step in
/// `compensable`, newest first. `None` when the run was not running.
async fn begin_cancel(
    db: &Db,
    id: &str,
    why: &str,
    compensable: &[&str],
) -> Result<Option<usize>, ApiError> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let moved = sqlx::query("UPDATE workflow_runs SET status = 'cancelling', error = $1, updated_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $3 AND status = 'running'")
        .bind(why)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    sqlx::query("UPDATE workflow_steps SET status = 'cancelled', next_attempt_at = NULL, finished_at = $1, error = 'the run was cancelled' WHERE run_id = $2 AND status IN ('pending', 'running') AND step NOT LIKE 'compensate:%'")
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("SELECT step, seq FROM workflow_steps WHERE run_id = $1 AND status = 'succeeded' AND step NOT LIKE 'compensate:%' ORDER BY seq DESC")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    let mut undo = Vec::new();
    let mut last_seq = 0i64;
    for row in &done {
        let (step, seq): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        last_seq = last_seq.max(seq);
        if compensable.contains(&step.as_str()) {
            undo.push(step);
        }
    }
    store::add_compensations(&mut tx, id, &undo, last_seq + 1).await?;
    tx.commit().await?;
    Ok(Some(undo.len()))
}

/// What deleting a workflow did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDeletion {
    /// The workflow.
    pub name: String,
    /// Versions deleted.
    pub versions: u64,
    /// Unfinished runs cancelled.
    pub cancelled_runs: u64,
    /// Runs still compensating; the workflow's last rows go when they end.
    pub compensating_runs: u64,
    /// Whether every version, run and step is already gone (false while runs compensate).
    pub removed: bool,
}

/// Deletes workflow `name` (the caller checked it exists and may be deleted by `actor`).
pub(crate) async fn delete(
    state: &AppState,
    name: &str,
    actor: &str,
) -> Result<WorkflowDeletion, ApiError> {
    let remnant = format!("{DELETED_PREFIX}{name}~{}", uuid::Uuid::now_v7().simple());
    let versions = rename(&state.db, name, &remnant).await?;
    if versions == 0 {
        return Err(ApiError::not_found(format!("no workflow named {name}")));
    }
    state
        .workflows
        .triggers_dirty
        .store(true, Ordering::Release);
    let why = format!("cancelled: workflow {name} deleted by {actor}");
    let mut cancelled_runs = 0;
    for run in active_runs(&state.db, &remnant).await? {
        if run.status == "running"
            && !matches!(cancel(state, &run, &why).await?, Cancel::NotRunning(_))
        {
            cancelled_runs += 1;
        }
    }
    let removed = purge_if_idle(&state.db, &remnant).await?;
    let compensating_runs = if removed {
        0
    } else {
        active_runs(&state.db, &remnant).await?.len() as u64
    };
    state
        .audit(
            actor,
            "workflow.delete",
            &format!("workflow:{name}"),
            "ok",
            &format!("{versions} versions, {cancelled_runs} runs cancelled, {compensating_runs} compensating"),
        )
        .await;
    Ok(WorkflowDeletion {
        name: name.to_string(),
        versions,
        cancelled_runs,
        compensating_runs,
        removed,
    })
}

/// Renames workflow `name` to `remnant` (versions and runs) and drops its schedules; how many
/// versions it had.
async fn rename(db: &Db, name: &str, remnant: &str) -> Result<u64, ApiError> {
    let mut tx = db.pool.begin().await?;
    let versions = sqlx::query("UPDATE workflow_definitions SET name = $1 WHERE name = $2")
        .bind(remnant)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    for sql in [
        "UPDATE workflow_runs SET workflow = $1 WHERE workflow = $2",
        "DELETE FROM workflow_schedules WHERE workflow = $2 OR workflow = $1",
    ] {
        sqlx::query(sql)
            .bind(remnant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(versions)
}

/// The runs of `workflow` still driven.
async fn active_runs(db: &Db, workflow: &str) -> Result<Vec<WorkflowRun>, ApiError> {
    let mut runs = Vec::new();
    for status in ACTIVE {
        runs.extend(store::list_runs(db, workflow, Some(status), None, i64::MAX).await?);
    }
    Ok(runs)
}

/// Removes a deleted workflow's versions, runs and steps once none of its runs is driven;
/// whether it did.
pub(crate) async fn purge_if_idle(db: &Db, remnant: &str) -> Result<bool, ApiError> {
    let mut tx = db.pool.begin().await?;
    let active: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM workflow_runs WHERE workflow = $1 AND status IN ({})",
        active_list()
    )))
    .bind(remnant)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    if active > 0 {
        return Ok(false);
    }
    for sql in [
        "DELETE FROM workflow_steps WHERE run_id IN (SELECT id FROM workflow_runs WHERE workflow = $1)",
        "DELETE FROM workflow_runs WHERE workflow = $1",
        "DELETE FROM workflow_definitions WHERE name = $1",
    ] {
        sqlx::query(sql).bind(remnant).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    tracing::info!(
        workflow = original_name(remnant),
        "deleted workflow removed"
    );
    Ok(true)
}

/// Removes every deleted workflow whose runs have all ended (after a restart cut the removal
/// short).
pub(crate) async fn sweep(db: &Db) -> Result<(), ApiError> {
    let remnants: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT name FROM workflow_definitions WHERE name LIKE '{DELETED_PREFIX}%'"
    )))
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    for remnant in remnants {
        purge_if_idle(db, &remnant).await?;
    }
    Ok(())
}

/// One workflow in a GDPR export: every version and every run with its steps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowExport {
    /// The workflow's name (`~deleted~…` while a deletion waits for compensations).
    pub name: String,
    /// Oldest first.
    pub versions: Vec<WorkflowVersion>,
    /// Oldest first, with their steps.
    pub runs: Vec<WorkflowRun>,
}

/// The workflows `owner` (`user:<id>`) owns, with their versions and runs.
pub(crate) async fn export_owner(
    state: &AppState,
    owner: &str,
) -> Result<Vec<WorkflowExport>, ApiError> {
    let names: Vec<String> = sqlx::query(
        "SELECT DISTINCT name FROM workflow_definitions WHERE owner = $1 ORDER BY name",
    )
    .bind(owner)
    .fetch_all(&state.db.pool)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let ids: Vec<String> =
            sqlx::query("SELECT id FROM workflow_runs WHERE workflow = $1 ORDER BY id")
                .bind(&name)
                .fetch_all(&state.db.pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            runs.extend(store::load_run(&state.db, &id).await?);
        }
        out.push(WorkflowExport {
            versions: store::versions(&state.db, &name).await?,
            name,
            runs,
        });
    }
    Ok(out)
}

/// Deletes every workflow `owner` owns (as `DELETE /v1/workflows/{name}` does); how many.
pub(crate) async fn erase_owner(
    state: &AppState,
    owner: &str,
    actor: &str,
) -> Result<u64, ApiError> {
    let owned = store::list_latest(&state.db, Some(owner)).await?;
    for workflow in &owned {
        delete(state, &workflow.name, actor).await?;
    }
    Ok(owned.len() as u64)
}
