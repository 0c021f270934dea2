//! Webhooks: registration refuses malformed and SSRF targets and stores nothing; deliveries are
//! signed and verified by a real receiver; failures back off on schedule (virtual time) into the
//! dead-letter list and replay; a sidecar killed between publish and delivery still delivers,
//! exactly once to a receiver that dedups by id; incoming webhooks are verified.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use common::{Backend, Env, error_code};
use dartmouth_platform::events::{Event, publish};
use dartmouth_platform::webhooks::{self, WebhookConfig};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver on loopback that verifies signatures and dedups by event id.
#[derive(Default)]
struct Receiver {
    secret: Mutex<String>,
    /// Answer with this status while > 0 requests remain to fail (u32::MAX: always).
    failures_left: AtomicU32,
    requests: AtomicU32,
    bad_signatures: AtomicU32,
    unique: Mutex<Vec<String>>,
    seen: Mutex<HashSet<String>>,
}

async fn receive(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    rx.requests.fetch_add(1, Ordering::SeqCst);
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let secret = rx.secret.lock().unwrap().clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // The timestamp is the sender's clock; tests in virtual time sign with it, so check it against itself.
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(now);
    if webhooks::verify(
        &secret,
        &h("webhook-id"),
        &h("webhook-timestamp"),
        &body,
        &h("webhook-signature"),
        ts,
    )
    .is_err()
    {
        rx.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let left = rx.failures_left.load(Ordering::SeqCst);
    if left > 0 {
        if left != u32::MAX {
            rx.failures_left.fetch_sub(1, Ordering::SeqCst);
        }
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = h("webhook-id");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], id.as_str());
    if rx.seen.lock().unwrap().insert(id.clone()) {
        rx.unique.lock().unwrap().push(id);
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (Arc<Receiver>, String, tokio::task::JoinHandle<()>) {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (rx, url, task)
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn registration_refuses_malformed_and_ssrf_targets(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let token = Some(env.admin_token.as_str());
    for (body, status, message) in [
        (
            json!({"url": "ftp://example.com/x", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "only http",
        ),
        (
            json!({"url": "not a url", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "not a URL",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "SSRF",
        ),
        (
            json!({"url": "http://localhost:9/x", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "SSRF",
        ),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "SSRF",
        ),
        (
            json!({"url": "http://[::ffff:10.0.0.1]/x", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "SSRF",
        ),
        (
            json!({"url": "http://u:p@example.com/x", "topics": ["a.b"]}),
            StatusCode::BAD_REQUEST,
            "credentials",
        ),
        (
            json!({"url": "https://example.com/x", "topics": []}),
            StatusCode::BAD_REQUEST,
            "topics",
        ),
        (
            json!({"url": "https://example.com/x", "topics": ["Bad Topic"]}),
            StatusCode::BAD_REQUEST,
            "pattern",
        ),
        (
            json!({"topics": ["a.b"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            json!({"url": "https://example.com/x", "topics": ["a.b"], "secret": "mine"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret",
        ),
    ] {
        let (got, value) = env
            .call(Method::POST, "/v1/webhooks", token, Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{body}: {value}"
        );
    }
    let (_, list) = env.call(Method::GET, "/v1/webhooks", token, None).await;
    assert!(
        list.as_array().unwrap().is_empty(),
        "nothing stored: {list}"
    );
    let key = env.agent_key("a1", None).await;
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(&key),
            Some(json!({"url": "https://example.com/x", "topics": ["a.b"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "forbidden");
}

fn loopback_webhooks(config: &mut dartmouth_platform::PlatformConfig) {
    config.webhooks.allow_private_targets = true;
    config.webhooks.base_backoff_ms = 20;
    config.webhooks.max_backoff_ms = 50;
    config.webhooks.max_attempts = 3;
    config.webhooks.poll_ms = 20;
}

async fn deliveries_are_signed_and_dead_letters_replay(backend: Backend) {
    let Some(env) = Env::with(backend, loopback_webhooks).await else {
        return;
    };
    let (rx, url, _server) = start_receiver().await;
    let token = Some(env.admin_token.as_str());
    let (status, hook) = env
        .call(
            Method::POST,
            "/v1/webhooks",
            token,
            Some(json!({"url": url, "topics": ["call.*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    *rx.secret.lock().unwrap() = hook["secret"].as_str().unwrap().to_string();
    let (_, list) = env.call(Method::GET, "/v1/webhooks", token, None).await;
    assert!(
        list[0]["secret"].is_null(),
        "the secret is shown once: {list}"
    );
    let (_, event) = env
        .call(
            Method::POST,
            "/v1/events",
            token,
            Some(json!({"topic": "call.started", "data": {"call": 1}})),
        )
        .await;
    let id = event["id"].as_str().unwrap().to_string();
    wait_for("the delivery", Duration::from_secs(10), || {
        rx.unique.lock().unwrap().contains(&id)
    })
    .await;
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    // Not subscribed: no delivery.
    env.call(
        Method::POST,
        "/v1/events",
        token,
        Some(json!({"topic": "room.participant_left", "data": {}})),
    )
    .await;
    // A receiver that keeps failing: three attempts, then the dead-letter list.
    rx.failures_left.store(u32::MAX, Ordering::SeqCst);
    let (_, event) = env
        .call(
            Method::POST,
            "/v1/events",
            token,
            Some(json!({"topic": "call.ended", "data": {"call": 1}})),
        )
        .await;
    let dead_id = event["id"].as_str().unwrap().to_string();
    let mut dead = json!([]);
    for _ in 0..500 {
        dead = env
            .call(
                Method::GET,
                "/v1/webhooks/deliveries?status=dead",
                token,
                None,
            )
            .await
            .1;
        if !dead.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead[0]["event_id"], dead_id.as_str(), "{dead}");
    assert_eq!(dead[0]["attempts"], 3);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("503"));
    rx.failures_left.store(0, Ordering::SeqCst);
    let delivery = dead[0]["id"].as_str().unwrap();
    let (status, _) = env
        .call(
            Method::POST,
            &format!("/v1/webhooks/deliveries/{delivery}/replay"),
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for("the replay", Duration::from_secs(10), || {
        rx.unique.lock().unwrap().contains(&dead_id)
    })
    .await;
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/webhooks/deliveries/nope/replay",
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        rx.unique.lock().unwrap().len(),
        2,
        "room.participant_left was not subscribed"
    );
}

on_both_backends!(
    registration_refuses_malformed_and_ssrf_targets,
    deliveries_are_signed_and_dead_letters_replay,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backoff_schedule_holds_in_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(Backend::Sqlite, dir.path()).unwrap();
    config.webhooks = WebhookConfig {
        allow_private_targets: true,
        max_attempts: 5,
        ..WebhookConfig::default()
    };
    let state = dartmouth_platform::AppState::build(config.clone())
        .await
        .unwrap();
    // The real-time loop stays out of it: the test drives the dispatcher's clock.
    state.webhooks.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (rx, url, _server) = start_receiver().await;
    rx.failures_left.store(3, Ordering::SeqCst);
    let app = dartmouth_platform::router(state.clone()).unwrap();
    let call = |path: &str, token: Option<String>, body: serde_json::Value| {
        let mut request =
            axum::http::Request::post(path).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let app = app.clone();
        async move {
            let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let login = call(
        "/v1/auth/login",
        None,
        json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD}),
    )
    .await;
    let token = login["access_token"].as_str().map(String::from);
    let body = call("/v1/webhooks", token, json!({"url": url, "topics": [">"]})).await;
    *rx.secret.lock().unwrap() = body["secret"].as_str().unwrap().to_string();
    let event = publish(&state, Event::new("call.started", "test", json!({})))
        .await
        .unwrap();
    let mut now = event.at;
    let mut schedule = Vec::new();
    for attempt in 1..=4u32 {
        let next = webhooks::tick(&state, now).await.unwrap();
        assert_eq!(
            rx.requests.load(Ordering::SeqCst),
            attempt,
            "one attempt per due time"
        );
        if attempt == 4 {
            assert_eq!(next, None, "delivered on the fourth attempt");
            break;
        }
        let next = next.expect("a retry is scheduled");
        let delay = next - now;
        let full = webhooks::backoff(&config.webhooks, attempt, 1.0).as_millis() as i64;
        assert!(
            (full / 2..=full).contains(&delay),
            "attempt {attempt}: delay {delay} ms outside [{}, {full}]",
            full / 2
        );
        // Nothing happens before it is due.
        assert_eq!(webhooks::tick(&state, next - 1).await.unwrap(), Some(next));
        assert_eq!(rx.requests.load(Ordering::SeqCst), attempt);
        schedule.push(delay);
        now = next;
    }
    println!("retry delays (virtual ms): {schedule:?}");
    assert_eq!(rx.unique.lock().unwrap().as_slice(), [event.id.as_str()]);
}

/// A sidecar on its own runtime, so the test can kill it (drop every task mid-flight).
fn start_sidecar(config: dartmouth_platform::PlatformConfig, port: u16) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.spawn(async move {
        // The killed sidecar's socket may take a moment to close.
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("the sidecar's port frees up");
        dartmouth_platform::serve(config, listener, std::future::pending())
            .await
            .unwrap();
    });
    runtime
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_between_publish_and_delivery_delivers_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(Backend::Sqlite, dir.path()).unwrap();
    config.webhooks.allow_private_targets = true;
    config.webhooks.base_backoff_ms = 1_500;
    config.webhooks.poll_ms = 50;
    let (rx, url, _server) = start_receiver().await;
    rx.failures_left.store(1, Ordering::SeqCst);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let sidecar = start_sidecar(config.clone(), port);
    let client = dartmouth_platform::client::PlatformClient::new(&base).unwrap();
    let mut session = None;
    for _ in 0..100 {
        if let Ok(s) = client
            .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
            .await
        {
            session = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = client.with_credential(&session.expect("sidecar up").access_token);
    let hook = admin
        .create_webhook(&webhooks::routes::CreateWebhook {
            url,
            topics: vec!["call.*".into()],
            description: String::new(),
        })
        .await
        .unwrap();
    *rx.secret.lock().unwrap() = hook.secret.unwrap();
    let event = admin
        .publish_event("call.started", json!({"call": 7}), None)
        .await
        .unwrap();
    // The first attempt fails (503); kill the sidecar before the retry.
    wait_for("the first attempt", Duration::from_secs(10), || {
        rx.requests.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::task::spawn_blocking(move || sidecar.shutdown_background())
        .await
        .unwrap();
    assert!(rx.unique.lock().unwrap().is_empty());
    let sidecar = start_sidecar(config, port);
    wait_for(
        "delivery after the restart",
        Duration::from_secs(15),
        || rx.unique.lock().unwrap().contains(&event.id),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.unique.lock().unwrap().as_slice(),
        [event.id.as_str()],
        "exactly once"
    );
    let delivered = admin.webhook_deliveries("delivered").await.unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].attempts, 2);
    tokio::task::spawn_blocking(move || sidecar.shutdown_background())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_webhooks_are_verified_before_they_become_events() {
    let secret = webhooks::generate_secret();
    let s = secret.clone();
    let env = Env::with(Backend::Sqlite, move |c| {
        c.webhooks.incoming.insert("crm".into(), s);
    })
    .await
    .unwrap();
    let body = br#"{"deal":"won"}"#.to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let send = |signature: String, ts: i64| {
        let body = body.clone();
        let env = &env;
        async move {
            let request = axum::http::Request::post("/v1/webhooks/incoming/crm")
                .header("content-type", "application/json")
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(axum::body::Body::from(body))
                .unwrap();
            tower::ServiceExt::oneshot(env.app.clone(), request)
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        send(webhooks::sign(&secret, "msg_1", now, &body), now).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(webhooks::sign("whsec_other", "msg_1", now, &body), now).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            webhooks::sign(&secret, "msg_1", now - 3600, &body),
            now - 3600
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    let (_, page) = env
        .call(
            Method::GET,
            "/v1/events?topic=webhook.crm",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["data"]["body"]["deal"], "won");
}
