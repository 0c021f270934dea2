//! SLAs and alerts on both databases: an agent's turns start failing (as the gateway reports
//! them) → its error-rate SLA burns → a webhook subscribed to `alert.*` receives one firing
//! alert; the failures stop → one resolve; bad SLA definitions get clear errors.

mod common;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use common::{Backend, Env};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The alerts a loopback webhook receiver got: (event id, topic, SLA id).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

async fn receive(State(received): State<Received>, body: axum::body::Bytes) -> StatusCode {
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = event["id"].as_str().unwrap_or_default().to_string();
    let mut received = received.lock().unwrap();
    // Deliveries may be retried; a receiver dedups by event id.
    if !received.iter().any(|(seen, _, _)| *seen == id) {
        received.push((
            id,
            event["topic"].as_str().unwrap_or_default().to_string(),
            event["data"]["sla_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (Received, String) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/alerts", axum::routing::post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (received, url)
}

fn count(received: &Received, topic: &str, sla: &str) -> usize {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, t, s)| t == topic && s == sla)
        .count()
}

async fn wait_for(received: &Received, topic: &str, sla: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if count(received, topic, sla) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn turn(env: &Env, failed: bool, n: usize) {
    let (topic, data) = if failed {
        (
            "conversation.turn_failed",
            json!({"agent": "support", "conversation_id": "c1", "turn": n, "stage": "llm", "reason": "provider timed out"}),
        )
    } else {
        (
            "conversation.turn",
            json!({"agent": "support", "conversation_id": "c1", "turn": n, "user_text": "hello", "agent_text": "hi",
                   "latency_ms": {"first_frame_out": 640.0}}),
        )
    };
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&env.admin_token),
            Some(json!({"topic": topic, "data": data})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn failing_turns_fire_one_alert_and_recovery_resolves_it(backend: Backend) {
    let Some(env) = Env::with(backend, |c| c.webhooks.allow_private_targets = true).await else {
        return;
    };
    let (received, url) = start_receiver().await;
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(&env.admin_token),
            Some(json!({"url": url, "topics": ["alert.*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, sla) = env
        .call(
            Method::POST,
            "/v1/slas",
            Some(&env.admin_token),
            Some(json!({"agent": "support", "objective": "error_rate", "target": 0.1, "window_secs": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sla}");
    let sla = sla["id"].as_str().unwrap().to_string();

    // Healthy traffic, then the provider starts failing.
    for n in 0..5 {
        turn(&env, false, n).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        count(&received, "alert.firing", &sla),
        0,
        "no alert while healthy"
    );
    for n in 5..12 {
        turn(&env, true, n).await;
    }
    assert!(
        wait_for(&received, "alert.firing", &sla).await,
        "the burning SLA fired"
    );
    let (_, listed) = env
        .call(Method::GET, "/v1/slas", Some(&env.admin_token), None)
        .await;
    assert_eq!(listed[0]["firing"], true, "{listed}");
    assert!(listed[0]["value"].as_f64().unwrap() > 0.1, "{listed}");

    // The errors stop: answered turns only.
    for n in 12..15 {
        turn(&env, false, n).await;
    }
    assert!(
        wait_for(&received, "alert.resolved", &sla).await,
        "the alert resolved once errors stopped"
    );
    // No repeats: one firing, one resolve.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&received, "alert.firing", &sla), 1);
    assert_eq!(count(&received, "alert.resolved", &sla), 1);
}

async fn bad_slas_get_clear_errors(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let valid = json!({"agent": "support", "objective": "latency_p95_ms", "target": 1200, "window_secs": 300});
    for (field, value, says) in [
        ("objective", json!("uptime"), "uptime"),
        ("target", json!(0), "target"),
        ("target", json!(1e9), "target"),
        ("window_secs", json!(5), "window_secs"),
        ("min_turns", json!(0), "min_turns"),
        ("agent", json!("a b"), "agent"),
    ] {
        let mut body = valid.clone();
        body[field] = value;
        let (status, answer) = env
            .call(Method::POST, "/v1/slas", Some(&env.admin_token), Some(body))
            .await;
        // 400 for a value out of range, 422 for a body that does not fit the schema.
        assert!(
            [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }
    let (status, _) = env
        .call(
            Method::DELETE,
            "/v1/slas/none",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, user) = env.user("user").await;
    let (status, _) = env
        .call(Method::POST, "/v1/slas", Some(&user), Some(valid))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

on_both_backends!(
    failing_turns_fire_one_alert_and_recovery_resolves_it,
    bad_slas_get_clear_errors,
);
