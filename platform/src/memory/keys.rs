//! Key-value memory: `PUT/GET/DELETE /v1/memory/{namespace}/keys/{key}` and the key listing.

use super::{announce, authorize, check_key, expiry};
use crate::db::now_ms;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default and largest page of the key listing.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_key, get_key, delete_key))
        .routes(routes!(list_keys))
}

/// A value to store under a key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutValue {
    /// Any JSON but `null` (its text at most `max_value_bytes`, default 64 KiB).
    pub value: Value,
    /// Seconds until the entry expires, 1 – 31 536 000 (one year); absent: never.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// A stored entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemoryEntry {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Unix ms when it expires; `null`: never.
    pub expires_at: Option<i64>,
    /// Unix ms of the first write.
    pub created_at: i64,
    /// Unix ms of the last write.
    pub updated_at: i64,
    /// Who wrote it last (`agent:<id>`, `user:<id>` or `key:<id>`).
    pub updated_by: String,
}

/// One key of a listing (without its value).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// The key.
    pub key: String,
    /// Size of the value's JSON text, in bytes.
    pub size: i64,
    /// Unix ms when it expires; `null`: never.
    pub expires_at: Option<i64>,
    /// Unix ms of the last write.
    pub updated_at: i64,
}

/// A page of keys, in key order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<KeyInfo>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<String>,
}

/// Which keys to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeys {
    /// Only keys starting with this (at most 256 bytes).
    pub prefix: Option<String>,
    /// Only keys after this one (the previous page's `next_after`).
    pub after: Option<String>,
    /// Page size, 1 – 1000 (default 100).
    pub limit: Option<i64>,
}

fn entry_of(row: &sqlx::any::AnyRow, namespace: &str) -> Result<MemoryEntry, ApiError> {
    let value: String = row.try_get("value")?;
    Ok(MemoryEntry {
        namespace: namespace.to_string(),
        key: row.try_get("mkey")?,
        value: serde_json::from_str(&value).map_err(ApiError::internal)?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

/// The live entry under `key`; an expired one is removed on the way.
async fn load(state: &AppState, namespace: &str, key: &str) -> Result<MemoryEntry, ApiError> {
    let row = sqlx::query("SELECT mkey, value, expires_at, created_at, updated_at, updated_by FROM memory_entries WHERE namespace = $1 AND mkey = $2")
        .bind(namespace)
        .bind(key)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("no such key"))?;
    let entry = entry_of(&row, namespace)?;
    let now = now_ms();
    if entry.expires_at.is_some_and(|t| t <= now) {
        sqlx::query(
            "DELETE FROM memory_entries WHERE namespace = $1 AND mkey = $2 AND expires_at <= $3",
        )
        .bind(namespace)
        .bind(key)
        .bind(now)
        .execute(&state.db.pool)
        .await?;
        return Err(ApiError::not_found("no such key"));
    }
    Ok(entry)
}

/// Store a JSON value under a key, with an optional TTL (the namespace's owner, an admin, or a
/// `write` grantee; the first write to a new namespace creates it, owned by the caller).
#[utoipa::path(put, path = "/v1/memory/{namespace}/keys/{key}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path, description = "1-64 of letters, digits, _ or -"), ("key" = String, Path, description = "1-256 of letters, digits, _ - . : @")),
    request_body = PutValue,
    responses((status = 200, body = MemoryEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the namespace holds the most keys, or there are the most namespaces")))]
async fn put_key(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path((namespace, key)): Path<(String, String)>,
    Json(request): Json<PutValue>,
) -> Result<Json<MemoryEntry>, ApiError> {
    crate::documents::check_name("namespace", &namespace)?;
    check_key(&key)?;
    if request.value.is_null() {
        return Err(ApiError::bad_request(
            "value is required (null is not stored; DELETE the key instead)",
        ));
    }
    let text = request.value.to_string();
    let limits = &state.config.memory;
    if text.len() > limits.max_value_bytes {
        return Err(ApiError::bad_request(format!(
            "value is {} bytes; at most {}",
            text.len(),
            limits.max_value_bytes
        )));
    }
    let expires_at = expiry(request.ttl_seconds)?;
    let ns = authorize(&state, &principal, &namespace, Access::Write).await?;
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM memory_entries WHERE namespace = $1 AND expires_at IS NOT NULL AND expires_at <= $2")
        .bind(&namespace)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let exists = sqlx::query("SELECT 1 FROM memory_entries WHERE namespace = $1 AND mkey = $2")
        .bind(&namespace)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !exists {
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM memory_entries WHERE namespace = $1")
            .bind(&namespace)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if count >= limits.max_keys_per_namespace {
            return Err(ApiError::conflict(format!(
                "memory namespace {namespace} holds {count} keys; at most {}",
                limits.max_keys_per_namespace
            )));
        }
    }
    sqlx::query("INSERT INTO memory_entries (namespace, mkey, value, size, expires_at, created_at, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
         ON CONFLICT (namespace, mkey) DO UPDATE SET value = excluded.value, size = excluded.size, expires_at = excluded.expires_at, updated_at = excluded.updated_at, updated_by = excluded.updated_by")
        .bind(&namespace)
        .bind(&key)
        .bind(&text)
        .bind(text.len() as i64)
        .bind(expires_at)
        .bind(now)
        .bind(&ns.caller)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "memory.key.put",
            &format!("memory:{namespace}/{key}"),
            "ok",
            &format!("{} bytes", text.len()),
        )
        .await;
    announce(
        &state,
        "memory.key.put",
        json!({"namespace": namespace, "key": key, "by": ns.caller, "expires_at": expires_at}),
    )
    .await;
    Ok(Json(load(&state, &namespace, &key).await?))
}

/// The value under a key (the owner, an admin, or a grantee); an expired key answers 404.
#[utoipa::path(get, path = "/v1/memory/{namespace}/keys/{key}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = MemoryEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_key(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<Json<MemoryEntry>, ApiError> {
    check_key(&key)?;
    authorize(&state, &principal, &namespace, Access::Read).await?;
    Ok(Json(load(&state, &namespace, &key).await?))
}

/// Remove a key (the owner, an admin, or a `write` grantee).
#[utoipa::path(delete, path = "/v1/memory/{namespace}/keys/{key}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_key(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    crate::documents::check_name("namespace", &namespace)?;
    if super::owner_of(&state, &namespace).await?.is_none() {
        return Err(ApiError::not_found("no such memory namespace"));
    }
    let ns = authorize(&state, &principal, &namespace, Access::Write).await?;
    let live = load(&state, &namespace, &key).await.is_ok();
    sqlx::query("DELETE FROM memory_entries WHERE namespace = $1 AND mkey = $2")
        .bind(&namespace)
        .bind(&key)
        .execute(&state.db.pool)
        .await?;
    if !live {
        return Err(ApiError::not_found("no such key"));
    }
    state
        .audit(
            &principal.actor(),
            "memory.key.delete",
            &format!("memory:{namespace}/{key}"),
            "ok",
            "",
        )
        .await;
    announce(
        &state,
        "memory.key.deleted",
        json!({"namespace": namespace, "key": key, "by": ns.caller}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Live keys of a namespace in key order, by prefix, a page at a time (the owner, an admin, or
/// a grantee).
#[utoipa::path(get, path = "/v1/memory/{namespace}/keys", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ListKeys),
    responses((status = 200, body = KeyPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(namespace): Path<String>,
    Query(query): Query<ListKeys>,
) -> Result<Json<KeyPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1-{MAX_PAGE}")));
    }
    let prefix = query.prefix.unwrap_or_default();
    if !prefix.is_empty() {
        check_key(&prefix).map_err(|_| {
            ApiError::bad_request(format!(
                "prefix must be at most {} of letters, digits, _ - . : @",
                super::MAX_KEY_LEN
            ))
        })?;
    }
    let after = query.after.unwrap_or_default();
    if !after.is_empty() {
        check_key(&after).map_err(|_| ApiError::bad_request("after: a key"))?;
    }
    authorize(&state, &principal, &namespace, Access::Read).await?;
    let rows = sqlx::query("SELECT mkey, size, expires_at, updated_at FROM memory_entries WHERE namespace = $1 AND substr(mkey, 1, CAST($2 AS INTEGER)) = $3 AND mkey > $4 AND (expires_at IS NULL OR expires_at > $5) ORDER BY mkey LIMIT $6")
        .bind(&namespace)
        .bind(prefix.len() as i64)
        .bind(&prefix)
        .bind(&after)
        .bind(now_ms())
        .bind(limit + 1)
        .fetch_all(&state.db.pool)
        .await?;
    let mut keys = rows
        .iter()
        .map(|r| {
            Ok(KeyInfo {
                key: r.try_get(0)?,
                size: r.try_get(1)?,
                expires_at: r.try_get(2)?,
                updated_at: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_after = if keys.len() as i64 > limit {
        keys.truncate(limit as usize);
        keys.last().map(|k| k.key.clone())
    } else {
        None
    };
    Ok(Json(KeyPage { keys, next_after }))
}
