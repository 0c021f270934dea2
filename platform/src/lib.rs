//! # dartmouth-platform
//!
//! The platform sidecar: an HTTP service (auth, rate limits, agent data, storage, audit, encryption,
//! and later RAG, events, webhooks and monitoring) that the gateway reaches only through the typed
//! client in [`client`]. Runs alone as `dartmouth platform` or in-process under `dartmouth serve`.
//!
//! ```no_run
//! # async fn run() -> Result<(), dartmouth_platform::PlatformError> {
//! use dartmouth_platform::{PlatformConfig, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! serve(PlatformConfig::default(), listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod client;
pub mod config;
pub mod crypto;
pub mod db;
pub mod documents;
pub mod error;
pub mod files;
pub mod gdpr;
pub mod grants;
pub mod http;
pub mod ratelimit;
pub mod redact;
pub mod state;
pub mod storage;

pub use config::{BootstrapAdmin, PlatformConfig, RateLimitConfig, S3Config};
pub use error::{ApiError, ErrorBody, PlatformError};
pub use state::AppState;

use std::future::Future;
use std::net::SocketAddr;

/// Builds the sidecar's router (database connected and migrated); for `oneshot` tests and embedding.
pub async fn app(config: PlatformConfig) -> Result<axum::Router, PlatformError> {
    http::build(AppState::build(config).await?)
}

/// Serves the sidecar on `listener` until `shutdown` resolves.
pub async fn serve(
    config: PlatformConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PlatformError> {
    let router = app(config).await?;
    tracing::info!(addr = ?listener.local_addr().ok(), "platform sidecar listening");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
