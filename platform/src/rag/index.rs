//! The BM25 side of retrieval: a tantivy index of every chunk (English stemming), with agent and
//! knowledge-base fields to filter on. The database is the source of truth; this index is
//! rebuilt from it when they disagree (startup after a crash, `reindex`).

use crate::error::PlatformError;
use std::path::Path;
use std::sync::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

/// The analyzer of chunk text and queries: words, lowercased, English stop words dropped
/// (questions are full of them), stemmed.
const ANALYZER: &str = "en_stem_stop";

/// Memory the index writer may buffer before flushing a segment.
const WRITER_MEMORY_BYTES: usize = 50_000_000;

fn index_error(e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Config(format!("search index: {e}"))
}

/// What to put in the index for one chunk.
#[derive(Debug, Clone)]
pub struct IndexedChunk {
    /// Chunk id (database key).
    pub id: String,
    /// Owning agent.
    pub agent: String,
    /// Knowledge base.
    pub kb: String,
    /// Document id.
    pub document: String,
    /// Searchable text.
    pub text: String,
}

/// The keyword index.
pub struct KeywordIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    chunk_id: Field,
    agent: Field,
    kb: Field,
    document: Field,
    text: Field,
}

impl std::fmt::Debug for KeywordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeywordIndex").finish_non_exhaustive()
    }
}

impl KeywordIndex {
    /// Opens (or creates) the index in `dir`.
    pub fn open(dir: &Path) -> Result<KeywordIndex, PlatformError> {
        std::fs::create_dir_all(dir)?;
        let mut builder = Schema::builder();
        let chunk_id = builder.add_text_field("chunk_id", STRING | STORED);
        let agent = builder.add_text_field("agent", STRING);
        let kb = builder.add_text_field("kb", STRING);
        let document = builder.add_text_field("document", STRING);
        let text = builder.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let schema = builder.build();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(index_error)?;
        let index = Index::open_or_create(directory, schema).map_err(index_error)?;
        use tantivy::tokenizer::{
            Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
            TextAnalyzer,
        };
        let stop_words = StopWordFilter::new(Language::English)
            .ok_or_else(|| index_error("no English stop words"))?;
        index.tokenizers().register(
            ANALYZER,
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .filter(stop_words)
                .filter(Stemmer::new(Language::English))
                .build(),
        );
        let writer = index.writer(WRITER_MEMORY_BYTES).map_err(index_error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_error)?;
        Ok(KeywordIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            chunk_id,
            agent,
            kb,
            document,
            text,
        })
    }

    /// Chunks in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds chunks and removes documents, committed together. Blocking: call from a blocking
    /// thread.
    pub fn apply(
        &self,
        add: &[IndexedChunk],
        remove_documents: &[String],
        remove_all: bool,
    ) -> Result<(), PlatformError> {
        let mut writer = self.writer.lock().map_err(index_error)?;
        if remove_all {
            writer.delete_all_documents().map_err(index_error)?;
        }
        for document in remove_documents {
            writer.delete_term(Term::from_field_text(self.document, document));
        }
        for chunk in add {
            writer
                .add_document(doc!(
                    self.chunk_id => chunk.id.as_str(),
                    self.agent => chunk.agent.as_str(),
                    self.kb => chunk.kb.as_str(),
                    self.document => chunk.document.as_str(),
                    self.text => chunk.text.as_str(),
                ))
                .map_err(index_error)?;
        }
        writer.commit().map_err(index_error)?;
        drop(writer);
        self.reader.reload().map_err(index_error)
    }

    /// The `limit` best chunk ids for `query` by BM25 within `agent` (and `kb` when given),
    /// best first. Blocking.
    pub fn search(
        &self,
        agent: &str,
        kb: Option<&str>,
        query: &str,
        limit: usize,
    ) -> Result<Vec<(String, f32)>, PlatformError> {
        // Natural questions: any word may match (OR); BM25 ranks documents with more of them.
        let cleaned: String = query
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        let words: Vec<&str> = cleaned.split_whitespace().take(64).collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        let (text_query, _errors) = parser.parse_query_lenient(&words.join(" "));
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.agent, agent),
                    IndexRecordOption::Basic,
                )),
            ),
            (Occur::Must, text_query),
        ];
        if let Some(kb) = kb {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.kb, kb),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(
                &BooleanQuery::new(clauses),
                &TopDocs::with_limit(limit.max(1)).order_by_score(),
            )
            .map_err(index_error)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let document: TantivyDocument = searcher.doc(address).map_err(index_error)?;
            if let Some(id) = document.get_first(self.chunk_id).and_then(|v| v.as_str()) {
                out.push((id.to_string(), score));
            }
        }
        Ok(out)
    }
}
