//! Security routes: the audit log and its verification, encryption-key rotation, PII redaction.

use crate::audit::{AuditEntry, AuditVerification};
use crate::auth::{Permission, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Paging of the audit listing.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Newest entries to return, 1–1000 (default 100).
    pub limit: Option<i64>,
}

/// Outcome of a key rotation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationResult {
    /// The new active key id.
    pub active_key_id: String,
    /// All key ids in the ring.
    pub key_ids: Vec<String>,
    /// Encrypted fields (and integration credentials) whose data keys were re-wrapped under the new key.
    pub rewrapped_fields: u64,
}

/// Text to redact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactRequest {
    /// Input text.
    pub text: String,
}

/// Redacted text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RedactResponse {
    /// Text with emails, phone and card numbers replaced.
    pub text: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(rotate_keys))
        .routes(routes!(redact))
}

/// Newest audit entries (admin).
#[utoipa::path(get, path = "/v1/audit", tag = "security", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    state.authorize(&principal, Permission::Security).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-1000"));
    }
    Ok(Json(state.audit.recent(limit).await?))
}

/// Recompute the audit hash chain (admin).
#[utoipa::path(post, path = "/v1/audit/verify", tag = "security", security(("bearer" = [])),
    responses((status = 200, body = AuditVerification), (status = 403, body = ErrorBody)))]
async fn verify_audit(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<AuditVerification>, ApiError> {
    state.authorize(&principal, Permission::Security).await?;
    let result = state.audit.verify().await?;
    state
        .audit(
            &principal.actor(),
            "audit.verify",
            "audit_log",
            if result.valid { "ok" } else { "denied" },
            &format!("checked {}", result.checked),
        )
        .await;
    Ok(Json(result))
}

/// Rotate the encryption key and re-wrap every encrypted document field (admin).
#[utoipa::path(post, path = "/v1/admin/keys/rotate", tag = "security", security(("bearer" = [])),
    responses((status = 200, body = RotationResult), (status = 403, body = ErrorBody)))]
async fn rotate_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<RotationResult>, ApiError> {
    state.authorize(&principal, Permission::Security).await?;
    let mut secrets = state.secrets.lock().await;
    let ring = {
        let mut ring = state.keyring.write().map_err(ApiError::internal)?;
        ring.rotate();
        ring.clone()
    };
    secrets.keyring = ring.clone();
    secrets.save(&state.config.data_dir)?;
    let rows = sqlx::query("SELECT id, body FROM documents WHERE body LIKE $1")
        .bind("%\"$enc\"%")
        .fetch_all(&state.db.pool)
        .await?;
    let mut rewrapped = 0;
    for row in rows {
        let id: String = row.try_get(0)?;
        let mut body: Value =
            serde_json::from_str(&row.try_get::<String, _>(1)?).map_err(ApiError::internal)?;
        if let Value::Object(map) = &mut body {
            for value in map.values_mut() {
                if let Some(Value::String(env)) =
                    value.as_object_mut().and_then(|o| o.get_mut("$enc"))
                {
                    *env = ring.rewrap(env)?;
                    rewrapped += 1;
                }
            }
        }
        sqlx::query("UPDATE documents SET body = $1 WHERE id = $2")
            .bind(body.to_string())
            .bind(id)
            .execute(&state.db.pool)
            .await?;
    }
    // Integration credentials are envelopes too.
    let credentials =
        sqlx::query("SELECT name, credential FROM integrations WHERE credential <> ''")
            .fetch_all(&state.db.pool)
            .await?;
    for row in credentials {
        let (name, sealed): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let rewrapped_credential = ring.rewrap(&sealed)?;
        if rewrapped_credential != sealed {
            sqlx::query("UPDATE integrations SET credential = $1 WHERE name = $2")
                .bind(rewrapped_credential)
                .bind(name)
                .execute(&state.db.pool)
                .await?;
            rewrapped += 1;
        }
    }
    state
        .audit(
            &principal.actor(),
            "admin.key_rotate",
            ring.active_key_id(),
            "ok",
            &format!("rewrapped {rewrapped}"),
        )
        .await;
    Ok(Json(RotationResult {
        active_key_id: ring.active_key_id().to_string(),
        key_ids: ring.key_ids(),
        rewrapped_fields: rewrapped,
    }))
}

/// Redact PII (emails, phone and card numbers) from text.
#[utoipa::path(post, path = "/v1/pii/redact", tag = "security", security(("bearer" = [])), request_body = RedactRequest,
    responses((status = 200, body = RedactResponse), (status = 403, body = ErrorBody)))]
async fn redact(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<RedactRequest>,
) -> Result<Json<RedactResponse>, ApiError> {
    state.authorize(&principal, Permission::Redact).await?;
    Ok(Json(RedactResponse {
        text: crate::redact::redact_pii(&body.text),
    }))
}
