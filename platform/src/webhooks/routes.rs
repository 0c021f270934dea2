//! HTTP face of the webhook manager: subscriptions, deliveries (dead letters) and replay,
//! incoming webhooks.

use super::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, generate_secret, ssrf, verify};
use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::events::{Event, check_pattern, publish};
use crate::http::Json;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most topic patterns per subscription.
const MAX_TOPICS: usize = 32;
/// Most subscriptions in total.
const MAX_SUBSCRIPTIONS: i64 = 1000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay_delivery))
        .routes(routes!(incoming_webhook))
}

/// A new subscription.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST (http/https, public address unless the config allows private ones).
    pub url: String,
    /// Topic patterns, e.g. `["conversation.turn", "room.*"]`.
    pub topics: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A subscription (the secret only in the creation answer).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Subscription id.
    pub id: String,
    /// Target URL.
    pub url: String,
    /// Topic patterns.
    pub topics: Vec<String>,
    /// Free text.
    pub description: String,
    /// Signing secret (`whsec_…`), returned once at creation.
    pub secret: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Register an outgoing webhook. The answer carries the signing secret, shown only once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = Webhook), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<CreateWebhook>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    if request.topics.is_empty() || request.topics.len() > MAX_TOPICS {
        return Err(ApiError::bad_request(format!(
            "topics: 1-{MAX_TOPICS} patterns"
        )));
    }
    for topic in &request.topics {
        check_pattern(topic).map_err(ApiError::bad_request)?;
    }
    if request.description.len() > 200 {
        return Err(ApiError::bad_request("description: at most 200 characters"));
    }
    let url = ssrf::check_url(&request.url, state.config.webhooks.allow_private_targets)
        .await
        .map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM webhook_subscriptions")
        .fetch_one(&state.db.pool)
        .await?
        .try_get(0)?;
    if count >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::conflict(format!(
            "at most {MAX_SUBSCRIPTIONS} webhooks"
        )));
    }
    let secret = generate_secret();
    let sealed = state
        .keyring
        .read()
        .map_err(ApiError::internal)?
        .encrypt(secret.as_bytes())?;
    let webhook = Webhook {
        id: uuid::Uuid::now_v7().simple().to_string(),
        url: url.to_string(),
        topics: request.topics,
        description: request.description,
        secret: Some(secret),
        created_at: now_ms(),
    };
    sqlx::query("INSERT INTO webhook_subscriptions (id, owner, url, topics, secret, description, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&webhook.id)
        .bind(principal.actor())
        .bind(&webhook.url)
        .bind(webhook.topics.join(","))
        .bind(sealed)
        .bind(&webhook.description)
        .bind(webhook.created_at)
        .execute(&state.db.pool)
        .await?;
    state
        .audit(
            &principal.actor(),
            "webhook.create",
            &webhook.id,
            "ok",
            &webhook.url,
        )
        .await;
    Ok((StatusCode::CREATED, Json(webhook)))
}

/// List webhooks (secrets omitted).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Vec<Webhook>), (status = 403, body = ErrorBody)))]
async fn list_webhooks(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<Webhook>>, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    let rows = sqlx::query("SELECT id, url, topics, description, created_at FROM webhook_subscriptions ORDER BY created_at")
        .fetch_all(&state.db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Webhook {
                id: r.try_get(0)?,
                url: r.try_get(1)?,
                topics: r
                    .try_get::<String, _>(2)?
                    .split(',')
                    .map(String::from)
                    .collect(),
                description: r.try_get(3)?,
                secret: None,
                created_at: r.try_get(4)?,
            })
        })
        .collect::<Result<_, ApiError>>()
        .map(Json)
}

/// Delete a webhook and its undelivered deliveries.
#[utoipa::path(delete, path = "/v1/webhooks/{webhook_id}", tag = "webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(webhook_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    let mut tx = state.db.pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
        .bind(&webhook_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("no such webhook"));
    }
    sqlx::query("DELETE FROM webhook_outbox WHERE subscription_id = $1 AND status <> 'delivered'")
        .bind(&webhook_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .audit(&principal.actor(), "webhook.delete", &webhook_id, "ok", "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// One delivery of an event to a webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Delivery id.
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// The event (the receiver's dedup key).
    pub event_id: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (unix ms).
    pub next_attempt_at: i64,
    /// The last failure.
    pub last_error: String,
    /// Unix milliseconds of success.
    pub delivered_at: Option<i64>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    /// `pending`, `delivered` or `dead` (the dead-letter list); default `dead`.
    pub status: Option<String>,
    /// Only this webhook's.
    pub webhook_id: Option<String>,
}

/// Deliveries by status; `dead` is the dead-letter list.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(ListDeliveries),
    responses((status = 200, body = Vec<Delivery>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListDeliveries>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    let status = query.status.unwrap_or_else(|| "dead".into());
    if !matches!(status.as_str(), "pending" | "delivered" | "dead") {
        return Err(ApiError::bad_request("status: pending, delivered or dead"));
    }
    let rows = sqlx::query("SELECT id, subscription_id, event_id, status, attempts, next_attempt_at, last_error, delivered_at FROM webhook_outbox WHERE status = $1 AND ($2 = '' OR subscription_id = $2) ORDER BY created_at LIMIT 1000")
        .bind(&status)
        .bind(query.webhook_id.unwrap_or_default())
        .fetch_all(&state.db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Delivery {
                id: r.try_get(0)?,
                webhook_id: r.try_get(1)?,
                event_id: r.try_get(2)?,
                status: r.try_get(3)?,
                attempts: r.try_get(4)?,
                next_attempt_at: r.try_get(5)?,
                last_error: r.try_get(6)?,
                delivered_at: r.try_get(7)?,
            })
        })
        .collect::<Result<_, ApiError>>()
        .map(Json)
}

/// Replay a dead (or delivered) delivery: it is queued again with fresh attempts.
#[utoipa::path(post, path = "/v1/webhooks/deliveries/{delivery_id}/replay", tag = "webhooks", security(("bearer" = [])),
    params(("delivery_id" = String, Path)),
    responses((status = 202), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn replay_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(delivery_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .authorize(&principal, Permission::ManageWebhooks)
        .await?;
    let updated = sqlx::query("UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, last_error = '', delivered_at = NULL WHERE id = $2 AND status <> 'pending'")
        .bind(now_ms())
        .bind(&delivery_id)
        .execute(&state.db.pool)
        .await?
        .rows_affected();
    if updated == 0 {
        let exists = sqlx::query("SELECT 1 FROM webhook_outbox WHERE id = $1")
            .bind(&delivery_id)
            .fetch_optional(&state.db.pool)
            .await?;
        return Err(match exists {
            Some(_) => ApiError::conflict("the delivery is already pending"),
            None => ApiError::not_found("no such delivery"),
        });
    }
    state.webhooks.wake();
    state
        .audit(&principal.actor(), "webhook.replay", &delivery_id, "ok", "")
        .await;
    Ok(StatusCode::ACCEPTED)
}

/// Receive a signed webhook from a configured source (`webhooks.incoming.<source>` holds its
/// secret); verified, it is published as event `webhook.<source>`. No bearer credential: the
/// signature is the authentication.
#[utoipa::path(post, path = "/v1/webhooks/incoming/{source}", tag = "webhooks",
    params(("source" = String, Path)), request_body(content = Object),
    responses((status = 202, body = Event), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn incoming_webhook(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Event>), ApiError> {
    check_name("source", &source)?;
    let secret = state
        .config
        .webhooks
        .incoming
        .get(&source)
        .ok_or_else(|| ApiError::not_found("no such incoming webhook source"))?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = header(HEADER_ID);
    if let Err(e) = verify(
        secret,
        &id,
        &header(HEADER_TIMESTAMP),
        &body,
        &header(HEADER_SIGNATURE),
        now_ms() / 1000,
    ) {
        state
            .audit(
                &format!("webhook:{source}"),
                "webhook.incoming",
                &id,
                "denied",
                &e.to_string(),
            )
            .await;
        return Err(ApiError::unauthenticated(format!("webhook signature: {e}")));
    }
    let data: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let topic = format!("webhook.{}", source.to_ascii_lowercase());
    let event = Event::new(
        topic,
        format!("webhook:{source}"),
        serde_json::json!({"id": id, "body": data}),
    );
    Ok((StatusCode::ACCEPTED, Json(publish(&state, event).await?)))
}
