//! HTTP face of the event system: publish, read back stored events, a live server-sent-events
//! stream, and transcripts.

use super::{Event, SUBSCRIPTION_CAPACITY, check_pattern, publish, topic_matches};
use crate::auth::{Permission, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use std::sync::atomic::{AtomicUsize, Ordering};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Live event streams open at once (each holds a bus subscription).
pub const MAX_EVENT_STREAMS: usize = 256;
/// Largest page of stored events.
const MAX_EVENTS_PAGE: i64 = 1000;

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_event, list_events))
        .routes(routes!(stream_events))
        .routes(routes!(super::transcripts::get_transcript))
}

/// An event to publish.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Topic, e.g. `room.participant_joined`.
    pub topic: String,
    /// Payload (a JSON object).
    #[schema(value_type = Object)]
    pub data: Value,
    /// Event id chosen by the publisher (retries then do not duplicate); default a fresh one.
    pub id: Option<String>,
}

async fn require_events(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    state.authorize(principal, Permission::Events).await?;
    if !principal.has_scope("events") {
        return Err(ApiError::forbidden("API key lacks the `events` scope"));
    }
    Ok(())
}

/// Publish an event: stored, queued for webhooks, put on the bus.
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("bearer" = [])),
    request_body = PublishRequest,
    responses((status = 202, body = Event), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn publish_event(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<PublishRequest>,
) -> Result<(StatusCode, Json<Event>), ApiError> {
    require_events(&state, &principal).await?;
    if !request.data.is_object() {
        return Err(ApiError::bad_request("data must be a JSON object"));
    }
    let mut event = Event::new(request.topic, principal.actor(), request.data);
    if let Some(id) = request.id {
        crate::documents::check_name("id", &id)?;
        let exists = sqlx::query("SELECT 1 FROM events WHERE id = $1")
            .bind(&id)
            .fetch_optional(&state.db.pool)
            .await?;
        if exists.is_some() {
            return Err(ApiError::conflict(
                "an event with this id was already published",
            ));
        }
        event.id = id;
    }
    Ok((StatusCode::ACCEPTED, Json(publish(&state, event).await?)))
}

/// Which stored events to read.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Topic pattern (`*` one segment, `>` the rest); default all.
    pub topic: Option<String>,
    /// Only events with an id after this one (ids are time-ordered).
    pub after: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of stored events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<Event>,
}

/// Stored events, oldest first, filtered by topic pattern.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(ListEvents),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListEvents>,
) -> Result<Json<EventPage>, ApiError> {
    require_events(&state, &principal).await?;
    let pattern = query.topic.unwrap_or_else(|| ">".into());
    check_pattern(&pattern).map_err(ApiError::bad_request)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1-{MAX_EVENTS_PAGE}"
        )));
    }
    // Exact topics filter in SQL; wildcard patterns scan pages and filter here.
    let exact = !pattern.contains(['*', '>']);
    let mut after = query.after.unwrap_or_default();
    let mut events = Vec::new();
    for _ in 0..64 {
        let rows = sqlx::query(if exact {
            "SELECT id, topic, at, source, data FROM events WHERE id > $1 AND topic = $2 ORDER BY id LIMIT $3"
        } else {
            "SELECT id, topic, at, source, data FROM events WHERE id > $1 AND $2 = $2 ORDER BY id LIMIT $3"
        })
        .bind(&after)
        .bind(&pattern)
        .bind(limit)
        .fetch_all(&state.db.pool)
        .await?;
        let done = (rows.len() as i64) < limit;
        for r in &rows {
            after = r.try_get(0)?;
            let topic: String = r.try_get(1)?;
            if topic_matches(&pattern, &topic) && events.len() < limit as usize {
                events.push(Event {
                    id: after.clone(),
                    topic,
                    at: r.try_get(2)?,
                    source: r.try_get(3)?,
                    data: serde_json::from_str(&r.try_get::<String, _>(4)?)
                        .map_err(ApiError::internal)?,
                });
            }
        }
        if done || events.len() >= limit as usize {
            break;
        }
    }
    Ok(Json(EventPage { events }))
}

/// Which topics to stream.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamEvents {
    /// Topic pattern; default all.
    pub topic: Option<String>,
}

struct StreamSlot;

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Live events as server-sent events (`event: <topic>`, `id: <event id>`, `data: <event JSON>`).
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", security(("bearer" = [])),
    params(StreamEvents),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stream_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<StreamEvents>,
) -> Result<Response, ApiError> {
    require_events(&state, &principal).await?;
    let pattern = query.topic.unwrap_or_else(|| ">".into());
    check_pattern(&pattern).map_err(ApiError::bad_request)?;
    if OPEN_STREAMS.fetch_add(1, Ordering::SeqCst) >= MAX_EVENT_STREAMS {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::unavailable(
            "too many open event streams; retry later",
        ));
    }
    let slot = StreamSlot;
    let mut subscription = state.events.subscribe(&pattern).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(SUBSCRIPTION_CAPACITY);
    // The forwarding task ends when the client goes away (send fails) or the bus closes.
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let event = tokio::select! {
                _ = tx.closed() => break,
                event = subscription.next() => event,
            };
            let Some(event) = event else { break };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|event| {
        axum::response::sse::Event::default()
            .event(event.topic.clone())
            .id(event.id.clone())
            .json_data(&event)
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

use tokio_stream::StreamExt as _;
