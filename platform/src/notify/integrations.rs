//! The integration hub: calendar, CRM and other HTTP services registered by name with a base
//! URL and a credential (sent in a chosen header). The credential is encrypted by the keyring
//! before it is stored and never returned; calls go through the SSRF guard with a bounded
//! timeout and response size.

use super::channels::{describe, read_limited, truncate};
use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use crate::webhooks::ssrf;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most integrations in total.
const MAX_INTEGRATIONS: i64 = 1000;
/// Longest credential (a header value).
const MAX_CREDENTIAL: usize = 4096;
/// Longest path of a call.
const MAX_PATH: usize = 2048;
/// Headers the sidecar sets itself; an integration may not use them for its credential.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
];

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_integrations))
        .routes(routes!(put_integration, delete_integration))
        .routes(routes!(call_integration))
}

/// What an integration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationKind {
    /// A calendar service.
    Calendar,
    /// A CRM.
    Crm,
    /// Any other HTTP API.
    Http,
}

impl IntegrationKind {
    fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::Calendar => "calendar",
            IntegrationKind::Crm => "crm",
            IntegrationKind::Http => "http",
        }
    }

    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "calendar" => Ok(IntegrationKind::Calendar),
            "crm" => Ok(IntegrationKind::Crm),
            "http" => Ok(IntegrationKind::Http),
            other => Err(ApiError::internal(format!("stored kind {other:?}"))),
        }
    }
}

fn default_auth_header() -> String {
    "authorization".into()
}

/// A new or replaced integration.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutIntegration {
    /// `calendar`, `crm` or `http`.
    pub kind: IntegrationKind,
    /// http(s) base URL without query or fragment (public address unless the config allows
    /// private ones); calls append their path to it.
    pub base_url: String,
    /// The header that carries the credential. Default `authorization`.
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    /// The header's value, e.g. `Bearer …`; stored encrypted, never returned.
    #[serde(default)]
    pub credential: Option<String>,
}

impl std::fmt::Debug for PutIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutIntegration")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("auth_header", &self.auth_header)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A registered integration (its credential redacted: only whether one is set).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Integration {
    /// Its name.
    pub name: String,
    /// `calendar`, `crm` or `http`.
    pub kind: IntegrationKind,
    /// Base URL.
    pub base_url: String,
    /// The header that carries the credential.
    pub auth_header: String,
    /// Whether a credential is stored (it is never returned).
    pub has_credential: bool,
    /// Unix milliseconds (of the last replacement).
    pub created_at: i64,
}

fn integration_of(row: &sqlx::any::AnyRow) -> Result<Integration, ApiError> {
    Ok(Integration {
        name: row.try_get(0)?,
        kind: IntegrationKind::parse(&row.try_get::<String, _>(1)?)?,
        base_url: row.try_get(2)?,
        auth_header: row.try_get(3)?,
        has_credential: !row.try_get::<String, _>(4)?.is_empty(),
        created_at: row.try_get(5)?,
    })
}

fn allow_private(state: &AppState) -> bool {
    state.config.notify.allow_private_targets
}

/// Integrations, by name (credentials redacted).
#[utoipa::path(get, path = "/v1/integrations", tag = "integrations", security(("bearer" = [])),
    responses((status = 200, body = Vec<Integration>), (status = 403, body = ErrorBody)))]
async fn list_integrations(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<Integration>>, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    let rows = sqlx::query("SELECT name, kind, base_url, auth_header, credential, created_at FROM integrations ORDER BY name LIMIT 1000")
        .fetch_all(&state.db.pool)
        .await?;
    rows.iter()
        .map(integration_of)
        .collect::<Result<_, _>>()
        .map(Json)
}

/// Register (or replace) an integration; its credential is encrypted before it is stored.
#[utoipa::path(put, path = "/v1/integrations/{name}", tag = "integrations", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = PutIntegration,
    responses((status = 200, body = Integration), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn put_integration(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<PutIntegration>,
) -> Result<Json<Integration>, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    check_name("integration name", &name)?;
    let auth_header = request.auth_header.trim().to_ascii_lowercase();
    if HeaderName::from_bytes(auth_header.as_bytes()).is_err()
        || RESERVED_HEADERS.contains(&auth_header.as_str())
    {
        return Err(ApiError::bad_request(
            "auth_header: a header name (letters, digits, -), not one the sidecar sets itself",
        ));
    }
    let credential = request.credential.unwrap_or_default();
    if credential.len() > MAX_CREDENTIAL || HeaderValue::from_str(&credential).is_err() {
        return Err(ApiError::bad_request(format!(
            "credential: at most {MAX_CREDENTIAL} characters of a header value (no line breaks)"
        )));
    }
    let url = ssrf::check_url(&request.base_url, allow_private(&state))
        .await
        .map_err(|e| ApiError::bad_request(format!("base_url: {e}")))?;
    ssrf::check_literal_host(&url, allow_private(&state))
        .map_err(|e| ApiError::bad_request(format!("base_url: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::bad_request(
            "base_url: no query or fragment (calls give the rest of the URL)",
        ));
    }
    let sealed = if credential.is_empty() {
        String::new()
    } else {
        state
            .keyring
            .read()
            .map_err(ApiError::internal)?
            .encrypt(credential.as_bytes())?
    };
    let integration = Integration {
        name,
        kind: request.kind,
        base_url: url.as_str().trim_end_matches('/').to_string(),
        auth_header,
        has_credential: !sealed.is_empty(),
        created_at: now_ms(),
    };
    let mut tx = state.db.pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM integrations WHERE name = $1")
        .bind(&integration.name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM integrations")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if count >= MAX_INTEGRATIONS {
            return Err(ApiError::conflict(format!(
                "at most {MAX_INTEGRATIONS} integrations"
            )));
        }
    }
    sqlx::query("INSERT INTO integrations (name, kind, base_url, auth_header, credential, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&integration.name)
        .bind(integration.kind.as_str())
        .bind(&integration.base_url)
        .bind(&integration.auth_header)
        .bind(sealed)
        .bind(integration.created_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "integration.put",
            &integration.name,
            "ok",
            &integration.base_url,
        )
        .await;
    Ok(Json(integration))
}

/// Delete an integration and its stored credential.
#[utoipa::path(delete, path = "/v1/integrations/{name}", tag = "integrations", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_integration(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    check_name("integration name", &name)?;
    let deleted = sqlx::query("DELETE FROM integrations WHERE name = $1")
        .bind(&name)
        .execute(&state.db.pool)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found(format!(
            "no integration named {name:?}"
        )));
    }
    state
        .audit(&principal.actor(), "integration.delete", &name, "ok", "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// HTTP method of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CallMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

/// A call through an integration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallIntegration {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: CallMethod,
    /// Appended to the base URL: starts with `/`, may carry a query (`/events?day=2026-01-02`).
    pub path: String,
    /// A JSON body to send.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

/// What the integration answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallResult {
    /// The upstream HTTP status.
    pub status: u16,
    /// The upstream content type (empty when none).
    pub content_type: String,
    /// The upstream body: JSON when it parses as JSON, else its text.
    pub body: serde_json::Value,
}

fn check_path(path: &str) -> Result<(), ApiError> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= MAX_PATH
        && !path.contains("..")
        && !path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '#');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "path: starts with / (not //), at most {MAX_PATH} characters, no .., \\, # or spaces"
        )))
    }
}

/// Call an integration: `method base_url+path` with the stored credential in its header. The
/// answer carries the upstream status and body (bounded in size and time).
#[utoipa::path(post, path = "/v1/integrations/{name}/call", tag = "integrations", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = CallIntegration,
    responses((status = 200, body = CallResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "the integration could not be reached or answered too much"),
        (status = 504, body = ErrorBody, description = "the integration did not answer in time")))]
async fn call_integration(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<CallIntegration>,
) -> Result<Json<CallResult>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("integration name", &name)?;
    check_path(&request.path)?;
    let row =
        sqlx::query("SELECT base_url, auth_header, credential FROM integrations WHERE name = $1")
            .bind(&name)
            .fetch_optional(&state.db.pool)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no integration named {name:?}")))?;
    let (base, header, sealed): (String, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let base_url = reqwest::Url::parse(&base).map_err(ApiError::internal)?;
    let target = reqwest::Url::parse(&format!("{base}{}", request.path))
        .map_err(|e| ApiError::bad_request(format!("path: {e}")))?;
    if target.scheme() != base_url.scheme()
        || target.host_str() != base_url.host_str()
        || target.port_or_known_default() != base_url.port_or_known_default()
    {
        return Err(ApiError::bad_request(
            "path: must stay on the integration's host",
        ));
    }
    let allow = allow_private(&state);
    let target = ssrf::check_url(target.as_str(), allow)
        .await
        .map_err(|e| ApiError::bad_request(format!("integration URL: {e}")))?;
    ssrf::check_literal_host(&target, allow)
        .map_err(|e| ApiError::bad_request(format!("integration URL: {e}")))?;
    let method = match request.method {
        CallMethod::Get => reqwest::Method::GET,
        CallMethod::Post => reqwest::Method::POST,
        CallMethod::Put => reqwest::Method::PUT,
        CallMethod::Patch => reqwest::Method::PATCH,
        CallMethod::Delete => reqwest::Method::DELETE,
    };
    let mut call = state.notify.http.request(method, target);
    if !sealed.is_empty() {
        let credential = state
            .keyring
            .read()
            .map_err(ApiError::internal)?
            .decrypt(&sealed)?;
        let mut value = HeaderValue::from_bytes(&credential).map_err(ApiError::internal)?;
        value.set_sensitive(true);
        call = call.header(header.as_str(), value);
    }
    if let Some(body) = &request.body {
        call = call
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let outcome = call.send().await;
    let mut response = match outcome {
        Ok(r) => r,
        Err(e) => {
            state
                .audit(&principal.actor(), "integration.call", &name, "failed", "")
                .await;
            return Err(if e.is_timeout() {
                ApiError::timeout(format!("integration {name}: {}", describe(&e)))
            } else {
                ApiError::bad_gateway(format!("integration {name}: {}", describe(&e)))
            });
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate(v, 200))
        .unwrap_or_default();
    let max = state.notify.config.max_response_bytes;
    let bytes = match tokio::time::timeout(state.notify.timeout(), read_limited(&mut response, max))
        .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(why)) => {
            return Err(ApiError::bad_gateway(format!("integration {name}: {why}")));
        }
        Err(_) => {
            return Err(ApiError::timeout(format!(
                "integration {name}: the response did not arrive in time"
            )));
        }
    };
    state
        .audit(
            &principal.actor(),
            "integration.call",
            &name,
            "ok",
            &status.to_string(),
        )
        .await;
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(Json(CallResult {
        status,
        content_type,
        body,
    }))
}
