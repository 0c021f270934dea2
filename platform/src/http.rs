//! The axum application: routes, the one error envelope, request ids, body limits, CORS, the
//! OpenAPI document and its browsable page, `/healthz` and `/metrics`.

use crate::error::{ErrorBody, ErrorDetail, ErrorInfo, PlatformError, code_for_status};
use crate::state::AppState;
pub use axum::Json;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The request-id header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Largest error body read back from a non-handler error (extractor rejections are short).
const MAX_REJECTION_BODY: usize = 4096;

static RESPONSES_BY_CLASS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

#[derive(OpenApi)]
#[openapi(
    info(title = "Dartmouth platform sidecar", version = "0.1.0", description = "Auth, data, storage, audit and encryption for Dartmouth agents. Every error has the shape `{\"error\": {\"code\", \"message\", \"request_id\"}}`."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token or dk_ API key")
                    .build(),
            ),
        );
    }
}

/// The caller's address for audit and rate-limit keys: `ip:<addr>` or `ip:unknown`. A loopback
/// peer (the gateway in front of the sidecar) may name the real client in `X-Forwarded-For`.
pub(crate) fn client_ip(headers: &HeaderMap, extensions: &Extensions) -> String {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let forwarded = || {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse::<std::net::IpAddr>().ok())
    };
    match peer {
        Some(ip) if ip.is_loopback() => format!("ip:{}", forwarded().unwrap_or(ip)),
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".into(),
    }
}

/// Extractor of [`client_ip`].
pub(crate) struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.headers, &parts.extensions)))
    }
}

#[derive(Clone, Copy)]
struct UuidRequestId;

impl MakeRequestId for UuidRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Turns every error response into the one [`ErrorBody`] shape with the request id.
async fn error_envelope(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3, request_id, "request");
    RESPONSES_BY_CLASS[(status.as_u16() / 100).clamp(1, 5) as usize - 1]
        .fetch_add(1, Ordering::Relaxed);
    let info = response.extensions_mut().remove::<ErrorInfo>();
    if info.is_none() && !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message) = match info {
        Some(info) => (info.code.to_string(), info.message),
        None => {
            let body = std::mem::take(response.body_mut());
            let bytes = axum::body::to_bytes(body, MAX_REJECTION_BODY)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
            } else {
                text
            };
            (code_for_status(status).to_string(), message)
        }
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            request_id,
        },
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *response.body_mut() = Body::from(json);
    response
}

/// Liveness and database reachability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// `local` or `s3`.
    pub storage: String,
}

/// Health check (no auth).
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let ok = sqlx::query("SELECT 1")
        .execute(&state.db.pool)
        .await
        .is_ok();
    let database = match state.db.dialect {
        crate::db::Dialect::Sqlite => "sqlite",
        crate::db::Dialect::Postgres => "postgres",
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ok { "ok" } else { "degraded" }.into(),
            database: database.into(),
            storage: state.storage.backend_name().into(),
        }),
    )
}

/// Prometheus text metrics (no auth; loopback only).
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics() -> impl IntoResponse {
    let mut text = String::from("# TYPE dartmouth_platform_responses_total counter\n");
    for (i, counter) in RESPONSES_BY_CLASS.iter().enumerate() {
        text.push_str(&format!(
            "dartmouth_platform_responses_total{{class=\"{}xx\"}} {}\n",
            i + 1,
            counter.load(Ordering::Relaxed)
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The OpenAPI 3.1 document of this API (no auth).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi_json(State(state): State<AppState>) -> Response {
    match state.openapi.get() {
        Some(doc) => Json(doc.clone()).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// A browsable page over the OpenAPI document (no auth).
#[utoipa::path(get, path = "/v1/docs", tag = "meta", responses((status = 200, content_type = "text/html", body = String)))]
async fn docs_page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::not_found("no such route")
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(REQUEST_ID_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(REQUEST_ID_HEADER),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Assembles the routes and the OpenAPI document from one source.
pub(crate) fn routes(state: &AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let uploads =
        crate::files::router().layer(DefaultBodyLimit::max(state.config.max_upload_bytes));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .merge(crate::auth::routes::router())
        .merge(crate::documents::router())
        .merge(crate::grants::router())
        .merge(crate::admin::router())
        .merge(crate::gdpr::router())
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .merge(uploads)
        .split_for_parts()
}

/// Builds the full application for a state.
pub(crate) fn build(state: AppState) -> Result<axum::Router, PlatformError> {
    let (router, doc) = routes(&state);
    let doc =
        serde_json::to_value(&doc).map_err(|e| PlatformError::Config(format!("openapi: {e}")))?;
    let _ = state.openapi.set(doc);
    let cors = cors(&state.config.cors_origins);
    Ok(router
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), crate::ratelimit::enforce))
        .layer(from_fn(error_envelope))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            REQUEST_ID_HEADER,
        )))
        .layer(SetRequestIdLayer::new(
            HeaderName::from_static(REQUEST_ID_HEADER),
            UuidRequestId,
        ))
        .with_state(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_of(peer: Option<&str>, forwarded: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(f) = forwarded {
            headers.insert("x-forwarded-for", HeaderValue::from_str(f).unwrap());
        }
        let mut extensions = Extensions::new();
        if let Some(p) = peer {
            extensions.insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        client_ip(&headers, &extensions)
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_loopback() {
        assert_eq!(
            ip_of(Some("127.0.0.1:5000"), Some("203.0.113.9, 10.0.0.1")),
            "ip:203.0.113.9"
        );
        assert_eq!(
            ip_of(Some("127.0.0.1:5000"), Some("garbage")),
            "ip:127.0.0.1"
        );
        assert_eq!(
            ip_of(Some("198.51.100.7:5000"), Some("203.0.113.9")),
            "ip:198.51.100.7"
        );
        assert_eq!(ip_of(None, Some("203.0.113.9")), "ip:unknown");
    }
}
