//! MiniLM sentence embeddings rank a paraphrase above unrelated text.

use dartmouth_models::ModelStore;
use dartmouth_models::embed::{EMBEDDING_DIM, MiniLm, cosine};

#[test]
fn a_paraphrase_is_closer_than_an_unrelated_sentence() {
    let mut model =
        MiniLm::load(&ModelStore::from_env()).expect("MiniLM is provisioned: run `make models`");
    let anchor = model.embed("How do I reset my password?").unwrap();
    let paraphrase = model
        .embed("What are the steps to change my login password?")
        .unwrap();
    let unrelated = model
        .embed("The weather in Lisbon is sunny and warm today.")
        .unwrap();
    assert_eq!(anchor.len(), EMBEDDING_DIM);
    let norm: f32 = anchor.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
    let close = cosine(&anchor, &paraphrase);
    let far = cosine(&anchor, &unrelated);
    println!("cosine paraphrase {close:.3}, unrelated {far:.3}");
    assert!(close > far + 0.3, "paraphrase {close} vs unrelated {far}");
}

#[test]
fn empty_and_very_long_text_still_embed() {
    let mut model = MiniLm::load(&ModelStore::from_env()).expect("MiniLM is provisioned");
    assert_eq!(model.embed("").unwrap().len(), EMBEDDING_DIM);
    let long = "word ".repeat(5_000);
    assert_eq!(model.embed(&long).unwrap().len(), EMBEDDING_DIM);
}
