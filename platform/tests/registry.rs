//! The agent registry on both databases: an instance that stops heartbeating turns down and gets
//! no more requests while its peer takes them all; it comes back when it resumes; every change
//! is a `registry.agent_status` event; bad registrations, foreign heartbeats and missing grants
//! get clear errors. Agents message each other: a request answered by the recipient comes back
//! to the waiting sender; no reply in time, unknown recipients and foreign replies are refused
//! plainly.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 200;

async fn register(env: &Env, key: &str, endpoint: &str) -> (StatusCode, Value) {
    register_every(env, key, endpoint, INTERVAL_MS).await
}

async fn register_every(
    env: &Env,
    key: &str,
    endpoint: &str,
    interval_ms: u64,
) -> (StatusCode, Value) {
    env.call(
        Method::POST,
        "/v1/registry/agents",
        Some(key),
        Some(json!({
            "name": "orders",
            "capabilities": ["orders", "voice"],
            "endpoint": endpoint,
            "version": "1.2.0",
            "heartbeat_interval_ms": interval_ms,
            "capacity": 4,
        })),
    )
    .await
}

async fn beat(env: &Env, key: &str, id: &str) -> (StatusCode, Value) {
    env.call(
        Method::POST,
        &format!("/v1/registry/agents/{id}/heartbeat"),
        Some(key),
        Some(json!({"active": 0})),
    )
    .await
}

async fn route(env: &Env, key: &str) -> (StatusCode, Value) {
    env.call(
        Method::POST,
        "/v1/registry/route",
        Some(key),
        Some(json!({"capability": "orders"})),
    )
    .await
}

/// The health of `id` in the discovery listing.
async fn listed_health(env: &Env, key: &str, id: &str) -> String {
    let (status, list) = env
        .call(
            Method::GET,
            "/v1/registry/agents?capability=orders",
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .map(|a| a["health"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Whether a `registry.agent_status` event said `id` turned `health`.
async fn status_event_now(env: &Env, id: &str, health: &str) -> bool {
    let (_, page) = env
        .call(
            Method::GET,
            "/v1/events?topic=registry.agent_status&limit=100",
            Some(&env.admin_token),
            None,
        )
        .await;
    page["events"].as_array().into_iter().flatten().any(|e| {
        e["data"]["id"] == id && e["data"]["health"] == health && e["source"] == "platform"
    })
}

/// Waits (bounded) for a `registry.agent_status` event saying `id` turned `health`.
async fn status_event(env: &Env, id: &str, health: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if status_event_now(env, id, health).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn a_silent_instance_turns_down_gets_nothing_and_comes_back(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key_a = env.agent_key("orders-a", None).await;
    let key_b = env.agent_key("orders-b", None).await;
    let (status, a) = register(&env, &key_a, "http://10.0.0.1:9000/agent").await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["health"], "healthy");
    assert_eq!(a["capabilities"], json!(["orders", "voice"]));
    let a = a["id"].as_str().unwrap().to_string();
    let (status, b) = register(&env, &key_b, "http://10.0.0.2:9000/agent").await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b = b["id"].as_str().unwrap().to_string();
    // A restarted instance registering again keeps its id.
    let (status, again) = register(&env, &key_a, "http://10.0.0.1:9000/agent").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], a.as_str());

    // Both healthy: round-robin alternates.
    let mut routed = Vec::new();
    for _ in 0..2 {
        let (status, chosen) = route(&env, &key_b).await;
        assert_eq!(status, StatusCode::OK, "{chosen}");
        routed.push(chosen["id"].as_str().unwrap().to_string());
    }
    routed.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(routed, both, "round-robin reaches both instances");

    // A falls silent; B keeps heartbeating for over three of A's intervals.
    let silent_until = Instant::now() + Duration::from_millis(INTERVAL_MS * 5);
    while Instant::now() < silent_until {
        assert_eq!(beat(&env, &key_b, &b).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS / 4)).await;
    }
    assert_eq!(listed_health(&env, &key_b, &a).await, "down");
    for _ in 0..6 {
        beat(&env, &key_b, &b).await;
        let (status, chosen) = route(&env, &key_b).await;
        assert_eq!(status, StatusCode::OK, "{chosen}");
        assert_eq!(chosen["id"], b.as_str(), "a down instance gets no request");
    }
    assert!(
        status_event(&env, &a, "down").await,
        "A's fall was announced"
    );

    // A resumes: healthy at once, and the next request goes to it (routed to longest ago).
    let (status, resumed) = beat(&env, &key_a, &a).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["health"], "healthy");
    beat(&env, &key_b, &b).await;
    let (_, chosen) = route(&env, &key_b).await;
    assert_eq!(
        chosen["id"],
        a.as_str(),
        "the resumed instance takes requests"
    );
    // Announced while A keeps beating (a 200 ms interval: silent, it would be late again).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut announced = false;
    while !announced && Instant::now() < deadline {
        beat(&env, &key_a, &a).await;
        announced = status_event_now(&env, &a, "healthy").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(announced, "A's return was announced");

    // No instance with the capability: said plainly.
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/registry/route",
            Some(&key_b),
            Some(json!({"capability": "billing"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("billing")
    );

    // Only the registrant (or an admin) heartbeats or removes an instance.
    let (status, body) = beat(&env, &key_b, &a).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/registry/agents/{b}"),
            Some(&key_b),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = env
        .call(
            Method::GET,
            &format!("/v1/registry/agents/{b}"),
            Some(&key_a),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

async fn bad_registrations_and_missing_grants_get_clear_errors(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key = env.agent_key("orders", None).await;
    let valid = json!({"name": "orders", "capabilities": ["orders"], "endpoint": "http://x/a"});
    let mut cases = Vec::new();
    for (field, value, says) in [
        ("name", json!("no spaces!"), "name"),
        ("capabilities", json!(vec!["c"; 33]), "capabilities"),
        ("capabilities", json!(["a,b"]), "capability"),
        ("endpoint", json!(""), "endpoint"),
        ("heartbeat_interval_ms", json!(5), "heartbeat_interval_ms"),
        ("capacity", json!(0), "capacity"),
        ("capacity", json!(i64::MAX), "capacity"),
    ] {
        let mut body = valid.clone();
        body[field] = value;
        cases.push((body, says));
    }
    let mut unknown = valid.clone();
    unknown["colour"] = json!("blue");
    cases.push((unknown, "colour"));
    for (body, says) in cases {
        let (status, answer) = env
            .call(Method::POST, "/v1/registry/agents", Some(&key), Some(body))
            .await;
        // 400 for a value out of range, 422 for a body that does not fit the schema.
        assert!(
            [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
    }
    let (status, list) = env
        .call(Method::GET, "/v1/registry/agents", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]), "nothing bad was stored");

    let (status, body) = env
        .call(
            Method::POST,
            "/v1/registry/agents/nope/heartbeat",
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/registry/agents/nope/heartbeat",
            Some(&key),
            Some(json!({"active": -1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // An end user may not register agents; a key without the scope may not either.
    let (_, user) = env.user("user").await;
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/registry/agents",
            Some(&user),
            Some(valid.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let narrow = env.agent_key("narrow", Some(&["events"])).await;
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/registry/agents",
            Some(&narrow),
            Some(valid),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registry")
    );
    let (status, _) = env
        .call(Method::GET, "/v1/registry/agents", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The request addressed to `agent` that the event store holds, polled (bounded).
async fn wait_for_request(env: &Env, key: &str, agent: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let (_, page) = env
            .call(
                Method::GET,
                &format!("/v1/events?topic=a2a.request.{agent}&limit=100"),
                Some(key),
                None,
            )
            .await;
        if let Some(last) = page["events"].as_array().and_then(|e| e.last()) {
            return Some(last["data"].clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn agents_ask_each_other_and_wait_for_the_reply(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let orders = env.agent_key("orders", None).await;
    let support = env.agent_key("support", None).await;
    let (status, _) = register_every(&env, &orders, "http://10.0.0.1:9000/agent", 60_000).await;
    assert_eq!(status, StatusCode::CREATED);

    let ask = env.call(
        Method::POST,
        "/v1/messages",
        Some(&support),
        Some(json!({"to": "orders", "body": {"question": "where is order 42?"}, "reply_timeout_ms": 5000})),
    );
    let answer = async {
        let request = wait_for_request(&env, &orders, "orders")
            .await
            .expect("the request reached the orders agent's topic");
        assert_eq!(request["from"], "support");
        assert_eq!(request["body"]["question"], "where is order 42?");
        let id = request["id"].as_str().unwrap().to_string();
        let (status, body) = env
            .call(
                Method::POST,
                &format!("/v1/messages/{id}/reply"),
                Some(&orders),
                Some(json!({"body": {"status": "shipped"}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        id
    };
    let ((status, outcome), id) = tokio::join!(ask, answer);
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["reply"], json!({"status": "shipped"}));
    assert_eq!(outcome["id"], id.as_str());

    // Once only, and only by the recipient.
    let (status, body) = env
        .call(
            Method::POST,
            &format!("/v1/messages/{id}/reply"),
            Some(&orders),
            Some(json!({"body": {"status": "lost"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, sent) = env
        .call(
            Method::POST,
            "/v1/messages",
            Some(&support),
            Some(json!({"to": "orders", "body": {"note": "fyi"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "fire and forget: {sent}");
    let (status, body) = env
        .call(
            Method::POST,
            &format!("/v1/messages/{}/reply", sent["id"].as_str().unwrap()),
            Some(&support),
            Some(json!({"body": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Nobody answers: a clear timeout, not a hang.
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/messages",
            Some(&support),
            Some(json!({"to": "orders", "body": {"q": 1}, "reply_timeout_ms": 300})),
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no reply from orders")
    );

    for (request, expected, says) in [
        (
            json!({"to": "nobody", "body": {}}),
            StatusCode::NOT_FOUND,
            "no agent named nobody",
        ),
        (
            json!({"to": "orders", "body": "text"}),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            json!({"to": "orders", "body": {}, "reply_timeout_ms": 70000}),
            StatusCode::BAD_REQUEST,
            "reply_timeout_ms",
        ),
    ] {
        let (status, body) = env
            .call(Method::POST, "/v1/messages", Some(&support), Some(request))
            .await;
        assert_eq!(status, expected, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/messages/unknown/reply",
            Some(&orders),
            Some(json!({"body": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(
    a_silent_instance_turns_down_gets_nothing_and_comes_back,
    bad_registrations_and_missing_grants_get_clear_errors,
    agents_ask_each_other_and_wait_for_the_reply,
);
