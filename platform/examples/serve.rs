//! Runs the sidecar alone for manual tests and the TypeScript client's live test:
//! `cargo run --release -p dartmouth-platform --example serve -- [ADDR] [DATA_DIR]`.
//! Creates `admin@example.com` / `admin-password` on first start; uses `DATABASE_URL` if set.

use dartmouth_platform::{BootstrapAdmin, PlatformConfig, serve};

#[tokio::main]
async fn main() -> Result<(), dartmouth_platform::PlatformError> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let config = PlatformConfig {
        data_dir: args
            .next()
            .map(Into::into)
            .unwrap_or_else(|| std::env::temp_dir().join("dartmouth-platform-example")),
        database_url: std::env::var("DATABASE_URL").ok(),
        bootstrap_admin: Some(BootstrapAdmin {
            email: "admin@example.com".into(),
            password: "admin-password".into(),
        }),
        ..PlatformConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("platform sidecar on http://{}", listener.local_addr()?);
    serve(config, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
