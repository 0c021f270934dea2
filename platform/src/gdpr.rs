//! GDPR/CCPA: export everything of a user as one archive; delete a user and everything theirs.

use crate::audit::AuditEntry;
use crate::auth::routes::{ApiKeyInfo, UserInfo};
use crate::auth::{Permission, Principal, PrincipalKind, store};
use crate::db::now_ms;
use crate::documents::Document;
use crate::error::{ApiError, ErrorBody};
use crate::files::FileInfo;
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// One exported file: metadata and content.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportedFile {
    /// Metadata.
    pub info: FileInfo,
    /// Content, base64.
    pub content_base64: String,
}

/// Everything stored about a user, as one JSON archive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserExport {
    /// Unix milliseconds of the export.
    pub exported_at: i64,
    /// The account.
    pub user: UserInfo,
    /// Documents whose `userId`/`user_id` is this user (decrypted).
    pub documents: Vec<Document>,
    /// Files uploaded for this user.
    pub files: Vec<ExportedFile>,
    /// API keys the user created (metadata only).
    pub api_keys: Vec<ApiKeyInfo>,
    /// Audit entries where the user acted.
    pub audit: Vec<AuditEntry>,
    /// Conversation transcript lines of the user (as stored: redacted when enabled).
    #[serde(default)]
    pub transcripts: Vec<crate::events::transcripts::TranscriptLine>,
    /// Memory namespaces the user created, with their live keys and facts.
    #[serde(default)]
    pub memory: Vec<crate::memory::export::NamespaceExport>,
    /// The user's notification preferences (channels and addresses), if set.
    #[serde(default)]
    pub notification_preferences: Option<crate::notify::preferences::UserPreferences>,
    /// Every notification attempt recorded for the user, newest first.
    #[serde(default)]
    pub notifications: Vec<crate::notify::routes::Notification>,
    /// The workflows the user owns, with every version and run.
    #[serde(default)]
    pub workflows: Vec<crate::workflow::lifecycle::WorkflowExport>,
}

/// What a deletion removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeletionReport {
    /// The deleted user.
    pub user_id: String,
    /// Documents removed.
    pub documents: u64,
    /// Files removed.
    pub files: u64,
    /// API keys removed.
    pub api_keys: u64,
    /// Transcript lines removed.
    #[serde(default)]
    pub transcripts: u64,
    /// Memory namespaces removed (those the user created, with their keys and facts).
    #[serde(default)]
    pub memory_namespaces: u64,
    /// Workflows deleted (those the user owned; runs cancelled and compensated first).
    #[serde(default)]
    pub workflows: u64,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_user))
        .routes(routes!(delete_user))
}

/// Self or admin: otherwise 403 (audited).
async fn authorize_subject(
    state: &AppState,
    principal: &Principal,
    user_id: &str,
) -> Result<(), ApiError> {
    if principal.kind == PrincipalKind::User && principal.id == user_id {
        return state.authorize(principal, Permission::SelfService).await;
    }
    state.authorize(principal, Permission::ManageUsers).await
}

/// Export all data of a user as one JSON archive (the user or an admin).
#[utoipa::path(get, path = "/v1/users/{user_id}/export", tag = "gdpr", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = UserExport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn export_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize_subject(&state, &principal, &user_id).await?;
    let user = store::find_user(&state, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let rows = sqlx::query("SELECT agent_id, collection, id FROM documents WHERE owner_user_id = $1 ORDER BY created_at")
        .bind(&user_id)
        .fetch_all(&state.db.pool)
        .await?;
    let mut documents = Vec::new();
    for r in rows {
        let (agent, collection, id): (String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        documents.push(crate::documents::load_for_export(&state, &agent, &collection, &id).await?);
    }
    let file_rows = sqlx::query("SELECT agent_id, file_key, content_type, size, sha256, owner_user_id, created_at FROM files WHERE owner_user_id = $1")
        .bind(&user_id)
        .fetch_all(&state.db.pool)
        .await?;
    let mut files = Vec::new();
    for r in &file_rows {
        let info = crate::files::row_to_file(r)?;
        let bytes = state
            .storage
            .get(&info.agent_id, &info.key)
            .await
            .unwrap_or_default();
        files.push(ExportedFile {
            info,
            content_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        });
    }
    let export = UserExport {
        exported_at: now_ms(),
        user,
        documents,
        files,
        api_keys: store::list_api_keys(&state, Some(&user_id)).await?,
        audit: state.audit.by_actor(&format!("user:{user_id}")).await?,
        transcripts: crate::events::transcripts::lines_of_user(&state, &user_id).await?,
        memory: crate::memory::export::of_user(&state, &user_id).await?,
        notification_preferences: crate::notify::preferences::load_preferences(&state, &user_id)
            .await?,
        notifications: crate::notify::routes::history(&state, &user_id, i64::MAX).await?,
        workflows: crate::workflow::lifecycle::export_owner(&state, &format!("user:{user_id}"))
            .await?,
    };
    state
        .audit(
            &principal.actor(),
            "gdpr.export",
            &format!("user:{user_id}"),
            "ok",
            "",
        )
        .await;
    let disposition = format!("attachment; filename=\"dartmouth-export-{user_id}.json\"");
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(export)))
}

/// Delete a user and everything theirs: sessions, keys, documents, files (the user or an admin).
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "gdpr", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = DeletionReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<(StatusCode, Json<DeletionReport>), ApiError> {
    authorize_subject(&state, &principal, &user_id).await?;
    store::find_user(&state, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    store::revoke_user_sessions(&state, &user_id).await?;
    // Workflows cancel their runs (which compensate) before their rows go.
    let workflows = crate::workflow::lifecycle::erase_owner(
        &state,
        &format!("user:{user_id}"),
        &principal.actor(),
    )
    .await?;
    let file_rows = sqlx::query("SELECT agent_id, file_key FROM files WHERE owner_user_id = $1")
        .bind(&user_id)
        .fetch_all(&state.db.pool)
        .await?;
    let mut tx = state.db.pool.begin().await?;
    let documents = sqlx::query("DELETE FROM documents WHERE owner_user_id = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let files = sqlx::query("DELETE FROM files WHERE owner_user_id = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let api_keys = sqlx::query("DELETE FROM api_keys WHERE created_by = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let transcripts = sqlx::query("DELETE FROM transcripts WHERE user_id = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // The user's notification preferences (addresses) and notification history.
    for table in ["notification_preferences", "notifications"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = $1"
        )))
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    }
    let memory_namespaces = crate::memory::export::delete_user(&mut tx, &user_id).await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    for r in file_rows {
        let (agent, key): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        state.storage.delete(&agent, &key).await?;
    }
    let report = DeletionReport {
        user_id: user_id.clone(),
        documents,
        files,
        api_keys,
        transcripts,
        memory_namespaces,
        workflows,
    };
    state
        .audit(
            &principal.actor(),
            "gdpr.delete",
            &format!("user:{user_id}"),
            "ok",
            &format!("documents {documents}, files {files}, keys {api_keys}, transcript lines {transcripts}, workflows {workflows}"),
        )
        .await;
    Ok((StatusCode::OK, Json(report)))
}
