//! The platform side of `dartmouth serve`: the in-process sidecar (with the gateway's embedded
//! models as its AI backends and a fresh credential for the gateway), or a remote one
//! (`--platform-url`, `server.platform_api_key`); and the default agent's knowledge base, built
//! at startup from the project's own documentation.

use anyhow::Context;
use dartmouth_platform::client::PlatformClient;
use tokio::sync::watch;

use crate::config::Config;

/// The project's documentation the default agent answers from.
const DOCS: &[(&str, &str)] = &[("README.md", include_str!("../README.md"))];
/// Knowledge base of the documentation.
pub const DOCS_KB: &str = "dartmouth-docs";

/// The running sidecar (when in-process) and the gateway's client of it.
pub struct Sidecar {
    /// The in-process sidecar's task.
    pub task: Option<tokio::task::JoinHandle<Result<(), dartmouth_platform::PlatformError>>>,
    /// The gateway's authenticated client (`None`: a remote sidecar without a key).
    pub client: Option<PlatformClient>,
}

/// Starts the in-process sidecar, or connects to the remote one.
pub async fn start(
    config: &Config,
    backends: dartmouth_platform::ai::Backends,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Sidecar> {
    if !config.server.platform_url.is_empty() {
        tracing::info!(url = %config.server.platform_url, "using a remote platform sidecar");
        let key = config.server.platform_api_key.trim();
        if key.is_empty() {
            tracing::warn!(
                "server.platform_api_key is not set: agents get no knowledge base and publish no events"
            );
            return Ok(Sidecar {
                task: None,
                client: None,
            });
        }
        let client = PlatformClient::new(&config.server.platform_url)?.with_credential(key);
        return Ok(Sidecar {
            task: None,
            client: Some(client),
        });
    }
    let listener = tokio::net::TcpListener::bind(&config.platform.http)
        .await
        .with_context(|| format!("binding the platform sidecar on {}", config.platform.http))?;
    let addr = listener.local_addr()?;
    tracing::info!(http = %addr, "platform sidecar listening (in-process)");
    let mut service = config.platform.service.clone();
    if service.events.nats_url.is_none() {
        service.events.nats_url = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty());
    }
    let key = dartmouth_platform::AppState::new_service_key();
    let extras = dartmouth_platform::Extras {
        backends,
        service_key: Some(key.clone()),
        ..Default::default()
    };
    let mut stop = stop;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let task = tokio::spawn(dartmouth_platform::serve_with(
        service, extras, listener, stopped,
    ));
    let client = PlatformClient::new(format!("http://{addr}"))?.with_credential(&key);
    Ok(Sidecar {
        task: Some(task),
        client: Some(client),
    })
}

/// Serves the platform sidecar alone (`dartmouth platform`) on `listener`, over TLS when
/// `platform.tls_cert` is set, with NATS for events when configured (or `NATS_URL` is set).
pub async fn serve(
    config: &Config,
    extras: dartmouth_platform::Extras,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut service = config.platform.service.clone();
    if service.events.nats_url.is_none() {
        service.events.nats_url = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty());
    }
    let address = listener.local_addr()?;
    if config.platform.tls_cert.is_empty() {
        tracing::info!(http = %address, "platform sidecar listening");
        dartmouth_platform::serve_with(service, extras, listener, shutdown).await?;
    } else {
        let files = crate::tls::TlsFiles {
            cert: config.platform.tls_cert.clone().into(),
            key: config.platform.tls_key.clone().into(),
        };
        let listener = crate::tls::TlsListener::new(listener, crate::tls::server_config(&files)?)?;
        tracing::info!(https = %address, "platform sidecar listening (TLS)");
        dartmouth_platform::serve_with(service, extras, listener, shutdown).await?;
    }
    Ok(())
}

/// Loads the project's documentation into `agent`'s knowledge base once the sidecar answers
/// (re-uploading replaces the previous start's copy).
pub fn ingest_docs(client: PlatformClient, agent: String) {
    tokio::spawn(async move {
        for _ in 0..100 {
            if client.health().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for (name, text) in DOCS {
            match client
                .upload_knowledge(
                    &agent,
                    DOCS_KB,
                    name,
                    "text/markdown",
                    text.as_bytes().to_vec(),
                )
                .await
            {
                Ok(doc) => tracing::info!(
                    agent,
                    document = name,
                    chunks = doc.chunks,
                    "documentation knowledge base ready"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, agent, "could not build the documentation knowledge base")
                }
            }
        }
    });
}
