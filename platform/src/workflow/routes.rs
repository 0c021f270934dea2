//! `/v1/workflows`: define (a new version on each POST), list, read versions, delete; start,
//! list, read and cancel runs. Workflows belong to whoever defined version 1 (an agent's keys share its
//! workflows); the owner and admins use them, others get 403. Needs the `registry` permission
//! (admin, developer, agent) and, for keys, the `registry` scope, plus `ai` for LLM steps and
//! `events` for agent and event steps.

use super::Cron;
use super::definition::{Action, Trigger, parse_with_limit};
use super::lifecycle::{self, Cancel, WorkflowDeletion, not_cancellable};
use super::store::{self, WorkflowRun, WorkflowVersion};
use super::supervisor::start_run;
use crate::auth::{Permission, Principal, PrincipalKind, Role};
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::memory::identity;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest page of runs.
const MAX_RUNS_PAGE: i64 = 500;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workflow, list_workflows))
        .routes(routes!(get_workflow, delete_workflow))
        .routes(routes!(list_versions))
        .routes(routes!(get_version))
        .routes(routes!(start, list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
}

/// A workflow definition (a new version when the name exists).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkflow {
    /// 1-64 of letters, digits, `_` or `-`.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// `{"type": "event", "topic": "order.*"}` or `{"type": "schedule", "cron": "*/5 * * * *"}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub triggers: Vec<Value>,
    /// The steps: `{"id", "type": "http"|"agent"|"llm"|"wait_event"|"condition"|"join",
    /// "depends_on", "retry": {"max_attempts", "backoff_ms"}, "timeout_ms", "on_resume",
    /// "compensate", …the kind's fields}`.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<Value>,
}

/// Workflows (their latest versions).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    /// By name.
    pub workflows: Vec<WorkflowVersion>,
}

/// Versions of one workflow.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    /// Oldest first.
    pub versions: Vec<WorkflowVersion>,
}

/// Starting a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The input templates read as `{{input…}}` (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Run this version (default the latest).
    #[serde(default)]
    pub version: Option<i64>,
    /// A start repeated with the same key answers the first run (1-128 characters).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// The runs (without their steps).
    pub runs: Vec<WorkflowRun>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRuns {
    /// Only runs in this state.
    pub status: Option<String>,
    /// Only runs older than this run id (the previous page's `next_before`).
    pub before: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
}

async fn require(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    state.authorize(principal, Permission::Registry).await?;
    if !principal.has_scope("registry") {
        return Err(ApiError::forbidden(
            "API key lacks the `registry` scope workflows need",
        ));
    }
    Ok(())
}

/// The latest version of `name`, if `principal` may use the workflow.
async fn owned(
    state: &AppState,
    principal: &Principal,
    name: &str,
) -> Result<WorkflowVersion, ApiError> {
    check_name("workflow name", name)?;
    require(state, principal).await?;
    let latest = store::latest(&state.db, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no workflow named {name}")))?;
    if latest.owner == identity(principal) || principal.role == Role::Admin {
        return Ok(latest);
    }
    state
        .audit(
            &principal.actor(),
            "access.denied",
            &format!("workflow:{name}"),
            "denied",
            "not the owner",
        )
        .await;
    Err(ApiError::forbidden(format!(
        "workflow {name} belongs to someone else"
    )))
}

/// Define a workflow, or a new version of one (its owner or an admin); runs already started
/// keep the version they started with.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", security(("bearer" = [])),
    request_body = NewWorkflow,
    responses((status = 201, body = WorkflowVersion), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "another version was stored at the same moment; retry"),
        (status = 422, body = ErrorBody, description = "the definition is invalid: a cycle, an unknown step type or step, a bad template or cron")))]
async fn create_workflow(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<NewWorkflow>,
) -> Result<(StatusCode, Json<WorkflowVersion>), ApiError> {
    check_name("workflow name", &request.name)?;
    require(&state, &principal).await?;
    let body = json!({"description": request.description, "triggers": request.triggers, "steps": request.steps});
    let def = parse_with_limit(&body, state.config.workflows.max_steps)
        .map_err(|e| ApiError::unprocessable(format!("workflow {}: {e}", request.name)))?;
    for step in &def.steps {
        let kinds =
            std::iter::once(&step.action).chain(step.compensate.as_ref().map(|c| &c.action));
        for action in kinds {
            let scope = match action {
                Action::Llm(_) => "ai",
                Action::Agent(_) | Action::WaitEvent(_) => "events",
                _ => continue,
            };
            if !principal.has_scope(scope) {
                return Err(ApiError::forbidden(format!(
                    "step {} needs the `{scope}` scope",
                    step.id
                )));
            }
        }
    }
    let caller = identity(&principal);
    let owner = match store::latest(&state.db, &request.name).await? {
        Some(existing) if existing.owner == caller || principal.role == Role::Admin => {
            existing.owner
        }
        Some(_) => {
            return Err(ApiError::forbidden(format!(
                "workflow {} belongs to someone else",
                request.name
            )));
        }
        None => caller,
    };
    let now = state.workflows.clock().now();
    let mut schedules = Vec::new();
    for trigger in &def.triggers {
        if let Trigger::Schedule { cron } = trigger {
            let parsed = Cron::parse(cron).map_err(ApiError::unprocessable)?;
            let first = parsed.next_after(now).unwrap_or(i64::MAX);
            schedules.push((parsed.to_string(), first));
        }
    }
    let user = match principal.kind {
        PrincipalKind::User => Some(principal.id.as_str()),
        PrincipalKind::ApiKey => None,
    };
    let version = store::insert_version(
        &state.db,
        &request.name,
        &owner,
        user,
        &principal.actor(),
        &def.to_json(),
        &schedules,
    )
    .await?
    .ok_or_else(|| {
        ApiError::conflict(format!(
            "another version of {} was stored at the same moment; retry",
            request.name
        ))
    })?;
    state
        .workflows
        .triggers_dirty
        .store(true, Ordering::Release);
    state
        .audit(
            &principal.actor(),
            "workflow.define",
            &format!("workflow:{}", request.name),
            "ok",
            &format!("version {version}, {} steps", def.steps.len()),
        )
        .await;
    let stored = store::get_version(&state.db, &request.name, version)
        .await?
        .ok_or_else(|| ApiError::internal("a stored workflow version vanished"))?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// The caller's workflows (every workflow for admins), latest versions.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = WorkflowList), (status = 403, body = ErrorBody)))]
async fn list_workflows(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<WorkflowList>, ApiError> {
    require(&state, &principal).await?;
    let owner = (principal.role != Role::Admin).then(|| identity(&principal));
    Ok(Json(WorkflowList {
        workflows: store::list_latest(&state.db, owner.as_deref()).await?,
    }))
}

/// The latest version of a workflow.
#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name")),
    responses((status = 200, body = WorkflowVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_workflow(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<WorkflowVersion>, ApiError> {
    Ok(Json(owned(&state, &principal, &name).await?))
}

/// Every version of a workflow, oldest first.
#[utoipa::path(get, path = "/v1/workflows/{name}/versions", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name")),
    responses((status = 200, body = VersionList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    owned(&state, &principal, &name).await?;
    Ok(Json(VersionList {
        versions: store::versions(&state.db, &name).await?,
    }))
}

/// One version of a workflow.
#[utoipa::path(get, path = "/v1/workflows/{name}/versions/{version}", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = WorkflowVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Json<WorkflowVersion>, ApiError> {
    owned(&state, &principal, &name).await?;
    store::get_version(&state.db, &name, version)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("workflow {name} has no version {version}")))
}

async fn load_run(state: &AppState, name: &str, run_id: &str) -> Result<WorkflowRun, ApiError> {
    store::load_run(&state.db, run_id)
        .await?
        .filter(|run| run.workflow == name)
        .ok_or_else(|| ApiError::not_found(format!("workflow {name} has no run {run_id}")))
}

/// Start a run (the latest version, or the one named); it proceeds in the background.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name")),
    request_body = StartRun,
    responses((status = 202, body = WorkflowRun, description = "started"),
        (status = 200, body = WorkflowRun, description = "a start with this idempotency key already happened"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<StartRun>,
) -> Result<(StatusCode, Json<WorkflowRun>), ApiError> {
    owned(&state, &principal, &name).await?;
    if let Some(key) = &request.idempotency_key
        && !(1..=128).contains(&key.len())
    {
        return Err(ApiError::bad_request("idempotency_key: 1-128 characters"));
    }
    let input = request.input.unwrap_or_else(|| json!({}));
    let dedup = request.idempotency_key.map(|k| format!("api:{k}"));
    let (id, created) = start_run(&state, &name, request.version, "api", input, dedup).await?;
    state
        .audit(
            &principal.actor(),
            "workflow.run.start",
            &format!("workflow:{name}/{id}"),
            "ok",
            "",
        )
        .await;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(load_run(&state, &name, &id).await?)))
}

/// Runs of a workflow, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/workflows/{name}/runs", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name"), ListRuns),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(query): Query<ListRuns>,
) -> Result<Json<RunList>, ApiError> {
    owned(&state, &principal, &name).await?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_RUNS_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1-{MAX_RUNS_PAGE}")));
    }
    let mut runs = store::list_runs(
        &state.db,
        &name,
        query.status.as_deref(),
        query.before.as_deref(),
        limit + 1,
    )
    .await?;
    let next_before = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(RunList { runs, next_before }))
}

/// A run with its steps.
#[utoipa::path(get, path = "/v1/workflows/{name}/runs/{run_id}", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 200, body = WorkflowRun), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, run_id)): Path<(String, String)>,
) -> Result<Json<WorkflowRun>, ApiError> {
    owned(&state, &principal, &name).await?;
    Ok(Json(load_run(&state, &name, &run_id).await?))
}

/// Cancel a run: its step in flight is stopped and its pending steps cancelled, then the
/// compensations of its completed steps run, newest first, and it ends `cancelled` (a
/// `workflow.run.finished` event says so). The answer shows it `cancelling` while they run.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs/{run_id}/cancel", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name"), ("run_id" = String, Path, description = "Run id")),
    responses((status = 200, body = WorkflowRun, description = "`cancelled`, or `cancelling` while compensations run"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the run is over, or already compensating")))]
async fn cancel_run(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, run_id)): Path<(String, String)>,
) -> Result<Json<WorkflowRun>, ApiError> {
    owned(&state, &principal, &name).await?;
    let run = load_run(&state, &name, &run_id).await?;
    let why = format!("cancelled by {}", principal.actor());
    let outcome = match run.status.as_str() {
        "running" => lifecycle::cancel(&state, &run, &why).await?,
        other => Cancel::NotRunning(other.to_string()),
    };
    let detail = match outcome {
        Cancel::NotRunning(status) => return Err(not_cancellable(&run_id, &status)),
        Cancel::Compensating(steps) => format!("{steps} completed steps to undo"),
        Cancel::Done => "nothing to undo".to_string(),
    };
    state
        .audit(
            &principal.actor(),
            "workflow.run.cancel",
            &format!("workflow:{name}/{run_id}"),
            "ok",
            &detail,
        )
        .await;
    Ok(Json(load_run(&state, &name, &run_id).await?))
}

/// Delete a workflow (its owner or an admin): unfinished runs are cancelled as by
/// `POST …/cancel`, then every version, run and step is removed. The name is free at once; a run
/// still compensating keeps its rows until it ends (202).
#[utoipa::path(delete, path = "/v1/workflows/{name}", tag = "workflows", security(("bearer" = [])),
    params(("name" = String, Path, description = "Workflow name")),
    responses((status = 200, body = WorkflowDeletion, description = "deleted"),
        (status = 202, body = WorkflowDeletion, description = "deleted; cancelled runs still compensate, their rows go when they end"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_workflow(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<WorkflowDeletion>), ApiError> {
    owned(&state, &principal, &name).await?;
    let deletion = lifecycle::delete(&state, &name, &principal.actor()).await?;
    let status = if deletion.removed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(deletion)))
}
