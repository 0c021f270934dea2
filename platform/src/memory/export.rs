//! The memory of one user for GDPR: the namespaces a user (signed in, not through a key)
//! created, with their live keys and facts, exported or deleted with the user; grants held by the
//! user are revoked with the account.

use super::facts::Fact;
use super::keys::MemoryEntry;
use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use utoipa::ToSchema;

/// One namespace of a user's export.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NamespaceExport {
    /// The namespace.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Its live entries.
    pub entries: Vec<MemoryEntry>,
    /// Its live facts (without embeddings).
    pub facts: Vec<Fact>,
}

/// The namespaces user `user_id` created, with their live contents.
pub(crate) async fn of_user(
    state: &AppState,
    user_id: &str,
) -> Result<Vec<NamespaceExport>, ApiError> {
    let now = now_ms();
    let namespaces = sqlx::query(
        "SELECT name, created_at FROM memory_namespaces WHERE owner_user_id = $1 ORDER BY name",
    )
    .bind(user_id)
    .fetch_all(&state.db.pool)
    .await?;
    let mut out = Vec::with_capacity(namespaces.len());
    for ns in &namespaces {
        let name: String = ns.try_get(0)?;
        let entries = sqlx::query("SELECT mkey, value, expires_at, created_at, updated_at, updated_by FROM memory_entries WHERE namespace = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY mkey")
            .bind(&name)
            .bind(now)
            .fetch_all(&state.db.pool)
            .await?
            .iter()
            .map(|r| {
                let value: String = r.try_get(1)?;
                Ok(MemoryEntry {
                    namespace: name.clone(),
                    key: r.try_get(0)?,
                    value: serde_json::from_str(&value).unwrap_or(Value::String(value)),
                    expires_at: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                    updated_by: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let facts = sqlx::query("SELECT id, text, metadata, expires_at, created_at, created_by FROM memory_facts WHERE namespace = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY id")
            .bind(&name)
            .bind(now)
            .fetch_all(&state.db.pool)
            .await?
            .iter()
            .map(|r| {
                let metadata: String = r.try_get(2)?;
                Ok(Fact {
                    id: r.try_get(0)?,
                    namespace: name.clone(),
                    text: r.try_get(1)?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    expires_at: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    created_by: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out.push(NamespaceExport {
            name,
            created_at: ns.try_get(1)?,
            entries,
            facts,
        });
    }
    Ok(out)
}

/// Deletes the namespaces user `user_id` created and the grants the user holds, inside `tx`;
/// returns how many namespaces went.
pub(crate) async fn delete_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
) -> Result<u64, ApiError> {
    let names: Vec<String> =
        sqlx::query("SELECT name FROM memory_namespaces WHERE owner_user_id = $1")
            .bind(user_id)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
    for name in &names {
        super::grants::delete_all(tx, name).await?;
    }
    sqlx::query("DELETE FROM memory_grants WHERE principal = $1")
        .bind(format!("user:{user_id}"))
        .execute(&mut **tx)
        .await?;
    Ok(names.len() as u64)
}
