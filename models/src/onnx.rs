//! ONNX Runtime setup: the shared library from the model store, loaded once per process, and one
//! process-wide environment every session is built in.

mod subgraphs;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;

pub use subgraphs::name_subgraphs;

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
    open(init(store)?, model, threads).map_err(|e| Error::Onnx(format!("{}: {e}", model.display())))
}

/// Opens a `.ort` model whose weights are stored quantised and dequantised again at every run
/// (Moonshine's: each int8 weight goes through a `Cast` and a `Mul` per decoder step, three
/// quarters of the step's time). ONNX Runtime does not optimise `.ort` graphs when it loads
/// them, so the graph is first written out once as `.onnx` next to the model (subgraphs named,
/// see [`name_subgraphs`]) and loaded from there with every optimisation: constant folding turns
/// the dequantised weights into plain float weights at load. The results are the same; loading
/// takes a second or two longer and the weights take four times the memory. Where the `.onnx`
/// cannot be written or read (a read-only model directory), the `.ort` model opens as it is,
/// slower, with a warning.
pub fn session_folding_weights(
    store: &ModelStore,
    model: &Path,
    threads: usize,
) -> Result<ort::session::Session, Error> {
    let environment = init(store)?;
    match unfolded_onnx(environment, model).and_then(|graph| open(environment, &graph, threads)) {
        Ok(session) => Ok(session),
        Err(reason) => {
            tracing::warn!(
                model = %model.display(),
                %reason,
                "could not unfold the model's weights; running it as shipped (slower)"
            );
            session(store, model, threads)
        }
    }
}

/// A session on `model` with every graph optimisation, `threads` intra-op threads and one
/// inter-op thread.
fn open(
    environment: &Environment,
    model: &Path,
    threads: usize,
) -> Result<ort::session::Session, String> {
    ort::session::Session::builder(environment)
        .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::Level3)?))
        .and_then(|b| Ok(b.with_intra_threads(threads)?))
        .and_then(|b| Ok(b.with_inter_threads(1)?))
        .and_then(|mut b| b.commit_from_file(model))
        .map_err(|e| e.to_string())
}

/// `model` (`.ort`) as an `.onnx` file beside it, written on first use. Concurrent first uses
/// each write their own temporary file and rename it into place.
fn unfolded_onnx(environment: &Environment, model: &Path) -> Result<PathBuf, String> {
    let graph = model.with_extension("onnx");
    if graph.is_file() {
        return Ok(graph);
    }
    let unique = format!("{}.{:?}", std::process::id(), std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let exported = model.with_extension(format!("export-{unique}.onnx"));
    let partial = model.with_extension(format!("named-{unique}.onnx"));
    let result = (|| {
        let failed = |e: String| format!("writing its graph out: {e}");
        let session = ort::session::Session::builder(environment)
            .map_err(|e| failed(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level1)
            .map_err(|e| failed(e.to_string()))?
            .with_optimized_model_path(&exported)
            .map_err(|e| failed(e.to_string()))?
            .commit_from_file(model)
            .map_err(|e| failed(e.to_string()))?;
        drop(session);
        let bytes =
            std::fs::read(&exported).map_err(|e| format!("reading {}: {e}", exported.display()))?;
        let named = name_subgraphs(&bytes)?;
        std::fs::write(&partial, named)
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &graph)
            .map_err(|e| format!("renaming {}: {e}", partial.display()))
    })();
    // Whatever happened, no temporary file stays (after a rename `partial` is already gone).
    let _ = std::fs::remove_file(&exported);
    let _ = std::fs::remove_file(&partial);
    result.map(|()| graph)
}
