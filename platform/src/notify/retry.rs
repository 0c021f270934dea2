//! The notification retry outbox. The first attempt of a send is made while the caller waits
//! (its answer is unchanged: 201 when sent, 502 when the provider failed); a failed attempt is
//! kept as `pending` with its message and retried by [`pass`] with exponential back-off
//! (`notify.retry_base_ms · 2^(attempt-1)`, capped at `notify.retry_max_ms`, the upper half
//! jitter) until it is `sent` or has failed `notify.max_attempts` times (`failed`). The message
//! is kept only while it is pending. Claims take a lease, so two sidecars on one database do not
//! both retry a message.
//!
//! Each failed attempt is published: `notification.retrying` when another is scheduled,
//! `notification.failed` when none is left. The events carry the notification's id, user,
//! channel, attempt count, next attempt time and the provider's error, never the address or the
//! message.

use super::Channel;
use super::channels::{self, Outbound};
use crate::db::now_ms;
use crate::error::ApiError;
use crate::events::{Event, publish};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use std::time::Duration;

/// Topic of a failed delivery attempt after which another is scheduled.
pub const TOPIC_RETRYING: &str = "notification.retrying";
/// Topic of a notification given up: its last allowed attempt failed.
pub const TOPIC_FAILED: &str = "notification.failed";

/// How often [`pass`] looks for due retries.
pub(crate) const RETRY_POLL: Duration = Duration::from_millis(250);
/// Due retries claimed per pass.
const CLAIM_BATCH: i64 = 32;

/// What a pending notification keeps for its retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// Address, phone number or device token.
    pub to: String,
    /// Subject / title.
    pub subject: String,
    /// The text.
    pub body: String,
}

/// The delay before retry number `attempt` (1-based count of failed attempts so far): in
/// [d/2, d] for d = `base · 2^(attempt-1)` capped at `max`.
pub fn retry_delay(base_ms: u64, max_ms: u64, attempt: u32, jitter: f64) -> Duration {
    let full = base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(40))
        .min(max_ms);
    let half = full / 2;
    Duration::from_millis(half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

/// Sends `message` on `channel` through its configured adapter.
pub(crate) async fn deliver(
    state: &AppState,
    channel: Channel,
    message: &Outbound<'_>,
) -> Result<String, String> {
    let notifier = &state.notify;
    let config = &notifier.config;
    match channel {
        Channel::Email => match &config.smtp {
            Some(c) => channels::send_email(notifier, c, message).await,
            None => Err("email is not configured".into()),
        },
        Channel::Sms => match &config.sms {
            Some(c) => channels::send_sms(notifier, c, message).await,
            None => Err("sms is not configured".into()),
        },
        Channel::Push => match &config.push {
            Some(c) => channels::send_push(notifier, c, message).await,
            None => Err("push is not configured".into()),
        },
    }
}

/// The status, next attempt time and kept message after `attempts` attempts whose last one
/// ended in `outcome`.
pub(crate) fn after_attempt(
    state: &AppState,
    attempts: i64,
    outcome: &Result<String, String>,
    pending: &Pending,
) -> (&'static str, Option<i64>, Option<String>) {
    let config = &state.notify.config;
    match outcome {
        Ok(_) => ("sent", None, None),
        Err(_) if attempts >= i64::from(config.max_attempts.max(1)) => ("failed", None, None),
        Err(_) => {
            let delay = retry_delay(
                config.retry_base_ms,
                config.retry_max_ms,
                attempts as u32,
                rand::random::<f64>(),
            );
            (
                "pending",
                Some(now_ms() + delay.as_millis() as i64),
                serde_json::to_string(pending).ok(),
            )
        }
    }
}

/// How an attempt on a notification ended, as its event tells it.
pub(crate) struct Attempted<'a> {
    /// The notification.
    pub id: &'a str,
    /// Its recipient's user id.
    pub user_id: &'a str,
    /// `email`, `sms` or `push`.
    pub channel: &'a str,
    /// Attempts made so far, this one included.
    pub attempts: i64,
    /// The status after it: `sent`, `pending` or `failed`.
    pub status: &'a str,
    /// Unix milliseconds of the next attempt, while `pending`.
    pub next_attempt_at: Option<i64>,
    /// What the provider answered or why the attempt failed.
    pub detail: &'a str,
}

/// Publishes `notification.retrying` or `notification.failed` for a failed attempt (nothing for
/// a sent one). The attempt is already recorded, so a bus failure is logged, not returned.
pub(crate) async fn announce(state: &AppState, attempted: &Attempted<'_>) {
    let topic = match attempted.status {
        "pending" => TOPIC_RETRYING,
        "failed" => TOPIC_FAILED,
        _ => return,
    };
    let mut data = json!({
        "notification_id": attempted.id,
        "user_id": attempted.user_id,
        "channel": attempted.channel,
        "attempt": attempted.attempts,
        "max_attempts": state.notify.config.max_attempts.max(1),
        "error": attempted.detail,
    });
    if let Some(next) = attempted.next_attempt_at {
        data["next_attempt_at"] = json!(next);
    }
    if let Err(e) = publish(state, Event::new(topic, "platform", data)).await {
        tracing::warn!(status = ?e.status(), topic, "could not publish a notification event");
    }
}

/// Retries the pending notifications that are due (run every [`RETRY_POLL`] by the state).
pub(crate) async fn pass(state: &AppState) -> Result<(), ApiError> {
    let now = now_ms();
    let rows = sqlx::query("SELECT id, user_id, channel, attempts, next_attempt_at, payload FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2")
        .bind(now)
        .bind(CLAIM_BATCH)
        .fetch_all(&state.db.pool)
        .await?;
    let lease = now + state.notify.timeout().as_millis() as i64 * 2 + 5_000;
    for row in rows {
        let id: String = row.try_get(0)?;
        let user_id: String = row.try_get(1)?;
        let channel_name: String = row.try_get(2)?;
        let attempts: i64 = row.try_get(3)?;
        let due: i64 = row.try_get(4)?;
        let payload: Option<String> = row.try_get(5)?;
        let won = sqlx::query("UPDATE notifications SET next_attempt_at = $1 WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3")
            .bind(lease)
            .bind(&id)
            .bind(due)
            .execute(&state.db.pool)
            .await?
            .rows_affected();
        if won != 1 {
            continue;
        }
        let channel = Channel::parse(&channel_name);
        let pending = payload.and_then(|p| serde_json::from_str::<Pending>(&p).ok());
        let (Some(channel), Some(pending)) = (channel, pending) else {
            let detail = "the kept message is unreadable";
            finish(state, &id, attempts, "failed", detail, None, None).await?;
            let attempted = Attempted {
                id: &id,
                user_id: &user_id,
                channel: &channel_name,
                attempts,
                status: "failed",
                next_attempt_at: None,
                detail,
            };
            announce(state, &attempted).await;
            continue;
        };
        let outbound = Outbound {
            id: &id,
            user_id: &user_id,
            to: &pending.to,
            subject: &pending.subject,
            body: &pending.body,
        };
        let outcome = deliver(state, channel, &outbound).await;
        let attempts = attempts + 1;
        let (status, next, keep) = after_attempt(state, attempts, &outcome, &pending);
        let detail = match &outcome {
            Ok(d) | Err(d) => d.clone(),
        };
        finish(state, &id, attempts, status, &detail, next, keep).await?;
        state
            .audit("platform", "notify.retry", &id, status, &channel_name)
            .await;
        let attempted = Attempted {
            id: &id,
            user_id: &user_id,
            channel: &channel_name,
            attempts,
            status,
            next_attempt_at: next,
            detail: &detail,
        };
        announce(state, &attempted).await;
    }
    Ok(())
}

async fn finish(
    state: &AppState,
    id: &str,
    attempts: i64,
    status: &str,
    detail: &str,
    next: Option<i64>,
    keep: Option<String>,
) -> Result<(), ApiError> {
    sqlx::query("UPDATE notifications SET status = $1, detail = $2, attempts = $3, next_attempt_at = $4, payload = $5, at = $6 WHERE id = $7")
        .bind(status)
        .bind(detail)
        .bind(attempts)
        .bind(next)
        .bind(keep)
        .bind(now_ms())
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_within_its_jitter_and_is_capped() {
        assert_eq!(
            retry_delay(1000, 60_000, 1, 0.0),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_delay(1000, 60_000, 1, 1.0),
            Duration::from_millis(1000)
        );
        assert_eq!(
            retry_delay(1000, 60_000, 3, 1.0),
            Duration::from_millis(4000)
        );
        assert_eq!(
            retry_delay(1000, 60_000, 30, 1.0),
            Duration::from_millis(60_000)
        );
        assert_eq!(
            retry_delay(1000, 60_000, 0, 1.0),
            Duration::from_millis(1000)
        );
    }
}
