//! JSON bodies into the platform sidecar's API, as an authenticated admin sends them: the first
//! byte picks a route, the rest is the body. Every body gets a well-formed answer below 500; query
//! bodies carry the filters that become SQL. One SQLite sidecar serves the whole run.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use dartmouth_platform::{BootstrapAdmin, PlatformConfig, RateLimitConfig};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const ROUTES: [(&str, &str); 12] = [
    ("POST", "/v1/agents/a1/db/notes/query"),
    ("POST", "/v1/agents/a1/db/notes"),
    ("PATCH", "/v1/agents/a1/db/notes/d1"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/api-keys"),
    ("POST", "/v1/room-tokens"),
    ("PUT", "/v1/agents/a1/grants"),
    ("POST", "/v1/pii/redact"),
    ("POST", "/v1/users"),
    ("POST", "/v1/agents/a1/files/k.txt/signed-url"),
];

struct Sidecar {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

fn sidecar() -> &'static Sidecar {
    static SIDECAR: OnceLock<Sidecar> = OnceLock::new();
    SIDECAR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = PlatformConfig {
            data_dir: dir.path().to_path_buf(),
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            bootstrap_admin: Some(BootstrapAdmin {
                email: "admin@example.com".into(),
                password: "admin-password".into(),
            }),
            rate_limits: RateLimitConfig {
                enabled: false,
                ..RateLimitConfig::default()
            },
            ..PlatformConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.block_on(dartmouth_platform::app(config)).unwrap();
        let login = r#"{"email":"admin@example.com","password":"admin-password"}"#;
        let (status, body) = runtime.block_on(send(&app, "POST", "/v1/auth/login", None, login.as_bytes()));
        assert_eq!(status, 200, "{body}");
        let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        Sidecar { runtime, app, token, _dir: dir }
    })
}

async fn send(app: &axum::Router, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let sidecar = sidecar();
    let (method, path) = ROUTES[usize::from(pick) % ROUTES.len()];
    let (status, text) = sidecar
        .runtime
        .block_on(send(&sidecar.app, method, path, Some(&sidecar.token), body));
    assert!(status < 500, "{method} {path} answered {status}: {text}");
    if status >= 400 {
        let error: serde_json::Value = serde_json::from_str(&text).expect("errors are JSON");
        assert!(error["error"]["code"].is_string(), "{text}");
    }
});
