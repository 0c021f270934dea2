//! The event system: publish, stored history, a live SSE stream, turn events becoming redacted
//! transcripts with sentiment and intent (and leaving with GDPR deletion), bad input; and the
//! NATS JetStream bus against the real server (`NATS_URL`).

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Backend, Env, error_code};
use dartmouth_platform::events::{Event, EventBus};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

/// Reads an SSE body until a frame mentions `needle` (bounded by `limit`).
async fn read_sse_until(body: Body, needle: &str, limit: Duration) -> String {
    let mut stream = body.into_data_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended or timed out before {needle:?}: {other:?}; saw {seen}"),
        }
    }
    seen
}

async fn open_stream(env: &Env, topic: &str) -> Body {
    let response = env
        .app
        .clone()
        .oneshot(
            Request::get(format!("/v1/events/stream?topic={topic}"))
                .header("authorization", format!("Bearer {}", env.admin_token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response.into_body()
}

async fn events_are_stored_listed_and_streamed(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let stream = open_stream(&env, "room.*").await;
    let (status, event) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&env.admin_token),
            Some(json!({"topic": "room.participant_joined", "data": {"room": "r1", "identity": "ann"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");
    let id = event["id"].as_str().unwrap().to_string();
    let seen = read_sse_until(stream, &id, Duration::from_secs(5)).await;
    assert!(seen.contains("event: room.participant_joined"), "{seen}");
    let (_, page) = env
        .call(
            Method::GET,
            "/v1/events?topic=room.*",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(page["events"][0]["id"], id.as_str());
    assert_eq!(page["events"][0]["data"]["identity"], "ann");
    let (_, none) = env
        .call(
            Method::GET,
            "/v1/events?topic=call.%3E",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert!(none["events"].as_array().unwrap().is_empty());
    // A publisher's own id makes a retry a conflict, not a duplicate.
    let request = json!({"topic": "call.started", "data": {}, "id": "call-42-started"});
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&env.admin_token),
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&env.admin_token),
            Some(request),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "conflict");
}

async fn bad_events_get_clear_errors(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let token = Some(env.admin_token.as_str());
    for (body, status, message) in [
        (
            json!({"topic": "Room Joined", "data": {}}),
            StatusCode::BAD_REQUEST,
            "topic",
        ),
        (
            json!({"topic": "room.*", "data": {}}),
            StatusCode::BAD_REQUEST,
            "topic",
        ),
        (
            json!({"topic": "a.b", "data": [1]}),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            json!({"topic": "a.b", "data": {"x": "y".repeat(70_000)}}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "bytes",
        ),
        (
            json!({"topic": "conversation.turn", "data": {"agent": "a"}}),
            StatusCode::BAD_REQUEST,
            "conversation_id",
        ),
        (
            json!({"topic": "a.b", "data": {}, "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "extra",
        ),
    ] {
        let (got, value) = env
            .call(Method::POST, "/v1/events", token, Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{value}"
        );
    }
    let (status, _) = env
        .call(Method::GET, "/v1/events?topic=a..b", token, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env.call(Method::GET, "/v1/events", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let key = env.agent_key("a1", Some(&["db:read"])).await;
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            Some(json!({"topic": "a.b", "data": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = env.call(Method::GET, "/v1/events", token, None).await;
    assert!(
        page["events"].as_array().unwrap().is_empty(),
        "nothing stored: {page}"
    );
}

async fn turns_become_redacted_transcripts_with_sentiment_and_intent(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let token = Some(env.admin_token.as_str());
    let (status, body) = env
        .call(
            Method::PUT,
            "/v1/agents/helper/intents",
            token,
            Some(json!({"intents": [
                {"name": "order_status", "examples": ["where is my order", "has my package shipped", "track my parcel"]},
                {"name": "cancel", "examples": ["cancel my subscription", "I want to stop my membership"]},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (user_id, user_token) = env.user("user").await;
    let (status, event) = env
        .call(
            Method::POST,
            "/v1/events",
            token,
            Some(json!({"topic": "conversation.turn", "data": {
                "conversation_id": "conv-1", "agent": "helper", "user_id": user_id, "turn": 1,
                "user_text": "Great, thanks! Where is my parcel? Mail me at jane.doe@example.com",
                "agent_text": "It ships tomorrow; call 555-123-4567 with questions.",
            }})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");
    assert_eq!(event["data"]["sentiment"]["label"], "positive", "{event}");
    assert_eq!(event["data"]["intent"]["name"], "order_status", "{event}");
    assert!(
        event["data"]["user_text"]
            .as_str()
            .unwrap()
            .contains("[email]")
    );
    let (status, transcript) = env
        .call(
            Method::GET,
            "/v1/conversations/conv-1/transcript",
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{transcript}");
    let lines = transcript["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["role"], "user");
    assert!(
        lines[0]["text"]
            .as_str()
            .unwrap()
            .ends_with("Mail me at [email]"),
        "{transcript}"
    );
    assert!(lines[1]["text"].as_str().unwrap().contains("[phone]"));
    assert_eq!(lines[0]["intent"]["name"], "order_status");
    // The analysis endpoint agrees.
    let (_, analysis) = env
        .call(Method::POST, "/v1/intel/analyze", token, Some(json!({"text": "I want to cancel my membership, this is terrible", "agent_id": "helper"})))
        .await;
    assert_eq!(analysis["intent"]["name"], "cancel", "{analysis}");
    assert_eq!(analysis["sentiment"]["label"], "negative");
    // GDPR: exported, then deleted with the user.
    let (status, export) = env
        .call(
            Method::GET,
            &format!("/v1/users/{user_id}/export"),
            Some(&user_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        export["transcripts"].as_array().unwrap().len(),
        2,
        "{export}"
    );
    let (status, report) = env
        .call(Method::DELETE, &format!("/v1/users/{user_id}"), token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["transcripts"], 2);
    let (status, _) = env
        .call(
            Method::GET,
            "/v1/conversations/conv-1/transcript",
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another agent's key may not read the transcript of this agent's conversations.
    let (status, _) = env
        .call(Method::POST, "/v1/events", token, Some(json!({"topic": "conversation.turn", "data": {"conversation_id": "conv-2", "agent": "helper", "user_text": "hi"}})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let other = env.agent_key("other", None).await;
    let (status, _) = env
        .call(
            Method::GET,
            "/v1/conversations/conv-2/transcript",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

on_both_backends!(
    events_are_stored_listed_and_streamed,
    bad_events_get_clear_errors,
    turns_become_redacted_transcripts_with_sentiment_and_intent,
);

fn nats_url() -> Option<String> {
    match std::env::var("NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("SKIPPED: NATS_URL is not set, so the NATS JetStream bus is not tested");
            None
        }
    }
}

fn run_tag() -> String {
    format!(
        "t{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_delivers_live_and_durable_consumers_resume_where_they_stopped() {
    let Some(url) = nats_url() else { return };
    let tag = run_tag();
    let bus = EventBus::nats(&url).await.expect("NATS with JetStream");
    assert_eq!(bus.backend_name(), "nats");
    let mut live = bus.subscribe(&format!("test.{tag}.*")).await.unwrap();
    let durable_name = format!("durable-{tag}");
    let pattern = format!("test.{tag}.>");
    let mut durable = bus.durable(&durable_name, &pattern).await.unwrap();
    let publish = |n: u32| {
        let bus = bus.clone();
        let topic = format!("test.{tag}.n{n}");
        async move {
            bus.publish(&Event::new(topic, "test", json!({"n": n})))
                .await
                .unwrap();
        }
    };
    publish(1).await;
    publish(2).await;
    for n in 1..=2 {
        let event = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.data["n"], n);
        let (event, ack) = tokio::time::timeout(Duration::from_secs(5), durable.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.data["n"], n);
        ack.ack().await.unwrap();
    }
    drop(durable);
    // Published while the consumer is away: it resumes with them, not from the start.
    publish(3).await;
    publish(4).await;
    let mut resumed = bus.durable(&durable_name, &pattern).await.unwrap();
    for n in 3..=4 {
        let (event, ack) = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.data["n"], n);
        ack.ack().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_publishes_through_nats_to_its_event_stream() {
    let Some(url) = nats_url() else { return };
    let Some(env) = Env::with(Backend::Sqlite, |c| c.events.nats_url = Some(url.clone())).await
    else {
        return;
    };
    let tag = run_tag();
    let stream = open_stream(&env, &format!("test.{tag}.*")).await;
    let (status, event) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&env.admin_token),
            Some(json!({"topic": format!("test.{tag}.call"), "data": {"via": "nats"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");
    let seen = read_sse_until(
        stream,
        event["id"].as_str().unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert!(seen.contains("nats"), "{seen}");
    let _ = Value::Null;
}
