//! HTTP face of the RAG engine: upload (streamed), list, delete, search, reindex.

use super::extract::DocKind;
use super::{Ingestion, KbDocument, MAX_PASSAGES, Passage};
use crate::auth::Principal;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The grant collection that covers knowledge bases.
const COLLECTION: &str = "knowledge";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_document, list_documents))
        .routes(routes!(delete_document))
        .routes(routes!(search_knowledge))
        .routes(routes!(reindex_knowledge))
}

/// Upload options.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadOptions {
    /// Document name, unique within the knowledge base (re-uploading replaces it).
    pub name: String,
}

fn check_doc_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name: 1-200 printable characters"));
    }
    Ok(())
}

async fn authorize(
    state: &AppState,
    principal: &Principal,
    agent: &str,
    access: Access,
) -> Result<(), ApiError> {
    check_name("agent_id", agent)?;
    let scope = if access == Access::Write {
        "kb:write"
    } else {
        "kb:read"
    };
    state
        .authorize_agent(principal, agent, COLLECTION, access, scope)
        .await
}

/// Add a document (text/plain, text/markdown, text/html or application/pdf) to a knowledge base.
/// The body streams through extraction and chunking; nothing is stored unless all of it is.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/knowledge/{kb}/documents", tag = "rag", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("kb" = String, Path), UploadOptions),
    request_body(content = String, description = "the document", content_type = "text/markdown"),
    responses((status = 201, body = KbDocument), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_document(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, kb)): Path<(String, String)>,
    Query(options): Query<UploadOptions>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<KbDocument>), ApiError> {
    authorize(&state, &principal, &agent_id, Access::Write).await?;
    check_name("kb", &kb)?;
    check_doc_name(&options.name)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = DocKind::from_content_type(content_type).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "content type {content_type:?} is not supported; use text/plain, text/markdown, text/html or application/pdf"
        ))
    })?;
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > state.config.rag.max_document_bytes
    {
        return Err(ApiError::payload_too_large(format!(
            "the document is larger than {} bytes",
            state.config.rag.max_document_bytes
        )));
    }
    let mut ingestion = Ingestion::new(kind, &state.config.rag);
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        ingestion.push(&piece)?;
    }
    let finished = ingestion.finish().await?;
    let document = super::store(&state, &agent_id, &kb, &options.name, kind, finished).await?;
    state
        .audit(
            &principal.actor(),
            "kb.ingest",
            &format!("agent:{agent_id}/{kb}/{}", document.id),
            "ok",
            &document.name,
        )
        .await;
    Ok((StatusCode::CREATED, Json(document)))
}

/// Documents of a knowledge base.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/knowledge/{kb}/documents", tag = "rag", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("kb" = String, Path)),
    responses((status = 200, body = Vec<KbDocument>), (status = 403, body = ErrorBody)))]
async fn list_documents(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, kb)): Path<(String, String)>,
) -> Result<Json<Vec<KbDocument>>, ApiError> {
    authorize(&state, &principal, &agent_id, Access::Read).await?;
    check_name("kb", &kb)?;
    let rows = sqlx::query("SELECT id, agent_id, kb, name, content_type, bytes, chunks, sha256, created_at FROM kb_documents WHERE agent_id = $1 AND kb = $2 ORDER BY created_at")
        .bind(&agent_id)
        .bind(&kb)
        .fetch_all(&state.db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(KbDocument {
                id: r.try_get(0)?,
                agent_id: r.try_get(1)?,
                kb: r.try_get(2)?,
                name: r.try_get(3)?,
                content_type: r.try_get(4)?,
                bytes: r.try_get(5)?,
                chunks: r.try_get(6)?,
                sha256: r.try_get(7)?,
                created_at: r.try_get(8)?,
            })
        })
        .collect::<Result<_, ApiError>>()
        .map(Json)
}

/// Delete a document and its chunks.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}/knowledge/{kb}/documents/{document_id}", tag = "rag", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("kb" = String, Path), ("document_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_document(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, kb, document_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &principal, &agent_id, Access::Write).await?;
    check_name("kb", &kb)?;
    super::delete_document(&state, &agent_id, &kb, &document_id).await?;
    state
        .audit(
            &principal.actor(),
            "kb.delete",
            &format!("agent:{agent_id}/{kb}/{document_id}"),
            "ok",
            "",
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A retrieval request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The question or words to look for.
    pub query: String,
    /// Passages wanted, 1–20 (default 3).
    pub limit: Option<usize>,
    /// Only this knowledge base (default: all of the agent's).
    pub kb: Option<String>,
}

/// Passages found, best first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    /// The passages with citations.
    pub passages: Vec<Passage>,
}

/// Hybrid retrieval (BM25 + MiniLM, reciprocal-rank fusion) over an agent's knowledge.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/knowledge/search", tag = "rag", security(("bearer" = [])),
    params(("agent_id" = String, Path)), request_body = SearchRequest,
    responses((status = 200, body = SearchResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn search_knowledge(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
    Json(request): Json<SearchRequest>,
) -> Result<Json<SearchResult>, ApiError> {
    authorize(&state, &principal, &agent_id, Access::Read).await?;
    if request.query.trim().is_empty() || request.query.len() > 4096 {
        return Err(ApiError::bad_request("query: 1-4096 bytes"));
    }
    let limit = request.limit.unwrap_or(3);
    if !(1..=MAX_PASSAGES).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1-{MAX_PASSAGES}")));
    }
    if let Some(kb) = &request.kb {
        check_name("kb", kb)?;
    }
    let passages = super::search(
        &state,
        &agent_id,
        request.kb.as_deref(),
        &request.query,
        limit,
    )
    .await?;
    Ok(Json(SearchResult { passages }))
}

/// What a reindex did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReindexResult {
    /// Chunks re-embedded and re-indexed.
    pub chunks: usize,
}

/// Re-embed an agent's chunks and rebuild the keyword index.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/knowledge/reindex", tag = "rag", security(("bearer" = [])),
    params(("agent_id" = String, Path)),
    responses((status = 200, body = ReindexResult), (status = 403, body = ErrorBody)))]
async fn reindex_knowledge(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
) -> Result<Json<ReindexResult>, ApiError> {
    authorize(&state, &principal, &agent_id, Access::Write).await?;
    let chunks = super::reindex(&state, &agent_id).await?;
    Ok(Json(ReindexResult { chunks }))
}
