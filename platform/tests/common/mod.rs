//! Shared harness: a sidecar on SQLite (temp dir) or PostgreSQL (fresh schema), driven through
//! `oneshot`, with helpers for users, tokens and agent keys.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use dartmouth_platform::{BootstrapAdmin, PlatformConfig, RateLimitConfig};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
pub const ROOM_SECRET: &str = "test-room-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each scenario `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Postgres).await } )*
        }
    };
}

pub struct Env {
    pub app: Router,
    pub config: PlatformConfig,
    pub admin_token: String,
    pub backend: Backend,
    _dir: tempfile::TempDir,
}

static SCHEMA_COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn test_config(backend: Backend, dir: &std::path::Path) -> Option<PlatformConfig> {
    let mut config = PlatformConfig {
        data_dir: dir.to_path_buf(),
        jwt_secret: Some(JWT_SECRET.into()),
        room_token_secret: Some(ROOM_SECRET.into()),
        argon2_memory_kib: 8,
        argon2_iterations: 1,
        bootstrap_admin: Some(BootstrapAdmin {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
        }),
        rate_limits: RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        },
        database_max_connections: 4,
        ..PlatformConfig::default()
    };
    if backend == Backend::Postgres {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!(
                "skipped: DATABASE_URL is not set, so the PostgreSQL variant of this test does not run"
            );
            return None;
        };
        let n = SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        config.database_url = Some(url);
        config.database_schema = Some(format!("dm_test_{}_{n}_{nanos}", std::process::id()));
    }
    Some(config)
}

impl Env {
    pub async fn new(backend: Backend) -> Option<Env> {
        Self::with(backend, |_| {}).await
    }

    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut PlatformConfig)) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(backend, dir.path())?;
        tweak(&mut config);
        let app = dartmouth_platform::app(config.clone())
            .await
            .expect("app builds");
        let mut env = Env {
            app,
            config,
            admin_token: String::new(),
            backend,
            _dir: dir,
        };
        env.admin_token = env.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        Some(env)
    }

    /// Sends a request; returns status, JSON body (or `Value::String` of the text, or Null) and headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value, headers)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, value, _) = match body {
            Some(b) => {
                self.send(
                    method,
                    path,
                    token,
                    Some("application/json"),
                    serde_json::to_vec(&b).unwrap(),
                )
                .await
            }
            None => self.send(method, path, token, None, Vec::new()).await,
        };
        (status, value)
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {email}: {body}");
        body
    }

    /// Creates a user with `role` through the admin API; returns (user id, access token).
    pub async fn user(&self, role: &str) -> (String, String) {
        let n = SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed);
        let email = format!("{role}{n}@example.com");
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/users",
                Some(&self.admin_token),
                Some(json!({"email": email, "password": "password-123", "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let token = self.login(&email, "password-123").await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        (body["id"].as_str().unwrap().to_string(), token)
    }

    /// Creates an agent API key for `agent` with `scopes` (None → all).
    pub async fn agent_key(&self, agent: &str, scopes: Option<&[&str]>) -> String {
        let mut request = json!({"name": format!("{agent} key"), "agent_id": agent});
        if let Some(s) = scopes {
            request["scopes"] = json!(s);
        }
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/api-keys",
                Some(&self.admin_token),
                Some(request),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().unwrap().to_string()
    }

    /// A direct database handle on the same database (for tamper tests and at-rest checks).
    pub async fn db(&self) -> dartmouth_platform::db::Db {
        dartmouth_platform::db::Db::connect(&self.config)
            .await
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        drop_test_schema(&self.config);
    }
}

/// Drops a PostgreSQL test schema (if the config has one) so runs do not accumulate them.
pub fn drop_test_schema(config: &PlatformConfig) {
    let (Some(url), Some(schema)) = (config.database_url.clone(), config.database_schema.clone())
    else {
        return;
    };
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::{Connection, Executor};
            if let Ok(mut conn) = sqlx::AnyConnection::connect(&url).await {
                let _ = conn
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .await;
            }
        });
    });
    let _ = cleanup.join();
}

/// Asserts the one error shape and returns its code.
pub fn error_code(body: &Value) -> String {
    let error = &body["error"];
    assert!(error["message"].is_string(), "error shape: {body}");
    assert!(
        error["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "request id: {body}"
    );
    error["code"].as_str().expect("error code").to_string()
}

/// Number of stored documents, read directly from the database.
pub async fn count_documents(env: &Env) -> i64 {
    let db = env.db().await;
    sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM documents")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    )
}
