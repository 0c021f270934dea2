//! The Janus half of `dartmouth bench sfu`, briefly: one room of 2 publishers and 2 subscribers
//! for 2 s against Janus's VideoRoom in a network namespace. The subscribers hear the publishers
//! through Janus, and the namespace is gone afterwards.

use dartmouth_tests::bench_janus::{run_janus_stage, unavailable};
use dartmouth_tests::bench_sfu::SfuBenchOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janus_forwards_the_benchmark_load() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let options = SfuBenchOptions {
        rooms: vec![1],
        publishers: 2,
        subscribers: 2,
        seconds: 2,
        janus: true,
    };
    let stage = run_janus_stage(&options, 1)
        .await
        .unwrap_or_else(|e| panic!("Janus stage failed: {e}"));
    eprintln!("{stage:?}");
    assert_eq!(stage.peers, 4);
    assert!(stage.forwarded_per_sec > 50.0, "{stage:?}");
    assert!(stage.loss < 0.2, "{stage:?}");
    assert!(stage.per_cpu_second.is_finite(), "{stage:?}");
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ours = format!("dm-janus-{}-", std::process::id());
    assert!(
        !namespaces.contains(&ours),
        "namespace left behind: {namespaces}"
    );
}
