//! `dartmouth bench remote` in small: 4 sessions on the real OpenAI-compatible HTTP clients
//! against the mock, asking for a few seconds. Every session must be answered, audibly and whole,
//! and the report must carry its columns. No timing is asserted here: the speed targets live in
//! the benchmark.

use std::time::Duration;

use dartmouth_models::ModelStore;
use dartmouth_tests::bench_remote::{RemoteBenchOptions, run_remote};

#[test]
fn four_remote_sessions_are_each_answered_audibly() {
    if std::process::Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: espeak-ng is not installed");
        return;
    }
    let options = RemoteBenchOptions {
        sessions: vec![4],
        window: Duration::from_secs(4),
        ..RemoteBenchOptions::default()
    };
    let report = match run_remote(&ModelStore::from_env(), &options) {
        Ok(report) => report,
        Err(e) if e.starts_with("listening models") => {
            println!("SKIPPED: listening models unavailable ({e}); run `dartmouth models fetch`");
            return;
        }
        Err(e) => panic!("bench remote: {e}"),
    };
    println!("{}", report.text);
    let stage = &report.stages[0];
    assert_eq!(stage.results.len(), 4);
    for (i, caller) in stage.results.iter().enumerate() {
        assert_eq!(caller.error, None, "caller {i}");
        assert!(!caller.turns.is_empty(), "caller {i} asked nothing");
        for (q, turn) in caller.turns.iter().enumerate() {
            assert_eq!(turn.failure, None, "caller {i}, question {q}");
            assert!(
                turn.latency.is_some(),
                "caller {i}, question {q}: no record"
            );
            assert!(
                turn.v2v.is_some(),
                "caller {i}, question {q}: nothing audible"
            );
            assert!(
                turn.audible_frames >= dartmouth_tests::remote_caller::AUDIBLE_FRAMES,
                "caller {i}, question {q}: {} audible frames",
                turn.audible_frames
            );
            assert!(
                turn.answer_frames * 10 >= report.answer_frames * 9,
                "caller {i}, question {q}: {} of the answer's {} frames",
                turn.answer_frames,
                report.answer_frames
            );
        }
    }
    assert_eq!(stage.answered(), stage.turns().count());
    for column in [
        "added at caller p50",
        "added in gateway p50",
        "missed 20 ms deadlines",
        "CPU gateway %",
        "RSS per session MB",
    ] {
        assert!(report.text.contains(column), "no column {column:?}");
    }
    assert!(stage.egress_ticks > 0, "the egress clock never ticked");
}
