//! ONNX Runtime setup: the shared library from the model store, loaded once per process, and one
//! process-wide environment every session is built in.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::{Asset, Error, ModelStore};

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from the store's provisioned library and creates the environment, once per
/// process. Later calls return the first call's outcome (the library cannot be swapped).
pub fn init(store: &ModelStore) -> Result<&'static Environment, Error> {
    ENVIRONMENT
        .get_or_init(|| {
            let lib = store
                .require(Asset::OnnxRuntime)
                .map_err(|e| e.to_string())?;
            environment_from(&lib)
        })
        .as_ref()
        .map_err(|e| Error::Onnx(e.clone()))
}

fn environment_from(lib: &Path) -> Result<Environment, String> {
    ort::init_from(lib)
        .map_err(|e| format!("loading {}: {e}", lib.display()))?
        .with_name("dartmouth")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("creating the ONNX Runtime environment: {e}"))
}

/// Opens an ONNX (or `.ort`) model for inference with `threads` intra-op threads, initialising
/// ONNX Runtime from `store` first.
pub fn session(
    store: &ModelStore,
    model: &Path,
    threads: usize,
) -> Result<ort::session::Session, Error> {
    let environment = init(store)?;
    let onnx = |e: String| Error::Onnx(format!("{}: {e}", model.display()));
    ort::session::Session::builder(environment)
        .map_err(|e| onnx(e.to_string()))?
        .with_intra_threads(threads)
        .map_err(|e| onnx(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| onnx(e.to_string()))?
        .commit_from_file(model)
        .map_err(|e| onnx(e.to_string()))
}
