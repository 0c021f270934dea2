//! Delivers the outbox. [`tick`] is one pass at a given `now` (milliseconds): it claims due
//! deliveries with a lease (so a second node, or this one after a crash, retries only after the
//! lease), posts them signed, and records the outcome; it returns when the next one is due. A
//! thin driver ([`Dispatcher`]) calls it on a timer and when woken. Time is an input, so tests
//! drive the schedule in virtual time.

use super::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookConfig, sign, ssrf};
use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::{AppState, WeakState};
use futures_util::StreamExt;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Due deliveries claimed per pass.
const CLAIM_BATCH: i64 = 64;

/// The retry delay after `attempt` failed attempts (1-based): `base·2^(attempt-1)` capped at
/// `max`, of which the upper half is jitter (`jitter` in [0, 1)): the result lies in
/// [d/2, d].
pub fn backoff(config: &WebhookConfig, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(40);
    let full = config
        .base_backoff_ms
        .saturating_mul(1u64 << exp)
        .min(config.max_backoff_ms);
    let half = full / 2;
    Duration::from_millis(half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// Wakes and owns the delivery loop.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    wake: Arc<Notify>,
    stop: CancellationToken,
    pub(crate) http: reqwest::Client,
}

impl Dispatcher {
    /// A dispatcher whose HTTP client follows `config` (timeouts, SSRF guard).
    pub fn new(config: &WebhookConfig) -> Result<Dispatcher, reqwest::Error> {
        Ok(Dispatcher {
            wake: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
            http: ssrf::outbound_client(
                Duration::from_millis(config.timeout_ms),
                config.allow_private_targets,
            )?,
        })
    }

    /// Something was queued: deliver now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the loop (also stops by itself when the state is dropped).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Runs the loop until stopped or the state is gone.
    pub(crate) async fn run(self, state: WeakState, poll: Duration) {
        loop {
            let next_due = {
                let Some(state) = state.upgrade() else { return };
                match tick(&state, now_ms()).await {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = ?e.status(), "webhook delivery pass failed");
                        None
                    }
                }
            };
            let wait = next_due
                .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64).min(poll))
                .unwrap_or(poll);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

struct Due {
    id: String,
    subscription: String,
    event_id: String,
    attempts: i64,
    next_attempt_at: i64,
}

/// One delivery pass at `now`: delivers what is due; returns when the next pending delivery is
/// due (`None`: nothing pending).
pub async fn tick(state: &AppState, now: i64) -> Result<Option<i64>, ApiError> {
    let config = &state.config.webhooks;
    let rows = sqlx::query("SELECT id, subscription_id, event_id, attempts, next_attempt_at FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2")
        .bind(now)
        .bind(CLAIM_BATCH)
        .fetch_all(&state.db.pool)
        .await?;
    let lease = now + config.timeout_ms as i64 + 5_000;
    let mut claimed = Vec::new();
    for r in rows {
        let due = Due {
            id: r.try_get(0)?,
            subscription: r.try_get(1)?,
            event_id: r.try_get(2)?,
            attempts: r.try_get(3)?,
            next_attempt_at: r.try_get(4)?,
        };
        let won = sqlx::query("UPDATE webhook_outbox SET next_attempt_at = $1 WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3")
            .bind(lease)
            .bind(&due.id)
            .bind(due.next_attempt_at)
            .execute(&state.db.pool)
            .await?
            .rows_affected()
            == 1;
        if won {
            claimed.push(due);
        }
    }
    let results: Vec<Result<(), ApiError>> = futures_util::stream::iter(claimed)
        .map(|due| deliver(state, due, now))
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    let next =
        sqlx::query("SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE status = 'pending'")
            .fetch_one(&state.db.pool)
            .await?
            .try_get::<Option<i64>, _>(0)?;
    Ok(next)
}

async fn deliver(state: &AppState, due: Due, now: i64) -> Result<(), ApiError> {
    let target = sqlx::query("SELECT url, secret FROM webhook_subscriptions WHERE id = $1")
        .bind(&due.subscription)
        .fetch_optional(&state.db.pool)
        .await?;
    let event = sqlx::query("SELECT id, topic, at, source, data FROM events WHERE id = $1")
        .bind(&due.event_id)
        .fetch_optional(&state.db.pool)
        .await?;
    let (Some(target), Some(event)) = (target, event) else {
        return finish(
            state,
            &due,
            Err("subscription or event deleted".into()),
            now,
            true,
        )
        .await;
    };
    let url: String = target.try_get(0)?;
    let secret = String::from_utf8(
        state
            .keyring
            .read()
            .map_err(ApiError::internal)?
            .decrypt(&target.try_get::<String, _>(1)?)?,
    )
    .map_err(ApiError::internal)?;
    let body = serde_json::json!({
        "id": event.try_get::<String, _>(0)?,
        "topic": event.try_get::<String, _>(1)?,
        "at": event.try_get::<i64, _>(2)?,
        "source": event.try_get::<String, _>(3)?,
        "data": serde_json::from_str::<serde_json::Value>(&event.try_get::<String, _>(4)?).map_err(ApiError::internal)?,
    })
    .to_string();
    let timestamp = now / 1000;
    let outcome = post(state, &url, &due.event_id, timestamp, &secret, body).await;
    finish(state, &due, outcome, now, false).await
}

async fn post(
    state: &AppState,
    url: &str,
    id: &str,
    timestamp: i64,
    secret: &str,
    body: String,
) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    ssrf::check_literal_host(&parsed, state.config.webhooks.allow_private_targets)
        .map_err(|e| e.to_string())?;
    let response = state
        .webhooks
        .http
        .post(parsed)
        .header("content-type", "application/json")
        .header(HEADER_ID, id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(
            HEADER_SIGNATURE,
            sign(secret, id, timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status().as_u16()))
    }
}

async fn finish(
    state: &AppState,
    due: &Due,
    outcome: Result<(), String>,
    now: i64,
    give_up: bool,
) -> Result<(), ApiError> {
    let config = &state.config.webhooks;
    match outcome {
        Ok(()) => {
            sqlx::query("UPDATE webhook_outbox SET status = 'delivered', attempts = $1, delivered_at = $2, last_error = '' WHERE id = $3")
                .bind(due.attempts + 1)
                .bind(now)
                .bind(&due.id)
                .execute(&state.db.pool)
                .await?;
        }
        Err(error) => {
            let attempts = due.attempts + 1;
            let dead = give_up || attempts >= i64::from(config.max_attempts);
            let next =
                now + backoff(config, attempts as u32, rand::random::<f64>()).as_millis() as i64;
            sqlx::query("UPDATE webhook_outbox SET status = $1, attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $5")
                .bind(if dead { "dead" } else { "pending" })
                .bind(attempts)
                .bind(next)
                .bind(error.chars().take(500).collect::<String>())
                .bind(&due.id)
                .execute(&state.db.pool)
                .await?;
            if dead {
                tracing::warn!(delivery = %due.id, error, "webhook delivery moved to the dead-letter list");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half_and_caps() {
        let config = WebhookConfig::default();
        assert_eq!(backoff(&config, 1, 0.0), Duration::from_millis(1_000));
        assert_eq!(backoff(&config, 1, 1.0), Duration::from_millis(2_000));
        assert_eq!(backoff(&config, 3, 0.0), Duration::from_millis(4_000));
        assert_eq!(backoff(&config, 3, 1.0), Duration::from_millis(8_000));
        assert_eq!(backoff(&config, 30, 1.0), Duration::from_millis(3_600_000));
        assert_eq!(backoff(&config, 200, 0.0), Duration::from_millis(1_800_000));
    }
}
