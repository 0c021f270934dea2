//! Semantic memory: facts embedded with the platform's MiniLM and found again by cosine
//! similarity (`/v1/memory/{namespace}/facts…`).

use super::{announce, authorize, expiry};
use crate::db::now_ms;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest fact or query, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Largest metadata object (its JSON text), in bytes.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Most facts one search returns.
pub const MAX_K: usize = 50;
/// Facts a search returns by default.
pub const DEFAULT_K: usize = 5;
/// Default and largest page of the fact listing.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_fact, list_facts))
        .routes(routes!(search_facts))
        .routes(routes!(delete_fact))
}

/// A fact to remember.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFact {
    /// The fact, 1 – 2000 characters (not blank).
    pub text: String,
    /// Anything to keep with it (a JSON object, at most 8 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Seconds until it is forgotten, 1 – 31 536 000; absent: never.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// A stored fact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Fact {
    /// Fact id.
    pub id: String,
    /// The namespace.
    pub namespace: String,
    /// The text.
    pub text: String,
    /// Its metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Unix ms when it is forgotten; `null`: never.
    pub expires_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Who stored it.
    pub created_by: String,
}

/// What to look for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactSearch {
    /// The question or text to match, 1 – 2000 characters (not blank).
    pub query: String,
    /// Most facts to return, 1 – 50 (default 5).
    #[serde(default)]
    pub k: Option<usize>,
    /// Least cosine similarity a fact needs, -1 – 1 (default 0).
    #[serde(default)]
    pub min_score: Option<f32>,
}

/// A fact and how close it is to the query.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScoredFact {
    /// Cosine similarity of the fact to the query, -1 – 1.
    pub score: f32,
    /// The fact.
    pub fact: Fact,
}

/// Which facts to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFacts {
    /// Only facts after this id (the last id of the previous page).
    pub after: Option<String>,
    /// Page size, 1 – 1000 (default 100).
    pub limit: Option<i64>,
}

fn check_text(what: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS || text.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{what}: 1-{MAX_TEXT_CHARS} characters, not blank, no NUL"
        )));
    }
    Ok(())
}

macro_rules! fact_columns {
    () => {
        "id, text, metadata, expires_at, created_at, created_by"
    };
}

fn fact_of(row: &sqlx::any::AnyRow, namespace: &str) -> Result<Fact, ApiError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(Fact {
        id: row.try_get("id")?,
        namespace: namespace.to_string(),
        text: row.try_get("text")?,
        metadata: serde_json::from_str(&metadata).map_err(ApiError::internal)?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

/// Remember a fact: it is embedded and stored (the namespace's owner, an admin, or a `write`
/// grantee; the first write to a new namespace creates it).
#[utoipa::path(post, path = "/v1/memory/{namespace}/facts", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path, description = "1-64 of letters, digits, _ or -")),
    request_body = NewFact,
    responses((status = 201, body = Fact), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the namespace holds the most facts, or there are the most namespaces"),
        (status = 503, body = ErrorBody, description = "the embedding model is not loaded")))]
async fn add_fact(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(namespace): Path<String>,
    Json(request): Json<NewFact>,
) -> Result<(StatusCode, Json<Fact>), ApiError> {
    crate::documents::check_name("namespace", &namespace)?;
    check_text("text", &request.text)?;
    let metadata = Value::Object(request.metadata.clone()).to_string();
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(ApiError::bad_request(format!(
            "metadata: at most {MAX_METADATA_BYTES} bytes of JSON"
        )));
    }
    let expires_at = expiry(request.ttl_seconds)?;
    let embedder = state.embedder()?.clone();
    let ns = authorize(&state, &principal, &namespace, Access::Write).await?;
    let vector = embedder.embed_one(&request.text).await?;
    let limit = state.config.memory.max_facts_per_namespace;
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM memory_facts WHERE namespace = $1 AND expires_at IS NOT NULL AND expires_at <= $2")
        .bind(&namespace)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM memory_facts WHERE namespace = $1")
        .bind(&namespace)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if count >= limit {
        return Err(ApiError::conflict(format!(
            "memory namespace {namespace} holds {count} facts; at most {limit}"
        )));
    }
    let fact = Fact {
        id: uuid::Uuid::now_v7().simple().to_string(),
        namespace: namespace.clone(),
        text: request.text,
        metadata: request.metadata,
        expires_at,
        created_at: now,
        created_by: ns.caller.clone(),
    };
    sqlx::query(concat!(
        "INSERT INTO memory_facts (namespace, embedding, ",
        fact_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&namespace)
    .bind(crate::embed::pack(&vector))
    .bind(&fact.id)
    .bind(&fact.text)
    .bind(&metadata)
    .bind(expires_at)
    .bind(now)
    .bind(&ns.caller)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "memory.fact.add",
            &format!("memory:{namespace}/facts/{}", fact.id),
            "ok",
            "",
        )
        .await;
    announce(
        &state,
        "memory.fact.added",
        json!({"namespace": namespace, "id": fact.id, "by": ns.caller}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(fact)))
}

/// Live facts of a namespace, oldest first, a page at a time (the owner, an admin, or a grantee).
#[utoipa::path(get, path = "/v1/memory/{namespace}/facts", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ListFacts),
    responses((status = 200, body = Vec<Fact>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_facts(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(namespace): Path<String>,
    Query(query): Query<ListFacts>,
) -> Result<Json<Vec<Fact>>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1-{MAX_PAGE}")));
    }
    let after = query.after.unwrap_or_default();
    if after.len() > 64 || !after.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request("after: a fact id"));
    }
    authorize(&state, &principal, &namespace, Access::Read).await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        fact_columns!(),
        " FROM memory_facts WHERE namespace = $1 AND id > $2 AND (expires_at IS NULL OR expires_at > $3) ORDER BY id LIMIT $4"
    ))
    .bind(&namespace)
    .bind(&after)
    .bind(now_ms())
    .bind(limit)
    .fetch_all(&state.db.pool)
    .await?;
    let facts = rows
        .iter()
        .map(|r| fact_of(r, &namespace))
        .collect::<Result<_, _>>()?;
    Ok(Json(facts))
}

/// The facts closest in meaning to a query, most similar first, with their cosine similarity
/// (the owner, an admin, or a grantee).
#[utoipa::path(post, path = "/v1/memory/{namespace}/facts/search", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path)),
    request_body = FactSearch,
    responses((status = 200, body = Vec<ScoredFact>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the embedding model is not loaded")))]
async fn search_facts(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(namespace): Path<String>,
    Json(request): Json<FactSearch>,
) -> Result<Json<Vec<ScoredFact>>, ApiError> {
    check_text("query", &request.query)?;
    let k = request.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!("k: 1-{MAX_K}")));
    }
    let min_score = request.min_score.unwrap_or(0.0);
    if !(-1.0..=1.0).contains(&min_score) {
        return Err(ApiError::bad_request("min_score: -1 to 1"));
    }
    let embedder = state.embedder()?.clone();
    authorize(&state, &principal, &namespace, Access::Read).await?;
    let query = embedder.embed_one(&request.query).await?;
    let rows = sqlx::query(concat!(
        "SELECT embedding, ",
        fact_columns!(),
        " FROM memory_facts WHERE namespace = $1 AND (expires_at IS NULL OR expires_at > $2)"
    ))
    .bind(&namespace)
    .bind(now_ms())
    .fetch_all(&state.db.pool)
    .await?;
    let mut scored = Vec::new();
    for row in &rows {
        let Some(vector) = crate::embed::unpack(&row.try_get::<String, _>("embedding")?)
            .filter(|v| v.len() == query.len())
        else {
            continue;
        };
        let score = crate::embed::dot(&vector, &query).clamp(-1.0, 1.0);
        if score >= min_score {
            scored.push((score, row));
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let found = scored
        .into_iter()
        .take(k)
        .map(|(score, row)| {
            Ok(ScoredFact {
                score,
                fact: fact_of(row, &namespace)?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(found))
}

/// Forget a fact (the owner, an admin, or a `write` grantee).
#[utoipa::path(delete, path = "/v1/memory/{namespace}/facts/{id}", tag = "memory", security(("bearer" = [])),
    params(("namespace" = String, Path), ("id" = String, Path, description = "Fact id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_fact(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path((namespace, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::documents::check_name("namespace", &namespace)?;
    if super::owner_of(&state, &namespace).await?.is_none() {
        return Err(ApiError::not_found("no such memory namespace"));
    }
    let ns = authorize(&state, &principal, &namespace, Access::Write).await?;
    let removed = sqlx::query(
        "DELETE FROM memory_facts WHERE namespace = $1 AND id = $2 AND (expires_at IS NULL OR expires_at > $3)",
    )
    .bind(&namespace)
    .bind(&id)
    .bind(now_ms())
    .execute(&state.db.pool)
    .await?
    .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found("no such fact"));
    }
    state
        .audit(
            &principal.actor(),
            "memory.fact.delete",
            &format!("memory:{namespace}/facts/{id}"),
            "ok",
            "",
        )
        .await;
    announce(
        &state,
        "memory.fact.deleted",
        json!({"namespace": namespace, "id": id, "by": ns.caller}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
