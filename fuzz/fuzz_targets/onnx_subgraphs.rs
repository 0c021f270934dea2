//! The ONNX protobuf rewriter that names subgraphs before a model is loaded: any bytes are
//! rewritten or refused, and a rewrite is itself rewritable.
#![no_main]

use dartmouth_models::onnx::name_subgraphs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rewritten) = name_subgraphs(data) {
        let _ = name_subgraphs(&rewritten);
    }
});
