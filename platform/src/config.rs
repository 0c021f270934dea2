//! [`PlatformConfig`]: every knob of the sidecar, with documented defaults.

use serde::Deserialize;
use std::path::PathBuf;

/// Configuration of the platform sidecar (the `[platform]` section of `dartmouth.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct PlatformConfig {
    /// Where the SQLite file, stored files and generated secrets live. Default `./dartmouth-data/platform`.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; `None` → SQLite file `platform.db` under `data_dir` (WAL).
    pub database_url: Option<String>,
    /// PostgreSQL only: a schema to create and use (search_path) instead of `public`.
    pub database_schema: Option<String>,
    /// Maximum pooled database connections. Default 8.
    pub database_max_connections: u32,
    /// HMAC secret for access tokens; `None` → generated once and kept in `data_dir/secrets.json`.
    pub jwt_secret: Option<String>,
    /// `iss` of access tokens. Default `dartmouth-platform`.
    pub jwt_issuer: String,
    /// `aud` of access tokens. Default `dartmouth`.
    pub jwt_audience: String,
    /// Access-token lifetime in seconds. Default 3600 (1 h).
    pub access_token_ttl_secs: u64,
    /// Refresh-token lifetime in seconds. Default 604800 (7 d).
    pub refresh_token_ttl_secs: u64,
    /// Secret for gateway room tokens; `None` → generated and kept in `data_dir/secrets.json`.
    pub room_token_secret: Option<String>,
    /// Room-token lifetime in seconds. Default 3600.
    pub room_token_ttl_secs: u64,
    /// Argon2 memory cost in KiB. Default 19456 (OWASP); tests lower it.
    pub argon2_memory_kib: u32,
    /// Argon2 iterations. Default 2.
    pub argon2_iterations: u32,
    /// Memory all concurrent argon2 hashes may use together, in MiB; further logins and
    /// registrations wait for a slot (up to a few seconds, then 429). Default 256.
    pub argon2_max_memory_mib: u32,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` names the client; from any other peer the
    /// header is ignored. Default none.
    pub trusted_proxies: Vec<String>,
    /// Whether `POST /v1/auth/register` is open (creates `user` accounts). Default true.
    pub allow_registration: bool,
    /// An admin account created at startup when no user exists yet.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Maximum JSON request body in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Maximum uploaded file in bytes. Default 25 MiB.
    pub max_upload_bytes: usize,
    /// Accepted upload content types (prefix match). Default audio/, image/, text/, PDF, JSON, octet-stream.
    pub upload_content_types: Vec<String>,
    /// Store files in this S3-compatible bucket instead of `data_dir/files`. Default `None` (local).
    pub s3: Option<S3Config>,
    /// Default lifetime of signed file URLs in seconds. Default 900.
    pub signed_url_ttl_secs: u64,
    /// Origins allowed by CORS. Default the demo's `http://127.0.0.1:8080` and `http://localhost:8080`.
    pub cors_origins: Vec<String>,
    /// Rate-limit quotas.
    pub rate_limits: RateLimitConfig,
    /// Redact emails, phone and card numbers from strings stored in `redact_collections`. Default true.
    pub redact_pii: bool,
    /// Collections whose string values are redacted when `redact_pii` is on. Default `["transcripts"]`.
    pub redact_collections: Vec<String>,
    /// Directory of the embedded models; `None` → `$DARTMOUTH_HOME/models`.
    pub models_dir: Option<PathBuf>,
    /// Load the embedded sentence encoder (RAG, intents, content filter, `/v1/embeddings`). Default true.
    pub embeddings: bool,
    /// The event system.
    pub events: EventsConfig,
    /// The webhook manager.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// The RAG engine.
    pub rag: crate::rag::RagConfig,
    /// The OpenAI-compatible AI endpoints, providers, cache and prices.
    pub ai: crate::ai::AiConfig,
    /// The content filter.
    pub filter: crate::filter::FilterConfig,
    /// Notifications (SMTP, SMS, push) and integrations.
    pub notify: crate::notify::NotifyConfig,
    /// Limits of the cross-agent memory.
    pub memory: crate::memory::MemoryConfig,
    /// The workflow engine (`[platform.workflows]`).
    pub workflows: crate::workflow::WorkflowConfig,
}

/// Settings of the event system (`[platform.events]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct EventsConfig {
    /// NATS server (JetStream enabled), e.g. `nats://127.0.0.1:4222`; `None` → the in-process bus.
    pub nats_url: Option<String>,
}

/// The admin account created at first start.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct BootstrapAdmin {
    /// Login email.
    pub email: String,
    /// Initial password.
    pub password: String,
}

/// An S3-compatible bucket for file storage.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint for S3-compatible services (MinIO, R2, …); `None` → AWS.
    pub endpoint: Option<String>,
    /// Access key id; `None` → the usual AWS environment/instance credentials.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints (local test servers). Default false.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Quotas for the rate limiter, per API key / user / IP and route group.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Turn rate limiting off entirely (benchmarks). Default true (on).
    pub enabled: bool,
    /// Sustained requests per second for the general API group. Default 50.
    pub api_per_second: u32,
    /// Burst size for the general API group. Default 100.
    pub api_burst: u32,
    /// Sustained requests per minute for login/register/refresh. Default 30.
    pub auth_per_minute: u32,
    /// Burst size for login/register/refresh. Default 10.
    pub auth_burst: u32,
    /// Sustained login/registration attempts per minute for one account (email), from any
    /// address. Default 10.
    pub account_per_minute: u32,
    /// Burst size per account. Default 5.
    pub account_burst: u32,
    /// Failed logins (per account and per address) that are free; the next attempt waits the
    /// back-off. Default 3.
    pub failures_before_backoff: u32,
    /// First back-off in milliseconds; doubles with every further failure. Default 1000.
    pub backoff_base_ms: u64,
    /// Longest back-off in seconds. Default 900 (15 min).
    pub backoff_max_secs: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            api_per_second: 50,
            api_burst: 100,
            auth_per_minute: 30,
            auth_burst: 10,
            account_per_minute: 10,
            account_burst: 5,
            failures_before_backoff: 3,
            backoff_base_ms: 1000,
            backoff_max_secs: 900,
        }
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("dartmouth-data/platform"),
            database_url: None,
            database_schema: None,
            database_max_connections: 8,
            jwt_secret: None,
            jwt_issuer: "dartmouth-platform".into(),
            jwt_audience: "dartmouth".into(),
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            room_token_secret: None,
            room_token_ttl_secs: 3600,
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            argon2_max_memory_mib: 256,
            trusted_proxies: Vec::new(),
            allow_registration: true,
            bootstrap_admin: None,
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 25 * 1024 * 1024,
            upload_content_types: [
                "audio/",
                "image/",
                "text/",
                "application/pdf",
                "application/json",
                "application/octet-stream",
            ]
            .map(String::from)
            .to_vec(),
            s3: None,
            signed_url_ttl_secs: 900,
            cors_origins: vec![
                "http://127.0.0.1:8080".into(),
                "http://localhost:8080".into(),
            ],
            rate_limits: RateLimitConfig::default(),
            redact_pii: true,
            redact_collections: vec!["transcripts".into()],
            models_dir: None,
            embeddings: true,
            events: EventsConfig::default(),
            webhooks: crate::webhooks::WebhookConfig::default(),
            rag: crate::rag::RagConfig::default(),
            ai: crate::ai::AiConfig::default(),
            filter: crate::filter::FilterConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            memory: crate::memory::MemoryConfig::default(),
            workflows: crate::workflow::WorkflowConfig::default(),
        }
    }
}
