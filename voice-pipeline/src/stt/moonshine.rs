//! Moonshine base-en speech recognition on ONNX Runtime (encoder + KV-cached greedy decoder).
//!
//! The encoder reads raw 16 kHz mono samples; the merged decoder runs once without a cache (the
//! `use_cache_branch = false` graph, which also computes the cross-attention keys and values from
//! the encoder states) and then one token at a time with the cache. Decoding is greedy and bounded
//! by the audio's length, so a model that never emits end-of-text cannot run away.
//!
//! ```no_run
//! use dartmouth_voice::stt::moonshine::MoonshineStt;
//! let store = dartmouth_models::ModelStore::from_env();
//! let mut stt = MoonshineStt::load(&store)?;
//! let text = stt.transcribe(&vec![0.0; 16_000])?;
//! # let _ = text;
//! # Ok::<(), dartmouth_voice::stt::moonshine::MoonshineError>(())
//! ```

use std::borrow::Cow;
use std::path::Path;

use dartmouth_models::{Asset, ModelStore};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};
use tokenizers::Tokenizer;

/// Sample rate the model expects.
pub const SAMPLE_RATE: u32 = 16_000;
/// Shortest input the encoder accepts (0.1 s); shorter input transcribes to an empty string.
pub const MIN_SAMPLES: usize = 1_600;
/// Longest input the model was trained for (64 s); longer input is an error, segment it first.
pub const MAX_SAMPLES: usize = 64 * SAMPLE_RATE as usize;
/// Audio at least this long (seconds) is not allowed to decode to nothing (see `generate`); shorter
/// sounds (a cough judged during barge-in) may still come out empty.
const MIN_SPEECH_FOR_WORDS: f32 = 0.9;
/// Upper bound on generated tokens per second of audio (Moonshine's reference uses 6.5).
pub const MAX_TOKENS_PER_SECOND: f32 = 6.5;
/// Token budget floor, so sub-second utterances still have room for a word or two.
const MIN_TOKEN_BUDGET: usize = 6;

const LAYERS: usize = 8;
const HEADS: usize = 8;
const HEAD_DIM: usize = 52;
const START_TOKEN: i64 = 1;
const END_TOKEN: i64 = 2;
const ENCODER_INPUT: &str = "input_values";
const ENCODER_OUTPUT: &str = "last_hidden_state";
const DEFAULT_THREADS: usize = 2;

/// What can go wrong loading or running Moonshine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoonshineError {
    /// A model file is missing or ONNX Runtime failed to open it.
    #[error(transparent)]
    Model(#[from] dartmouth_models::Error),
    /// The model's inputs or outputs are not the ones this code drives.
    #[error("unexpected Moonshine model interface: {0}")]
    Interface(String),
    /// The tokenizer failed to load or decode.
    #[error("Moonshine tokenizer: {0}")]
    Tokenizer(String),
    /// Inference failed.
    #[error("Moonshine inference: {0}")]
    Inference(#[from] ort::Error),
    /// The audio is longer than one call may transcribe.
    #[error("audio of {seconds:.1} s is longer than Moonshine's 64 s limit: segment it first")]
    TooLong {
        /// Length of the rejected audio.
        seconds: f32,
    },
    /// The caller asked to stop (checked before the encoder and every decoder step).
    #[error("transcription cancelled")]
    Cancelled,
}

/// The embedded Moonshine base (English) recogniser. Not `Sync`: one transcription at a time.
pub struct MoonshineStt {
    encoder: Session,
    decoder: Session,
    tokenizer: Tokenizer,
    /// `past_key_values.{layer}.{decoder|encoder}.{key|value}`, in cache order.
    past_names: Vec<String>,
    /// `present.{layer}.{decoder|encoder}.{key|value}`, in the same order.
    present_names: Vec<String>,
}

impl std::fmt::Debug for MoonshineStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoonshineStt").finish_non_exhaustive()
    }
}

impl MoonshineStt {
    /// Loads the encoder, decoder and tokenizer from the model store with two intra-op threads.
    pub fn load(store: &ModelStore) -> Result<Self, MoonshineError> {
        Self::load_with_threads(store, DEFAULT_THREADS)
    }

    /// Loads the models with `threads` intra-op threads per session.
    pub fn load_with_threads(store: &ModelStore, threads: usize) -> Result<Self, MoonshineError> {
        let encoder_path = store.require(Asset::MoonshineEncoder)?;
        let decoder_path = store.require(Asset::MoonshineDecoder)?;
        let tokenizer_path = store.require(Asset::MoonshineTokenizer)?;
        let encoder =
            dartmouth_models::onnx::session_folding_weights(store, &encoder_path, threads)?;
        let decoder =
            dartmouth_models::onnx::session_folding_weights(store, &decoder_path, threads)?;
        let tokenizer = load_tokenizer(&tokenizer_path)?;

        let (past_names, present_names) = cache_names();
        require_names(&encoder, &[ENCODER_INPUT], &[ENCODER_OUTPUT], "encoder")?;
        let mut inputs: Vec<&str> = vec!["input_ids", "encoder_hidden_states", "use_cache_branch"];
        inputs.extend(past_names.iter().map(String::as_str));
        let mut outputs: Vec<&str> = vec!["logits"];
        outputs.extend(present_names.iter().map(String::as_str));
        require_names(&decoder, &inputs, &outputs, "decoder")?;

        Ok(Self {
            encoder,
            decoder,
            tokenizer,
            past_names,
            present_names,
        })
    }

    /// Transcribes one utterance of 16 kHz mono samples in [-1, 1]. Audio shorter than 0.1 s
    /// gives an empty string; audio longer than 64 s is an error.
    pub fn transcribe(&mut self, pcm_16k_mono: &[f32]) -> Result<String, MoonshineError> {
        self.transcribe_with_draft(pcm_16k_mono, None)
    }

    /// Like [`Self::transcribe`], reading `draft` (the transcript of an earlier, shorter prefix of
    /// the same utterance) as a guess of the first words. The decoder checks the whole guess in
    /// one batched step and keeps the words it would have produced itself, so the result is the
    /// same as without a draft (up to float rounding) while the known words cost one step instead
    /// of one step each. A wrong draft costs about one extra step.
    pub fn transcribe_with_draft(
        &mut self,
        pcm_16k_mono: &[f32],
        draft: Option<&str>,
    ) -> Result<String, MoonshineError> {
        self.transcribe_cancellable(pcm_16k_mono, draft, &|| false)
    }

    /// Like [`Self::transcribe_with_draft`], stopping with [`MoonshineError::Cancelled`] as soon
    /// as `cancelled` says so: it is asked before the encoder and before every decoder step, so
    /// a cancelled transcription frees the model within one step.
    pub fn transcribe_cancellable(
        &mut self,
        pcm_16k_mono: &[f32],
        draft: Option<&str>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<String, MoonshineError> {
        let draft_ids = match draft.map(str::trim).filter(|d| !d.is_empty()) {
            Some(text) => self
                .tokenizer
                .encode_fast(text, false)
                .map_err(|e| MoonshineError::Tokenizer(e.to_string()))?
                .get_ids()
                .iter()
                .map(|&id| i64::from(id))
                .collect(),
            None => Vec::new(),
        };
        let tokens = self.generate(pcm_16k_mono, &draft_ids, cancelled)?;
        let ids: Vec<u32> = tokens
            .iter()
            .filter_map(|&t| u32::try_from(t).ok())
            .collect();
        let text = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| MoonshineError::Tokenizer(e.to_string()))?;
        Ok(text.trim().to_string())
    }

    /// Greedy decoding: the generated token ids, without the start and end tokens. The first
    /// step reads the start token followed by `draft`, and keeps the longest run of draft tokens
    /// that greedy decoding agrees with.
    fn generate(
        &mut self,
        pcm: &[f32],
        draft: &[i64],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<i64>, MoonshineError> {
        if pcm.len() < MIN_SAMPLES {
            return Ok(Vec::new());
        }
        if pcm.len() > MAX_SAMPLES {
            return Err(MoonshineError::TooLong {
                seconds: pcm.len() as f32 / SAMPLE_RATE as f32,
            });
        }
        let started = std::time::Instant::now();
        let seconds = pcm.len() as f32 / SAMPLE_RATE as f32;
        let budget = ((seconds * MAX_TOKENS_PER_SECOND).ceil() as usize).max(MIN_TOKEN_BUDGET);
        let draft = &draft[..draft.len().min(budget.saturating_sub(1))];

        if cancelled() {
            return Err(MoonshineError::Cancelled);
        }
        let audio = TensorRef::from_array_view(([1usize, pcm.len()], pcm))?;
        let mut encoded = self.encoder.run(ort::inputs![ENCODER_INPUT => audio])?;
        let hidden = encoded.remove(ENCODER_OUTPUT).ok_or_else(|| {
            MoonshineError::Interface(format!("encoder returned no {ENCODER_OUTPUT}"))
        })?;
        drop(encoded);
        let encoder_time = started.elapsed();

        // The first step ignores the cache inputs, but the graph still needs them: empty tensors.
        let mut cache: Vec<DynValue> = Vec::with_capacity(self.past_names.len());
        for _ in 0..self.past_names.len() {
            cache.push(
                Tensor::<f32>::from_array(([1usize, HEADS, 0, HEAD_DIM], Vec::new()))?.into_dyn(),
            );
        }

        let mut tokens = Vec::with_capacity(budget);
        let mut predictions: Vec<i64> = Vec::with_capacity(draft.len() + 1);
        let mut input = Vec::with_capacity(draft.len() + 1);
        input.push(START_TOKEN);
        input.extend_from_slice(draft);
        let mut steps = 0;
        let mut accepted = 0;
        while tokens.len() < budget {
            if cancelled() {
                return Err(MoonshineError::Cancelled);
            }
            let use_cache = steps > 0;
            steps += 1;
            let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
                Vec::with_capacity(3 + cache.len());
            inputs.push((
                "input_ids".into(),
                Tensor::from_array(([1usize, input.len()], input.clone()))?.into(),
            ));
            inputs.push(("encoder_hidden_states".into(), (&hidden).into()));
            inputs.push((
                "use_cache_branch".into(),
                Tensor::from_array(([1usize], vec![use_cache]))?.into(),
            ));
            for (name, value) in self.past_names.iter().zip(&cache) {
                inputs.push((name.as_str().into(), value.into()));
            }
            let mut outputs = self.decoder.run(inputs)?;

            let (shape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
            let vocab = shape.last().copied().unwrap_or(0) as usize;
            if vocab == 0 || logits.len() < vocab * input.len() {
                return Err(MoonshineError::Interface(format!(
                    "decoder logits of shape {shape:?}"
                )));
            }
            predictions.clear();
            let positions = logits.len() / vocab;
            for position in positions - input.len()..positions {
                let row = &logits[position * vocab..(position + 1) * vocab];
                // Moonshine sometimes ends a short, clearly spoken utterance before its first
                // word ("Name a fruit that is yellow." → ""). Speech reaches the recogniser only
                // after voice activity detection, so an immediate end is a decoding miss: take
                // the best word instead.
                let first_word = !use_cache && position == positions - input.len();
                let skip_end = first_word && seconds >= MIN_SPEECH_FOR_WORDS;
                predictions.push(argmax_except(row, skip_end.then_some(END_TOKEN as usize)) as i64);
            }
            // The draft tokens the decoder agrees with, then its own next token.
            let agreed = if use_cache {
                0
            } else {
                draft
                    .iter()
                    .zip(&predictions)
                    .take_while(|(d, p)| d == p)
                    .count()
            };
            accepted += agreed;
            tokens.extend_from_slice(&draft[..agreed]);
            let next = predictions[agreed];
            // Self-attention keys/values grow every step; cross-attention ones come from step 0.
            // After a partly wrong draft, the positions past the agreed tokens are dropped.
            let keep = (!use_cache).then_some(1 + agreed);
            for (slot, name) in cache.iter_mut().zip(&self.present_names) {
                if !use_cache || name.contains(".decoder.") {
                    let present = outputs.remove(name).ok_or_else(|| {
                        MoonshineError::Interface(format!("decoder returned no {name}"))
                    })?;
                    *slot = match keep {
                        Some(keep) if name.contains(".decoder.") && keep < input.len() => {
                            first_positions(&present, keep)?
                        }
                        _ => present,
                    };
                }
            }
            if next == END_TOKEN {
                break;
            }
            tokens.push(next);
            input.clear();
            input.push(next);
        }
        tokens.truncate(budget);
        tracing::debug!(
            seconds,
            encoder = ?encoder_time,
            decoder = ?started.elapsed().saturating_sub(encoder_time),
            steps,
            tokens = tokens.len(),
            draft = draft.len(),
            accepted,
            "moonshine transcribed"
        );
        Ok(tokens)
    }
}

/// The first `keep` positions of a `[1, heads, positions, head_dim]` self-attention cache tensor.
fn first_positions(present: &DynValue, keep: usize) -> Result<DynValue, MoonshineError> {
    let (shape, data) = present.try_extract_tensor::<f32>()?;
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let [batch, heads, positions, head_dim] = dims[..] else {
        return Err(MoonshineError::Interface(format!(
            "decoder cache of shape {shape:?}"
        )));
    };
    let keep = keep.min(positions);
    let mut kept = Vec::with_capacity(batch * heads * keep * head_dim);
    for row in data.chunks(positions * head_dim) {
        kept.extend_from_slice(&row[..keep * head_dim]);
    }
    Ok(Tensor::from_array(([batch, heads, keep, head_dim], kept))?.into_dyn())
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, MoonshineError> {
    Tokenizer::from_file(path)
        .map_err(|e| MoonshineError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Names of the decoder's cache inputs and the matching outputs, layer by layer.
fn cache_names() -> (Vec<String>, Vec<String>) {
    let mut past = Vec::with_capacity(LAYERS * 4);
    let mut present = Vec::with_capacity(LAYERS * 4);
    for layer in 0..LAYERS {
        for part in ["decoder", "encoder"] {
            for kind in ["key", "value"] {
                past.push(format!("past_key_values.{layer}.{part}.{kind}"));
                present.push(format!("present.{layer}.{part}.{kind}"));
            }
        }
    }
    (past, present)
}

fn require_names(
    session: &Session,
    inputs: &[&str],
    outputs: &[&str],
    what: &str,
) -> Result<(), MoonshineError> {
    let has_input = |n: &str| session.inputs().iter().any(|o| o.name() == n);
    let has_output = |n: &str| session.outputs().iter().any(|o| o.name() == n);
    if let Some(missing) = inputs.iter().find(|n| !has_input(n)) {
        return Err(MoonshineError::Interface(format!(
            "{what} has no input {missing}"
        )));
    }
    if let Some(missing) = outputs.iter().find(|n| !has_output(n)) {
        return Err(MoonshineError::Interface(format!(
            "{what} has no output {missing}"
        )));
    }
    Ok(())
}

/// Index of the largest value (the first one on ties; NaN never wins), never `excluded`.
fn argmax_except(values: &[f32], excluded: Option<usize>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 && Some(i) != excluded {
            best = (i, v);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_pair_inputs_with_outputs() {
        let (past, present) = cache_names();
        assert_eq!(past.len(), 32);
        assert_eq!(past[0], "past_key_values.0.decoder.key");
        assert_eq!(present[3], "present.0.encoder.value");
        assert_eq!(present[31], "present.7.encoder.value");
    }

    #[test]
    fn argmax_picks_the_first_maximum() {
        assert_eq!(argmax_except(&[0.1, 3.0, -1.0, 3.0], None), 1);
        assert_eq!(argmax_except(&[f32::NAN, 1.0], None), 1);
        assert_eq!(argmax_except(&[0.1, 3.0, -1.0, 3.0], Some(1)), 3);
    }
}
