//! Cross-agent memory: namespaced key-value entries with optional TTLs, and semantic memory
//! (facts embedded with the platform's MiniLM, found again by cosine similarity), shared between
//! agents through per-namespace grants.
//!
//! A namespace belongs to the principal that first wrote to it (an agent key acts as
//! `agent:<agent id>`, so every key of one agent shares its namespaces; users act as
//! `user:<id>`, other keys as `key:<id>`). The owner and admins read and write it and manage its
//! grants (`read`, or `write` which implies read); anyone else gets 403. Expired entries and facts
//! are invisible at once and purged lazily (on read) and by a periodic pass.
//!
//! State lives in the database (SQLite or PostgreSQL), so it survives restarts and is shared by
//! every sidecar on the same database.

mod client;
pub mod export;
pub mod facts;
pub mod grants;
pub mod keys;

use crate::auth::{Permission, Principal, PrincipalKind, Role};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::ApiError;
use crate::events::{Event, publish};
use crate::state::{Access, AppState};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Longest TTL (one year), in seconds.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;
/// Most grants on one namespace.
pub const MAX_GRANTS: i64 = 100;
/// How often the purge pass removes expired entries and facts.
pub(crate) const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Limits of the memory service (`[platform.memory]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Most namespaces in total. Default 10 000.
    pub max_namespaces: i64,
    /// Most live keys in one namespace. Default 10 000.
    pub max_keys_per_namespace: i64,
    /// Largest value (its JSON text), in bytes. Default 64 KiB.
    pub max_value_bytes: usize,
    /// Most live facts in one namespace (search compares the query with each). Default 1000.
    pub max_facts_per_namespace: i64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_namespaces: 10_000,
            max_keys_per_namespace: 10_000,
            max_value_bytes: 64 * 1024,
            max_facts_per_namespace: 1000,
        }
    }
}

/// Read or write access granted on a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantAccess {
    /// Read keys, list them, search facts.
    Read,
    /// Everything `read` allows, plus writing and deleting keys and facts.
    Write,
}

impl GrantAccess {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAccess::Read => "read",
            GrantAccess::Write => "write",
        }
    }
}

/// Who `principal` is to the memory service: `agent:<id>` for agent keys, else the audit actor.
pub fn identity(principal: &Principal) -> String {
    match (&principal.kind, principal.role, &principal.agent_id) {
        (PrincipalKind::ApiKey, Role::Agent, Some(agent)) => format!("agent:{agent}"),
        _ => principal.actor(),
    }
}

/// Parses a grantee as written in a path: `agent:<id>`, `user:<id>`, `key:<id>`, or a bare
/// agent id (meaning `agent:<id>`).
pub fn parse_principal(text: &str) -> Result<String, ApiError> {
    let (kind, name) = text.split_once(':').unwrap_or(("agent", text));
    if !matches!(kind, "agent" | "user" | "key") {
        return Err(ApiError::bad_request(
            "principal must be agent:<id>, user:<id>, key:<id> or an agent id",
        ));
    }
    check_name("principal id", name)?;
    Ok(format!("{kind}:{name}"))
}

/// Checks a key: 1–256 bytes of letters, digits and `_ - . : @`.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    let ok = (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "key must be 1-{MAX_KEY_LEN} of letters, digits, _ - . : @"
        )))
    }
}

/// The expiry (unix ms) of a TTL given in seconds; `None` never expires.
pub(crate) fn expiry(ttl_seconds: Option<i64>) -> Result<Option<i64>, ApiError> {
    match ttl_seconds {
        None => Ok(None),
        Some(ttl) if (1..=MAX_TTL_SECONDS).contains(&ttl) => Ok(Some(now_ms() + ttl * 1000)),
        Some(_) => Err(ApiError::bad_request(format!(
            "ttl_seconds: 1-{MAX_TTL_SECONDS}"
        ))),
    }
}

/// A namespace as its access check found it.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    /// The caller's identity (see [`identity`]).
    pub caller: String,
}

/// The owner of namespace `name`, if it exists.
pub(crate) async fn owner_of(state: &AppState, name: &str) -> Result<Option<String>, ApiError> {
    Ok(
        sqlx::query("SELECT owner FROM memory_namespaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&state.db.pool)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?,
    )
}

async fn denied(state: &AppState, principal: &Principal, name: &str, why: &str) -> ApiError {
    state
        .audit(
            &principal.actor(),
            "access.denied",
            &format!("memory:{name}"),
            "denied",
            why,
        )
        .await;
    ApiError::forbidden(format!("no {why} grant on memory namespace {name}"))
}

/// Requires `access` to namespace `name`: the owner, an admin, or a grantee with enough access.
/// A write to a namespace that does not exist yet creates it, owned by the caller; a read of one
/// answers 404.
pub(crate) async fn authorize(
    state: &AppState,
    principal: &Principal,
    name: &str,
    access: Access,
) -> Result<Namespace, ApiError> {
    check_name("namespace", name)?;
    state.authorize(principal, Permission::AgentData).await?;
    let scope = match access {
        Access::Read => "db:read",
        Access::Write => "db:write",
    };
    if !principal.has_scope(scope) {
        return Err(denied(state, principal, name, scope).await);
    }
    let caller = identity(principal);
    let namespace = Namespace {
        caller: caller.clone(),
    };
    let owner = match owner_of(state, name).await? {
        Some(owner) => owner,
        None if access == Access::Write => create(state, principal, name, &caller).await?,
        None => return Err(ApiError::not_found("no such memory namespace")),
    };
    if owner == caller || principal.role == Role::Admin {
        return Ok(namespace);
    }
    let granted: Option<String> =
        sqlx::query("SELECT access FROM memory_grants WHERE namespace = $1 AND principal = $2")
            .bind(name)
            .bind(&caller)
            .fetch_optional(&state.db.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    match (granted.as_deref(), access) {
        (Some("write"), _) | (Some("read"), Access::Read) => Ok(namespace),
        (_, Access::Read) => Err(denied(state, principal, name, "read").await),
        (_, Access::Write) => Err(denied(state, principal, name, "write").await),
    }
}

/// Creates namespace `name` owned by `caller` (the owner it has, when another request created
/// it first).
async fn create(
    state: &AppState,
    principal: &Principal,
    name: &str,
    caller: &str,
) -> Result<String, ApiError> {
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM memory_namespaces")
        .fetch_one(&state.db.pool)
        .await?
        .try_get(0)?;
    if count >= state.config.memory.max_namespaces {
        return Err(ApiError::conflict(format!(
            "at most {} memory namespaces",
            state.config.memory.max_namespaces
        )));
    }
    let user = match principal.kind {
        PrincipalKind::User => Some(principal.id.clone()),
        PrincipalKind::ApiKey => None,
    };
    let created = sqlx::query("INSERT INTO memory_namespaces (name, owner, owner_user_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(caller)
        .bind(user)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await?
        .rows_affected();
    if created == 1 {
        state
            .audit(
                &principal.actor(),
                "memory.namespace.create",
                &format!("memory:{name}"),
                "ok",
                caller,
            )
            .await;
    }
    owner_of(state, name)
        .await?
        .ok_or_else(|| ApiError::internal("memory namespace vanished while created"))
}

/// Requires that `principal` owns namespace `name` or is an admin (grant management, deletion).
pub(crate) async fn authorize_owner(
    state: &AppState,
    principal: &Principal,
    name: &str,
) -> Result<(), ApiError> {
    check_name("namespace", name)?;
    state.authorize(principal, Permission::AgentData).await?;
    let owner = owner_of(state, name)
        .await?
        .ok_or_else(|| ApiError::not_found("no such memory namespace"))?;
    if owner == identity(principal) || principal.role == Role::Admin {
        return Ok(());
    }
    Err(denied(state, principal, name, "owner").await)
}

/// Publishes a `memory.*` event about a write (names only, never values); a failure is logged,
/// the write stands.
pub(crate) async fn announce(state: &AppState, topic: &str, data: serde_json::Value) {
    if let Err(e) = publish(state, Event::new(topic, "platform", data)).await {
        tracing::warn!(error = %e, topic, "memory event not published");
    }
}

/// Removes expired entries and facts (run every [`PURGE_INTERVAL`] by the state).
pub(crate) async fn purge_expired(state: &AppState) -> Result<(), ApiError> {
    let now = now_ms();
    for table in ["memory_entries", "memory_facts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= $1"
        )))
        .bind(now)
        .execute(&state.db.pool)
        .await?;
    }
    Ok(())
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(keys::router())
        .merge(facts::router())
        .merge(grants::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_principals_are_checked() {
        assert!(check_key("user:42.cart@eu-1_x").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a/b").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert_eq!(parse_principal("orders").unwrap(), "agent:orders");
        assert_eq!(parse_principal("user:abc-1").unwrap(), "user:abc-1");
        assert!(parse_principal("root:x").is_err());
        assert!(parse_principal("agent:").is_err());
        assert!(parse_principal("agent:a b").is_err());
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(expiry(None).unwrap(), None);
        assert!(expiry(Some(1)).unwrap().unwrap() > now_ms());
        assert!(expiry(Some(0)).is_err());
        assert!(expiry(Some(-5)).is_err());
        assert!(expiry(Some(MAX_TTL_SECONDS + 1)).is_err());
    }
}
