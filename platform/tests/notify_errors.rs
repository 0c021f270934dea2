//! Notifications and integrations, bad input: unknown or missing template variables, an
//! unconfigured channel, malformed bodies, header injection, SSRF integration targets (private
//! addresses, not allowed by the config) — each a clear 4xx in the one error envelope, and
//! nothing stored by any of them.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};

async fn put(env: &Env, path: &str, body: Value) -> (StatusCode, Value) {
    env.call(Method::PUT, path, Some(&env.admin_token), Some(body))
        .await
}

async fn history(env: &Env, user: &str) -> Vec<Value> {
    let (status, list) = env
        .call(
            Method::GET,
            &format!("/v1/notifications?user_id={user}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

async fn bad_input_gets_clear_errors_and_stores_nothing(backend: Backend) {
    // No channel configured, private targets not allowed.
    let Some(env) = Env::with(backend, |c| c.embeddings = false).await else {
        return;
    };
    let token = Some(env.admin_token.as_str());
    let (status, _) = put(
        &env,
        "/v1/notifications/templates/t1",
        json!({"subject": "Hi {{name}}", "body": "Body {{name}}"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    put(
        &env,
        "/v1/notifications/preferences/u5",
        json!({"channels": ["email", "push"], "email": "u5@example.com", "push_token": "t"}),
    )
    .await;
    for (path, method, body, want, code, message) in [
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "template": "t1", "variables": {"name": "A", "extra": "x"}}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unknown template variable(s): extra",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "template": "t1"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing template variable(s): name",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "template": "t1", "body": "x", "variables": {"name": "A"}}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not both",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "template": "nope"}),
            StatusCode::NOT_FOUND,
            "not_found",
            "no template",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "subject": "x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body: required",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "subject": "a\r\nBcc: x@evil.example", "body": "x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no line breaks",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "email", "template": "t1", "variables": {"name": "A"}}),
            StatusCode::CONFLICT,
            "not_configured",
            "email is not configured",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "push", "body": "x"}),
            StatusCode::CONFLICT,
            "not_configured",
            "push is not configured",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "fax", "body": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "channel",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "body": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "channel",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u5", "channel": "sms", "body": "x", "to": "+1555"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "to",
        ),
        (
            "/v1/notifications",
            Method::POST,
            json!({"user_id": "u 5", "channel": "sms", "body": "x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "user_id",
        ),
        (
            "/v1/notifications/templates/t2",
            Method::PUT,
            json!({"subject": "Hi {{first name}}", "body": "x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "placeholder",
        ),
        (
            "/v1/notifications/templates/t2",
            Method::PUT,
            json!({"subject": "Hi", "body": "x {{name"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unclosed",
        ),
        (
            "/v1/notifications/templates/t2",
            Method::PUT,
            json!({"subject": "Hi\nthere", "body": "x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "line breaks",
        ),
        (
            "/v1/notifications/templates/t2",
            Method::PUT,
            json!({"subject": "Hi"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "body",
        ),
        (
            "/v1/notifications/preferences/u6",
            Method::PUT,
            json!({"channels": ["email"], "email": "not-an-address"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "email",
        ),
        (
            "/v1/notifications/preferences/u6",
            Method::PUT,
            json!({"channels": ["sms"]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "phone is not given",
        ),
        (
            "/v1/notifications/preferences/u6",
            Method::PUT,
            json!({"channels": ["sms"], "phone": "555-1234"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "E.164",
        ),
        (
            "/v1/notifications/preferences/u6",
            Method::PUT,
            json!({"channels": ["email", "email"], "email": "a@example.com"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "at most once",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "crm", "base_url": "http://127.0.0.1:9/api", "credential": "k"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "SSRF",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "crm", "base_url": "http://10.0.0.8/api", "credential": "k"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "SSRF",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "calendar", "base_url": "http://169.254.169.254/latest", "credential": "k"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "SSRF",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "crm", "base_url": "http://localhost:8080/", "credential": "k"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "SSRF",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "crm", "base_url": "ftp://example.com/", "credential": "k"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "only http",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "crm", "base_url": "https://example.com/", "credential": "a\r\nx: y"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "credential",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "crm", "base_url": "https://example.com/", "auth_header": "Host", "credential": "k"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "auth_header",
        ),
        (
            "/v1/integrations/crm",
            Method::PUT,
            json!({"kind": "erp", "base_url": "https://example.com/"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "kind",
        ),
        (
            "/v1/integrations/crm/call",
            Method::POST,
            json!({"method": "GET", "path": "/x"}),
            StatusCode::NOT_FOUND,
            "not_found",
            "no integration",
        ),
        (
            "/v1/integrations/crm/call",
            Method::POST,
            json!({"method": "TRACE", "path": "/x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "method",
        ),
    ] {
        let (got, value) = env
            .call(method.clone(), path, token, Some(body.clone()))
            .await;
        assert_eq!(got, want, "{method} {path} {body}: {value}");
        assert_eq!(error_code(&value), code, "{body}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{body}: {value}"
        );
    }
    // Not JSON at all.
    let (status, value, _) = env
        .send(
            Method::POST,
            "/v1/notifications",
            token,
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    error_code(&value);
    let (status, value, _) = env
        .send(
            Method::POST,
            "/v1/notifications",
            token,
            Some("text/plain"),
            b"hi".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{value}");
    let (status, value) = env
        .call(Method::GET, "/v1/notifications", token, None)
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "user_id is required: {value}"
    );
    // Nothing was stored by any of them.
    assert!(history(&env, "u5").await.is_empty());
    let (status, _) = env
        .call(Method::GET, "/v1/notifications/templates/t2", token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env
        .call(Method::GET, "/v1/notifications/preferences/u6", token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = env.call(Method::GET, "/v1/integrations", token, None).await;
    assert_eq!(list, json!([]), "no integration stored");
    let db = env.db().await;
    let rows: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM notifications")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    );
    assert_eq!(rows, 0);
}

on_both_backends!(bad_input_gets_clear_errors_and_stores_nothing);
