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
use std::net::{IpAddr, SocketAddr};
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

/// Documents the error answers every `/v1` operation can give, in the one [`ErrorBody`] shape:
/// 400 (a bad path or query parameter), 401/403 (a missing, bad or insufficient credential),
/// 413/415/422 (a body that is too large, of another type, or not the schema), 429 (rate limits).
/// Operations keep their own wording where they document one already.
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") || path == "/v1/openapi.json" || path == "/v1/docs" {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let mut codes = vec![
                    ("400", "bad_request: a malformed path, query or body"),
                    (
                        "401",
                        "unauthenticated: a missing, expired or invalid credential",
                    ),
                    ("403", "forbidden: the credential may not do this"),
                    ("429", "rate_limited: over a quota; see Retry-After"),
                ];
                if operation.request_body.is_some() {
                    codes.push(("413", "payload_too_large: the body is over the limit"));
                    codes.push(("415", "unsupported_media_type: the body is of another type"));
                    codes.push(("422", "invalid_body: the body does not match the schema"));
                }
                for (code, description) in codes {
                    operation
                        .responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// The caller's address for audit and rate-limit keys: `ip:<addr>` or `ip:unknown`.
///
/// The TCP peer's address, unless the peer is one of the `trusted` proxies: then the
/// `X-Forwarded-For` chain is read from the right (each proxy appends the address it saw) and
/// the first address that is not itself a trusted proxy is the client. Entries left of it were
/// written by the client and are never believed.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    extensions: &Extensions,
    trusted: &[ipnet::IpNet],
) -> String {
    let Some(peer) = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
    else {
        return "ip:unknown".into();
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if is_trusted(&peer) {
        let chain = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in chain.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
    }
    format!("ip:{}", canonical(client))
}

/// IPv4-mapped IPv6 as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Extractor of [`client_ip`].
pub(crate) struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(
            &parts.headers,
            &parts.extensions,
            &state.limits.trusted_proxies,
        )))
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
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = String::from("# TYPE dartmouth_platform_responses_total counter\n");
    let (hits, misses, entries) = state.ai.cache.stats();
    text.push_str(&format!(
        "# TYPE dartmouth_platform_llm_cache_hits_total counter\ndartmouth_platform_llm_cache_hits_total {hits}\n\
         # TYPE dartmouth_platform_llm_cache_misses_total counter\ndartmouth_platform_llm_cache_misses_total {misses}\n\
         # TYPE dartmouth_platform_llm_cache_entries gauge\ndartmouth_platform_llm_cache_entries {entries}\n\
         # TYPE dartmouth_platform_events_published_total counter\ndartmouth_platform_events_published_total {}\n\
         # TYPE dartmouth_platform_events_lagged_total counter\ndartmouth_platform_events_lagged_total {}\n",
        state.events.published(),
        state.events.lagged()
    ));
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
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .merge(crate::auth::routes::router())
        .merge(crate::documents::router())
        .merge(crate::grants::router())
        .merge(crate::admin::router())
        .merge(crate::gdpr::router())
        .merge(crate::events::routes::router())
        .merge(crate::webhooks::routes::router())
        .merge(crate::intel::router())
        .merge(crate::rag::routes::router())
        .merge(crate::ai::router())
        .merge(crate::cost::router())
        .merge(crate::registry::routes::router())
        .merge(crate::registry::messages::router())
        .merge(crate::monitor::router())
        .merge(crate::notify::router())
        .merge(crate::memory::router())
        .merge(crate::workflow::router())
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .merge(uploads)
        .merge(
            crate::ai::upload_router()
                .layer(DefaultBodyLimit::max(state.config.ai.max_audio_bytes)),
        )
        .split_for_parts();
    // After every route is in: the standard error answers go on each operation.
    StandardErrors.modify(&mut doc);
    (router, doc)
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

    fn ip_of(peer: Option<&str>, forwarded: Option<&str>, trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        if let Some(f) = forwarded {
            headers.insert("x-forwarded-for", HeaderValue::from_str(f).unwrap());
        }
        let mut extensions = Extensions::new();
        if let Some(p) = peer {
            extensions.insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_ip(&headers, &extensions, &trusted)
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_read_from_the_right() {
        // No trusted proxy: the header is ignored, even from loopback.
        assert_eq!(
            ip_of(Some("127.0.0.1:5000"), Some("203.0.113.9"), &[]),
            "ip:127.0.0.1"
        );
        assert_eq!(
            ip_of(
                Some("198.51.100.7:5000"),
                Some("203.0.113.9"),
                &["127.0.0.0/8"]
            ),
            "ip:198.51.100.7"
        );
        // A trusted proxy appended the address it saw; what the client wrote before it is not
        // believed.
        let proxies = ["127.0.0.1/32", "10.0.0.0/8"];
        assert_eq!(
            ip_of(
                Some("127.0.0.1:5000"),
                Some("1.2.3.4, 203.0.113.9"),
                &proxies
            ),
            "ip:203.0.113.9"
        );
        assert_eq!(
            ip_of(
                Some("127.0.0.1:5000"),
                Some("1.2.3.4, 203.0.113.9, 10.1.1.1"),
                &proxies
            ),
            "ip:203.0.113.9"
        );
        assert_eq!(
            ip_of(Some("127.0.0.1:5000"), Some("garbage"), &proxies),
            "ip:127.0.0.1"
        );
        assert_eq!(
            ip_of(Some("[::ffff:192.0.2.1]:5000"), None, &[]),
            "ip:192.0.2.1"
        );
        assert_eq!(ip_of(None, Some("203.0.113.9"), &proxies), "ip:unknown");
    }
}
