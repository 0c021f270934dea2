//! Event system: topics (`conversation.turn`, `room.participant_joined`, `call.started`,
//! `agent.*` …) on an in-process bus by default, or NATS JetStream when configured (`nats_url`),
//! so several nodes see every event and durable consumers survive restarts.
//!
//! Publishing through the sidecar ([`publish`]) stores the event and queues its webhook
//! deliveries in one transaction (the outbox), then puts it on the bus. Subscribers get a bounded
//! stream per pattern (NATS syntax: `*` one segment, `>` the rest).
//!
//! ```
//! # async fn run() {
//! use dartmouth_platform::events::{Event, EventBus};
//! let bus = EventBus::local();
//! let mut sub = bus.subscribe("room.*").await.unwrap();
//! bus.publish(&Event::new("room.participant_joined", "gateway", serde_json::json!({"room": "r1"}))).await.unwrap();
//! assert_eq!(sub.next().await.unwrap().topic, "room.participant_joined");
//! # }
//! ```

mod bus;
pub mod routes;
pub mod transcripts;

pub use bus::{Ack, DurableSubscription, EventBus, Subscription};

use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Events the in-process bus holds for slow subscribers before they lag (and lose the oldest).
pub const EVENT_BUS_CAPACITY: usize = 4096;
/// Events queued per subscription stream.
pub const SUBSCRIPTION_CAPACITY: usize = 256;
/// Longest topic.
const MAX_TOPIC_LEN: usize = 128;
/// Most segments in a topic.
const MAX_TOPIC_SEGMENTS: usize = 8;
/// Largest event payload (JSON bytes).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Topic of a finished voice turn (user and agent text, latency, sentiment, intent).
pub const TOPIC_TURN: &str = "conversation.turn";
/// Topic of a participant entering a room.
pub const TOPIC_JOINED: &str = "room.participant_joined";
/// Topic of a participant leaving a room.
pub const TOPIC_LEFT: &str = "room.participant_left";
/// Topic of a call (WebRTC or SIP session with an agent) starting.
pub const TOPIC_CALL_STARTED: &str = "call.started";
/// Topic of a call ending.
pub const TOPIC_CALL_ENDED: &str = "call.ended";

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Unique, time-ordered id (receivers dedup by it).
    pub id: String,
    /// Dot-separated topic, e.g. `conversation.turn`.
    pub topic: String,
    /// Unix milliseconds when it was published.
    pub at: i64,
    /// Who published it (`gateway`, `platform`, `key:<id>` …).
    pub source: String,
    /// The payload.
    #[schema(value_type = Object)]
    pub data: Value,
}

impl Event {
    /// A new event with a fresh id, stamped now.
    pub fn new(topic: impl Into<String>, source: impl Into<String>, data: Value) -> Event {
        Event {
            id: uuid::Uuid::now_v7().simple().to_string(),
            topic: topic.into(),
            at: now_ms(),
            source: source.into(),
            data,
        }
    }
}

/// Checks a topic: 1–8 dot-separated segments of `a-z 0-9 _ -`, at most 128 characters.
pub fn check_topic(topic: &str) -> Result<(), String> {
    check_segments(topic, false)
}

/// Checks a subscription pattern: a topic whose segments may be `*`, and whose last may be `>`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    check_segments(pattern, true)
}

fn check_segments(text: &str, wildcards: bool) -> Result<(), String> {
    let segments: Vec<&str> = text.split('.').collect();
    let last = segments.len().saturating_sub(1);
    let ok = !text.is_empty()
        && text.len() <= MAX_TOPIC_LEN
        && segments.len() <= MAX_TOPIC_SEGMENTS
        && segments.iter().enumerate().all(|(i, s)| {
            (wildcards && (*s == "*" || (*s == ">" && i == last)))
                || (!s.is_empty()
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    }))
        });
    if ok {
        Ok(())
    } else if wildcards {
        Err(format!(
            "pattern {text:?}: dot-separated segments of a-z 0-9 _ -, `*` for one segment, `>` last for the rest"
        ))
    } else {
        Err(format!(
            "topic {text:?}: 1-{MAX_TOPIC_SEGMENTS} dot-separated segments of a-z 0-9 _ -, at most {MAX_TOPIC_LEN} characters"
        ))
    }
}

/// Whether `topic` matches `pattern` (NATS semantics: `*` one segment, trailing `>` one or more).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut topic_parts = topic.split('.');
    for part in pattern.split('.') {
        match (part, topic_parts.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    topic_parts.next().is_none()
}

/// Stores `event`, queues its webhook deliveries (one transaction), then puts it on the bus and
/// wakes the webhook dispatcher. Turn events are enriched (sentiment, intent) and their
/// transcripts stored first.
pub async fn publish(state: &AppState, mut event: Event) -> Result<Event, ApiError> {
    check_topic(&event.topic).map_err(ApiError::bad_request)?;
    let body = event.data.to_string();
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "event data is {} bytes; at most {MAX_EVENT_BYTES}",
            body.len()
        )));
    }
    if event.topic == TOPIC_TURN {
        transcripts::record_turn(state, &mut event).await?;
    }
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("INSERT INTO events (id, topic, at, source, data) VALUES ($1, $2, $3, $4, $5)")
        .bind(&event.id)
        .bind(&event.topic)
        .bind(event.at)
        .bind(&event.source)
        .bind(event.data.to_string())
        .execute(&mut *tx)
        .await?;
    let queued = crate::webhooks::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    if queued > 0 {
        state.webhooks.wake();
    }
    if let Err(e) = state.events.publish(&event).await {
        // Stored and queued for webhooks; live subscribers miss it. Say so, do not fail.
        tracing::warn!(error = %e, topic = %event.topic, "event bus publish failed");
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_nats() {
        assert!(topic_matches("room.*", "room.participant_joined"));
        assert!(!topic_matches("room.*", "room.a.b"));
        assert!(topic_matches("agent.>", "agent.budget.alert"));
        assert!(!topic_matches("agent.>", "agent"));
        assert!(topic_matches(">", "call.started"));
        assert!(topic_matches("call.started", "call.started"));
        assert!(!topic_matches("call.started", "call.ended"));
        assert!(!topic_matches("call", "call.started"));
    }

    #[test]
    fn topics_and_patterns_are_checked() {
        assert!(check_topic("conversation.turn").is_ok());
        assert!(check_topic("Conversation.turn").is_err());
        assert!(check_topic("a..b").is_err());
        assert!(check_topic("room.*").is_err());
        assert!(check_pattern("room.*").is_ok());
        assert!(check_pattern("agent.>").is_ok());
        assert!(check_pattern(">.x").is_err());
        assert!(check_topic(&"a.".repeat(9)).is_err());
    }
}
