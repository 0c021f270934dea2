//! The gateway's HTTP listener: the browser demo, health and readiness. Signaling, WHIP/WHEP and
//! metrics join it as the media core lands.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use dartmouth_models::{Asset, ModelStore};
use serde_json::json;

/// The demo page, compiled into the binary so one file is the whole product.
const DEMO_INDEX: &str = include_str!("../web-demo/index.html");

/// What readiness checks look at.
#[derive(Debug, Clone)]
pub struct GatewayState {
    /// Where model files are.
    pub models: ModelStore,
}

/// The gateway's routes.
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/", get(demo))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(state))
}

async fn demo() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DEMO_INDEX))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Ready when every embedded model file is in place (existence only: checksums are checked by
/// `dartmouth models list`, not on every probe).
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
    (
        status,
        axum::Json(json!({ "ready": missing.is_empty(), "missing_models": missing })),
    )
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app(dir: &std::path::Path) -> Router {
        router(GatewayState {
            models: ModelStore::new(dir),
        })
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
