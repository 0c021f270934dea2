//! A memory namespace itself: who owns it, its grants (managed by the owner or an admin), and
//! its deletion.

use super::{GrantAccess, MAX_GRANTS, announce, authorize_owner, parse_principal};
use crate::db::now_ms;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_namespace, delete_namespace))
        .routes(routes!(put_grant, delete_grant))
}

/// The access to grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutGrant {
    /// `read` or `write` (write implies read).
    pub access: GrantAccess,
}

/// One grant on a namespace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemoryGrant {
    /// Who holds it: `agent:<id>`, `user:<id>` or `key:<id>`.
    pub principal: String,
    /// What it allows.
    pub access: GrantAccess,
    /// Who granted it.
    pub granted_by: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A namespace, its owner and its grants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Who owns it (`agent:<id>`, `user:<id>` or `key:<id>`).
    pub owner: String,
    /// Unix ms.
    pub created_at: i64,
    /// The grants, by principal.
    pub grants: Vec<MemoryGrant>,
    /// Live keys.
    pub keys: i64,
    /// Live facts.
    pub facts: i64,
}

/// A namespace's owner, grants and sizes (its owner or an admin).
#[utoipa::path(get, path = "/v1/memory/{namespace}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path, description = "1-64 of letters, digits, _ or -")),
    responses((status = 200, body = NamespaceInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_namespace(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(namespace): Path<String>,
) -> Result<Json<NamespaceInfo>, ApiError> {
    authorize_owner(&state, &principal, &namespace).await?;
    let row = sqlx::query("SELECT owner, created_at FROM memory_namespaces WHERE name = $1")
        .bind(&namespace)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("no such memory namespace"))?;
    let rows = sqlx::query("SELECT principal, access, granted_by, created_at FROM memory_grants WHERE namespace = $1 ORDER BY principal")
        .bind(&namespace)
        .fetch_all(&state.db.pool)
        .await?;
    let mut grants = Vec::with_capacity(rows.len());
    for r in &rows {
        let access: String = r.try_get(1)?;
        grants.push(MemoryGrant {
            principal: r.try_get(0)?,
            access: if access == "write" {
                GrantAccess::Write
            } else {
                GrantAccess::Read
            },
            granted_by: r.try_get(2)?,
            created_at: r.try_get(3)?,
        });
    }
    let now = now_ms();
    let mut counts = [0i64; 2];
    for (i, table) in ["memory_entries", "memory_facts"].iter().enumerate() {
        counts[i] = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE namespace = $1 AND (expires_at IS NULL OR expires_at > $2)"
        )))
        .bind(&namespace)
        .bind(now)
        .fetch_one(&state.db.pool)
        .await?
        .try_get(0)?;
    }
    Ok(Json(NamespaceInfo {
        name: namespace,
        owner: row.try_get(0)?,
        created_at: row.try_get(1)?,
        grants,
        keys: counts[0],
        facts: counts[1],
    }))
}

/// Delete a namespace with every key, fact and grant in it (its owner or an admin).
#[utoipa::path(delete, path = "/v1/memory/{namespace}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_namespace(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(namespace): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize_owner(&state, &principal, &namespace).await?;
    let mut tx = state.db.pool.begin().await?;
    delete_all(&mut tx, &namespace).await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "memory.namespace.delete",
            &format!("memory:{namespace}"),
            "ok",
            "",
        )
        .await;
    announce(
        &state,
        "memory.namespace.deleted",
        json!({"namespace": namespace, "by": super::identity(&principal)}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes namespace `name` and everything in it, inside `tx`.
pub(crate) async fn delete_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
) -> Result<(), ApiError> {
    for table in ["memory_entries", "memory_facts", "memory_grants"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE namespace = $1"
        )))
        .bind(name)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("DELETE FROM memory_namespaces WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Grant (or change) a principal's access to a namespace (its owner or an admin). The principal
/// is `agent:<id>`, `user:<id>`, `key:<id>`, or a bare agent id.
#[utoipa::path(put, path = "/v1/memory/{namespace}/grants/{principal}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ("principal" = String, Path, description = "agent:<id>, user:<id>, key:<id> or an agent id")),
    request_body = PutGrant,
    responses((status = 200, body = MemoryGrant), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the namespace has the most grants")))]
async fn put_grant(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path((namespace, grantee)): Path<(String, String)>,
    Json(request): Json<PutGrant>,
) -> Result<Json<MemoryGrant>, ApiError> {
    let grantee = parse_principal(&grantee)?;
    authorize_owner(&state, &principal, &namespace).await?;
    let granted_by = super::identity(&principal);
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let count: i64 =
        sqlx::query("SELECT COUNT(*) FROM memory_grants WHERE namespace = $1 AND principal <> $2")
            .bind(&namespace)
            .bind(&grantee)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    if count >= MAX_GRANTS {
        return Err(ApiError::conflict(format!(
            "memory namespace {namespace} has {count} grants; at most {MAX_GRANTS}"
        )));
    }
    sqlx::query("INSERT INTO memory_grants (namespace, principal, access, granted_by, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (namespace, principal) DO UPDATE SET access = excluded.access, granted_by = excluded.granted_by, created_at = excluded.created_at")
        .bind(&namespace)
        .bind(&grantee)
        .bind(request.access.as_str())
        .bind(&granted_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "memory.grant.put",
            &format!("memory:{namespace}"),
            "ok",
            &format!("{grantee} {}", request.access.as_str()),
        )
        .await;
    Ok(Json(MemoryGrant {
        principal: grantee,
        access: request.access,
        granted_by,
        created_at: now,
    }))
}

/// Revoke a principal's grant on a namespace (its owner or an admin).
#[utoipa::path(delete, path = "/v1/memory/{namespace}/grants/{principal}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ("principal" = String, Path, description = "agent:<id>, user:<id>, key:<id> or an agent id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_grant(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path((namespace, grantee)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let grantee = parse_principal(&grantee)?;
    authorize_owner(&state, &principal, &namespace).await?;
    let removed = sqlx::query("DELETE FROM memory_grants WHERE namespace = $1 AND principal = $2")
        .bind(&namespace)
        .bind(&grantee)
        .execute(&state.db.pool)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found("no such grant"));
    }
    state
        .audit(
            &principal.actor(),
            "memory.grant.delete",
            &format!("memory:{namespace}"),
            "ok",
            &grantee,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
