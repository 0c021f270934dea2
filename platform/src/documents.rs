//! Database service for agents: a per-agent document API (insert, get, query with filters,
//! update, delete). Grants between agents live in `grants`.

use crate::auth::Principal;
use crate::crypto::Keyring;
use crate::db::{Dialect, now_ms};
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most filters one query may have.
const MAX_FILTERS: usize = 16;
/// Largest page of a query.
const MAX_LIMIT: i64 = 1000;
/// Key under which an encrypted field's envelope is stored.
const ENCRYPTED_MARKER: &str = "$enc";

/// Checks an agent id, collection or grantee name: 1–64 of `A-Z a-z 0-9 _ -`.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} must be 1-64 of letters, digits, _ or -"
        )))
    }
}

fn check_field(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "field name {name:?} must match [A-Za-z_][A-Za-z0-9_]{{0,63}}"
        )))
    }
}

/// A stored document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Document {
    /// Document id.
    pub id: String,
    /// Owning agent.
    pub agent_id: String,
    /// Collection (table) name.
    pub collection: String,
    /// The document's fields (encrypted fields decrypted).
    #[schema(value_type = Object)]
    pub data: Value,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// Options for insert and update.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteOptions {
    /// Comma-separated top-level fields to store encrypted (AES-256-GCM envelopes).
    pub encrypt: Option<String>,
}

/// A query over one collection: equality filters on top-level fields, paged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// `{"field": value}`; values are strings, numbers, booleans or null; all must match.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filter: Map<String, Value>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Documents to skip (default 0).
    pub offset: Option<i64>,
}

/// A page of documents.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryResult {
    /// Matching documents, oldest first.
    pub documents: Vec<Document>,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(insert_document))
        .routes(routes!(query_documents))
        .routes(routes!(get_document, update_document, delete_document))
}

fn encrypt_fields(
    keyring: &Keyring,
    data: &mut Map<String, Value>,
    fields: &[String],
) -> Result<(), ApiError> {
    for field in fields {
        if let Some(value) = data.get_mut(field) {
            let envelope = keyring.encrypt(value.to_string().as_bytes())?;
            *value = serde_json::json!({ ENCRYPTED_MARKER: envelope });
        }
    }
    Ok(())
}

fn decrypt_fields(keyring: &Keyring, data: &mut Value) -> Result<(), ApiError> {
    if let Value::Object(map) = data {
        for value in map.values_mut() {
            let envelope = value
                .as_object()
                .filter(|o| o.len() == 1)
                .and_then(|o| o.get(ENCRYPTED_MARKER))
                .and_then(Value::as_str);
            if let Some(envelope) = envelope {
                let plain = keyring.decrypt(envelope)?;
                *value = serde_json::from_slice(&plain).map_err(ApiError::internal)?;
            }
        }
    }
    Ok(())
}

fn parse_encrypt(options: &WriteOptions) -> Result<Vec<String>, ApiError> {
    let fields: Vec<String> = options
        .encrypt
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    fields.iter().try_for_each(|f| check_field(f))?;
    Ok(fields)
}

/// Redaction, then encryption, of a document about to be stored.
fn prepare(
    state: &AppState,
    collection: &str,
    data: &mut Map<String, Value>,
    encrypt: &[String],
) -> Result<(), ApiError> {
    if state.config.redact_pii
        && state
            .config
            .redact_collections
            .iter()
            .any(|c| c == collection)
    {
        data.values_mut().for_each(crate::redact::redact_json);
    }
    let keyring = state.keyring.read().map_err(ApiError::internal)?;
    encrypt_fields(&keyring, data, encrypt)
}

fn owner_of(data: &Map<String, Value>) -> Option<String> {
    ["userId", "user_id"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
        .map(String::from)
}

fn row_to_document(state: &AppState, r: &sqlx::any::AnyRow) -> Result<Document, ApiError> {
    let body: String = r.try_get(3)?;
    let mut data: Value = serde_json::from_str(&body).map_err(ApiError::internal)?;
    let keyring = state.keyring.read().map_err(ApiError::internal)?;
    decrypt_fields(&keyring, &mut data)?;
    Ok(Document {
        id: r.try_get(0)?,
        agent_id: r.try_get(1)?,
        collection: r.try_get(2)?,
        data,
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

const DOC_COLUMNS: &str = "id, agent_id, collection, body, created_at, updated_at";

async fn load(
    state: &AppState,
    agent_id: &str,
    collection: &str,
    id: &str,
) -> Result<Document, ApiError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DOC_COLUMNS} FROM documents WHERE id = $1 AND agent_id = $2 AND collection = $3"
    )))
    .bind(id.to_string())
    .bind(agent_id.to_string())
    .bind(collection.to_string())
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("no such document"))?;
    row_to_document(state, &row)
}

/// Insert a document into an agent's collection.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/db/{collection}", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("collection" = String, Path), WriteOptions),
    request_body(content = Object, description = "the document: a JSON object"),
    responses((status = 201, body = Document), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn insert_document(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, collection)): Path<(String, String)>,
    Query(options): Query<WriteOptions>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Document>), ApiError> {
    check_name("agent_id", &agent_id)?;
    check_name("collection", &collection)?;
    state
        .authorize_agent(
            &principal,
            &agent_id,
            &collection,
            Access::Write,
            "db:write",
        )
        .await?;
    let Value::Object(mut data) = body else {
        return Err(ApiError::bad_request("the document must be a JSON object"));
    };
    data.keys().try_for_each(|k| check_field(k))?;
    let encrypt = parse_encrypt(&options)?;
    prepare(&state, &collection, &mut data, &encrypt)?;
    // Time-ordered ids keep insertion order among documents created in the same millisecond.
    let id = uuid::Uuid::now_v7().simple().to_string();
    let now = now_ms();
    let owner = owner_of(&data);
    sqlx::query("INSERT INTO documents (id, agent_id, collection, owner_user_id, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
        .bind(&id)
        .bind(&agent_id)
        .bind(&collection)
        .bind(owner)
        .bind(Value::Object(data).to_string())
        .bind(now)
        .execute(&state.db.pool)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(load(&state, &agent_id, &collection, &id).await?),
    ))
}

/// Query an agent's collection with equality filters.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/db/{collection}/query", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("collection" = String, Path)), request_body = QueryRequest,
    responses((status = 200, body = QueryResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn query_documents(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, collection)): Path<(String, String)>,
    Json(query): Json<QueryRequest>,
) -> Result<Json<QueryResult>, ApiError> {
    check_name("agent_id", &agent_id)?;
    check_name("collection", &collection)?;
    state
        .authorize_agent(&principal, &agent_id, &collection, Access::Read, "db:read")
        .await?;
    if query.filter.len() > MAX_FILTERS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_FILTERS} filters"
        )));
    }
    let limit = query.limit.unwrap_or(100);
    let offset = query.offset.unwrap_or(0);
    if !(1..=MAX_LIMIT).contains(&limit) || offset < 0 {
        return Err(ApiError::bad_request(format!(
            "limit must be 1-{MAX_LIMIT} and offset >= 0"
        )));
    }
    let mut sql =
        format!("SELECT {DOC_COLUMNS} FROM documents WHERE agent_id = $1 AND collection = $2");
    let mut binds: Vec<String> = Vec::new();
    let mut contained = Map::new();
    for (field, value) in &query.filter {
        check_field(field)?;
        match value {
            Value::Null => {
                let n = 3 + binds.len();
                let expr = state.db.json_field_text(n);
                binds.push(field.clone());
                sql.push_str(&format!(" AND ({expr} IS NULL OR {expr} = 'null')"));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_)
                if state.db.dialect == Dialect::Postgres =>
            {
                contained.insert(field.clone(), value.clone());
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                let n = 3 + binds.len();
                let expr = state.db.json_field_text(n);
                binds.push(field.clone());
                sql.push_str(&format!(" AND {expr} = ${}", n + 1));
                binds.push(value.to_string());
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "filter on {field:?}: only strings, numbers, booleans or null"
                )));
            }
        }
    }
    if !contained.is_empty() {
        let n = 3 + binds.len();
        sql.push_str(&format!(" AND body::jsonb @> CAST(${n} AS jsonb)"));
        binds.push(Value::Object(contained).to_string());
    }
    let n = 3 + binds.len();
    sql.push_str(&format!(
        " ORDER BY created_at, id LIMIT ${n} OFFSET ${}",
        n + 1
    ));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agent_id)
        .bind(collection);
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.bind(limit).bind(offset).fetch_all(&state.db.pool).await?;
    let documents = rows
        .iter()
        .map(|r| row_to_document(&state, r))
        .collect::<Result<_, _>>()?;
    Ok(Json(QueryResult { documents }))
}

/// Get one document.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/db/{collection}/{doc_id}", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("collection" = String, Path), ("doc_id" = String, Path)),
    responses((status = 200, body = Document), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_document(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, collection, doc_id)): Path<(String, String, String)>,
) -> Result<Json<Document>, ApiError> {
    check_name("agent_id", &agent_id)?;
    check_name("collection", &collection)?;
    state
        .authorize_agent(&principal, &agent_id, &collection, Access::Read, "db:read")
        .await?;
    Ok(Json(load(&state, &agent_id, &collection, &doc_id).await?))
}

/// Merge fields into a document (`null` removes a field).
#[utoipa::path(patch, path = "/v1/agents/{agent_id}/db/{collection}/{doc_id}", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("collection" = String, Path), ("doc_id" = String, Path), WriteOptions),
    request_body(content = Object, description = "fields to merge"),
    responses((status = 200, body = Document), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_document(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, collection, doc_id)): Path<(String, String, String)>,
    Query(options): Query<WriteOptions>,
    Json(body): Json<Value>,
) -> Result<Json<Document>, ApiError> {
    check_name("agent_id", &agent_id)?;
    check_name("collection", &collection)?;
    state
        .authorize_agent(
            &principal,
            &agent_id,
            &collection,
            Access::Write,
            "db:write",
        )
        .await?;
    let Value::Object(mut patch) = body else {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    };
    patch.keys().try_for_each(|k| check_field(k))?;
    let encrypt = parse_encrypt(&options)?;
    prepare(&state, &collection, &mut patch, &encrypt)?;
    let row = sqlx::query(
        "SELECT body FROM documents WHERE id = $1 AND agent_id = $2 AND collection = $3",
    )
    .bind(&doc_id)
    .bind(&agent_id)
    .bind(&collection)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("no such document"))?;
    let mut stored: Map<String, Value> =
        serde_json::from_str(&row.try_get::<String, _>(0)?).map_err(ApiError::internal)?;
    for (k, v) in patch {
        if v.is_null() {
            stored.remove(&k);
        } else {
            stored.insert(k, v);
        }
    }
    sqlx::query(
        "UPDATE documents SET body = $1, owner_user_id = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(Value::Object(stored.clone()).to_string())
    .bind(owner_of(&stored))
    .bind(now_ms())
    .bind(&doc_id)
    .execute(&state.db.pool)
    .await?;
    Ok(Json(load(&state, &agent_id, &collection, &doc_id).await?))
}

/// Delete a document.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}/db/{collection}/{doc_id}", tag = "db", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("collection" = String, Path), ("doc_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_document(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, collection, doc_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    check_name("agent_id", &agent_id)?;
    check_name("collection", &collection)?;
    state
        .authorize_agent(
            &principal,
            &agent_id,
            &collection,
            Access::Write,
            "db:write",
        )
        .await?;
    let done =
        sqlx::query("DELETE FROM documents WHERE id = $1 AND agent_id = $2 AND collection = $3")
            .bind(&doc_id)
            .bind(&agent_id)
            .bind(&collection)
            .execute(&state.db.pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("no such document"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Loads a document for a GDPR export (authorization is the caller's job).
pub(crate) async fn load_for_export(
    state: &AppState,
    agent_id: &str,
    collection: &str,
    id: &str,
) -> Result<Document, ApiError> {
    load(state, agent_id, collection, id).await
}
