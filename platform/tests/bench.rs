//! The benchmark runs end to end on a tiny budget and reports every scenario, workflow steps
//! included.

use dartmouth_platform::bench::{BenchOptions, run};
use dartmouth_platform::workflow::bench::{STEPS_PER_RUN, runs_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_all_scenarios_on_a_small_budget() {
    let options = BenchOptions {
        requests: 40,
        concurrency: 4,
        max_duration: Duration::from_secs(5),
        ..BenchOptions::default()
    };
    let with_postgres = options.database_url.is_some();
    let report = run(options).await.expect("bench runs");
    let text = report.to_string();
    println!("{text}");
    let expected_rows = if with_postgres { 8 } else { 4 };
    assert_eq!(report.rows.len(), expected_rows, "{text}");
    for row in &report.rows {
        assert_eq!(row.errors, 0, "{text}");
        // The workflow row counts steps: whole runs of STEPS_PER_RUN within the budget.
        let expected_ok = if row.scenario == "workflow steps" {
            runs_for(40) * STEPS_PER_RUN
        } else {
            40
        };
        assert_eq!(row.ok, expected_ok, "{text}");
        assert!(row.requests_per_sec > 0.0 && row.p99 >= row.p50, "{text}");
    }
    for scenario in [
        "token verification",
        "authenticated insert",
        "filtered query",
        "workflow steps",
    ] {
        assert!(text.contains(scenario));
    }
}
