//! Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX): mean-pooled over the attention mask,
//! L2-normalised, 384 floats. The platform's retrieval uses it; any `Embedder` can replace it.

use ndarray::Array2;
use ort::session::Session;
use ort::value::TensorRef;
use tokenizers::Tokenizer;

use crate::{Asset, Error, ModelStore};

/// Width of a MiniLM-L6 embedding.
pub const EMBEDDING_DIM: usize = 384;
/// Longest input in tokens; longer text is truncated (the model was trained on 256-token windows).
pub const MAX_TOKENS: usize = 256;

/// The embedded sentence encoder.
pub struct MiniLm {
    session: Session,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm").finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads the model and tokenizer from the store (one intra-op thread: embeddings are small).
    pub fn load(store: &ModelStore) -> Result<Self, Error> {
        let model = store.require(Asset::MiniLm)?;
        let tokenizer_path = store.require(Asset::MiniLmTokenizer)?;
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
        // The packaged tokenizer pads every input to 128 tokens; pooling uses the mask, so padding
        // only costs time.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let session = crate::onnx::session(store, &model, 1)?;
        Ok(Self { session, tokenizer })
    }

    /// Embeds one text: a unit-length vector of [`EMBEDDING_DIM`] floats. Empty text embeds the
    /// tokenizer's special tokens alone, which is a valid (uninformative) vector.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, Error> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let len = encoding.get_ids().len();
        let to_i64 = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
        let shape = (1, len);
        let onnx = |e: ort::Error| Error::Onnx(e.to_string());
        let ids = Array2::from_shape_vec(shape, to_i64(encoding.get_ids()))
            .map_err(|e| Error::Onnx(e.to_string()))?;
        let mask_values = to_i64(encoding.get_attention_mask());
        let mask = Array2::from_shape_vec(shape, mask_values.clone())
            .map_err(|e| Error::Onnx(e.to_string()))?;
        let types = Array2::from_shape_vec(shape, to_i64(encoding.get_type_ids()))
            .map_err(|e| Error::Onnx(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![
                "input_ids" => TensorRef::from_array_view(&ids).map_err(onnx)?,
                "attention_mask" => TensorRef::from_array_view(&mask).map_err(onnx)?,
                "token_type_ids" => TensorRef::from_array_view(&types).map_err(onnx)?,
            ])
            .map_err(onnx)?;
        let (out_shape, hidden) = outputs[0].try_extract_tensor::<f32>().map_err(onnx)?;
        let width = *out_shape.last().unwrap_or(&0) as usize;
        if width != EMBEDDING_DIM {
            return Err(Error::Onnx(format!(
                "expected {EMBEDDING_DIM}-wide hidden states, got {out_shape:?}"
            )));
        }
        Ok(mean_pool_normalised(hidden, &mask_values, width))
    }
}

/// Averages token vectors where the mask is set, then scales the mean to unit length.
fn mean_pool_normalised(hidden: &[f32], mask: &[i64], width: usize) -> Vec<f32> {
    let mut pooled = vec![0.0f32; width];
    let mut count = 0.0f32;
    for (token, &m) in hidden.chunks_exact(width).zip(mask) {
        if m != 0 {
            count += 1.0;
            for (p, v) in pooled.iter_mut().zip(token) {
                *p += v;
            }
        }
    }
    let count = count.max(1.0);
    pooled.iter_mut().for_each(|p| *p /= count);
    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    pooled.iter_mut().for_each(|p| *p /= norm);
    pooled
}

/// Cosine similarity of two vectors (their dot product when both are unit length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_ignores_masked_tokens_and_normalises() {
        let hidden = [3.0, 0.0, 0.0, 4.0, 100.0, 100.0];
        let pooled = mean_pool_normalised(&hidden, &[1, 1, 0], 2);
        assert!(
            (pooled[0] - 0.6).abs() < 1e-6 && (pooled[1] - 0.8).abs() < 1e-6,
            "{pooled:?}"
        );
    }

    #[test]
    fn cosine_of_orthogonal_and_equal_vectors() {
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!((cosine(&[1.0, 2.0], &[1.0, 2.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
