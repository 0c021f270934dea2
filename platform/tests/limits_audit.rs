//! Rate limits (429, Retry-After, recovery) and the tamper-evident audit chain — on SQLite and
//! PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::json;

async fn me_status(env: &Env, token: &str) -> StatusCode {
    env.call(Method::GET, "/v1/auth/me", Some(token), None)
        .await
        .0
}

async fn rate_limits_answer_429_with_retry_after_then_recover(backend: Backend) {
    let Some(env) = Env::with(backend, |c| {
        c.rate_limits = dartmouth_platform::RateLimitConfig {
            enabled: true,
            api_per_second: 1,
            api_burst: 3,
            auth_per_minute: 60,
            auth_burst: 5,
            ..Default::default()
        };
    })
    .await
    else {
        return;
    };
    let token = env.admin_token.clone();
    let (_, other) = env.user("user").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let (status, body, headers) = env
            .send(Method::GET, "/v1/auth/me", Some(&token), None, Vec::new())
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_code(&body), "rate_limited");
            retry_after = headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3], "burst allowed");
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after.expect("Retry-After header");
    assert!((1..=2).contains(&wait), "retry after {wait}");
    // Another credential has its own budget.
    assert_eq!(me_status(&env, &other).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(
        me_status(&env, &token).await,
        StatusCode::OK,
        "recovers after Retry-After"
    );
    // Health checks are never limited.
    for _ in 0..10 {
        assert_eq!(
            env.call(Method::GET, "/healthz", None, None).await.0,
            StatusCode::OK
        );
    }
}

async fn audit_verify_fails_after_a_row_is_altered(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "wrong-password-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    env.user("developer").await;
    let (status, result) = env
        .call(
            Method::POST,
            "/v1/audit/verify",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["valid"], true, "{result}");
    assert!(result["checked"].as_i64().unwrap() >= 4);
    let db = env.db().await;
    sqlx::query("UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 2")
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, result) = env
        .call(
            Method::POST,
            "/v1/audit/verify",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(result["valid"], false, "{result}");
    assert_eq!(result["first_bad_seq"], 2);
    // Cutting the newest rows leaves a valid-looking prefix; the live head still catches it.
    let Some(fresh) = Env::new(backend).await else {
        return;
    };
    fresh.user("user").await;
    let fresh_db = fresh.db().await;
    sqlx::query("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
        .execute(&fresh_db.pool)
        .await
        .unwrap();
    let (_, truncated) = fresh
        .call(
            Method::POST,
            "/v1/audit/verify",
            Some(&fresh.admin_token),
            None,
        )
        .await;
    assert_eq!(truncated["valid"], false, "tail truncation: {truncated}");
    // A forged row (recomputed hash with the wrong predecessor) is caught too.
    sqlx::query(
        "UPDATE audit_log SET detail = (SELECT detail FROM audit_log WHERE seq = 1) WHERE seq = 2",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq = 3")
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, result) = env
        .call(
            Method::POST,
            "/v1/audit/verify",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(result["valid"], false, "{result}");
}

on_both_backends!(
    rate_limits_answer_429_with_retry_after_then_recover,
    audit_verify_fails_after_a_row_is_altered,
);
