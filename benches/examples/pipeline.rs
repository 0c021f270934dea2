//! The pipeline benchmark without the CLI, for quick runs while tuning:
//! `cargo run --release -p dartmouth-benches --example pipeline -- [TURNS] [BARGE_INS] [SPECULATE]`
//! (`SPECULATE` 0 turns speculative transcription off).

use dartmouth_benches::pipeline::{PipelineBenchOptions, run};
use dartmouth_models::ModelStore;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let defaults = PipelineBenchOptions::default();
    let options = PipelineBenchOptions {
        turns: args.next().transpose()?.unwrap_or(defaults.turns),
        barge_ins: args.next().transpose()?.unwrap_or(defaults.barge_ins),
        speculative_stt: args.next().transpose()?.is_none_or(|on| on != 0),
        ..defaults
    };
    let report = run(&ModelStore::from_env(), &options).await?;
    println!("{report}");
    Ok(())
}
