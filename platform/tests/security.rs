//! Security behaviour: token forgery, refresh rotation and reuse, logout, API keys, agent isolation,
//! rate limits and the audit chain — on SQLite and on PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, JWT_SECRET, error_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn me_status(env: &Env, token: &str) -> StatusCode {
    env.call(Method::GET, "/v1/auth/me", Some(token), None)
        .await
        .0
}

async fn forged_expired_wrong_audience_and_alg_none_tokens_are_refused(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (user_id, good) = env.user("admin").await;
    assert_eq!(me_status(&env, &good).await, StatusCode::OK);
    let base = json!({"sub": user_id, "role": "admin", "sid": "s", "iss": "dartmouth-platform", "aud": "dartmouth", "iat": now(), "exp": now() + 600, "jti": "j"});
    let with = |patch: Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c
    };
    let forged = sign(&base, "some-other-secret-0123456789abcdef");
    let expired = sign(
        &with(json!({"iat": now() - 7200, "exp": now() - 3600})),
        JWT_SECRET,
    );
    let wrong_audience = sign(&with(json!({"aud": "someone-else"})), JWT_SECRET);
    let wrong_issuer = sign(&with(json!({"iss": "evil"})), JWT_SECRET);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&base)
    );
    let mut tampered_parts: Vec<String> = good.split('.').map(String::from).collect();
    tampered_parts[1] = b64(&with(json!({"sub": "someone"})));
    let tampered = tampered_parts.join(".");
    for (name, token) in [
        ("forged", forged),
        ("expired", expired),
        ("wrong audience", wrong_audience),
        ("wrong issuer", wrong_issuer),
        ("alg none", alg_none),
        ("tampered", tampered),
        ("garbage", "not-a-token".to_string()),
    ] {
        let (status, body) = env
            .call(Method::GET, "/v1/auth/me", Some(&token), None)
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{name} token must be refused"
        );
        assert_eq!(error_code(&body), "unauthenticated");
    }
    // A correctly signed token whose session is unknown is still a valid token: the signature is what
    // we trust; a revoked session is tested below.
    assert_eq!(
        me_status(&env, &sign(&base, JWT_SECRET)).await,
        StatusCode::OK
    );
    let (status, body) = env.call(Method::GET, "/v1/auth/me", None, None).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let first = env.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let rt1 = first["refresh_token"].as_str().unwrap();
    let (status, second) = env
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    let access2 = second["access_token"].as_str().unwrap();
    assert_eq!(me_status(&env, access2).await, StatusCode::OK);
    // Reusing the rotated token: refused, and the whole family dies.
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("reuse"));
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt2})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the newest token of a revoked family is dead too"
    );
    assert_eq!(
        me_status(&env, access2).await,
        StatusCode::UNAUTHORIZED,
        "access tokens of the family die with it"
    );
    // Another session of the same user is unaffected.
    assert_eq!(me_status(&env, &env.admin_token).await, StatusCode::OK);
    let (_, audit) = env
        .call(
            Method::GET,
            "/v1/audit?limit=50",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "auth.refresh_reuse"),
        "{audit}"
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": "rt_unknown"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn logout_revokes_access_and_refresh_tokens(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (status, user) = env
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "Ann@Example.com", "password": "ann-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["role"], "user");
    assert_eq!(user["email"], "ann@example.com");
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "ann@example.com", "password": "other-password"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "ann@example.com", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let session = env.login("ann@example.com", "ann-password").await;
    let access = session["access_token"].as_str().unwrap();
    let (_, me) = env
        .call(Method::GET, "/v1/auth/me", Some(access), None)
        .await;
    assert_eq!(
        (me["kind"].as_str(), me["role"].as_str()),
        (Some("user"), Some("user"))
    );
    let (status, _) = env
        .call(Method::POST, "/v1/auth/logout", Some(access), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&env, access).await, StatusCode::UNAUTHORIZED);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": session["refresh_token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn api_keys_are_scoped_revocable_and_record_last_use(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let reader = env.agent_key("agent-a", Some(&["db:read"])).await;
    let (_, me) = env
        .call(Method::GET, "/v1/auth/me", Some(&reader), None)
        .await;
    assert_eq!(
        (me["role"].as_str(), me["agent_id"].as_str()),
        (Some("agent"), Some("agent-a"))
    );
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/tasks",
            Some(&reader),
            Some(json!({"title": "x"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "read-only key cannot write"
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/tasks/query",
            Some(&reader),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, keys) = env
        .call(Method::GET, "/v1/api-keys", Some(&env.admin_token), None)
        .await;
    let key_id = reader.trim_start_matches("dk_").split('_').next().unwrap();
    let info = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id)
        .expect("key listed")
        .clone();
    assert!(info["last_used_at"].is_i64(), "{info}");
    assert!(
        !keys
            .to_string()
            .contains(reader.rsplit('_').next().unwrap()),
        "secret never listed"
    );
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{key_id}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = env
        .call(Method::GET, "/v1/auth/me", Some(&reader), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let wrong_secret = format!("dk_{key_id}_{}", "0".repeat(48));
    assert_eq!(
        me_status(&env, &wrong_secret).await,
        StatusCode::UNAUTHORIZED
    );
    // Developers may create agent keys, not admin keys.
    let (_, dev) = env.user("developer").await;
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&dev),
            Some(json!({"name": "x", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&dev),
            Some(json!({"name": "x", "agent_id": "agent-z", "scopes": ["root"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn an_agent_key_cannot_read_another_agents_data_without_a_grant(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key_a = env.agent_key("agent-a", None).await;
    let key_b = env.agent_key("agent-b", None).await;
    let (status, doc) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/tasks",
            Some(&key_a),
            Some(json!({"title": "secret plan"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let id = doc["id"].as_str().unwrap();
    for (method, path, body) in [
        (
            Method::GET,
            format!("/v1/agents/agent-a/db/tasks/{id}"),
            None,
        ),
        (
            Method::POST,
            "/v1/agents/agent-a/db/tasks/query".to_string(),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            format!("/v1/agents/agent-a/db/tasks/{id}"),
            Some(json!({"title": "mine"})),
        ),
        (
            Method::DELETE,
            format!("/v1/agents/agent-a/db/tasks/{id}"),
            None,
        ),
        (Method::GET, "/v1/agents/agent-a/files".to_string(), None),
        (
            Method::PUT,
            "/v1/agents/agent-a/grants".to_string(),
            Some(json!({"grantee_agent": "agent-b", "collection": "*", "access": "write"})),
        ),
    ] {
        let (status, resp) = env.call(method.clone(), &path, Some(&key_b), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {resp}");
    }
    // The owner grants read on `tasks` only.
    let (status, _) = env
        .call(
            Method::PUT,
            "/v1/agents/agent-a/grants",
            Some(&key_a),
            Some(json!({"grantee_agent": "agent-b", "collection": "tasks", "access": "read"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, found) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/tasks/query",
            Some(&key_b),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["documents"][0]["data"]["title"], "secret plan");
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/tasks",
            Some(&key_b),
            Some(json!({"title": "injected"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "read grant does not allow writes"
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/notes/query",
            Some(&key_b),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "grant is per collection");
    let (_, audit) = env
        .call(
            Method::GET,
            "/v1/audit?limit=100",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "access.denied")
    );
    // Revoking the grant closes access again.
    let (status, _) = env
        .call(
            Method::DELETE,
            "/v1/agents/agent-a/grants/agent-b/tasks",
            Some(&key_a),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/agent-a/db/tasks/query",
            Some(&key_b),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

on_both_backends!(
    forged_expired_wrong_audience_and_alg_none_tokens_are_refused,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_revokes_access_and_refresh_tokens,
    api_keys_are_scoped_revocable_and_record_last_use,
    an_agent_key_cannot_read_another_agents_data_without_a_grant,
);
