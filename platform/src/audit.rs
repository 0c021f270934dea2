//! Audit logger: security-relevant actions appended to a hash-chained, tamper-evident table.
//!
//! Each row's hash is SHA-256 over the previous row's hash and the row's own fields, so altering,
//! removing or reordering any row breaks [`AuditLog::verify`] from that row on; rows cut from the
//! end are caught against the last head this process appended. Appends are serialised in-process
//! (one sidecar per database).

use crate::db::{Db, now_ms};
use crate::error::PlatformError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::Mutex;
use utoipa::ToSchema;

/// The hash that precedes the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who acted (`user:<id>`, `key:<id>`, `ip:<addr>`, `system`).
    pub actor: String,
    /// What happened, e.g. `auth.login`, `access.denied`, `gdpr.delete`.
    pub action: String,
    /// What it happened to.
    pub target: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// Free-form detail (PII-redacted).
    pub detail: String,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// Result of verifying the chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Whether every entry checked out.
    pub valid: bool,
    /// How many entries were checked.
    pub checked: i64,
    /// The first entry that does not match, if any.
    pub first_bad_seq: Option<i64>,
}

/// SHA-256 over the previous hash, sequence, time and `[actor, action, target, outcome, detail]`,
/// each part length-prefixed so no two field splits hash alike.
fn entry_hash(prev: &str, seq: i64, at: i64, fields: [&str; 5]) -> String {
    let mut h = Sha256::new();
    let (seq, at) = (seq.to_string(), at.to_string());
    for part in [prev, &seq, &at].into_iter().chain(fields) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends to and verifies the audit chain.
#[derive(Debug)]
pub struct AuditLog {
    db: Db,
    head: Mutex<Option<(i64, String)>>,
}

impl AuditLog {
    /// An audit log over `db`.
    pub fn new(db: Db) -> AuditLog {
        AuditLog {
            db,
            head: Mutex::new(None),
        }
    }

    /// Appends one entry; returns its sequence number.
    pub async fn append(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<i64, PlatformError> {
        let detail = crate::redact::redact_pii(detail);
        let mut head = self.head.lock().await;
        let (last_seq, last_hash) = match head.as_ref() {
            Some(h) => h.clone(),
            None => {
                let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&self.db.pool)
                    .await?;
                match row {
                    Some(r) => (r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?),
                    None => (0, GENESIS_HASH.to_string()),
                }
            }
        };
        let seq = last_seq + 1;
        let at = now_ms();
        let hash = entry_hash(
            &last_hash,
            seq,
            at,
            [actor, action, target, outcome, &detail],
        );
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, target, outcome, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(outcome)
        .bind(detail)
        .bind(last_hash)
        .bind(hash.clone())
        .execute(&self.db.pool)
        .await?;
        *head = Some((seq, hash));
        Ok(seq)
    }

    /// The most recent entries, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<AuditEntry>, PlatformError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash \
             FROM audit_log ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(row_to_entry).collect()
    }

    /// Entries whose actor is `actor`, oldest first.
    pub async fn by_actor(&self, actor: &str) -> Result<Vec<AuditEntry>, PlatformError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash \
             FROM audit_log WHERE actor = $1 ORDER BY seq",
        )
        .bind(actor)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(row_to_entry).collect()
    }

    /// Recomputes the chain from the start, in pages.
    pub async fn verify(&self) -> Result<AuditVerification, PlatformError> {
        let head = self.head.lock().await;
        let mut prev = GENESIS_HASH.to_string();
        let mut expected_seq = 1;
        let mut checked = 0;
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash \
                 FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1000",
            )
            .bind(expected_seq)
            .fetch_all(&self.db.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let e = row_to_entry(row)?;
                let recomputed = entry_hash(
                    &prev,
                    e.seq,
                    e.at,
                    [&e.actor, &e.action, &e.target, &e.outcome, &e.detail],
                );
                if e.seq != expected_seq || e.prev_hash != prev || e.hash != recomputed {
                    return Ok(AuditVerification {
                        valid: false,
                        checked,
                        first_bad_seq: Some(expected_seq.min(e.seq)),
                    });
                }
                checked += 1;
                expected_seq += 1;
                prev = e.hash;
            }
        }
        // Rows cut from the end leave a valid prefix; the head this process appended last catches that.
        if let Some((head_seq, head_hash)) = head.as_ref()
            && (*head_seq != expected_seq - 1 || *head_hash != prev)
        {
            return Ok(AuditVerification {
                valid: false,
                checked,
                first_bad_seq: Some(expected_seq.min(*head_seq)),
            });
        }
        Ok(AuditVerification {
            valid: true,
            checked,
            first_bad_seq: None,
        })
    }
}

fn row_to_entry(r: &sqlx::any::AnyRow) -> Result<AuditEntry, PlatformError> {
    Ok(AuditEntry {
        seq: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        target: r.try_get(4)?,
        outcome: r.try_get(5)?,
        detail: r.try_get(6)?,
        prev_hash: r.try_get(7)?,
        hash: r.try_get(8)?,
    })
}
