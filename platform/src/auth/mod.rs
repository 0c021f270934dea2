//! Auth service and manager: users, sessions (access + rotating refresh tokens), API keys, RBAC.

pub mod roles;
pub mod routes;
pub(crate) mod store;
pub mod tokens;

pub use roles::{Permission, Role};

use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sqlx::Row;

/// Prefix of API keys: `dk_<id>_<secret>`.
pub const API_KEY_PREFIX: &str = "dk_";

/// Whether the caller authenticated as a user (JWT) or with an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A user with an access token.
    User,
    /// An agent or service with an API key.
    ApiKey,
}

/// The authenticated caller; extracting it from a request enforces authentication.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User or key.
    pub kind: PrincipalKind,
    /// User id or API-key id.
    pub id: String,
    /// The role in force.
    pub role: Role,
    /// For agent keys: the agent whose data this key owns.
    pub agent_id: Option<String>,
    /// For API keys: granted scopes (users have all).
    pub scopes: Vec<String>,
    /// For users: the session (refresh family) id.
    pub session: Option<String>,
    /// For API keys: the user who created the key.
    pub owner: Option<String>,
}

impl Principal {
    /// Audit actor string: `user:<id>` or `key:<id>`.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::User => format!("user:{}", self.id),
            PrincipalKind::ApiKey => format!("key:{}", self.id),
        }
    }

    /// Whether the principal holds `scope` (users hold every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.kind == PrincipalKind::User || self.scopes.iter().any(|s| s == scope || s == "*")
    }

    /// The user this principal acts for: the user itself, or a key's creator.
    pub fn user_id(&self) -> Option<&str> {
        match self.kind {
            PrincipalKind::User => Some(&self.id),
            PrincipalKind::ApiKey => self.owner.as_deref(),
        }
    }
}

/// How often (ms) a key's `last_used_at` is refreshed and its use audited.
const KEY_USE_RECORD_INTERVAL_MS: i64 = 60_000;

async fn authenticate_api_key(state: &AppState, credential: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::unauthenticated("invalid API key");
    let rest = credential
        .strip_prefix(API_KEY_PREFIX)
        .ok_or_else(invalid)?;
    let (id, secret) = rest.split_once('_').ok_or_else(invalid)?;
    let row = sqlx::query(
        "SELECT secret_hash, role, agent_id, scopes, revoked_at, last_used_at, created_by FROM api_keys WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(invalid)?;
    let stored: String = row.try_get(0)?;
    if !tokens::constant_time_eq(&stored, &tokens::hash_secret(secret)) {
        return Err(invalid());
    }
    if row.try_get::<Option<i64>, _>(4)?.is_some() {
        return Err(ApiError::unauthenticated("API key revoked"));
    }
    let role = Role::parse(&row.try_get::<String, _>(1)?).ok_or_else(invalid)?;
    let scopes: String = row.try_get(3)?;
    let now = now_ms();
    let last_used: Option<i64> = row.try_get(5)?;
    if last_used.is_none_or(|t| now - t > KEY_USE_RECORD_INTERVAL_MS) {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&state.db.pool)
            .await?;
        state
            .audit(&format!("key:{id}"), "api_key.used", id, "ok", "")
            .await;
    }
    Ok(Principal {
        kind: PrincipalKind::ApiKey,
        id: id.to_string(),
        role,
        agent_id: row.try_get(2)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        session: None,
        owner: Some(row.try_get(6)?),
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer credential"))?;
        let credential = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthenticated("Authorization must be `Bearer <token>`"))?;
        if credential.starts_with(API_KEY_PREFIX) {
            return authenticate_api_key(state, credential).await;
        }
        let claims = state
            .tokens
            .verify_access(credential)
            .ok_or_else(|| ApiError::unauthenticated("invalid or expired access token"))?;
        if state.is_session_revoked(&claims.sid) {
            return Err(ApiError::unauthenticated("session revoked"));
        }
        Ok(Principal {
            kind: PrincipalKind::User,
            id: claims.sub,
            role: claims.role,
            agent_id: None,
            scopes: Vec::new(),
            session: Some(claims.sid),
            owner: None,
        })
    }
}
