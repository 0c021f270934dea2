//! RAG engine: knowledge bases per agent. Documents (text, Markdown, HTML, PDF) are extracted,
//! cleaned and chunked with overlap and source positions as they stream in; chunks are embedded
//! with MiniLM and indexed for BM25 (tantivy). Retrieval fuses the keyword ranking and the
//! embedding ranking by reciprocal rank and answers with citations.
//!
//! Storage order keeps "nothing half-stored": everything is extracted, chunked and embedded
//! first; the document and its chunks are written in one transaction; the keyword index follows
//! (and is rebuilt from the database whenever the two disagree).

pub mod extract;
pub mod index;
pub mod routes;

use crate::error::{ApiError, PlatformError};
use crate::state::AppState;
use extract::{Chunk, Chunker, DocKind, HtmlText, MarkdownText, Utf8Stream};
use index::{IndexedChunk, KeywordIndex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use utoipa::ToSchema;

/// Candidates each ranking contributes to the fusion.
const CANDIDATES: usize = 50;
/// Reciprocal-rank-fusion constant (Cormack et al.).
const RRF_K: f32 = 60.0;
/// Most passages one search returns.
pub const MAX_PASSAGES: usize = 20;

/// Settings of the RAG engine (`[platform.rag]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RagConfig {
    /// Largest document accepted, in bytes. Default 20 MiB.
    pub max_document_bytes: usize,
    /// Most chunks one document may make. Default 5000.
    pub max_chunks_per_document: usize,
    /// Target chunk length in characters. Default 800.
    pub chunk_chars: usize,
    /// Characters shared by consecutive chunks. Default 150.
    pub overlap_chars: usize,
    /// Largest decompressed content of one PDF page, in bytes. Default 8 MiB.
    pub max_pdf_page_bytes: usize,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            max_document_bytes: 20 * 1024 * 1024,
            max_chunks_per_document: 5000,
            chunk_chars: 800,
            overlap_chars: 150,
            max_pdf_page_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A stored knowledge-base document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KbDocument {
    /// Document id.
    pub id: String,
    /// Owning agent.
    pub agent_id: String,
    /// Knowledge base name.
    pub kb: String,
    /// Name given at upload (unique per knowledge base: re-uploading replaces).
    pub name: String,
    /// Its content type.
    pub content_type: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Chunks made.
    pub chunks: i64,
    /// SHA-256 of the content.
    pub sha256: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A retrieved passage with its citation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Passage {
    /// The chunk's text.
    pub text: String,
    /// Source document id.
    pub document_id: String,
    /// Source document name.
    pub document_name: String,
    /// Knowledge base.
    pub kb: String,
    /// Chunk number within the document.
    pub chunk: i64,
    /// Character offsets in the document's extracted text.
    pub start: i64,
    /// End offset.
    pub end: i64,
    /// PDF page, when known.
    pub page: Option<i64>,
    /// Fused score (reciprocal-rank sum; higher is better).
    pub score: f32,
    /// Rank in the BM25 list (1-based), if there.
    pub keyword_rank: Option<usize>,
    /// Rank in the embedding list (1-based), if there.
    pub vector_rank: Option<usize>,
    /// Human-readable citation, e.g. `guide.md §3 (chars 1200–1980)`.
    pub citation: String,
}

struct VectorRow {
    chunk_id: String,
    kb: String,
    vector: Vec<f32>,
}

/// The engine's in-process parts: the keyword index and a cache of each agent's vectors.
pub struct Rag {
    index: Arc<KeywordIndex>,
    vectors: RwLock<HashMap<String, Arc<Vec<VectorRow>>>>,
}

impl std::fmt::Debug for Rag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rag").finish_non_exhaustive()
    }
}

impl Rag {
    /// Opens the keyword index under `data_dir/rag-index`.
    pub fn open(data_dir: &std::path::Path) -> Result<Rag, PlatformError> {
        Ok(Rag {
            index: Arc::new(KeywordIndex::open(&data_dir.join("rag-index"))?),
            vectors: RwLock::new(HashMap::new()),
        })
    }

    fn forget_vectors(&self, agent: &str) {
        if let Ok(mut cache) = self.vectors.write() {
            cache.remove(agent);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PlatformError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

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

/// Turns an upload into chunks as it streams in, within the configured bounds.
pub struct Ingestion {
    kind: DocKind,
    config: RagConfig,
    utf8: Utf8Stream,
    markdown: MarkdownText,
    html: HtmlText,
    chunker: Chunker,
    chunks: Vec<Chunk>,
    pdf: Vec<u8>,
    bytes: usize,
    hash: Sha256,
}

impl Ingestion {
    /// Starts an ingestion of a `kind` document.
    pub fn new(kind: DocKind, config: &RagConfig) -> Ingestion {
        Ingestion {
            kind,
            config: config.clone(),
            utf8: Utf8Stream::default(),
            markdown: MarkdownText::default(),
            html: HtmlText::default(),
            chunker: Chunker::new(config.chunk_chars, config.overlap_chars),
            chunks: Vec::new(),
            pdf: Vec::new(),
            bytes: 0,
            hash: Sha256::new(),
        }
    }

    fn text(&mut self, decoded: &str) {
        let cleaned = match self.kind {
            DocKind::Text => decoded.to_string(),
            DocKind::Markdown => self.markdown.push(decoded),
            DocKind::Html => self.html.push(decoded),
            DocKind::Pdf => return,
        };
        self.chunker.push(&cleaned);
    }

    fn check_chunks(&mut self) -> Result<(), ApiError> {
        self.chunks.extend(self.chunker.take());
        if self.chunks.len() > self.config.max_chunks_per_document {
            return Err(ApiError::payload_too_large(format!(
                "the document makes more than {} chunks; split it",
                self.config.max_chunks_per_document
            )));
        }
        Ok(())
    }

    /// Feeds the next piece of the upload.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), ApiError> {
        self.bytes += piece.len();
        if self.bytes > self.config.max_document_bytes {
            return Err(ApiError::payload_too_large(format!(
                "the document is larger than {} bytes",
                self.config.max_document_bytes
            )));
        }
        self.hash.update(piece);
        if self.kind == DocKind::Pdf {
            self.pdf.extend_from_slice(piece);
            return Ok(());
        }
        let decoded = self.utf8.push(piece);
        self.text(&decoded);
        self.check_chunks()
    }

    /// Ends the upload: (size, sha256, chunks). A PDF is parsed here (blocking work).
    pub async fn finish(mut self) -> Result<(usize, String, Vec<Chunk>), ApiError> {
        let rest = std::mem::take(&mut self.utf8).finish();
        self.text(&rest);
        match self.kind {
            DocKind::Markdown => {
                let last = std::mem::take(&mut self.markdown).finish();
                self.chunker.push(&last);
            }
            DocKind::Pdf => {
                let bytes = std::mem::take(&mut self.pdf);
                let limit = self.config.max_pdf_page_bytes;
                let pages = tokio::task::spawn_blocking(move || extract::pdf_pages(&bytes, limit))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|e| ApiError::unprocessable(format!("PDF: {e}")))?;
                for (number, text) in pages {
                    self.chunker.set_page(number);
                    self.chunker.push(&text);
                    self.chunker.push("\n");
                    self.check_chunks()?;
                }
            }
            _ => {}
        }
        self.check_chunks()?;
        let (bytes, hash) = (self.bytes, hex::encode(self.hash.finalize_reset()));
        let mut chunks = self.chunks;
        chunks.extend(self.chunker.finish());
        if chunks.len() > self.config.max_chunks_per_document {
            return Err(ApiError::payload_too_large(format!(
                "the document makes more than {} chunks; split it",
                self.config.max_chunks_per_document
            )));
        }
        chunks.retain(|c| c.text.chars().any(char::is_alphanumeric));
        if chunks.is_empty() {
            return Err(ApiError::unprocessable(match self.kind {
                DocKind::Pdf => "the PDF has no extractable text (a scan? run OCR first)",
                _ => "the document has no text",
            }));
        }
        for (i, c) in chunks.iter_mut().enumerate() {
            c.ordinal = i;
        }
        Ok((bytes, hash, chunks))
    }
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
