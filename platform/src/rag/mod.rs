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
mod ingest;
mod retrieve;
pub mod routes;
mod store;

pub use ingest::Ingestion;
pub use retrieve::{fuse, search};
pub use store::{delete_document, reconcile, reindex, store};

use crate::error::{ApiError, PlatformError};
use index::KeywordIndex;
use retrieve::VectorRow;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use utoipa::ToSchema;

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
