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
    /// The event bus (in-process or NATS).
    pub events: crate::events::EventBus,
    /// The webhook dispatcher (its HTTP client and wake-up).
    pub webhooks: crate::webhooks::Dispatcher,
    /// The embedded sentence encoder, when loaded.
    pub embedder: Option<crate::embed::Embedder>,
    /// The RAG engine's keyword index and vector cache.
    pub rag: crate::rag::Rag,
    /// The AI endpoints' backends, providers and cache.
    pub ai: crate::ai::Ai,
    /// The content filter.
    pub filter: crate::filter::Filter,
    /// The notification adapters' and integrations' HTTP client.
    pub notify: crate::notify::Notifier,
    /// Embedded intent examples per agent.
    pub(crate) intents: crate::intel::IntentCache,
    /// The workflow engine (its tasks end when the state is dropped).
    pub workflows: crate::workflow::Engine,
}

/// A weak handle to the state, held by background tasks so they end with it.
#[derive(Debug, Clone)]
pub struct WeakState(std::sync::Weak<StateInner>);

impl WeakState {
    /// The state, while anything else still holds it.
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(AppState)
    }

    /// Runs `pass` every `interval` until the state is gone (the background watchers: the task
    /// running this ends at the first look after the state is dropped); a failed pass is logged
    /// as `what` and the next one runs as usual.
    pub(crate) async fn every(
        self,
        interval: std::time::Duration,
        what: &'static str,
        pass: impl AsyncFn(&AppState) -> Result<(), crate::error::ApiError>,
    ) {
        loop {
            {
                let Some(state) = self.upgrade() else { return };
                if let Err(e) = pass(&state).await {
                    tracing::warn!(error = ?e.status(), "{what} failed");
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// What the embedding binary supplies beyond the configuration.
#[derive(Default)]
pub struct Extras {
    /// A sentence encoder already loaded (`None`: load one when `config.embeddings`).
    pub embedder: Option<crate::embed::Embedder>,
    /// The embedded chat, speech-to-text and text-to-speech models.
    pub backends: crate::ai::Backends,
    /// A key (`dk_gateway_<secret>`) to accept as the in-process gateway's credential (developer
    /// role, every scope); it replaces the one of the previous start.
    pub service_key: Option<String>,
    /// The clock workflow schedules are evaluated against (default the system clock; tests
    /// pass a manual one).
    pub workflow_clock: Option<crate::workflow::Clock>,
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

/// Key id of the in-process gateway's credential.
pub const SERVICE_KEY_ID: &str = "gateway";

async fn register_service_key(state: &AppState, key: &str) -> Result<(), PlatformError> {
    let secret = key
        .strip_prefix(&format!("{}{SERVICE_KEY_ID}_", crate::auth::API_KEY_PREFIX))
        .filter(|s| s.len() >= 32)
        .ok_or_else(|| {
            PlatformError::Config("service key must be dk_gateway_<32+ characters>".into())
        })?;
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(SERVICE_KEY_ID)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO api_keys (id, name, secret_hash, role, agent_id, scopes, created_by, created_at) VALUES ($1, 'in-process gateway', $2, 'developer', NULL, $3, 'platform', $4)")
        .bind(SERVICE_KEY_ID)
        .bind(crate::auth::tokens::hash_secret(secret))
        .bind(crate::auth::roles::SCOPES.join(","))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
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
        Self::build_with(config, Extras::default()).await
    }

    /// Like [`AppState::build`], with what the embedding binary supplies.
    pub async fn build_with(
        config: PlatformConfig,
        extras: Extras,
    ) -> Result<AppState, PlatformError> {
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
        let passwords = PasswordHashing::new(config.argon2_memory_kib, config.argon2_iterations)?
            .with_memory_budget(config.argon2_max_memory_mib);
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
        let events = match &config.events.nats_url {
            Some(url) if !url.is_empty() => crate::events::EventBus::nats(url).await?,
            _ => crate::events::EventBus::local(),
        };
        let webhooks = crate::webhooks::Dispatcher::new(&config.webhooks)
            .map_err(|e| PlatformError::Config(format!("webhook HTTP client: {e}")))?;
        let embedder = match extras.embedder {
            Some(e) => Some(e),
            None if config.embeddings => {
                let store = match &config.models_dir {
                    Some(dir) => dartmouth_models::ModelStore::new(dir),
                    None => dartmouth_models::ModelStore::from_env(),
                };
                match crate::embed::Embedder::spawn(&store) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "embeddings unavailable: retrieval is keyword-only, no intents or similarity filter");
                        None
                    }
                }
            }
            None => None,
        };
        let rag = crate::rag::Rag::open(&config.data_dir)?;
        let ai = crate::ai::Ai::new(&config.ai, extras.backends.clone())?;
        let filter = crate::filter::Filter::new(&config.filter)?;
        let notify = crate::notify::Notifier::new(&config.notify).map_err(PlatformError::Config)?;
        let workflows = crate::workflow::Engine::new(
            &config.workflows,
            extras.workflow_clock.clone().unwrap_or_default(),
        )
        .map_err(PlatformError::Config)?;
        let state = AppState(Arc::new(StateInner {
            rag,
            ai,
            filter,
            notify,
            workflows,
            events,
            webhooks,
            embedder,
            intents: Default::default(),
            tokens: TokenIssuer::new(&config, &jwt_secret, &room_secret),
            passwords,
            audit: AuditLog::new(db.clone()),
            keyring: RwLock::new(secrets.keyring.clone()),
            secrets: tokio::sync::Mutex::new(secrets),
            storage,
            limits: RateLimits::new(&config.rate_limits)
                .with_trusted_proxies(&config.trusted_proxies)?,
            revoked_sessions: RwLock::new(revoked),
            openapi: std::sync::OnceLock::new(),
            db,
            config,
        }));
        crate::auth::store::bootstrap_admin(&state).await?;
        if let Some(key) = &extras.service_key {
            register_service_key(&state, key).await?;
        }
        crate::rag::reconcile(&state).await.map_err(|e| {
            PlatformError::Config(format!("knowledge index rebuild failed ({})", e.status()))
        })?;
        let poll = std::time::Duration::from_millis(state.config.webhooks.poll_ms.max(10));
        tokio::spawn(state.webhooks.clone().run(state.downgrade(), poll));
        // Owned by the state: they end at the first look after the state is dropped.
        tokio::spawn(state.downgrade().every(
            crate::registry::routes::WATCH_INTERVAL,
            "registry health pass",
            crate::registry::routes::announce_changes,
        ));
        tokio::spawn(state.downgrade().every(
            crate::monitor::EVALUATE_INTERVAL,
            "SLA evaluation",
            crate::monitor::evaluate_all,
        ));
        tokio::spawn(state.downgrade().every(
            crate::memory::PURGE_INTERVAL,
            "memory expiry purge",
            crate::memory::purge_expired,
        ));
        tokio::spawn(state.downgrade().every(
            crate::notify::retry::RETRY_POLL,
            "notification retries",
            crate::notify::retry::pass,
        ));
        crate::workflow::start(&state);
        Ok(state)
    }

    /// A fresh in-process gateway credential for [`Extras::service_key`].
    pub fn new_service_key() -> String {
        let secret: [u8; 24] = rand::random();
        format!(
            "{}{SERVICE_KEY_ID}_{}",
            crate::auth::API_KEY_PREFIX,
            hex::encode(secret)
        )
    }

    /// A weak handle for background tasks.
    pub fn downgrade(&self) -> WeakState {
        WeakState(Arc::downgrade(&self.0))
    }

    /// The sentence encoder, or 503 when it is not loaded.
    pub fn embedder(&self) -> Result<&crate::embed::Embedder, ApiError> {
        self.embedder.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                "the embedding model is not loaded (run `dartmouth models fetch`)",
            )
        })
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
