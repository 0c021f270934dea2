//! The HTTP surface: OpenAPI completeness, the RBAC matrix per route, the error shape and request
//! ids and CORS — on SQLite and PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/docs"),
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/auth/me"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("patch", "/v1/users/{user_id}"),
    ("delete", "/v1/users/{user_id}"),
    ("get", "/v1/users/{user_id}/export"),
    ("get", "/v1/api-keys"),
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{key_id}"),
    ("post", "/v1/room-tokens"),
    ("post", "/v1/agents/{agent_id}/db/{collection}"),
    ("post", "/v1/agents/{agent_id}/db/{collection}/query"),
    ("get", "/v1/agents/{agent_id}/db/{collection}/{doc_id}"),
    ("patch", "/v1/agents/{agent_id}/db/{collection}/{doc_id}"),
    ("delete", "/v1/agents/{agent_id}/db/{collection}/{doc_id}"),
    ("get", "/v1/agents/{agent_id}/grants"),
    ("put", "/v1/agents/{agent_id}/grants"),
    (
        "delete",
        "/v1/agents/{agent_id}/grants/{grantee_agent}/{collection}",
    ),
    ("get", "/v1/agents/{agent_id}/files"),
    ("put", "/v1/agents/{agent_id}/files/{file_key}"),
    ("get", "/v1/agents/{agent_id}/files/{file_key}"),
    ("delete", "/v1/agents/{agent_id}/files/{file_key}"),
    ("post", "/v1/agents/{agent_id}/files/{file_key}/signed-url"),
    ("get", "/v1/signed/{agent_id}/{file_key}"),
    ("get", "/v1/audit"),
    ("post", "/v1/audit/verify"),
    ("post", "/v1/admin/keys/rotate"),
    ("post", "/v1/pii/redact"),
    ("post", "/v1/events"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/conversations/{conversation_id}/transcript"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("delete", "/v1/webhooks/{webhook_id}"),
    ("get", "/v1/webhooks/deliveries"),
    ("post", "/v1/webhooks/deliveries/{delivery_id}/replay"),
    ("post", "/v1/webhooks/incoming/{source}"),
    ("post", "/v1/registry/agents"),
    ("get", "/v1/registry/agents"),
    ("get", "/v1/registry/agents/{id}"),
    ("delete", "/v1/registry/agents/{id}"),
    ("post", "/v1/registry/agents/{id}/heartbeat"),
    ("post", "/v1/registry/route"),
    ("post", "/v1/messages"),
    ("post", "/v1/messages/{id}/reply"),
    ("post", "/v1/slas"),
    ("get", "/v1/slas"),
    ("delete", "/v1/slas/{id}"),
    ("get", "/v1/agents/{agent_id}/intents"),
    ("put", "/v1/agents/{agent_id}/intents"),
    ("post", "/v1/intel/analyze"),
    ("post", "/v1/agents/{agent_id}/knowledge/{kb}/documents"),
    ("get", "/v1/agents/{agent_id}/knowledge/{kb}/documents"),
    (
        "delete",
        "/v1/agents/{agent_id}/knowledge/{kb}/documents/{document_id}",
    ),
    ("post", "/v1/agents/{agent_id}/knowledge/search"),
    ("post", "/v1/agents/{agent_id}/knowledge/reindex"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/audio/transcriptions"),
    ("post", "/v1/audio/speech"),
    ("post", "/v1/embeddings"),
    ("post", "/v1/moderations"),
    ("get", "/v1/models"),
    ("get", "/v1/ai/usage"),
    ("get", "/v1/agents/{agent_id}/budget"),
    ("put", "/v1/agents/{agent_id}/budget"),
    ("get", "/v1/notifications/templates"),
    ("get", "/v1/notifications/templates/{name}"),
    ("put", "/v1/notifications/templates/{name}"),
    ("delete", "/v1/notifications/templates/{name}"),
    ("get", "/v1/notifications/preferences/{user_id}"),
    ("put", "/v1/notifications/preferences/{user_id}"),
    ("post", "/v1/notifications"),
    ("get", "/v1/notifications"),
    ("get", "/v1/integrations"),
    ("put", "/v1/integrations/{name}"),
    ("delete", "/v1/integrations/{name}"),
    ("post", "/v1/integrations/{name}/call"),
    ("get", "/v1/memory/{namespace}"),
    ("delete", "/v1/memory/{namespace}"),
    ("get", "/v1/memory/{namespace}/keys"),
    ("put", "/v1/memory/{namespace}/keys/{key}"),
    ("get", "/v1/memory/{namespace}/keys/{key}"),
    ("delete", "/v1/memory/{namespace}/keys/{key}"),
    ("post", "/v1/memory/{namespace}/facts"),
    ("get", "/v1/memory/{namespace}/facts"),
    ("post", "/v1/memory/{namespace}/facts/search"),
    ("delete", "/v1/memory/{namespace}/facts/{id}"),
    ("put", "/v1/memory/{namespace}/grants/{principal}"),
    ("delete", "/v1/memory/{namespace}/grants/{principal}"),
    ("post", "/v1/workflows"),
    ("get", "/v1/workflows"),
    ("get", "/v1/workflows/{name}"),
    ("delete", "/v1/workflows/{name}"),
    ("get", "/v1/workflows/{name}/versions"),
    ("get", "/v1/workflows/{name}/versions/{version}"),
    ("post", "/v1/workflows/{name}/runs"),
    ("get", "/v1/workflows/{name}/runs"),
    ("get", "/v1/workflows/{name}/runs/{run_id}"),
    ("post", "/v1/workflows/{name}/runs/{run_id}/cancel"),
];

fn resolve_refs(doc: &Value, node: &Value, missing: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.trim_start_matches('#');
                if doc.pointer(pointer).is_none() {
                    missing.push(r.clone());
                }
            }
            map.values().for_each(|v| resolve_refs(doc, v, missing));
        }
        Value::Array(items) => items.iter().for_each(|v| resolve_refs(doc, v, missing)),
        _ => {}
    }
}

async fn openapi_document_is_complete_and_every_route_answers(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (status, doc) = env.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has responses"
            );
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    let name = param["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} not in the template"
                    );
                }
            }
            documented.insert((method.clone(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "documented routes differ from the route list"
    );
    let mut missing = Vec::new();
    resolve_refs(&doc, &doc, &mut missing);
    assert!(missing.is_empty(), "unresolved $refs: {missing:?}");
    // Every documented route is really served (no fallback 404, no 405).
    for (method, path) in ROUTES {
        let concrete = path.replace("{agent_id}", "pa").replace(['{', '}'], "");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = env.call(method.clone(), &concrete, None, None).await;
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        let fallback =
            status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route";
        assert!(!fallback, "{method} {concrete} is not routed");
    }
    let (status, page, headers) = env
        .send(Method::GET, "/v1/docs", None, None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.as_str().unwrap().contains("openapi.json"));
}

async fn errors_share_one_shape_with_the_request_id(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (status, body, headers) = env
        .send(Method::GET, "/v1/nowhere", None, None, Vec::new())
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(
        headers["x-request-id"].to_str().unwrap(),
        body["error"]["request_id"]
    );
    let (status, body, _) = env
        .send(Method::DELETE, "/v1/auth/login", None, None, Vec::new())
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (status, _, headers) = env
        .send(Method::GET, "/healthz", None, None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-request-id"].len(), 32);
    // A caller's request id is kept.
    let response = tower::ServiceExt::oneshot(
        env.app.clone(),
        axum::http::Request::builder()
            .uri("/v1/auth/me")
            .header("x-request-id", "trace-123")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"]["request_id"], "trace-123");
    let (_, metrics, _) = env
        .send(Method::GET, "/metrics", None, None, Vec::new())
        .await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("dartmouth_platform_responses_total{class=\"4xx\"}")
    );
}

async fn cors_allows_the_demo_origin_only(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let preflight = |origin: &'static str| {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/auth/login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let ok = tower::ServiceExt::oneshot(env.app.clone(), preflight("http://localhost:8080"))
        .await
        .unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:8080"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let denied = tower::ServiceExt::oneshot(env.app.clone(), preflight("http://evil.example"))
        .await
        .unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// Allowed roles per route; every other role gets 403 and anonymous callers 401.
async fn rbac_matrix_is_enforced_on_every_route(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (_, developer) = env.user("developer").await;
    let (_, user) = env.user("user").await;
    let agent = env.agent_key("pa", None).await;
    let admin = env.admin_token.clone();
    let (victim, _) = env.user("user").await;
    let (_, doc) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks",
            Some(&agent),
            Some(json!({"t": 1})),
        )
        .await;
    let doc_id = doc["id"].as_str().unwrap().to_string();
    env.send(
        Method::PUT,
        "/v1/agents/pa/files/a.wav",
        Some(&agent),
        Some("audio/wav"),
        vec![1],
    )
    .await;
    let (_, key) = env
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&admin),
            Some(json!({"name": "k", "agent_id": "zz"})),
        )
        .await;
    let key_id = key["info"]["id"].as_str().unwrap().to_string();
    const ALL: &[&str] = &["admin", "developer", "agent", "user"];
    const STAFF: &[&str] = &["admin", "developer"];
    const DATA: &[&str] = &["admin", "developer", "agent"];
    const ADMIN: &[&str] = &["admin"];
    let n = std::sync::atomic::AtomicU32::new(0);
    let unique_user = || json!({"email": format!("m{}@example.com", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)), "password": "password-123", "role": "user"});
    let matrix: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (Method::GET, "/v1/auth/me".into(), None, ALL),
        (Method::GET, "/v1/users".into(), None, ADMIN),
        (Method::POST, "/v1/users".into(), Some(unique_user()), ADMIN),
        (
            Method::PATCH,
            format!("/v1/users/{victim}"),
            Some(json!({"role": "user"})),
            ADMIN,
        ),
        (
            Method::GET,
            format!("/v1/users/{victim}/export"),
            None,
            ADMIN,
        ),
        (Method::GET, "/v1/api-keys".into(), None, STAFF),
        (
            Method::POST,
            "/v1/api-keys".into(),
            Some(json!({"name": "n", "agent_id": "pa"})),
            STAFF,
        ),
        (
            Method::DELETE,
            format!("/v1/api-keys/{key_id}"),
            None,
            STAFF,
        ),
        (
            Method::POST,
            "/v1/room-tokens".into(),
            Some(json!({"room": "lobby"})),
            &["admin", "developer", "user"],
        ),
        (
            Method::POST,
            "/v1/agents/pa/db/tasks".into(),
            Some(json!({"t": 2})),
            DATA,
        ),
        (
            Method::POST,
            "/v1/agents/pa/db/tasks/query".into(),
            Some(json!({})),
            DATA,
        ),
        (
            Method::GET,
            format!("/v1/agents/pa/db/tasks/{doc_id}"),
            None,
            DATA,
        ),
        (
            Method::PATCH,
            format!("/v1/agents/pa/db/tasks/{doc_id}"),
            Some(json!({"t": 3})),
            DATA,
        ),
        (Method::GET, "/v1/agents/pa/grants".into(), None, DATA),
        (
            Method::PUT,
            "/v1/agents/pa/grants".into(),
            Some(json!({"grantee_agent": "pb", "collection": "tasks", "access": "read"})),
            DATA,
        ),
        (
            Method::DELETE,
            "/v1/agents/pa/grants/pb/tasks".into(),
            None,
            DATA,
        ),
        (Method::GET, "/v1/agents/pa/files".into(), None, DATA),
        (Method::GET, "/v1/agents/pa/files/a.wav".into(), None, DATA),
        (
            Method::POST,
            "/v1/agents/pa/files/a.wav/signed-url".into(),
            Some(json!({})),
            DATA,
        ),
        (Method::GET, "/v1/audit".into(), None, ADMIN),
        (Method::POST, "/v1/audit/verify".into(), None, ADMIN),
        (Method::POST, "/v1/admin/keys/rotate".into(), None, ADMIN),
        (
            Method::POST,
            "/v1/pii/redact".into(),
            Some(json!({"text": "hi"})),
            DATA,
        ),
        (
            Method::DELETE,
            format!("/v1/agents/pa/db/tasks/{doc_id}"),
            None,
            DATA,
        ),
        (
            Method::DELETE,
            "/v1/agents/pa/files/a.wav".into(),
            None,
            DATA,
        ),
        (Method::DELETE, format!("/v1/users/{victim}"), None, ADMIN),
        (Method::GET, "/v1/workflows".into(), None, DATA),
        (Method::POST, "/v1/auth/logout".into(), None, ALL),
    ];
    let callers: [(&str, Option<&str>); 5] = [
        ("anonymous", None),
        ("user", Some(&user)),
        ("agent", Some(&agent)),
        ("developer", Some(&developer)),
        ("admin", Some(&admin)),
    ];
    for (method, path, body, allowed) in &matrix {
        for (role, token) in &callers {
            let body = if path == "/v1/users" && *method == Method::POST {
                Some(unique_user())
            } else {
                body.clone()
            };
            let (status, response) = env.call(method.clone(), path, *token, body).await;
            let expected_allowed = token.is_some() && allowed.contains(role);
            if expected_allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{role} {method} {path}: {status} {response}"
                );
                assert!(
                    !status.is_server_error(),
                    "{role} {method} {path}: {response}"
                );
            } else if token.is_none() {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "anonymous {method} {path}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} {method} {path}: {response}"
                );
            }
        }
    }
    // Public routes need no credential.
    for path in ["/healthz", "/metrics", "/v1/openapi.json", "/v1/docs"] {
        assert_eq!(
            env.call(Method::GET, path, None, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}

on_both_backends!(
    openapi_document_is_complete_and_every_route_answers,
    errors_share_one_shape_with_the_request_id,
    cors_allows_the_demo_origin_only,
    rbac_matrix_is_enforced_on_every_route,
);
