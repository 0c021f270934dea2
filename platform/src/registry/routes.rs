//! HTTP face of the agent registry (`/v1/registry/…`) and the watcher that announces health
//! changes.

use super::{
    Candidate, DEFAULT_CAPACITY, DEFAULT_HEARTBEAT_INTERVAL_MS, HEARTBEAT_INTERVAL_RANGE_MS,
    Health, Strategy, TOPIC_STATUS, Vitals, pick,
};
use crate::auth::{Permission, Principal, Role};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::events::{Event, publish};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most registered instances.
const MAX_INSTANCES: i64 = 1000;
/// Most capabilities per instance.
const MAX_CAPABILITIES: usize = 32;
/// Longest endpoint and version strings.
const MAX_ENDPOINT_LEN: usize = 512;
const MAX_VERSION_LEN: usize = 64;
/// Most concurrent work an instance may declare.
const MAX_CAPACITY: i64 = 1_000_000;
/// How often the watcher looks for health changes.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// An instance silent this long is forgotten (a crashed process never deregisters).
pub const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The stored columns of an instance (a macro, so queries stay static strings).
macro_rules! columns {
    () => {
        "id, name, owner, capabilities, endpoint, version, heartbeat_interval_ms, capacity, active, reported, status, registered_at, last_heartbeat, last_routed_at"
    };
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_agent, list_agents))
        .routes(routes!(get_agent, deregister_agent))
        .routes(routes!(heartbeat))
        .routes(routes!(route_request))
}

/// An instance's registration (registering again with the same name and endpoint updates it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// The agent's name (instances of one agent share it): 1-64 of letters, digits, `_`, `-`.
    pub name: String,
    /// What it can do (discovery and routing key), e.g. `["orders", "voice"]`.
    pub capabilities: Vec<String>,
    /// Where it is reached (URL or any address its callers understand), at most 512 characters.
    pub endpoint: String,
    /// Its version, at most 64 characters.
    #[serde(default)]
    pub version: String,
    /// How often it promises to heartbeat, 100 ms – 1 h (default 10 s).
    pub heartbeat_interval_ms: Option<i64>,
    /// Requests or calls it takes at once, 1 – 1,000,000 (default 10).
    pub capacity: Option<i64>,
}

/// A registered instance and its health now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisteredAgent {
    /// Instance id.
    pub id: String,
    /// Agent name.
    pub name: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Endpoint.
    pub endpoint: String,
    /// Version.
    pub version: String,
    /// Promised heartbeat interval (ms).
    pub heartbeat_interval_ms: i64,
    /// Most at once.
    pub capacity: i64,
    /// In progress (last reported, plus routed since).
    pub active: i64,
    /// Health now.
    pub health: Health,
    /// Unix ms.
    pub registered_at: i64,
    /// Unix ms.
    pub last_heartbeat: i64,
}

/// A heartbeat: the instance is alive, with its current load.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Requests or calls in progress, 0 – 1,000,000 (default: unchanged).
    pub active: Option<i64>,
    /// The instance is in trouble (slow provider, …) and should get work only when no healthy
    /// instance can take it.
    #[serde(default)]
    pub degraded: bool,
}

/// Which instance should take a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The capability needed.
    pub capability: String,
    /// How to choose (default round-robin).
    #[serde(default)]
    pub strategy: Strategy,
}

/// Which instances to list.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAgents {
    /// Only instances with this capability.
    pub capability: Option<String>,
    /// Only instances of this agent.
    pub name: Option<String>,
}

fn check_registration(request: &RegisterAgent) -> Result<(i64, i64), ApiError> {
    check_name("name", &request.name)?;
    if request.capabilities.len() > MAX_CAPABILITIES {
        return Err(ApiError::bad_request(format!(
            "capabilities: at most {MAX_CAPABILITIES}"
        )));
    }
    for capability in &request.capabilities {
        check_name("a capability", capability)?;
    }
    if request.endpoint.trim().is_empty() || request.endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(ApiError::bad_request(format!(
            "endpoint: 1-{MAX_ENDPOINT_LEN} characters"
        )));
    }
    if request.version.len() > MAX_VERSION_LEN {
        return Err(ApiError::bad_request(format!(
            "version: at most {MAX_VERSION_LEN} characters"
        )));
    }
    let interval = request
        .heartbeat_interval_ms
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
    if !HEARTBEAT_INTERVAL_RANGE_MS.contains(&interval) {
        return Err(ApiError::bad_request(format!(
            "heartbeat_interval_ms: {}-{}",
            HEARTBEAT_INTERVAL_RANGE_MS.start(),
            HEARTBEAT_INTERVAL_RANGE_MS.end()
        )));
    }
    let capacity = request.capacity.unwrap_or(DEFAULT_CAPACITY);
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(ApiError::bad_request(format!("capacity: 1-{MAX_CAPACITY}")));
    }
    Ok((interval, capacity))
}

async fn require_registry(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    state.authorize(principal, Permission::Registry).await?;
    if !principal.has_scope("registry") {
        return Err(ApiError::forbidden("API key lacks the `registry` scope"));
    }
    Ok(())
}

/// A stored instance, with what only the registry sees.
struct Stored {
    agent: RegisteredAgent,
    owner: String,
    reported_degraded: bool,
    announced: Health,
    last_routed_at: i64,
}

impl Stored {
    fn from_row(row: &AnyRow, now: i64) -> Result<Stored, ApiError> {
        let capabilities: String = row.try_get("capabilities")?;
        let reported: String = row.try_get("reported")?;
        let status: String = row.try_get("status")?;
        let mut agent = RegisteredAgent {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            capabilities: capabilities
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
            endpoint: row.try_get("endpoint")?,
            version: row.try_get("version")?,
            heartbeat_interval_ms: row.try_get("heartbeat_interval_ms")?,
            capacity: row.try_get("capacity")?,
            active: row.try_get("active")?,
            health: Health::Down,
            registered_at: row.try_get("registered_at")?,
            last_heartbeat: row.try_get("last_heartbeat")?,
        };
        let reported_degraded = reported == "degraded";
        agent.health = Vitals {
            last_heartbeat: agent.last_heartbeat,
            interval_ms: agent.heartbeat_interval_ms,
            reported_degraded,
            active: agent.active,
            capacity: agent.capacity,
        }
        .health(now);
        Ok(Stored {
            agent,
            owner: row.try_get("owner")?,
            reported_degraded,
            announced: Health::parse(&status),
            last_routed_at: row.try_get("last_routed_at")?,
        })
    }
}

/// Stored capabilities are comma-wrapped (`,a,b,`) so one capability matches with `LIKE`.
fn stored_capabilities(capabilities: &[String]) -> String {
    format!(",{},", capabilities.join(","))
}

async fn load(state: &AppState, id: &str) -> Result<Stored, ApiError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM registry_agents WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no registered agent instance {id}")))?;
    Stored::from_row(&row, now_ms())
}

/// The instance, if `principal` registered it or is an admin.
async fn load_own(state: &AppState, principal: &Principal, id: &str) -> Result<Stored, ApiError> {
    let stored = load(state, id).await?;
    if stored.owner != principal.actor() && principal.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only whoever registered an instance (or an admin) may change it",
        ));
    }
    Ok(stored)
}

/// Instances with `capability` (every one when `None`), of agent `name` when given.
async fn instances(
    state: &AppState,
    capability: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<Stored>, ApiError> {
    let pattern = capability.map_or_else(|| "%".to_string(), |c| format!("%,{c},%"));
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM registry_agents WHERE capabilities LIKE $1 ORDER BY id"
    ))
    .bind(pattern)
    .fetch_all(&state.db.pool)
    .await?;
    let now = now_ms();
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let stored = Stored::from_row(row, now)?;
        // `_` in a capability is a LIKE wildcard: match exactly here.
        let capable = capability.is_none_or(|c| stored.agent.capabilities.iter().any(|x| x == c));
        if capable && name.is_none_or(|n| stored.agent.name == n) {
            found.push(stored);
        }
    }
    Ok(found)
}

/// The best health among the instances of agent `name`; `None` when none is registered.
pub(crate) async fn registered_health(
    state: &AppState,
    name: &str,
) -> Result<Option<Health>, ApiError> {
    let rank = |h: Health| match h {
        Health::Healthy => 0,
        Health::Degraded => 1,
        Health::Down => 2,
    };
    Ok(instances(state, None, Some(name))
        .await?
        .iter()
        .map(|s| s.agent.health)
        .min_by_key(|h| rank(*h)))
}

/// Register an agent instance (or refresh the registration of the same name and endpoint).
#[utoipa::path(post, path = "/v1/registry/agents", tag = "registry", security(("bearer" = [])),
    request_body = RegisterAgent,
    responses((status = 201, body = RegisteredAgent), (status = 200, body = RegisteredAgent), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn register_agent(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<RegisterAgent>,
) -> Result<(StatusCode, Json<RegisteredAgent>), ApiError> {
    require_registry(&state, &principal).await?;
    let (interval, capacity) = check_registration(&request)?;
    let owner = principal.actor();
    let now = now_ms();
    let capabilities = stored_capabilities(&request.capabilities);
    let existing: Option<String> = sqlx::query(
        "SELECT id FROM registry_agents WHERE owner = $1 AND name = $2 AND endpoint = $3",
    )
    .bind(&owner)
    .bind(&request.name)
    .bind(&request.endpoint)
    .fetch_optional(&state.db.pool)
    .await?
    .map(|row| row.try_get(0))
    .transpose()?;
    let (id, status) = match existing {
        Some(id) => {
            sqlx::query("UPDATE registry_agents SET capabilities = $1, version = $2, heartbeat_interval_ms = $3, capacity = $4, reported = 'ok', last_heartbeat = $5 WHERE id = $6")
                .bind(&capabilities)
                .bind(&request.version)
                .bind(interval)
                .bind(capacity)
                .bind(now)
                .bind(&id)
                .execute(&state.db.pool)
                .await?;
            (id, StatusCode::OK)
        }
        None => {
            let count: i64 = sqlx::query("SELECT COUNT(*) FROM registry_agents")
                .fetch_one(&state.db.pool)
                .await?
                .try_get(0)?;
            if count >= MAX_INSTANCES {
                return Err(ApiError::conflict(format!(
                    "at most {MAX_INSTANCES} registered instances"
                )));
            }
            let id = uuid::Uuid::now_v7().simple().to_string();
            sqlx::query(concat!(
                "INSERT INTO registry_agents (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 'ok', 'healthy', $9, $9, 0)"
            ))
            .bind(&id)
            .bind(&request.name)
            .bind(&owner)
            .bind(&capabilities)
            .bind(&request.endpoint)
            .bind(&request.version)
            .bind(interval)
            .bind(capacity)
            .bind(now)
            .execute(&state.db.pool)
            .await?;
            state
                .audit(&owner, "registry.register", &id, "ok", &request.name)
                .await;
            (id, StatusCode::CREATED)
        }
    };
    Ok((status, Json(load(&state, &id).await?.agent)))
}

/// Registered instances and their health, by capability or agent name.
#[utoipa::path(get, path = "/v1/registry/agents", tag = "registry", security(("bearer" = [])),
    params(ListAgents),
    responses((status = 200, body = Vec<RegisteredAgent>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_agents(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListAgents>,
) -> Result<Json<Vec<RegisteredAgent>>, ApiError> {
    require_registry(&state, &principal).await?;
    if let Some(capability) = &query.capability {
        check_name("capability", capability)?;
    }
    if let Some(name) = &query.name {
        check_name("name", name)?;
    }
    let found = instances(&state, query.capability.as_deref(), query.name.as_deref()).await?;
    Ok(Json(found.into_iter().map(|s| s.agent).collect()))
}

/// One registered instance and its health.
#[utoipa::path(get, path = "/v1/registry/agents/{id}", tag = "registry", security(("bearer" = [])),
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 200, body = RegisteredAgent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RegisteredAgent>, ApiError> {
    require_registry(&state, &principal).await?;
    Ok(Json(load(&state, &id).await?.agent))
}

/// Remove an instance (whoever registered it, or an admin).
#[utoipa::path(delete, path = "/v1/registry/agents/{id}", tag = "registry", security(("bearer" = [])),
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deregister_agent(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_registry(&state, &principal).await?;
    load_own(&state, &principal, &id).await?;
    sqlx::query("DELETE FROM registry_agents WHERE id = $1")
        .bind(&id)
        .execute(&state.db.pool)
        .await?;
    state
        .audit(&principal.actor(), "registry.deregister", &id, "ok", "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The instance is alive (whoever registered it, or an admin): its load and whether it is in
/// trouble.
#[utoipa::path(post, path = "/v1/registry/agents/{id}/heartbeat", tag = "registry", security(("bearer" = [])),
    params(("id" = String, Path, description = "Instance id")),
    request_body = Heartbeat,
    responses((status = 200, body = RegisteredAgent), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(beat): Json<Heartbeat>,
) -> Result<Json<RegisteredAgent>, ApiError> {
    require_registry(&state, &principal).await?;
    if beat
        .active
        .is_some_and(|a| !(0..=MAX_CAPACITY).contains(&a))
    {
        return Err(ApiError::bad_request(format!("active: 0-{MAX_CAPACITY}")));
    }
    let stored = load_own(&state, &principal, &id).await?;
    sqlx::query(
        "UPDATE registry_agents SET last_heartbeat = $1, active = $2, reported = $3 WHERE id = $4",
    )
    .bind(now_ms())
    .bind(beat.active.unwrap_or(stored.agent.active))
    .bind(if beat.degraded { "degraded" } else { "ok" })
    .bind(&id)
    .execute(&state.db.pool)
    .await?;
    Ok(Json(load(&state, &id).await?.agent))
}

/// The instance a request for `capability` should go to: a healthy one (round-robin or
/// least-loaded), a degraded one with room when none is healthy, never a down one. The choice
/// counts as one more request in progress until the instance's next heartbeat.
#[utoipa::path(post, path = "/v1/registry/route", tag = "registry", security(("bearer" = [])),
    request_body = RouteRequest,
    responses((status = 200, body = RegisteredAgent), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn route_request(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<RouteRequest>,
) -> Result<Json<RegisteredAgent>, ApiError> {
    require_registry(&state, &principal).await?;
    check_name("capability", &request.capability)?;
    let found = instances(&state, Some(&request.capability), None).await?;
    let candidates: Vec<Candidate> = found
        .iter()
        .map(|s| Candidate {
            id: s.agent.id.clone(),
            health: s.agent.health,
            active: s.agent.active,
            capacity: s.agent.capacity,
            last_routed_at: s.last_routed_at,
        })
        .collect();
    let Some(chosen) = pick(&candidates, request.strategy) else {
        return Err(ApiError::unavailable(format!(
            "no live agent instance with capability {} has room ({} registered)",
            request.capability,
            found.len()
        )));
    };
    let mut agent = found[chosen].agent.clone();
    // Strictly increasing per instance, so round-robin moves on even within one millisecond.
    let routed_at = now_ms().max(found[chosen].last_routed_at + 1);
    sqlx::query(
        "UPDATE registry_agents SET last_routed_at = $1, active = active + 1 WHERE id = $2",
    )
    .bind(routed_at)
    .bind(&agent.id)
    .execute(&state.db.pool)
    .await?;
    agent.active += 1;
    Ok(Json(agent))
}

/// Publishes a `registry.agent_status` event for every instance whose health changed since the
/// last pass, and forgets instances silent for [`FORGET_AFTER_MS`] (run every
/// [`WATCH_INTERVAL`] by the state).
pub(crate) async fn announce_changes(state: &AppState) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM registry_agents WHERE last_heartbeat < $1")
        .bind(now_ms() - FORGET_AFTER_MS)
        .execute(&state.db.pool)
        .await?;
    for stored in instances(state, None, None).await? {
        let health = stored.agent.health;
        if health == stored.announced {
            continue;
        }
        let changed =
            sqlx::query("UPDATE registry_agents SET status = $1 WHERE id = $2 AND status = $3")
                .bind(health.as_str())
                .bind(&stored.agent.id)
                .bind(stored.announced.as_str())
                .execute(&state.db.pool)
                .await?
                .rows_affected();
        // Another sidecar on the same database announced it first.
        if changed == 0 {
            continue;
        }
        let data = json!({
            "id": stored.agent.id,
            "name": stored.agent.name,
            "endpoint": stored.agent.endpoint,
            "health": health.as_str(),
            "previous": stored.announced.as_str(),
            "reported_degraded": stored.reported_degraded,
        });
        publish(state, Event::new(TOPIC_STATUS, "platform", data)).await?;
    }
    Ok(())
}
