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
pub mod ai;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod client;
pub mod config;
pub mod cost;
pub mod crypto;
pub mod db;
pub mod documents;
pub mod embed;
pub mod error;
pub mod events;
pub mod files;
pub mod filter;
pub mod gdpr;
pub mod grants;
pub mod http;
pub mod intel;
pub mod memory;
pub mod monitor;
pub mod notify;
pub mod rag;
pub mod ratelimit;
pub mod redact;
pub mod registry;
pub mod state;
pub mod storage;
pub mod webhooks;
pub mod workflow;

pub use config::{BootstrapAdmin, PlatformConfig, RateLimitConfig, S3Config};
pub use error::{ApiError, ErrorBody, PlatformError};
pub use state::{AppState, Extras};

use std::future::Future;
use std::net::SocketAddr;

/// Builds the sidecar's router (database connected and migrated); for `oneshot` tests and embedding.
pub async fn app(config: PlatformConfig) -> Result<axum::Router, PlatformError> {
    http::build(AppState::build(config).await?)
}

/// The router over an already built state (tests that also drive the state directly).
pub fn router(state: AppState) -> Result<axum::Router, PlatformError> {
    http::build(state)
}

/// Like [`app`], with what the embedding binary supplies (models it already loaded).
pub async fn app_with(
    config: PlatformConfig,
    extras: Extras,
) -> Result<axum::Router, PlatformError> {
    http::build(AppState::build_with(config, extras).await?)
}

/// Serves the sidecar on `listener` (a `TcpListener`, or any axum listener such as a TLS one)
/// until `shutdown` resolves.
pub async fn serve<L>(
    config: PlatformConfig,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PlatformError>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    serve_with(config, Extras::default(), listener, shutdown).await
}

/// Like [`serve`], with what the embedding binary supplies.
pub async fn serve_with<L>(
    config: PlatformConfig,
    extras: Extras,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PlatformError>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use axum::serve::ListenerExt;
    let router = app_with(config, extras).await?;
    tracing::info!(addr = ?listener.local_addr().ok(), "platform sidecar listening");
    // Tapping gives any listener's peer address to `ConnectInfo` (rate-limit and audit keys).
    axum::serve(
        listener.tap_io(|_| {}),
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
