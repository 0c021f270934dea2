//! A short `dartmouth bench soak`: two callers talking to agents for 40 s, calling again after
//! every answer. Every call is answered, and once they stop the gateway is idle and holds no more
//! file descriptors or tasks than before. (The long run and its RSS figures: `dartmouth bench soak`.)

use std::time::Duration;

use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::soak::{SoakOptions, run_soak};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_come_and_go_and_leave_nothing_behind() {
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let report = match run_soak(
        agents,
        SoakOptions {
            sessions: 2,
            duration: Duration::from_secs(40),
            sample_every: Duration::from_secs(5),
        },
    )
    .await
    {
        Ok(report) => report,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    eprintln!("{report}");
    assert!(report.answered >= 2, "{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.idle_at_end, "{report}");
    assert!(report.released(), "{report}");
}
