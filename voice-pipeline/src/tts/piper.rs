//! Piper voices: espeak-ng IPA phonemes mapped to ids with the voice config, synthesised by the VITS ONNX model.
//!
//! Text is phonemized sentence by sentence ([`super::espeak::phonemize_sentences`]); each
//! sentence becomes `^ _ p₁ _ p₂ _ … pₙ _ $` in the voice's phoneme ids and one run of the model,
//! and the sentences are joined with a short pause.
//!
//! A VITS run's working memory grows with the audio it produces (about 300 MiB for a 13 s
//! sentence). ONNX Runtime serves it from an arena that, left alone, keeps every region it ever
//! took, and which regions a run needs depends on how earlier runs left them: resident memory
//! stepped up by ~80 MiB at a time over a day of calls and never came back. So every long run
//! gives the arena's free regions back when it ends (ONNX Runtime's arena shrinkage), and a sentence
//! longer than [`MAX_PHONEMES_PER_RUN`] is spoken in several runs split between words, which
//! bounds one run's memory whatever text arrives.
//!
//! ```no_run
//! use dartmouth_voice::tts::piper::PiperTts;
//! let store = dartmouth_models::ModelStore::from_env();
//! let mut tts = PiperTts::load(&store)?;
//! let pcm = tts.synthesize("Hello there.")?;
//! println!("{} samples at {} Hz", pcm.len(), tts.sample_rate());
//! # Ok::<(), dartmouth_voice::tts::piper::PiperError>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use dartmouth_models::{Asset, ModelStore};
use ort::session::{RunOptions, Session};
use ort::value::{Tensor, TensorRef};
use serde::Deserialize;

use super::espeak::{self, EspeakError};

/// Phoneme that starts every utterance.
const BOS: char = '^';
/// Phoneme that ends every utterance.
const EOS: char = '$';
/// Padding phoneme interspersed after every phoneme.
const PAD: char = '_';
/// Silence between sentences, in seconds.
const SENTENCE_SILENCE_SECONDS: f32 = 0.2;
const DEFAULT_THREADS: usize = 2;

/// The most phonemes one model run speaks; longer sentences are split between words. A chunk of
/// an answer ([`crate::chunker::MAX_CHUNK_CHARS`] characters) is about this long in IPA, so
/// answers are rarely split.
pub const MAX_PHONEMES_PER_RUN: usize = 240;

/// Runs on more ids than this (about 60 phonemes, 3–4 s of speech) give the arena's free regions
/// back when they end; shorter runs, most of a conversation, keep them for the next run instead
/// of faulting fresh pages in every time.
const SHRINK_AFTER_IDS: usize = 120;

/// The run option that has ONNX Runtime free the CPU arena's unused regions after a run.
const ARENA_SHRINKAGE: (&str, &str) = ("memory.enable_memory_arena_shrinkage", "cpu:0");

/// What can go wrong loading or running a Piper voice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PiperError {
    /// A model file is missing or ONNX Runtime failed to open it.
    #[error(transparent)]
    Model(#[from] dartmouth_models::Error),
    /// The voice's `.onnx.json` could not be read or parsed.
    #[error("Piper voice config {path}: {reason}")]
    Config {
        /// The config file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Phonemization failed.
    #[error(transparent)]
    Espeak(#[from] EspeakError),
    /// Inference failed.
    #[error("Piper inference: {0}")]
    Inference(#[from] ort::Error),
}

/// The parts of a Piper `.onnx.json` voice config this code uses.
#[derive(Debug, Clone, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    #[serde(default)]
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Debug, Clone, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        // Piper's defaults when a config omits them.
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

/// A Piper (VITS) voice on ONNX Runtime; the embedded default is `en_US-joe-medium`.
pub struct PiperTts {
    session: Session,
    /// Options of a run that gives the arena's free regions back when it ends.
    shrinking: RunOptions,
    /// Options of a run that leaves the arena as it is.
    keeping: RunOptions,
    ids: HashMap<char, Vec<i64>>,
    voice: String,
    sample_rate: u32,
    scales: [f32; 3],
}

impl std::fmt::Debug for PiperTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperTts")
            .field("voice", &self.voice)
            .field("sample_rate", &self.sample_rate)
            .finish_non_exhaustive()
    }
}

impl PiperTts {
    /// Loads the store's Piper voice (model + config) with two intra-op threads.
    pub fn load(store: &ModelStore) -> Result<Self, PiperError> {
        Self::load_with_threads(store, DEFAULT_THREADS)
    }

    /// Loads the store's Piper voice with `threads` intra-op threads.
    pub fn load_with_threads(store: &ModelStore, threads: usize) -> Result<Self, PiperError> {
        let model = store.require(Asset::PiperVoice)?;
        let config_path = store.require(Asset::PiperVoiceConfig)?;
        let config = read_config(&config_path)?;
        let session = dartmouth_models::onnx::session(store, &model, threads)?;
        Self::from_parts(session, config, &config_path)
    }

    fn from_parts(session: Session, config: VoiceConfig, path: &Path) -> Result<Self, PiperError> {
        let mut ids = HashMap::with_capacity(config.phoneme_id_map.len());
        for (key, value) in config.phoneme_id_map {
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    ids.insert(c, value);
                }
                _ => tracing::debug!(phoneme = %key, "skipping multi-character phoneme key"),
            }
        }
        for required in [BOS, EOS, PAD] {
            if !ids.contains_key(&required) {
                return Err(PiperError::Config {
                    path: path.display().to_string(),
                    reason: format!("phoneme_id_map lacks {required:?}"),
                });
            }
        }
        let i = config.inference;
        let mut shrinking = RunOptions::new()?;
        shrinking.set(ARENA_SHRINKAGE.0, ARENA_SHRINKAGE.1)?;
        Ok(Self {
            session,
            shrinking,
            keeping: RunOptions::new()?,
            ids,
            voice: config.espeak.voice,
            sample_rate: config.audio.sample_rate,
            scales: [i.noise_scale, i.length_scale, i.noise_w],
        })
    }

    /// Output sample rate in Hz (22,050 for medium voices).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The espeak-ng voice the model was trained on (e.g. `en-us`).
    pub fn espeak_voice(&self) -> &str {
        &self.voice
    }

    /// The model input for one sentence of IPA phonemes: `^ _ (id _)* $`, skipping phonemes the
    /// voice does not know.
    pub fn phoneme_ids(&self, phonemes: &str) -> Vec<i64> {
        phonemes_to_ids(&self.ids, phonemes)
    }

    /// Speaks slower (`scale` above 1) or faster (below 1) than the voice's own pace.
    pub fn set_length_scale(&mut self, scale: f32) {
        self.scales[1] = scale.clamp(0.5, 2.0);
    }

    /// Speaks `text` to mono 16-bit PCM at [`Self::sample_rate`]. Empty text gives no samples.
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<i16>, PiperError> {
        let sentences = espeak::phonemize_sentences(text, &self.voice)?;
        let gap = (SENTENCE_SILENCE_SECONDS * self.sample_rate as f32) as usize;
        let mut pcm = Vec::new();
        for (n, sentence) in sentences.iter().enumerate() {
            let ids = self.phoneme_ids(sentence);
            if ids.len() <= 3 {
                continue; // only ^ _ $: nothing speakable
            }
            if n > 0 && !pcm.is_empty() {
                pcm.resize(pcm.len() + gap, 0);
            }
            if sentence.chars().count() <= MAX_PHONEMES_PER_RUN {
                self.infer(&ids, &mut pcm)?;
                continue;
            }
            for piece in split_between_words(sentence, MAX_PHONEMES_PER_RUN) {
                let ids = self.phoneme_ids(piece);
                self.infer(&ids, &mut pcm)?;
            }
        }
        Ok(pcm)
    }

    /// Runs the model on one sentence's ids and appends its audio to `pcm`.
    fn infer(&mut self, ids: &[i64], pcm: &mut Vec<i16>) -> Result<(), PiperError> {
        let len = ids.len();
        let outputs = self.session.run_with_options(
            ort::inputs![
                "input" => TensorRef::from_array_view(([1usize, len], ids))?,
                "input_lengths" => Tensor::from_array(([1usize], vec![len as i64]))?,
                "scales" => TensorRef::from_array_view(([3usize], &self.scales[..]))?,
            ],
            if len > SHRINK_AFTER_IDS {
                &self.shrinking
            } else {
                &self.keeping
            },
        )?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>()?;
        pcm.reserve(audio.len());
        pcm.extend(audio.iter().map(|&s| float_to_i16(s)));
        Ok(())
    }
}

fn read_config(path: &Path) -> Result<VoiceConfig, PiperError> {
    let err = |reason: String| PiperError::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

/// `^ _ (id _)* $` for `phonemes`, skipping (and logging) phonemes missing from `map`. The map
/// must contain `^`, `_` and `$`.
fn phonemes_to_ids(map: &HashMap<char, Vec<i64>>, phonemes: &str) -> Vec<i64> {
    let pad = map.get(&PAD).map_or(&[][..], Vec::as_slice);
    let mut ids = Vec::with_capacity(2 * phonemes.len() + 3);
    ids.extend(map.get(&BOS).into_iter().flatten());
    ids.extend_from_slice(pad);
    for c in phonemes.chars() {
        match map.get(&c) {
            Some(id) => {
                ids.extend_from_slice(id);
                ids.extend_from_slice(pad);
            }
            None => tracing::debug!(phoneme = %c, "phoneme not in the voice's map, skipped"),
        }
    }
    ids.extend(map.get(&EOS).into_iter().flatten());
    ids
}

/// `phonemes` cut at spaces into pieces of at most `max` characters; a single word longer than
/// `max` is cut inside the word.
fn split_between_words(phonemes: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = phonemes.trim();
    while !rest.is_empty() {
        let Some((limit, _)) = rest.char_indices().nth(max) else {
            pieces.push(rest);
            break;
        };
        let cut = if rest[limit..].starts_with(' ') {
            limit
        } else {
            match rest[..limit].rfind(' ') {
                Some(space) if space > 0 => space,
                _ => limit,
            }
        };
        pieces.push(rest[..cut].trim_end());
        rest = rest[cut..].trim_start();
    }
    pieces
}

/// Float audio in [-1, 1] to 16-bit PCM, clipping anything outside.
fn float_to_i16(sample: f32) -> i16 {
    if sample.is_nan() {
        return 0;
    }
    (sample.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> HashMap<char, Vec<i64>> {
        [('_', 0), ('^', 1), ('$', 2), (' ', 3), ('a', 14), ('b', 15)]
            .into_iter()
            .map(|(c, id)| (c, vec![id]))
            .collect()
    }

    #[test]
    fn ids_are_framed_and_padded_and_unknown_phonemes_skipped() {
        assert_eq!(
            phonemes_to_ids(&map(), "ab a"),
            vec![1, 0, 14, 0, 15, 0, 3, 0, 14, 0, 2]
        );
        assert_eq!(phonemes_to_ids(&map(), "a☃"), vec![1, 0, 14, 0, 2]);
        assert_eq!(phonemes_to_ids(&map(), ""), vec![1, 0, 2]);
    }

    #[test]
    fn long_sentences_split_between_words_within_the_limit() {
        assert_eq!(split_between_words("ab cd ef", 5), vec!["ab cd", "ef"]);
        assert_eq!(split_between_words("ab cd ef", 8), vec!["ab cd ef"]);
        assert_eq!(
            split_between_words("abcdefg hi", 3),
            vec!["abc", "def", "g", "hi"]
        );
        assert_eq!(split_between_words("  ", 3), Vec::<&str>::new());
        let long = "həˈloʊ ".repeat(100);
        let pieces = split_between_words(&long, MAX_PHONEMES_PER_RUN);
        assert!(
            pieces
                .iter()
                .all(|p| p.chars().count() <= MAX_PHONEMES_PER_RUN)
        );
        assert_eq!(pieces.join(" "), long.trim());
    }

    #[test]
    fn float_audio_is_clipped_to_i16() {
        assert_eq!(float_to_i16(0.0), 0);
        assert_eq!(float_to_i16(1.5), i16::MAX);
        assert_eq!(float_to_i16(-1.5), -i16::MAX);
        assert_eq!(float_to_i16(f32::NAN), 0);
    }
}
