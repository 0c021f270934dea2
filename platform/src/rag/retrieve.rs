//! Hybrid retrieval: BM25 from the keyword index and cosine similarity over each agent's cached
//! MiniLM vectors, fused by reciprocal rank, answered as passages with citations.

use super::{MAX_PASSAGES, Passage, blocking};
use crate::error::ApiError;
use crate::state::AppState;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;

/// Candidates each ranking contributes to the fusion.
const CANDIDATES: usize = 50;
/// Reciprocal-rank-fusion constant (Cormack et al.).
const RRF_K: f32 = 60.0;

/// One chunk's embedding, as cached per agent.
pub(super) struct VectorRow {
    chunk_id: String,
    kb: String,
    vector: Vec<f32>,
}

async fn agent_vectors(state: &AppState, agent: &str) -> Result<Arc<Vec<VectorRow>>, ApiError> {
    if let Some(v) = state
        .rag
        .vectors
        .read()
        .map_err(ApiError::internal)?
        .get(agent)
    {
        return Ok(v.clone());
    }
    let rows = sqlx::query("SELECT id, kb, embedding FROM kb_chunks WHERE agent_id = $1")
        .bind(agent)
        .fetch_all(&state.db.pool)
        .await?;
    let mut vectors = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(vector) =
            crate::embed::unpack(&r.try_get::<String, _>(2)?).filter(|v| !v.is_empty())
        {
            vectors.push(VectorRow {
                chunk_id: r.try_get(0)?,
                kb: r.try_get(1)?,
                vector,
            });
        }
    }
    let vectors = Arc::new(vectors);
    state
        .rag
        .vectors
        .write()
        .map_err(ApiError::internal)?
        .insert(agent.to_string(), vectors.clone());
    Ok(vectors)
}

/// Fuses ranked lists of ids by reciprocal rank: (id, score, rank in each list).
pub fn fuse(lists: &[Vec<String>]) -> Vec<(String, f32, Vec<Option<usize>>)> {
    let mut fused: HashMap<&str, (f32, Vec<Option<usize>>)> = HashMap::new();
    for (l, list) in lists.iter().enumerate() {
        for (rank, id) in list.iter().enumerate() {
            let entry = fused
                .entry(id.as_str())
                .or_insert_with(|| (0.0, vec![None; lists.len()]));
            entry.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
            entry.1[l] = Some(rank + 1);
        }
    }
    let mut out: Vec<_> = fused
        .into_iter()
        .map(|(id, (score, ranks))| (id.to_string(), score, ranks))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Hybrid retrieval over `agent`'s knowledge (one `kb` or all): the `limit` best passages.
pub async fn search(
    state: &AppState,
    agent: &str,
    kb: Option<&str>,
    query: &str,
    limit: usize,
) -> Result<Vec<Passage>, ApiError> {
    let limit = limit.clamp(1, MAX_PASSAGES);
    let index = state.rag.index.clone();
    let (a, k, q) = (agent.to_string(), kb.map(String::from), query.to_string());
    let keyword: Vec<String> = blocking(move || index.search(&a, k.as_deref(), &q, CANDIDATES))
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut semantic = Vec::new();
    if let Some(embedder) = &state.embedder {
        let query_vector = embedder.embed_one(query).await?;
        let vectors = agent_vectors(state, agent).await?;
        let mut scored: Vec<(&str, f32)> = vectors
            .iter()
            .filter(|row| kb.is_none_or(|kb| row.kb == kb))
            .map(|row| {
                (
                    row.chunk_id.as_str(),
                    crate::embed::dot(&row.vector, &query_vector),
                )
            })
            .collect();
        let take = CANDIDATES.min(scored.len());
        if take > 0 {
            scored.select_nth_unstable_by(take - 1, |a, b| b.1.total_cmp(&a.1));
            scored.truncate(take);
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
        semantic = scored.into_iter().map(|(id, _)| id.to_string()).collect();
    }
    let fused: Vec<_> = fuse(&[keyword, semantic]).into_iter().take(limit).collect();
    if fused.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=fused.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT c.id, c.text, c.document_id, d.name, c.kb, c.ordinal, c.start_offset, c.end_offset, c.page FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id WHERE c.id IN ({})",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (id, _, _) in &fused {
        q = q.bind(id.clone());
    }
    let rows = q.fetch_all(&state.db.pool).await?;
    let mut by_id: HashMap<String, sqlx::any::AnyRow> = HashMap::new();
    for r in rows {
        by_id.insert(r.try_get(0)?, r);
    }
    let mut passages = Vec::with_capacity(fused.len());
    for (id, score, ranks) in fused {
        let Some(r) = by_id.get(&id) else { continue };
        let (name, chunk, start, end, page): (String, i64, i64, i64, Option<i64>) = (
            r.try_get(3)?,
            r.try_get(5)?,
            r.try_get(6)?,
            r.try_get(7)?,
            r.try_get(8)?,
        );
        let citation = match page {
            Some(p) => format!("{name} p.{p} §{} (chars {start}–{end})", chunk + 1),
            None => format!("{name} §{} (chars {start}–{end})", chunk + 1),
        };
        passages.push(Passage {
            text: r.try_get(1)?,
            document_id: r.try_get(2)?,
            document_name: name,
            kb: r.try_get(4)?,
            chunk,
            start,
            end,
            page,
            score,
            keyword_rank: ranks[0],
            vector_rank: ranks[1],
            citation,
        });
    }
    Ok(passages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocal_rank_fusion_rewards_agreement() {
        let a = vec!["x".to_string(), "y".into(), "z".into()];
        let b = vec!["y".to_string(), "w".into()];
        let fused = fuse(&[a, b]);
        assert_eq!(fused[0].0, "y");
        assert_eq!(fused[0].2, vec![Some(2), Some(1)]);
        assert_eq!(fused.len(), 4);
    }
}
