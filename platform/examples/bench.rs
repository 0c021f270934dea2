//! Runs the platform benchmark with default options (what `dartmouth bench platform` prints):
//! `cargo run --release -p dartmouth-platform --example bench [REQUESTS] [CONCURRENCY]`.

use dartmouth_platform::bench::{BenchOptions, run};

#[tokio::main]
async fn main() -> Result<(), dartmouth_platform::PlatformError> {
    let mut args = std::env::args().skip(1);
    let mut options = BenchOptions::default();
    if let Some(n) = args.next().and_then(|a| a.parse().ok()) {
        options.requests = n;
    }
    if let Some(c) = args.next().and_then(|a| a.parse().ok()) {
        options.concurrency = c;
    }
    print!("{}", run(options).await?);
    Ok(())
}
