//! The notification retry outbox: a send the provider fails answers 502 at once and is kept as
//! `pending`; background retries with back-off deliver it (`sent`, with its attempt count), or
//! give up after `max_attempts` (`failed`) and send nothing more — on both databases. Each
//! failed attempt is published as `notification.retrying` (with the next attempt's time) or, the
//! last one, `notification.failed`, without the recipient's number or the message.

mod common;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use dartmouth_platform::notify::SmsConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A Twilio-shaped provider that answers 503 to the first `fail_first` requests, then 201.
struct Flaky {
    fail_first: usize,
    seen: AtomicUsize,
}

async fn messages(State(flaky): State<Arc<Flaky>>) -> (StatusCode, axum::Json<Value>) {
    let n = flaky.seen.fetch_add(1, Ordering::SeqCst);
    if n < flaky.fail_first {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"message": "try again later"})),
        );
    }
    (StatusCode::CREATED, axum::Json(json!({"sid": "SM42"})))
}

async fn provider(fail_first: usize) -> (Arc<Flaky>, String) {
    let flaky = Arc::new(Flaky {
        fail_first,
        seen: AtomicUsize::new(0),
    });
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(messages).with_state(flaky.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (flaky, base)
}

async fn env_for(backend: Backend, base: String) -> Option<Env> {
    Env::with(backend, move |config| {
        config.embeddings = false;
        config.notify.allow_private_targets = true;
        config.notify.max_attempts = 3;
        config.notify.retry_base_ms = 400;
        config.notify.retry_max_ms = 800;
        config.notify.sms = Some(SmsConfig {
            base_url: base,
            account_sid: "AC1".into(),
            auth_token: "token".into(),
            from: "+15557654321".into(),
        });
    })
    .await
}

/// Sends one SMS to a user who accepts SMS; returns the answer.
async fn send(env: &Env) -> (StatusCode, Value) {
    let (status, body) = env
        .call(
            Method::PUT,
            "/v1/notifications/preferences/u1",
            Some(&env.admin_token),
            Some(json!({"channels": ["sms"], "phone": "+15551234567"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.call(
        Method::POST,
        "/v1/notifications",
        Some(&env.admin_token),
        Some(json!({"user_id": "u1", "channel": "sms", "body": "your code is 1234"})),
    )
    .await
}

/// The only notification of u1, once its status is `want` (within 10 s).
async fn settled(env: &Env, want: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, list) = env
            .call(
                Method::GET,
                "/v1/notifications?user_id=u1",
                Some(&env.admin_token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        if list[0]["status"] == want {
            return list[0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not {want} after 10 s: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The notification events, oldest first, once there are `want` (an attempt is recorded just
/// before its event is published), or whatever there is after 5 s.
async fn notification_events(env: &Env, want: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (status, page) = env
            .call(
                Method::GET,
                "/v1/events?topic=notification.*",
                Some(&env.admin_token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if events.len() >= want || started.elapsed() > Duration::from_secs(5) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the events of a notification's failed attempts: one per attempt, in order, each
/// `notification.retrying` but the last when `gave_up`.
fn check_attempt_events(
    events: &[Value],
    notification: &Value,
    failed_attempts: i64,
    gave_up: bool,
) {
    assert_eq!(events.len() as i64, failed_attempts, "{events:?}");
    for (i, event) in events.iter().enumerate() {
        let attempt = i as i64 + 1;
        let last = attempt == failed_attempts;
        let data = &event["data"];
        let want = if gave_up && last {
            "notification.failed"
        } else {
            "notification.retrying"
        };
        assert_eq!(event["topic"], want, "{event}");
        assert_eq!(data["attempt"], attempt, "{event}");
        assert_eq!(data["max_attempts"], 3, "{event}");
        assert_eq!(data["notification_id"], notification["id"], "{event}");
        assert_eq!(data["user_id"], "u1");
        assert_eq!(data["channel"], "sms");
        assert!(data["error"].as_str().unwrap().contains("503"), "{event}");
        if want == "notification.retrying" {
            let next = data["next_attempt_at"]
                .as_i64()
                .expect("the next attempt's time");
            assert!(
                next > event["at"].as_i64().unwrap(),
                "in the future: {event}"
            );
        } else {
            assert_eq!(data["next_attempt_at"], Value::Null, "{event}");
        }
        let text = event.to_string();
        assert!(
            !text.contains("+1555") && !text.contains("your code"),
            "no number, no message: {text}"
        );
    }
}

async fn a_failed_send_is_retried_until_it_is_sent(backend: Backend) {
    let (flaky, base) = provider(2).await;
    let Some(env) = env_for(backend, base).await else {
        return;
    };
    let (status, body) = send(&env).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "upstream_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retried"),
        "{body}"
    );
    let sent = settled(&env, "sent").await;
    assert_eq!(sent["attempts"], 3, "{sent}");
    assert_eq!(sent["next_attempt_at"], Value::Null);
    assert!(sent["detail"].as_str().unwrap().contains("SM42"), "{sent}");
    // Two failed attempts, each announced with the time of the next; no `failed`.
    check_attempt_events(&notification_events(&env, 2).await, &sent, 2, false);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        flaky.seen.load(Ordering::SeqCst),
        3,
        "sent once, never again"
    );
    // The kept message is gone once the notification is final.
    let db = env.db().await;
    let kept: Option<String> = sqlx::Row::get(
        &sqlx::query("SELECT payload FROM notifications")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    );
    assert_eq!(kept, None);
}

async fn retries_stop_after_max_attempts(backend: Backend) {
    let (flaky, base) = provider(usize::MAX).await;
    let Some(env) = env_for(backend, base).await else {
        return;
    };
    assert_eq!(send(&env).await.0, StatusCode::BAD_GATEWAY);
    let pending = settled(&env, "pending").await;
    assert_eq!(pending["attempts"], 1);
    assert!(pending["next_attempt_at"].as_i64().is_some(), "{pending}");
    let failed = settled(&env, "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(failed["next_attempt_at"], Value::Null);
    assert!(
        failed["detail"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    // Retrying after attempts 1 and 2, then failed after the third and last.
    check_attempt_events(&notification_events(&env, 3).await, &failed, 3, true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        flaky.seen.load(Ordering::SeqCst),
        3,
        "no attempt past the last"
    );
}

on_both_backends!(
    a_failed_send_is_retried_until_it_is_sent,
    retries_stop_after_max_attempts,
);
