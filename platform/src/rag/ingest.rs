//! Streaming ingestion: an upload becomes cleaned, chunked text as its bytes arrive, within the
//! configured size and chunk bounds (a PDF is buffered and parsed at the end).

use super::RagConfig;
use super::extract::{self, Chunk, Chunker, DocKind, HtmlText, MarkdownText, Utf8Stream};
use crate::error::ApiError;
use sha2::{Digest, Sha256};

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
