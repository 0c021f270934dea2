//! Grants: one agent lets another read or write one of its collections (or `*`, all of them;
//! files count as the collection `files`).

use crate::auth::Principal;
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Grant another agent access to a collection (or `*` for all).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The agent receiving access.
    pub grantee_agent: String,
    /// Collection name or `*`.
    pub collection: String,
    /// `read` or `write`.
    pub access: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_grants, put_grant))
        .routes(routes!(delete_grant))
}

async fn authorize_grant_owner(
    state: &AppState,
    principal: &Principal,
    agent_id: &str,
) -> Result<(), ApiError> {
    check_name("agent_id", agent_id)?;
    state
        .authorize(principal, crate::auth::Permission::AgentData)
        .await?;
    if principal.role == crate::auth::Role::Agent && principal.agent_id.as_deref() != Some(agent_id)
    {
        state
            .audit(
                &principal.actor(),
                "access.denied",
                &format!("agent:{agent_id}/grants"),
                "denied",
                "",
            )
            .await;
        return Err(ApiError::forbidden(
            "only the owning agent, developers or admins manage grants",
        ));
    }
    Ok(())
}

/// List the grants an agent has given.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/grants", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path)),
    responses((status = 200, body = Vec<Grant>), (status = 403, body = ErrorBody)))]
async fn list_grants(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<Grant>>, ApiError> {
    authorize_grant_owner(&state, &principal, &agent_id).await?;
    let rows = sqlx::query("SELECT grantee_agent, collection, access FROM agent_grants WHERE owner_agent = $1 ORDER BY grantee_agent, collection")
        .bind(&agent_id)
        .fetch_all(&state.db.pool)
        .await?;
    let grants = rows
        .iter()
        .map(|r| {
            Ok(Grant {
                grantee_agent: r.try_get(0)?,
                collection: r.try_get(1)?,
                access: r.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(grants))
}

/// Grant (or change) another agent's access to a collection.
#[utoipa::path(put, path = "/v1/agents/{agent_id}/grants", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path)), request_body = Grant,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
    Json(grant): Json<Grant>,
) -> Result<StatusCode, ApiError> {
    authorize_grant_owner(&state, &principal, &agent_id).await?;
    check_name("grantee_agent", &grant.grantee_agent)?;
    if grant.collection != "*" {
        check_name("collection", &grant.collection)?;
    }
    if grant.access != "read" && grant.access != "write" {
        return Err(ApiError::bad_request("access must be read or write"));
    }
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM agent_grants WHERE owner_agent = $1 AND grantee_agent = $2 AND collection = $3")
        .bind(&agent_id)
        .bind(&grant.grantee_agent)
        .bind(&grant.collection)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO agent_grants (owner_agent, grantee_agent, collection, access, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&agent_id)
        .bind(&grant.grantee_agent)
        .bind(&grant.collection)
        .bind(&grant.access)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "grant.put",
            &format!("agent:{agent_id}/{}", grant.collection),
            "ok",
            &format!("{} {}", grant.grantee_agent, grant.access),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a grant.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}/grants/{grantee_agent}/{collection}", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("grantee_agent" = String, Path), ("collection" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, grantee, collection)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize_grant_owner(&state, &principal, &agent_id).await?;
    let done = sqlx::query("DELETE FROM agent_grants WHERE owner_agent = $1 AND grantee_agent = $2 AND collection = $3")
        .bind(&agent_id)
        .bind(&grantee)
        .bind(&collection)
        .execute(&state.db.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("no such grant"));
    }
    state
        .audit(
            &principal.actor(),
            "grant.delete",
            &format!("agent:{agent_id}/{collection}"),
            "ok",
            &grantee,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
