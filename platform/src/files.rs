//! HTTP routes of the storage service: upload, download, list, delete, signed URLs.

use crate::auth::Principal;
use crate::auth::tokens::now_secs;
use crate::db::now_ms;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use crate::storage::check_key;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Metadata of a stored file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    /// Owning agent.
    pub agent_id: String,
    /// Storage key (`/`-separated; percent-encode `/` as `%2F` in URLs).
    pub key: String,
    /// Content type given at upload.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The user the file belongs to, if any (for GDPR export/delete).
    pub owner_user_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Upload options.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadOptions {
    /// The user this file belongs to.
    pub user_id: Option<String>,
}

/// Request for a signed URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Lifetime in seconds (1–86400; default from config).
    pub expires_in: Option<u64>,
}

/// A signed, time-limited download URL (path and query; prefix the sidecar's base URL).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignedUrl {
    /// e.g. `/v1/signed/agent/key?expires=…&sig=…`.
    pub url: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Query of a signed download.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// Expiry, unix seconds.
    pub expires: u64,
    /// HMAC signature, hex.
    pub sig: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_files))
        .routes(routes!(upload_file, download_file, delete_file))
        .routes(routes!(sign_file_url))
        .routes(routes!(signed_download))
}

/// Characters escaped in a URL path segment: all but RFC 3986 unreserved ones.
pub(crate) const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

fn file_response(content_type: String, bytes: Vec<u8>) -> Response {
    let ct = HeaderValue::from_str(&content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (
        [
            (header::CONTENT_TYPE, ct),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn metadata(state: &AppState, agent: &str, key: &str) -> Result<FileInfo, ApiError> {
    let r = sqlx::query("SELECT agent_id, file_key, content_type, size, sha256, owner_user_id, created_at FROM files WHERE agent_id = $1 AND file_key = $2")
        .bind(agent)
        .bind(key)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    row_to_file(&r)
}

pub(crate) fn row_to_file(r: &sqlx::any::AnyRow) -> Result<FileInfo, ApiError> {
    Ok(FileInfo {
        agent_id: r.try_get(0)?,
        key: r.try_get(1)?,
        content_type: r.try_get(2)?,
        size: r.try_get(3)?,
        sha256: r.try_get(4)?,
        owner_user_id: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

/// List an agent's files.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/files", tag = "files", security(("bearer" = [])),
    params(("agent_id" = String, Path)),
    responses((status = 200, body = Vec<FileInfo>), (status = 403, body = ErrorBody)))]
async fn list_files(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<FileInfo>>, ApiError> {
    crate::documents::check_name("agent_id", &agent_id)?;
    state
        .authorize_agent(&principal, &agent_id, "files", Access::Read, "files:read")
        .await?;
    let rows = sqlx::query("SELECT agent_id, file_key, content_type, size, sha256, owner_user_id, created_at FROM files WHERE agent_id = $1 ORDER BY file_key")
        .bind(&agent_id)
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(
        rows.iter().map(row_to_file).collect::<Result<_, _>>()?,
    ))
}

/// Upload (or replace) a file; the body is the raw content.
#[utoipa::path(put, path = "/v1/agents/{agent_id}/files/{file_key}", tag = "files", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("file_key" = String, Path, description = "key; `/` as %2F"), UploadOptions),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn upload_file(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, key)): Path<(String, String)>,
    Query(options): Query<UploadOptions>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<FileInfo>), ApiError> {
    crate::documents::check_name("agent_id", &agent_id)?;
    check_key(&key)?;
    state
        .authorize_agent(&principal, &agent_id, "files", Access::Write, "files:write")
        .await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .ok_or_else(|| ApiError::unsupported_media_type("Content-Type is required"))?;
    if !state
        .config
        .upload_content_types
        .iter()
        .any(|p| content_type.starts_with(p.as_str()))
    {
        return Err(ApiError::unsupported_media_type(format!(
            "content type {content_type} is not accepted"
        )));
    }
    if let Some(user) = &options.user_id {
        crate::documents::check_name("user_id", user)?;
    }
    state.storage.put(&agent_id, &key, &body).await?;
    let info = FileInfo {
        agent_id: agent_id.clone(),
        key: key.clone(),
        content_type,
        size: body.len() as i64,
        sha256: hex::encode(Sha256::digest(&body)),
        owner_user_id: options.user_id,
        created_at: now_ms(),
    };
    let stored = sqlx::query(
        "INSERT INTO files (agent_id, file_key, content_type, size, sha256, owner_user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (agent_id, file_key) DO UPDATE SET content_type = excluded.content_type, size = excluded.size, \
         sha256 = excluded.sha256, owner_user_id = excluded.owner_user_id, created_at = excluded.created_at",
    )
    .bind(&info.agent_id)
    .bind(&info.key)
    .bind(&info.content_type)
    .bind(info.size)
    .bind(&info.sha256)
    .bind(info.owner_user_id.clone())
    .bind(info.created_at)
    .execute(&state.db.pool)
    .await;
    if let Err(e) = stored {
        state.storage.delete(&agent_id, &key).await.ok();
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(info)))
}

/// Download a file.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/files/{file_key}", tag = "files", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("file_key" = String, Path)),
    responses((status = 200, content_type = "*/*", body = Vec<u8>, description = "the file, with the content type it was stored with"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn download_file(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    crate::documents::check_name("agent_id", &agent_id)?;
    check_key(&key)?;
    state
        .authorize_agent(&principal, &agent_id, "files", Access::Read, "files:read")
        .await?;
    let info = metadata(&state, &agent_id, &key).await?;
    Ok(file_response(
        info.content_type,
        state.storage.get(&agent_id, &key).await?,
    ))
}

/// Delete a file.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}/files/{file_key}", tag = "files", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("file_key" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_file(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::documents::check_name("agent_id", &agent_id)?;
    check_key(&key)?;
    state
        .authorize_agent(&principal, &agent_id, "files", Access::Write, "files:write")
        .await?;
    metadata(&state, &agent_id, &key).await?;
    sqlx::query("DELETE FROM files WHERE agent_id = $1 AND file_key = $2")
        .bind(&agent_id)
        .bind(&key)
        .execute(&state.db.pool)
        .await?;
    state.storage.delete(&agent_id, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a signed, time-limited download URL.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/files/{file_key}/signed-url", tag = "files", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("file_key" = String, Path)), request_body = SignRequest,
    responses((status = 200, body = SignedUrl), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn sign_file_url(
    State(state): State<AppState>,
    principal: Principal,
    Path((agent_id, key)): Path<(String, String)>,
    Json(body): Json<SignRequest>,
) -> Result<Json<SignedUrl>, ApiError> {
    crate::documents::check_name("agent_id", &agent_id)?;
    check_key(&key)?;
    state
        .authorize_agent(&principal, &agent_id, "files", Access::Read, "files:read")
        .await?;
    metadata(&state, &agent_id, &key).await?;
    let ttl = body.expires_in.unwrap_or(state.config.signed_url_ttl_secs);
    if !(1..=86_400).contains(&ttl) {
        return Err(ApiError::bad_request("expires_in must be 1-86400 seconds"));
    }
    let expires_at = now_secs() + ttl;
    let sig = state.storage.sign(&agent_id, &key, expires_at);
    Ok(Json(SignedUrl {
        url: format!(
            "/v1/signed/{}/{}?expires={expires_at}&sig={sig}",
            encode_segment(&agent_id),
            encode_segment(&key)
        ),
        expires_at,
    }))
}

/// Download through a signed URL (no credential needed; the signature is the credential).
#[utoipa::path(get, path = "/v1/signed/{agent_id}/{file_key}", tag = "files",
    params(("agent_id" = String, Path), ("file_key" = String, Path), SignedQuery),
    responses((status = 200, content_type = "*/*", body = Vec<u8>, description = "the file, with the content type it was stored with"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn signed_download(
    State(state): State<AppState>,
    Path((agent_id, key)): Path<(String, String)>,
    Query(q): Query<SignedQuery>,
) -> Result<Response, ApiError> {
    crate::documents::check_name("agent_id", &agent_id)?;
    check_key(&key)?;
    if !state
        .storage
        .verify_signature(&agent_id, &key, q.expires, &q.sig, now_secs())
    {
        return Err(ApiError::forbidden("invalid or expired signature"));
    }
    let info = metadata(&state, &agent_id, &key).await?;
    Ok(file_response(
        info.content_type,
        state.storage.get(&agent_id, &key).await?,
    ))
}
