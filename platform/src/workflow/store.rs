//! The workflow tables: definition versions, runs and their steps, schedules, run leases.
//! Every state change of a step is one guarded `UPDATE` (it applies only from the state it
//! expects, and only while this sidecar holds the run's lease).

use super::lifecycle::DELETED_PREFIX;
use crate::db::{Db, now_ms};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use utoipa::ToSchema;

/// Run states that are still being driven.
pub const ACTIVE: [&str; 3] = ["running", "compensating", "cancelling"];

/// One stored version of a definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowVersion {
    /// The workflow's name.
    pub name: String,
    /// 1 for the first definition, +1 for each one posted after.
    pub version: i64,
    /// Who owns the workflow (`agent:<id>`, `user:<id>` or `key:<id>`).
    pub owner: String,
    /// Who posted this version.
    pub created_by: String,
    /// Unix ms it was posted.
    pub created_at: i64,
    /// The definition (`description`, `triggers`, `steps`) in its canonical form.
    #[schema(value_type = Object)]
    pub definition: Value,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowRun {
    /// Run id.
    pub id: String,
    /// The workflow.
    pub workflow: String,
    /// The definition version it runs (pinned at start).
    pub version: i64,
    /// `running`, `compensating` (undoing completed steps after a failure), `cancelling`
    /// (undoing them after a cancel), `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// What started it: `api`, `event` or `schedule`.
    pub trigger: String,
    /// The input.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Outputs of the steps nothing depends on, by step id (once succeeded).
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix ms it was created.
    pub created_at: i64,
    /// Unix ms of its last change.
    pub updated_at: i64,
    /// Unix ms it finished.
    pub finished_at: Option<i64>,
    /// Its steps (on `GET` of one run; empty in listings).
    #[serde(default)]
    pub steps: Vec<StepState>,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepState {
    /// Step id, or `compensate:<step id>` for a compensation.
    pub step: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped` or `cancelled`.
    pub status: String,
    /// Attempts started.
    pub attempts: i64,
    /// Attempts a stopped sidecar interrupted (run again on resume).
    pub interruptions: i64,
    /// Sent with every attempt (`Idempotency-Key`, agent message id).
    pub idempotency_key: String,
    /// The result, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// Unix ms the next attempt is due (while waiting to retry).
    pub next_attempt_at: Option<i64>,
    /// Unix ms the last attempt started.
    pub started_at: Option<i64>,
    /// Unix ms it finished.
    pub finished_at: Option<i64>,
    /// Order of completion (compensations: order of execution).
    pub seq: i64,
}

fn json_of(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn version_of(row: &AnyRow) -> Result<WorkflowVersion, ApiError> {
    let text: String = row.try_get("definition")?;
    Ok(WorkflowVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        owner: row.try_get("owner")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        definition: serde_json::from_str(&text).map_err(ApiError::internal)?,
    })
}

const VERSION_COLUMNS: &str = "name, version, owner, created_by, created_at, definition";

/// Version `version` of `name`.
pub async fn get_version(
    db: &Db,
    name: &str,
    version: i64,
) -> Result<Option<WorkflowVersion>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_definitions WHERE name = $1 AND version = $2"
    )))
    .bind(name)
    .bind(version)
    .fetch_optional(&db.pool)
    .await?
    .map(|r| version_of(&r))
    .transpose()
}

/// The latest version of `name`.
pub async fn latest(db: &Db, name: &str) -> Result<Option<WorkflowVersion>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1"
    )))
    .bind(name)
    .fetch_optional(&db.pool)
    .await?
    .map(|r| version_of(&r))
    .transpose()
}

/// Every version of `name`, oldest first.
pub async fn versions(db: &Db, name: &str) -> Result<Vec<WorkflowVersion>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_definitions WHERE name = $1 ORDER BY version"
    )))
    .bind(name)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(version_of)
    .collect()
}

/// The latest version of every workflow (of `owner`, or all), by name; deleted workflows whose
/// runs still compensate are not listed.
pub async fn list_latest(db: &Db, owner: Option<&str>) -> Result<Vec<WorkflowVersion>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_definitions d WHERE version = (SELECT MAX(version) FROM workflow_definitions m WHERE m.name = d.name) \
         AND ($1 = '' OR owner = $1) AND name NOT LIKE '{DELETED_PREFIX}%' ORDER BY name LIMIT 1000"
    )))
    .bind(owner.unwrap_or_default())
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(version_of)
    .collect()
}

/// Stores `definition` as the next version of `name`; replaces the workflow's schedules with
/// `schedules` (cron text and first tick). `None` when another version was stored meanwhile.
pub async fn insert_version(
    db: &Db,
    name: &str,
    owner: &str,
    owner_user_id: Option<&str>,
    created_by: &str,
    definition: &Value,
    schedules: &[(String, i64)],
) -> Result<Option<i64>, ApiError> {
    let mut tx = db.pool.begin().await?;
    let version: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM workflow_definitions WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    let version = version + 1;
    let inserted = sqlx::query("INSERT INTO workflow_definitions (name, version, owner, owner_user_id, definition, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name, version) DO NOTHING")
        .bind(name)
        .bind(version)
        .bind(owner)
        .bind(owner_user_id)
        .bind(definition.to_string())
        .bind(created_by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    sqlx::query("DELETE FROM workflow_schedules WHERE workflow = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    for (cron, next_at) in schedules {
        sqlx::query("INSERT INTO workflow_schedules (workflow, cron, next_at) VALUES ($1, $2, $3) ON CONFLICT (workflow, cron) DO NOTHING")
            .bind(name)
            .bind(cron)
            .bind(next_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(version))
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The workflow.
    pub workflow: &'a str,
    /// The pinned version.
    pub version: i64,
    /// The workflow's owner.
    pub owner: &'a str,
    /// `api`, `event` or `schedule`.
    pub trigger: &'a str,
    /// Makes the start happen once per workflow.
    pub dedup_key: Option<String>,
    /// The input.
    pub input: &'a Value,
    /// The step ids.
    pub steps: Vec<&'a str>,
}

/// Creates a run and its pending steps; `Err(existing id)` when the dedup key was used.
pub async fn insert_run(db: &Db, run: NewRun<'_>) -> Result<Result<String, String>, ApiError> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let inserted = sqlx::query("INSERT INTO workflow_runs (id, workflow, version, owner, status, trigger_kind, dedup_key, input, created_at, updated_at) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $8) ON CONFLICT DO NOTHING")
        .bind(&id)
        .bind(run.workflow)
        .bind(run.version)
        .bind(run.owner)
        .bind(run.trigger)
        .bind(&run.dedup_key)
        .bind(run.input.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if inserted == 0 {
        drop(tx);
        let existing: String =
            sqlx::query("SELECT id FROM workflow_runs WHERE workflow = $1 AND dedup_key = $2")
                .bind(run.workflow)
                .bind(&run.dedup_key)
                .fetch_one(&db.pool)
                .await?
                .try_get(0)?;
        return Ok(Err(existing));
    }
    for step in run.steps {
        sqlx::query("INSERT INTO workflow_steps (run_id, step, status, attempts, interruptions, idempotency_key, seq) VALUES ($1, $2, 'pending', 0, 0, $3, 0)")
            .bind(&id)
            .bind(step)
            .bind(format!("{id}:{step}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Ok(id))
}

const RUN_COLUMNS: &str = "id, workflow, version, status, trigger_kind, input, output, error, created_at, updated_at, finished_at";

fn run_of(row: &AnyRow) -> Result<WorkflowRun, ApiError> {
    Ok(WorkflowRun {
        id: row.try_get("id")?,
        workflow: row.try_get("workflow")?,
        version: row.try_get("version")?,
        status: row.try_get("status")?,
        trigger: row.try_get("trigger_kind")?,
        input: json_of(row.try_get("input")?).unwrap_or(Value::Null),
        output: json_of(row.try_get("output")?),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        steps: Vec::new(),
    })
}

/// Run `id` with its steps (forward steps first, in definition order is the caller's concern).
pub async fn load_run(db: &Db, id: &str) -> Result<Option<WorkflowRun>, ApiError> {
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    else {
        return Ok(None);
    };
    let mut run = run_of(&row)?;
    run.steps = sqlx::query("SELECT step, status, attempts, interruptions, idempotency_key, output, error, next_attempt_at, started_at, finished_at, seq FROM workflow_steps WHERE run_id = $1 ORDER BY seq, step")
        .bind(id)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(StepState {
                step: r.try_get(0)?,
                status: r.try_get(1)?,
                attempts: r.try_get(2)?,
                interruptions: r.try_get(3)?,
                idempotency_key: r.try_get(4)?,
                output: json_of(r.try_get(5)?),
                error: r.try_get(6)?,
                next_attempt_at: r.try_get(7)?,
                started_at: r.try_get(8)?,
                finished_at: r.try_get(9)?,
                seq: r.try_get(10)?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Some(run))
}

/// Runs of `workflow`, newest first, by status, before a run id (paging).
pub async fn list_runs(
    db: &Db,
    workflow: &str,
    status: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<WorkflowRun>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE workflow = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4"
    )))
    .bind(workflow)
    .bind(status.unwrap_or_default())
    .bind(before.unwrap_or_default())
    .bind(limit)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(run_of)
    .collect()
}

/// Active runs nobody holds a live lease on (oldest first), at most `limit`.
pub async fn unclaimed(db: &Db, now: i64, limit: i64) -> Result<Vec<String>, ApiError> {
    sqlx::query("SELECT id FROM workflow_runs WHERE status IN ('running', 'compensating', 'cancelling') AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT $2")
        .bind(now)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

/// Takes (or renews) the lease on run `id` for `node` until `until`; whether it holds.
pub async fn claim(db: &Db, id: &str, node: &str, until: i64) -> Result<bool, ApiError> {
    let now = now_ms();
    Ok(sqlx::query("UPDATE workflow_runs SET lease_owner = $1, lease_until = $2 WHERE id = $3 AND status IN ('running', 'compensating', 'cancelling') AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)")
        .bind(node)
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(&db.pool)
        .await?
        .rows_affected()
        == 1)
}

/// The lease guard of step updates (`$1` run id, `$2` node).
const HELD: &str =
    "run_id = $1 AND EXISTS (SELECT 1 FROM workflow_runs r WHERE r.id = $1 AND r.lease_owner = $2)";

/// The keys of a step update: run, lease holder, step.
#[derive(Debug, Clone, Copy)]
pub struct StepKey<'a> {
    /// Run id.
    pub run: &'a str,
    /// The node holding the lease.
    pub node: &'a str,
    /// Step (or `compensate:<id>`).
    pub step: &'a str,
}

/// The update of step `key` (`$1` run, `$2` lease holder, `$3` step, bound here) to `set`, applied
/// only while the node holds the run's lease and the step is in one of the `from` states; `set`
/// numbers its own parameters from `$4`.
fn keyed<'q>(set: &str, from: &str, key: StepKey<'q>) -> Query<'q, Any, AnyArguments> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE workflow_steps SET {set} WHERE {HELD} AND step = $3 AND status IN ({from})"
    )))
    .bind(key.run)
    .bind(key.node)
    .bind(key.step)
}

/// Runs a keyed update; whether it applied.
async fn apply(db: &Db, update: Query<'_, Any, AnyArguments>) -> Result<bool, ApiError> {
    Ok(update.execute(&db.pool).await?.rows_affected() == 1)
}

/// pending → running: one more attempt starts now.
pub async fn start_attempt(db: &Db, key: StepKey<'_>, now: i64) -> Result<bool, ApiError> {
    let update = keyed(
        "status = 'running', attempts = attempts + 1, started_at = $4, next_attempt_at = NULL",
        "'pending'",
        key,
    );
    apply(db, update.bind(now)).await
}

/// running → succeeded with `output`, completion number `seq`.
pub async fn succeed(
    db: &Db,
    key: StepKey<'_>,
    output: &Value,
    seq: i64,
    now: i64,
) -> Result<bool, ApiError> {
    let update = keyed(
        "status = 'succeeded', output = $4, seq = $5, finished_at = $6, error = NULL",
        "'running'",
        key,
    );
    apply(db, update.bind(output.to_string()).bind(seq).bind(now)).await
}

/// running → pending, the next attempt due at `at`.
pub async fn retry_later(
    db: &Db,
    key: StepKey<'_>,
    error: &str,
    at: i64,
) -> Result<bool, ApiError> {
    let update = keyed(
        "status = 'pending', error = $4, next_attempt_at = $5",
        "'running'",
        key,
    );
    apply(db, update.bind(error).bind(at)).await
}

/// running or pending → failed.
pub async fn fail(db: &Db, key: StepKey<'_>, error: &str, now: i64) -> Result<bool, ApiError> {
    let update = keyed(
        "status = 'failed', error = $4, finished_at = $5, next_attempt_at = NULL",
        "'running', 'pending'",
        key,
    );
    apply(db, update.bind(error).bind(now)).await
}

/// pending → skipped (a branch not taken).
pub async fn skip(db: &Db, key: StepKey<'_>, now: i64) -> Result<bool, ApiError> {
    let update = keyed("status = 'skipped', finished_at = $4", "'pending'", key);
    apply(db, update.bind(now)).await
}

/// running → pending: an attempt a stopped sidecar interrupted, to run again now.
pub async fn interrupt(db: &Db, key: StepKey<'_>) -> Result<bool, ApiError> {
    let update = keyed(
        "status = 'pending', interruptions = interruptions + 1, next_attempt_at = NULL",
        "'running'",
        key,
    );
    apply(db, update).await
}

/// Adds compensation rows (`compensate:<id>`, in execution order from `first_seq`).
pub async fn insert_compensations(
    db: &Db,
    run: &str,
    steps: &[String],
    first_seq: i64,
) -> Result<(), ApiError> {
    let mut tx = db.pool.begin().await?;
    add_compensations(&mut tx, run, steps, first_seq).await?;
    tx.commit().await?;
    Ok(())
}

/// [`insert_compensations`] inside `tx`.
pub(crate) async fn add_compensations(
    tx: &mut sqlx::Transaction<'_, Any>,
    run: &str,
    steps: &[String],
    first_seq: i64,
) -> Result<(), ApiError> {
    for (i, step) in steps.iter().enumerate() {
        let name = format!("compensate:{step}");
        sqlx::query("INSERT INTO workflow_steps (run_id, step, status, attempts, interruptions, idempotency_key, seq) VALUES ($1, $2, 'pending', 0, 0, $3, $4) ON CONFLICT (run_id, step) DO NOTHING")
            .bind(run)
            .bind(&name)
            .bind(format!("{run}:{name}"))
            .bind(first_seq + i as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Moves run `id` from state `from` (an active one) to `status` (with output or error); whether
/// it moved. A run that ends has its unfinished steps `cancelled`.
pub async fn set_run_status(
    db: &Db,
    id: &str,
    from: &str,
    status: &str,
    output: Option<&Value>,
    error: Option<&str>,
) -> Result<bool, ApiError> {
    let now = now_ms();
    let finished = (!ACTIVE.contains(&status)).then_some(now);
    let moved = sqlx::query("UPDATE workflow_runs SET status = $1, output = COALESCE($2, output), error = COALESCE($3, error), updated_at = $4, finished_at = $5 WHERE id = $6 AND status = $7")
        .bind(status)
        .bind(output.map(Value::to_string))
        .bind(error)
        .bind(now)
        .bind(finished)
        .bind(id)
        .bind(from)
        .execute(&db.pool)
        .await?
        .rows_affected()
        == 1;
    if moved && finished.is_some() {
        sqlx::query("UPDATE workflow_steps SET status = 'cancelled', next_attempt_at = NULL, finished_at = $1 WHERE run_id = $2 AND status IN ('pending', 'running')")
            .bind(now)
            .bind(id)
            .execute(&db.pool)
            .await?;
    }
    Ok(moved)
}

/// Ticks of schedules due at clock time `now`: (workflow, cron, next_at).
pub async fn due_schedules(db: &Db, now: i64) -> Result<Vec<(String, String, i64)>, ApiError> {
    sqlx::query("SELECT workflow, cron, next_at FROM workflow_schedules WHERE next_at <= $1 ORDER BY next_at LIMIT 1000")
        .bind(now)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Moves a schedule's next tick from `from` to `to`; whether this caller moved it (and so fires).
pub async fn advance_schedule(
    db: &Db,
    workflow: &str,
    cron: &str,
    from: i64,
    to: i64,
) -> Result<bool, ApiError> {
    Ok(sqlx::query("UPDATE workflow_schedules SET next_at = $1 WHERE workflow = $2 AND cron = $3 AND next_at = $4")
        .bind(to)
        .bind(workflow)
        .bind(cron)
        .bind(from)
        .execute(&db.pool)
        .await?
        .rows_affected()
        == 1)
}
