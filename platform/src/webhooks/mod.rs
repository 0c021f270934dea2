//! Webhook manager: outgoing webhooks per subscription (topic patterns → URL), signed
//! HMAC-SHA256 over `id.timestamp.body` (Standard Webhooks headers), delivered at least once
//! through a transactional outbox with exponential backoff and jitter, a dead-letter list with
//! replay; incoming webhooks verified by the same signature; every target URL checked against
//! SSRF (no loopback, private, link-local … unless `allow_private_targets`).

mod dispatcher;
pub mod routes;
pub mod ssrf;

pub use dispatcher::{Dispatcher, backoff, tick};

use crate::events::{Event, topic_matches};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use sqlx::Row;
use std::collections::BTreeMap;

/// Header carrying the event id (the receiver's dedup key).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the unix-seconds timestamp that was signed.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying `v1,<base64 HMAC-SHA256>` (space-separated when several).
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Incoming signatures older or newer than this are refused (replay protection).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// Prefix of generated secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// Settings of the webhook manager (`[platform.webhooks]`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Allow targets on loopback/private/link-local addresses (tests, on-premises). Default false.
    pub allow_private_targets: bool,
    /// Attempts before a delivery goes to the dead-letter list. Default 12.
    pub max_attempts: u32,
    /// First retry delay in milliseconds (doubles each attempt, with jitter). Default 2000.
    pub base_backoff_ms: u64,
    /// Longest retry delay in milliseconds. Default 3 600 000 (1 h).
    pub max_backoff_ms: u64,
    /// Per-delivery timeout in milliseconds. Default 10 000.
    pub timeout_ms: u64,
    /// How often the outbox is polled when nothing wakes the dispatcher (ms). Default 1000.
    pub poll_ms: u64,
    /// Deliveries in flight at once. Default 8.
    pub concurrency: usize,
    /// Secrets of incoming webhook sources: `{ crm = "whsec_…" }` → `POST /v1/webhooks/incoming/crm`.
    pub incoming: BTreeMap<String, String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            max_attempts: 12,
            base_backoff_ms: 2_000,
            max_backoff_ms: 3_600_000,
            timeout_ms: 10_000,
            poll_ms: 1_000,
            concurrency: 8,
            incoming: BTreeMap::new(),
        }
    }
}

fn secret_bytes(secret: &str) -> Vec<u8> {
    use base64::Engine;
    let raw = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_else(|_| raw.as_bytes().to_vec())
}

/// A new random signing secret (`whsec_<base64 of 32 bytes>`).
pub fn generate_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `webhook-signature` value for a delivery: `v1,<base64 HMAC-SHA256(id.timestamp.body)>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret_bytes(secret)).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Why an incoming signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Headers missing or malformed.
    #[error("missing or malformed webhook-id / webhook-timestamp / webhook-signature headers")]
    Malformed,
    /// The timestamp is outside the tolerance window.
    #[error("timestamp outside the {SIGNATURE_TOLERANCE_SECS} s tolerance (replay?)")]
    Stale,
    /// No signature matched.
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies a delivery's signature header (any of its space-separated `v1,` signatures) in
/// constant time, and that `timestamp` is within the tolerance of `now_secs`.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signatures: &str,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed)?;
    if id.is_empty() || signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now_secs - ts).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = sign(secret, id, ts, body);
    let matched = signatures
        .split(' ')
        .any(|s| crate::auth::tokens::constant_time_eq(s, &expected));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Queues a delivery of `event` for every subscription whose patterns match its topic, inside
/// the publishing transaction. Returns how many were queued.
pub(crate) async fn enqueue(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &Event,
) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query("SELECT id, topics FROM webhook_subscriptions")
        .fetch_all(&mut **tx)
        .await?;
    let mut queued = 0;
    for row in rows {
        let (id, topics): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if !topics.split(',').any(|p| topic_matches(p, &event.topic)) {
            continue;
        }
        sqlx::query("INSERT INTO webhook_outbox (id, subscription_id, event_id, status, attempts, next_attempt_at, last_error, created_at) VALUES ($1, $2, $3, 'pending', 0, $4, '', $4)")
            .bind(uuid::Uuid::now_v7().simple().to_string())
            .bind(id)
            .bind(&event.id)
            .bind(event.at)
            .execute(&mut **tx)
            .await?;
        queued += 1;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let secret = generate_secret();
        let sig = sign(&secret, "evt1", 1_700_000_000, b"{\"a\":1}");
        assert!(
            verify(
                &secret,
                "evt1",
                "1700000000",
                b"{\"a\":1}",
                &sig,
                1_700_000_100
            )
            .is_ok()
        );
        let both = format!("v1,AAAA {sig}");
        assert!(
            verify(
                &secret,
                "evt1",
                "1700000000",
                b"{\"a\":1}",
                &both,
                1_700_000_000
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                &secret,
                "evt1",
                "1700000000",
                b"{\"a\":2}",
                &sig,
                1_700_000_000
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &secret,
                "evt2",
                "1700000000",
                b"{\"a\":1}",
                &sig,
                1_700_000_000
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &secret,
                "evt1",
                "1700000000",
                b"{\"a\":1}",
                &sig,
                1_700_001_000
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&secret, "evt1", "soon", b"", &sig, 0),
            Err(SignatureError::Malformed)
        );
    }
}
