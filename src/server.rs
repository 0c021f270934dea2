//! The gateway's HTTP listener: the browser demo, health, readiness, Prometheus metrics, and the
//! signaling routes of `dartmouth_signaling` (WebSocket, tokens, WHIP/WHEP).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dartmouth_models::{Asset, ModelStore};
use serde_json::json;

/// The demo, compiled into the binary so one file is the whole product.
const DEMO_FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web-demo/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web-demo/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web-demo/style.css"),
    ),
];
/// Serve the demo from this directory instead (development: edit and reload, no rebuild).
const WEB_DIR_ENV: &str = "DARTMOUTH_WEB_DIR";

/// What readiness checks and `/metrics` look at.
#[derive(Clone)]
pub struct GatewayState {
    /// Where model files are.
    pub models: ModelStore,
    /// Prometheus exposition of the process's metrics (`None`: no exporter installed).
    pub metrics: Option<crate::metrics_export::MetricsExporter>,
    /// The agents, for their capacity and model load (`None`: no agents).
    pub agents: Option<dartmouth_signaling::agent::SharedAgentFactory>,
}

/// The gateway's routes, with the signaling routes merged in when a gateway is given.
pub fn router(state: GatewayState, signaling: Option<Arc<dartmouth_signaling::Gateway>>) -> Router {
    let base = Router::new()
        .route("/", get(|| demo_file("index.html")))
        .route("/app.js", get(|| demo_file("app.js")))
        .route("/style.css", get(|| demo_file("style.css")))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(state));
    match signaling {
        Some(gateway) => base.merge(dartmouth_signaling::routes(gateway)),
        None => base,
    }
}

async fn demo_file(name: &'static str) -> axum::response::Response {
    let Some((_, content_type, embedded)) = DEMO_FILES.iter().find(|(n, _, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match std::env::var_os(WEB_DIR_ENV) {
        Some(dir) => match tokio::fs::read_to_string(std::path::Path::new(&dir).join(name)).await {
            Ok(text) => text,
            Err(_) => (*embedded).to_string(),
        },
        None => (*embedded).to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            "# metrics exporter not installed\n".to_string(),
        ),
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Ready when every embedded model file is in place (existence only: checksums are checked by
/// `dartmouth models list`, not on every probe). Also reports the agents' capacity, whether a new
/// agent session would be admitted now, and each model's queue by priority class.
async fn readyz(State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    let missing: Vec<&str> = Asset::all()
        .filter(|asset| !state.models.path(*asset).is_file())
        .map(Asset::key)
        .collect();
    let status = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let agents = state
        .agents
        .as_ref()
        .and_then(|agents| agents.capacity())
        .map(|capacity| {
            let models: Vec<_> = capacity
                .models
                .iter()
                .map(|m| {
                    json!({
                        "model": m.model,
                        "queued": {
                            "critical": m.load.queued[0],
                            "speculative": m.load.queued[1],
                            "opportunistic": m.load.queued[2],
                        },
                        "busy": m.load.busy,
                        "critical_wait_ms": m.load.critical_wait.as_millis() as u64,
                    })
                })
                .collect();
            json!({
                "capacity": capacity.capacity,
                "active": capacity.active,
                "accepting": capacity.accepting,
                "models": models,
            })
        });
    (
        status,
        axum::Json(json!({
            "ready": missing.is_empty(),
            "missing_models": missing,
            "agents": agents,
        })),
    )
}

/// `Strict-Transport-Security` sent over TLS: one year, this host only.
const HSTS: &str = "max-age=31536000";

async fn strict_transport_security(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        header::HeaderValue::from_static(HSTS),
    );
    response
}

/// Serves the gateway on `listener` (over TLS with `tls`) until `shutdown` resolves, then drains
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: GatewayState,
    signaling: Option<Arc<dartmouth_signaling::Gateway>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    // Connect info gives the signaling routes each client's address for per-address limits.
    let app = router(state, signaling);
    match tls {
        None => {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
        Some(config) => {
            let app = app
                .layer(axum::middleware::from_fn(strict_transport_security))
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            let listener = crate::tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app(dir: &std::path::Path) -> Router {
        router(
            GatewayState {
                models: ModelStore::new(dir),
                metrics: None,
                agents: None,
            },
            None,
        )
    }

    #[tokio::test]
    async fn health_is_ok_and_the_demo_is_served() {
        let app = app(std::path::Path::new("/nonexistent"));
        let health = app
            .clone()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let page = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let body = axum::body::to_bytes(page.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("Dartmouth"));
    }

    #[tokio::test]
    async fn not_ready_without_models_and_says_which() {
        let response = app(std::path::Path::new("/nonexistent"))
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("silero_vad"));
    }
}
