//! The notification retry outbox. The first attempt of a send is made while the caller waits
//! (its answer is unchanged: 201 when sent, 502 when the provider failed); a failed attempt is
//! kept as `pending` with its message and retried by [`pass`] with exponential back-off
//! (`notify.retry_base_ms · 2^(attempt-1)`, capped at `notify.retry_max_ms`, the upper half
//! jitter) until it is `sent` or has failed `notify.max_attempts` times (`failed`). The message
//! is kept only while it is pending. Claims take a lease, so two sidecars on one database do not
//! both retry a message.

use super::Channel;
use super::channels::{self, Outbound};
use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::time::Duration;

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
            finish(
                state,
                &id,
                attempts,
                "failed",
                "the kept message is unreadable",
                None,
                None,
            )
            .await?;
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
