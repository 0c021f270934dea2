//! Storage of knowledge: documents and their chunks written in one transaction, then the
//! keyword index; deletion, re-embedding, and the rebuild of the index from the database when
//! the two disagree.

use super::extract::{Chunk, DocKind};
use super::index::IndexedChunk;
use super::{KbDocument, blocking};
use crate::error::ApiError;
use crate::state::AppState;
use sqlx::Row;

/// Rebuilds the keyword index from the database when their chunk counts differ (a crash
/// between the two writes, an index from another database). Returns whether it rebuilt.
pub async fn reconcile(state: &AppState) -> Result<bool, ApiError> {
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM kb_chunks")
        .fetch_one(&state.db.pool)
        .await?
        .try_get(0)?;
    if state.rag.index.len() == stored as u64 {
        return Ok(false);
    }
    tracing::info!(
        stored,
        indexed = state.rag.index.len(),
        "rebuilding the knowledge keyword index"
    );
    let chunks = all_indexed_chunks(state).await?;
    let index = state.rag.index.clone();
    blocking(move || index.apply(&chunks, &[], true)).await?;
    Ok(true)
}

/// Every stored chunk as the keyword index holds it.
async fn all_indexed_chunks(state: &AppState) -> Result<Vec<IndexedChunk>, ApiError> {
    sqlx::query("SELECT c.id, c.agent_id, c.kb, c.document_id, c.text, d.name FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id")
        .fetch_all(&state.db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(IndexedChunk {
                id: r.try_get(0)?,
                agent: r.try_get(1)?,
                kb: r.try_get(2)?,
                document: r.try_get(3)?,
                text: contextual(&r.try_get::<String, _>(5)?, &r.try_get::<String, _>(4)?),
            })
        })
        .collect()
}
/// Stores a finished ingestion as document `name` of `agent`'s knowledge base `kb` (replacing
/// a document of that name): embeds, writes one transaction, updates the keyword index.
pub async fn store(
    state: &AppState,
    agent: &str,
    kb: &str,
    name: &str,
    kind: DocKind,
    (bytes, sha256, chunks): (usize, String, Vec<Chunk>),
) -> Result<KbDocument, ApiError> {
    let vectors = match &state.embedder {
        Some(embedder) => embedder
            .embed(chunks.iter().map(|c| contextual(name, &c.text)).collect())
            .await?
            .iter()
            .map(|v| crate::embed::pack(v))
            .collect(),
        None => vec![String::new(); chunks.len()],
    };
    let document = KbDocument {
        id: uuid::Uuid::now_v7().simple().to_string(),
        agent_id: agent.to_string(),
        kb: kb.to_string(),
        name: name.to_string(),
        content_type: kind.content_type().to_string(),
        bytes: bytes as i64,
        chunks: chunks.len() as i64,
        sha256,
        created_at: crate::db::now_ms(),
    };
    let mut tx = state.db.pool.begin().await?;
    let replaced: Vec<String> =
        sqlx::query("SELECT id FROM kb_documents WHERE agent_id = $1 AND kb = $2 AND name = $3")
            .bind(agent)
            .bind(kb)
            .bind(name)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
    for old in &replaced {
        sqlx::query("DELETE FROM kb_chunks WHERE document_id = $1")
            .bind(old)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM kb_documents WHERE id = $1")
            .bind(old)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("INSERT INTO kb_documents (id, agent_id, kb, name, content_type, bytes, chunks, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&document.id)
        .bind(agent)
        .bind(kb)
        .bind(name)
        .bind(&document.content_type)
        .bind(document.bytes)
        .bind(document.chunks)
        .bind(&document.sha256)
        .bind(document.created_at)
        .execute(&mut *tx)
        .await?;
    let mut indexed = Vec::with_capacity(chunks.len());
    for (chunk, vector) in chunks.into_iter().zip(vectors) {
        let id = uuid::Uuid::now_v7().simple().to_string();
        sqlx::query("INSERT INTO kb_chunks (id, document_id, agent_id, kb, ordinal, text, start_offset, end_offset, page, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&id)
            .bind(&document.id)
            .bind(agent)
            .bind(kb)
            .bind(chunk.ordinal as i64)
            .bind(&chunk.text)
            .bind(chunk.start as i64)
            .bind(chunk.end as i64)
            .bind(chunk.page.map(i64::from))
            .bind(vector)
            .execute(&mut *tx)
            .await?;
        indexed.push(IndexedChunk {
            id,
            agent: agent.to_string(),
            kb: kb.to_string(),
            document: document.id.clone(),
            text: contextual(name, &chunk.text),
        });
    }
    tx.commit().await?;
    state.rag.forget_vectors(agent);
    let index = state.rag.index.clone();
    if let Err(e) = blocking(move || index.apply(&indexed, &replaced, false)).await {
        // The database has it; the index will be rebuilt from it.
        tracing::error!(status = ?e.status(), "keyword index update failed; rebuilding");
        reconcile(state).await?;
    }
    Ok(document)
}

/// What is embedded and indexed for a chunk: its document's name (words of a file name are
/// often the topic: `baggage-policy.html`) before its text, so a chunk that never repeats
/// its subject is still found by it.
fn contextual(document_name: &str, text: &str) -> String {
    let title: String = document_name
        .rsplit_once('.')
        .map_or(document_name, |(stem, _)| stem)
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    format!("{}: {text}", title.trim())
}

/// Deletes a document and its chunks.
pub async fn delete_document(
    state: &AppState,
    agent: &str,
    kb: &str,
    id: &str,
) -> Result<(), ApiError> {
    let mut tx = state.db.pool.begin().await?;
    let deleted =
        sqlx::query("DELETE FROM kb_documents WHERE id = $1 AND agent_id = $2 AND kb = $3")
            .bind(id)
            .bind(agent)
            .bind(kb)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("no such document"));
    }
    sqlx::query("DELETE FROM kb_chunks WHERE document_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.rag.forget_vectors(agent);
    let index = state.rag.index.clone();
    let ids = vec![id.to_string()];
    if blocking(move || index.apply(&[], &ids, false))
        .await
        .is_err()
    {
        reconcile(state).await?;
    }
    Ok(())
}

/// Re-embeds every chunk of `agent` (after a model change) and rebuilds the keyword index.
/// Returns the chunks processed.
pub async fn reindex(state: &AppState, agent: &str) -> Result<usize, ApiError> {
    let rows = sqlx::query("SELECT id, text FROM kb_chunks WHERE agent_id = $1")
        .bind(agent)
        .fetch_all(&state.db.pool)
        .await?;
    if let Some(embedder) = &state.embedder {
        let texts: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(1))
            .collect::<Result<_, _>>()?;
        let vectors = embedder.embed(texts).await?;
        let mut tx = state.db.pool.begin().await?;
        for (row, vector) in rows.iter().zip(vectors) {
            sqlx::query("UPDATE kb_chunks SET embedding = $1 WHERE id = $2")
                .bind(crate::embed::pack(&vector))
                .bind(row.try_get::<String, _>(0)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    state.rag.forget_vectors(agent);
    let index = state.rag.index.clone();
    let stored = all_indexed_chunks(state).await?;
    blocking(move || index.apply(&stored, &[], true)).await?;
    Ok(rows.len())
}
