//! Agent-to-agent messages over the event bus: `POST /v1/messages` sends a JSON body to a
//! registered agent (published as `a2a.request.<agent>`, which the agent reads from the event
//! stream), fire-and-forget or waiting a bounded time for the reply; the agent answers with
//! `POST /v1/messages/{id}/reply` (published as `a2a.reply.<id>`). Every message is stored with
//! its sender, recipient and reply, so a reply is accepted once and only from the recipient.

use super::Health;
use super::routes::registered_health;
use crate::auth::{Permission, Principal, Role};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::events::{Event, publish};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest a sender may wait for a reply.
pub const MAX_REPLY_WAIT_MS: i64 = 60_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message))
        .routes(routes!(reply_message))
}

/// A message to another agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The recipient: a registered agent's name.
    pub to: String,
    /// The content (a JSON object).
    #[schema(value_type = Object)]
    pub body: Value,
    /// Wait this long (1 – 60,000 ms) for the reply; absent or 0: fire and forget.
    #[serde(default)]
    pub reply_timeout_ms: i64,
}

/// What sending answers: the message id, and the reply when one was awaited.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageOutcome {
    /// The message id (the correlation id of its reply).
    pub id: String,
    /// The recipient.
    pub to: String,
    /// The reply's content, when awaited.
    #[schema(value_type = Option<Object>)]
    pub reply: Option<Value>,
}

/// A reply to a message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyMessage {
    /// The content (a JSON object).
    #[schema(value_type = Object)]
    pub body: Value,
}

/// Who `principal` is as a message sender.
fn sender(principal: &Principal) -> String {
    principal
        .agent_id
        .clone()
        .unwrap_or_else(|| principal.actor())
}

async fn require_messaging(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    state.authorize(principal, Permission::Registry).await?;
    if !principal.has_scope("registry") || !principal.has_scope("events") {
        return Err(ApiError::forbidden(
            "API key lacks the `registry` and `events` scopes messages need",
        ));
    }
    Ok(())
}

fn check_body(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request("body must be a JSON object"))
    }
}

/// Send a message to a registered agent; with `reply_timeout_ms`, wait for its reply.
#[utoipa::path(post, path = "/v1/messages", tag = "registry", security(("bearer" = [])),
    request_body = SendMessage,
    responses((status = 200, body = MessageOutcome), (status = 202, body = MessageOutcome), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn send_message(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<SendMessage>,
) -> Result<(StatusCode, Json<MessageOutcome>), ApiError> {
    require_messaging(&state, &principal).await?;
    check_name("to", &request.to)?;
    check_body(&request.body)?;
    if !(0..=MAX_REPLY_WAIT_MS).contains(&request.reply_timeout_ms) {
        return Err(ApiError::bad_request(format!(
            "reply_timeout_ms: 0-{MAX_REPLY_WAIT_MS}"
        )));
    }
    match registered_health(&state, &request.to).await? {
        None => {
            return Err(ApiError::not_found(format!(
                "no agent named {} is registered",
                request.to
            )));
        }
        Some(Health::Down) => {
            return Err(ApiError::unavailable(format!(
                "agent {} has no live instance",
                request.to
            )));
        }
        Some(_) => {}
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let from = sender(&principal);
    sqlx::query("INSERT INTO agent_messages (id, sender, sender_actor, recipient, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(&from)
        .bind(principal.actor())
        .bind(&request.to)
        .bind(request.body.to_string())
        .bind(now_ms())
        .execute(&state.db.pool)
        .await?;
    // Subscribed before the request goes out, so a quick reply is not missed.
    let mut replies = if request.reply_timeout_ms > 0 {
        Some(state.events.subscribe(&format!("a2a.reply.{id}")).await?)
    } else {
        None
    };
    let data = json!({"id": id, "from": from, "to": request.to, "body": request.body});
    let topic = format!("a2a.request.{}", request.to.to_ascii_lowercase());
    publish(&state, Event::new(topic, principal.actor(), data)).await?;
    let Some(replies) = replies.as_mut() else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(MessageOutcome {
                id,
                to: request.to,
                reply: None,
            }),
        ));
    };
    let wait = Duration::from_millis(request.reply_timeout_ms as u64);
    let heard = tokio::time::timeout(wait, replies.next()).await;
    let reply = match heard {
        Ok(Some(event)) => Some(event.data["body"].clone()),
        // The bus lagged or closed, or time is up: the store has the last word.
        _ => stored_reply(&state, &id).await?,
    };
    match reply {
        Some(reply) => Ok((
            StatusCode::OK,
            Json(MessageOutcome {
                id,
                to: request.to,
                reply: Some(reply),
            }),
        )),
        None => Err(ApiError::timeout(format!(
            "no reply from {} within {} ms (message {id})",
            request.to, request.reply_timeout_ms
        ))),
    }
}

async fn stored_reply(state: &AppState, id: &str) -> Result<Option<Value>, ApiError> {
    let row = sqlx::query("SELECT reply FROM agent_messages WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?;
    let reply: Option<String> = match row {
        Some(row) => row.try_get("reply")?,
        None => None,
    };
    Ok(reply.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Reply to a message (its recipient only, once).
#[utoipa::path(post, path = "/v1/messages/{id}/reply", tag = "registry", security(("bearer" = [])),
    params(("id" = String, Path, description = "Message id")),
    request_body = ReplyMessage,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn reply_message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(request): Json<ReplyMessage>,
) -> Result<StatusCode, ApiError> {
    require_messaging(&state, &principal).await?;
    check_body(&request.body)?;
    let row = sqlx::query("SELECT recipient, sender FROM agent_messages WHERE id = $1")
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no message {id}")))?;
    let recipient: String = row.try_get("recipient")?;
    let from: String = row.try_get("sender")?;
    if !may_answer_for(&state, &principal, &recipient).await? {
        return Err(ApiError::forbidden(format!(
            "only agent {recipient} may reply to this message"
        )));
    }
    let body = request.body.to_string();
    if body.len() > crate::events::MAX_EVENT_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "reply is {} bytes; at most {}",
            body.len(),
            crate::events::MAX_EVENT_BYTES
        )));
    }
    let answered = sqlx::query(
        "UPDATE agent_messages SET reply = $1, replied_at = $2 WHERE id = $3 AND reply IS NULL",
    )
    .bind(&body)
    .bind(now_ms())
    .bind(&id)
    .execute(&state.db.pool)
    .await?
    .rows_affected();
    if answered == 0 {
        return Err(ApiError::conflict(format!(
            "message {id} was already answered"
        )));
    }
    let data = json!({"id": id, "from": recipient, "to": from, "body": request.body});
    publish(
        &state,
        Event::new(format!("a2a.reply.{id}"), principal.actor(), data),
    )
    .await?;
    Ok(StatusCode::ACCEPTED)
}

/// An admin, the agent's own key, or whoever registered one of its instances.
async fn may_answer_for(
    state: &AppState,
    principal: &Principal,
    agent: &str,
) -> Result<bool, ApiError> {
    if principal.role == Role::Admin || principal.agent_id.as_deref() == Some(agent) {
        return Ok(true);
    }
    let owned: Option<String> =
        sqlx::query("SELECT id FROM registry_agents WHERE name = $1 AND owner = $2")
            .bind(agent)
            .bind(principal.actor())
            .fetch_optional(&state.db.pool)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
    Ok(owned.is_some())
}
