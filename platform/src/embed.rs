//! The embedded sentence encoder (MiniLM) on its own thread, reached through a bounded queue:
//! retrieval, intents, the content filter and `/v1/embeddings` share it.

use crate::error::PlatformError;
use dartmouth_models::ModelStore;
use dartmouth_models::embed::MiniLm;
pub use dartmouth_models::embed::{EMBEDDING_DIM, cosine};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Embedding jobs queued for the model thread; callers wait (asynchronously) when it is full.
pub const EMBED_QUEUE_CAPACITY: usize = 64;
/// Most texts in one job.
pub const MAX_BATCH: usize = 256;

/// Name the OpenAI-compatible endpoint reports for this model.
pub const MODEL_NAME: &str = "all-minilm-l6-v2";

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// Handle to the embedding thread; the thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct Embedder {
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Embedder(MiniLM)")
    }
}

impl Embedder {
    /// Loads MiniLM from `store` and starts its thread.
    pub fn spawn(store: &ModelStore) -> Result<Embedder, PlatformError> {
        let mut model =
            MiniLm::load(store).map_err(|e| PlatformError::Config(format!("embeddings: {e}")))?;
        let (jobs, queue) = mpsc::sync_channel::<Job>(EMBED_QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("platform-embed".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    if job.reply.is_closed() {
                        continue;
                    }
                    let result = job
                        .texts
                        .iter()
                        .map(|t| model.embed(t).map_err(|e| e.to_string()))
                        .collect();
                    let _ = job.reply.send(result);
                }
            })?;
        Ok(Embedder { jobs })
    }

    /// Embeds `texts` (unit vectors of [`EMBEDDING_DIM`] floats, in order).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, PlatformError> {
        let mut out = Vec::with_capacity(texts.len());
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let batch: Vec<String> = texts.by_ref().take(MAX_BATCH).collect();
            let (reply, answer) = oneshot::channel();
            let mut job = Job {
                texts: batch,
                reply,
            };
            // Wait for room without blocking the async runtime.
            loop {
                match self.jobs.try_send(job) {
                    Ok(()) => break,
                    Err(mpsc::TrySendError::Full(j)) => {
                        job = j;
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => {
                        return Err(PlatformError::Config("the embedding thread stopped".into()));
                    }
                }
            }
            let vectors = answer
                .await
                .map_err(|_| PlatformError::Config("the embedding thread stopped".into()))?
                .map_err(|e| PlatformError::Config(format!("embedding failed: {e}")))?;
            out.extend(vectors);
        }
        Ok(out)
    }

    /// Embeds one text.
    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>, PlatformError> {
        let mut v = self.embed(vec![text.to_string()]).await?;
        v.pop()
            .ok_or_else(|| PlatformError::Config("embedding returned nothing".into()))
    }
}

/// Packs a vector as base64 of little-endian f32 (portable TEXT column).
pub fn pack(vector: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Unpacks [`pack`]'s output; `None` if it is not a whole number of floats.
pub fn unpack(text: &str) -> Option<Vec<f32>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Dot product (cosine of unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips() {
        let v = vec![0.5f32, -1.25, 3.0e-7];
        assert_eq!(unpack(&pack(&v)).unwrap(), v);
        assert!(unpack("AAA").is_none());
    }
}
