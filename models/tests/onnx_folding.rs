//! `onnx::session_folding_weights` on the real Moonshine encoder: it writes the unfolded graph
//! beside the model once and runs it; where that is impossible, the model still opens as shipped.

use dartmouth_models::{Asset, ModelStore, onnx};

/// A copy of the Moonshine encoder in a fresh directory of its own.
fn encoder_copy(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let store = ModelStore::from_env();
    let shipped = store
        .require(Asset::MoonshineEncoder)
        .expect("Moonshine is provisioned: run `make models`");
    let dir = std::env::temp_dir().join(format!("dartmouth-fold-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("encoder.ort");
    std::fs::copy(&shipped, &copy).unwrap();
    (dir, copy)
}

fn outputs(session: &mut ort::session::Session) -> Vec<f32> {
    let audio = vec![0.01f32; 16_000];
    let input =
        ort::value::TensorRef::from_array_view(([1usize, audio.len()], &audio[..])).unwrap();
    let out = session.run(ort::inputs!["input_values" => input]).unwrap();
    out["last_hidden_state"]
        .try_extract_tensor::<f32>()
        .unwrap()
        .1
        .to_vec()
}

#[test]
fn the_unfolded_graph_is_written_once_and_computes_the_same() {
    let store = ModelStore::from_env();
    let (dir, copy) = encoder_copy("ok");
    let mut shipped = onnx::session(&store, &copy, 1).unwrap();
    let mut folded = onnx::session_folding_weights(&store, &copy, 1).unwrap();
    assert!(
        dir.join("encoder.onnx").is_file(),
        "the graph is kept beside the model"
    );
    let (a, b) = (outputs(&mut shipped), outputs(&mut folded));
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-3, "largest difference {worst}");
    // The temporary export files are gone; a second load reuses the graph.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    onnx::session_folding_weights(&store, &copy, 1).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_whose_graph_cannot_be_written_still_opens() {
    let store = ModelStore::from_env();
    let (dir, copy) = encoder_copy("blocked");
    // A directory where the graph file would go: writing it fails.
    std::fs::create_dir_all(dir.join("encoder.onnx")).unwrap();
    let mut session = onnx::session_folding_weights(&store, &copy, 1).expect("opens as shipped");
    assert!(!outputs(&mut session).is_empty());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
