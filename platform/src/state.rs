//! Shared state of the sidecar's handlers.

use crate::audit::AuditLog;
use crate::auth::roles::{Permission, role_allows};
use crate::auth::tokens::{PasswordHashing, TokenIssuer};
use crate::auth::{Principal, PrincipalKind};
use crate::config::PlatformConfig;
use crate::crypto::{Keyring, Secrets};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, PlatformError};
use crate::ratelimit::RateLimits;
use crate::storage::Storage;
use sqlx::Row;
use std::collections::HashSet;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

/// Cheaply clonable handle to everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState(Arc<StateInner>);

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct StateInner {
    /// The configuration the sidecar started with.
    pub config: PlatformConfig,
    /// The database.
    pub db: Db,
    /// Token signing and verification.
    pub tokens: TokenIssuer,
    /// Password hashing.
    pub passwords: PasswordHashing,
    /// The audit chain.
    pub audit: AuditLog,
    /// Envelope-encryption keys.
    pub keyring: RwLock<Keyring>,
    /// Generated secrets (persisted on key rotation).
    pub secrets: tokio::sync::Mutex<Secrets>,
    /// File storage.
    pub storage: Storage,
    /// Rate limiters.
    pub limits: RateLimits,
    /// Revoked session (refresh family) ids, mirrored from the database for fast checks.
    pub revoked_sessions: RwLock<HashSet<String>>,
    /// The OpenAPI document, set once the routes are assembled.
    pub openapi: std::sync::OnceLock<serde_json::Value>,
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

/// Whether a principal wants to read or write agent data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read.
    Read,
    /// Write (implies read).
    Write,
}

impl AppState {
    /// Connects the database, loads secrets, bootstraps the admin; everything `app` needs.
    pub async fn build(config: PlatformConfig) -> Result<AppState, PlatformError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let secrets = Secrets::load_or_create(&config.data_dir)?;
        let jwt_secret = config
            .jwt_secret
            .clone()
            .unwrap_or_else(|| secrets.jwt_secret.clone());
        if jwt_secret.len() < 16 {
            return Err(PlatformError::Config(
                "jwt_secret must be at least 16 bytes".into(),
            ));
        }
        let room_secret = config
            .room_token_secret
            .clone()
            .unwrap_or_else(|| secrets.room_token_secret.clone());
        let db = Db::connect(&config).await?;
        let passwords = PasswordHashing::new(config.argon2_memory_kib, config.argon2_iterations)?;
        let revoked: HashSet<String> = sqlx::query(
            "SELECT id FROM token_families WHERE revoked_at IS NOT NULL AND expires_at > $1",
        )
        .bind(now_ms())
        .fetch_all(&db.pool)
        .await?
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
        let storage = match &config.s3 {
            Some(s3) => Storage::s3(s3, secrets.url_signing_secret.clone())?,
            None => Storage::local(
                config.data_dir.join("files"),
                secrets.url_signing_secret.clone(),
            )?,
        };
        let state = AppState(Arc::new(StateInner {
            tokens: TokenIssuer::new(&config, &jwt_secret, &room_secret),
            passwords,
            audit: AuditLog::new(db.clone()),
            keyring: RwLock::new(secrets.keyring.clone()),
            secrets: tokio::sync::Mutex::new(secrets),
            storage,
            limits: RateLimits::new(&config.rate_limits),
            revoked_sessions: RwLock::new(revoked),
            openapi: std::sync::OnceLock::new(),
            db,
            config,
        }));
        crate::auth::store::bootstrap_admin(&state).await?;
        Ok(state)
    }

    /// Appends to the audit log; failures are logged, never surfaced to the caller.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) {
        if let Err(e) = self
            .audit
            .append(actor, action, target, outcome, detail)
            .await
        {
            tracing::error!(error = %e, action, "audit append failed");
        }
    }

    /// Requires a route-level permission; a denial is audited and answered with 403.
    pub async fn authorize(
        &self,
        principal: &Principal,
        permission: Permission,
    ) -> Result<(), ApiError> {
        if role_allows(principal.role, permission) {
            return Ok(());
        }
        self.audit(
            &principal.actor(),
            "access.denied",
            permission.as_str(),
            "denied",
            principal.role.as_str(),
        )
        .await;
        Err(ApiError::forbidden(format!(
            "role {} may not {}",
            principal.role.as_str(),
            permission.as_str().replace('_', " ")
        )))
    }

    /// Requires access to `agent_id`'s data in `collection` (own agent, a grant, or developer/admin),
    /// plus the key scope `scope` for API keys.
    pub async fn authorize_agent(
        &self,
        principal: &Principal,
        agent_id: &str,
        collection: &str,
        access: Access,
        scope: &str,
    ) -> Result<(), ApiError> {
        self.authorize(principal, Permission::AgentData).await?;
        let denied = |reason: &str| ApiError::forbidden(reason.to_string());
        if !principal.has_scope(scope) {
            self.audit(
                &principal.actor(),
                "access.denied",
                scope,
                "denied",
                agent_id,
            )
            .await;
            return Err(denied("API key lacks the required scope"));
        }
        if principal.kind == PrincipalKind::User || principal.role != crate::auth::Role::Agent {
            return Ok(());
        }
        if principal.agent_id.as_deref() == Some(agent_id) {
            return Ok(());
        }
        let grantee = principal.agent_id.clone().unwrap_or_default();
        let grant: Option<String> = sqlx::query(
            "SELECT access FROM agent_grants WHERE owner_agent = $1 AND grantee_agent = $2 AND (collection = $3 OR collection = '*')",
        )
        .bind(agent_id)
        .bind(grantee)
        .bind(collection)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .max_by_key(|a| a == "write");
        let allowed = matches!(
            (grant.as_deref(), access),
            (Some("write"), _) | (Some("read"), Access::Read)
        );
        if allowed {
            return Ok(());
        }
        self.audit(
            &principal.actor(),
            "access.denied",
            &format!("agent:{agent_id}/{collection}"),
            "denied",
            "no grant",
        )
        .await;
        Err(denied("this key may not access that agent's data"))
    }

    /// Marks a session revoked in memory (the database row is updated by the caller).
    pub fn mark_session_revoked(&self, session: &str) {
        if let Ok(mut set) = self.revoked_sessions.write() {
            set.insert(session.to_string());
        }
    }

    /// Whether a session was revoked.
    pub fn is_session_revoked(&self, session: &str) -> bool {
        self.revoked_sessions
            .read()
            .map(|set| set.contains(session))
            .unwrap_or(true)
    }
}
