//! Integrations: credentials are encrypted at rest by the encryption service and never returned;
//! calls are proxied to the base URL with the credential in its header, stay on the integration's
//! host, and are bounded in size. (SSRF targets are refused in `notify.rs`'s bad-input test.)

mod common;

use axum::http::{HeaderMap, Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};

async fn post(env: &Env, path: &str, body: Value) -> (StatusCode, Value) {
    env.call(Method::POST, path, Some(&env.admin_token), Some(body))
        .await
}

/// A CRM-shaped upstream that requires its API key.
async fn crm(
    headers: HeaderMap,
    uri: axum::http::Uri,
    method: Method,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("crm-secret-token-123") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "no key"})),
        );
    }
    if uri.path() == "/api/big" {
        return (
            StatusCode::OK,
            axum::Json(json!({"blob": "x".repeat(8192)})),
        );
    }
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (
        StatusCode::OK,
        axum::Json(
            json!({"method": method.as_str(), "path": uri.path(), "query": uri.query(), "got": sent}),
        ),
    )
}

async fn integration_credentials_are_encrypted_and_calls_carry_them(backend: Backend) {
    let app = axum::Router::new().fallback(crm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let Some(env) = Env::with(backend, |c| {
        c.embeddings = false;
        c.notify.allow_private_targets = true;
        c.notify.max_response_bytes = 4096;
    })
    .await
    else {
        return;
    };
    let secret = "crm-secret-token-123";
    let (status, created, _) = env
        .send(
            Method::PUT,
            "/v1/integrations/crm",
            Some(&env.admin_token),
            Some("application/json"),
            serde_json::to_vec(&json!({"kind": "crm", "base_url": base, "auth_header": "X-Api-Key", "credential": secret})).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert!(!created.to_string().contains(secret), "{created}");
    assert_eq!(created["has_credential"], true);
    assert_eq!(created["auth_header"], "x-api-key");
    let (_, list) = env
        .call(
            Method::GET,
            "/v1/integrations",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(secret), "{list}");
    assert!(list[0].get("credential").is_none(), "{list}");
    // At rest: an envelope of the encryption service, not the plaintext.
    let db = env.db().await;
    let stored: String = sqlx::Row::get(
        &sqlx::query("SELECT credential FROM integrations WHERE name = 'crm'")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    );
    assert!(stored.starts_with("enc1."), "{stored}");
    assert!(!stored.contains(secret));
    // A call carries the credential in its header.
    let (status, answer) = post(
        &env,
        "/v1/integrations/crm/call",
        json!({"method": "POST", "path": "/contacts?source=voice", "body": {"name": "Ann"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["path"], "/api/contacts");
    assert_eq!(answer["body"]["query"], "source=voice");
    assert_eq!(answer["body"]["method"], "POST");
    assert_eq!(answer["body"]["got"], json!({"name": "Ann"}));
    assert!(answer["content_type"].as_str().unwrap().contains("json"));
    // Leaving the host, climbing out of the base, or an oversized answer: refused.
    for (path, want) in [
        ("//evil.example/x", StatusCode::BAD_REQUEST),
        ("/../admin", StatusCode::BAD_REQUEST),
        ("contacts", StatusCode::BAD_REQUEST),
        ("/big", StatusCode::BAD_GATEWAY),
    ] {
        let (status, body) = post(
            &env,
            "/v1/integrations/crm/call",
            json!({"method": "GET", "path": path}),
        )
        .await;
        assert_eq!(status, want, "{path}: {body}");
        error_code(&body);
    }
    // Key rotation re-wraps the stored credential; calls keep working.
    let (status, rotated) = env
        .call(
            Method::POST,
            "/v1/admin/keys/rotate",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert!(
        rotated["rewrapped_fields"].as_u64().unwrap() >= 1,
        "{rotated}"
    );
    let rewrapped: String = sqlx::Row::get(
        &sqlx::query("SELECT credential FROM integrations WHERE name = 'crm'")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    );
    assert_ne!(rewrapped, stored);
    assert!(!rewrapped.contains(secret));
    // Agents may call integrations but not manage them.
    let key = env.agent_key("agent-1", None).await;
    let (status, answer) = env
        .call(
            Method::POST,
            "/v1/integrations/crm/call",
            Some(&key),
            Some(json!({"method": "GET", "path": "/me"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = env
        .call(
            Method::PUT,
            "/v1/integrations/other",
            Some(&key),
            Some(json!({"kind": "http", "base_url": base})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            Method::DELETE,
            "/v1/integrations/crm",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = post(
        &env,
        "/v1/integrations/crm/call",
        json!({"method": "GET", "path": "/me"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(integration_credentials_are_encrypted_and_calls_carry_them);
