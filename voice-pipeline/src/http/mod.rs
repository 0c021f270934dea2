//! HTTP providers: OpenAI-compatible chat completions, transcription and speech, and the
//! Anthropic Messages API, plus the plumbing they share.
//!
//! Every provider takes an [`HttpProviderConfig`] and runs each job as a task on the current
//! tokio runtime; the job stops when its [`CancellationToken`](crate::provider::CancellationToken)
//! is cancelled or its event stream is dropped, and the HTTP connection is dropped with it.
//!
//! ```no_run
//! use std::time::Duration;
//! use dartmouth_voice::http::{HttpProviderConfig, OpenAiLlm};
//!
//! let config = HttpProviderConfig::new("http://127.0.0.1:11434", "llama3.2")
//!     .with_first_token_timeout(Duration::from_secs(2));
//! let llm = OpenAiLlm::new(config).expect("HTTP client");
//! ```

pub mod anthropic;
pub mod openai_llm;
pub mod openai_stt;
pub mod openai_tts;
mod sse;

use std::sync::Once;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::provider::{CancellationToken, ProviderError};

pub use anthropic::AnthropicLlm;
pub use openai_llm::OpenAiLlm;
pub use openai_stt::OpenAiStt;
pub use openai_tts::OpenAiTts;
pub use sse::{MAX_SSE_LINE, SseError, SseEvent, SseParser};

/// Default bound on a whole job (request, response and streamed body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound on the time until the first token (LLM) or first audio (TTS).
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error response body is read to find the service's message.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where and how to reach one HTTP provider.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpProviderConfig {
    /// Server root, e.g. `https://api.openai.com` or `http://127.0.0.1:11434`. A trailing `/v1`
    /// is accepted too: endpoint paths (`/v1/...`) are not doubled.
    pub base_url: String,
    /// API key, sent as `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic).
    pub api_key: Option<String>,
    /// Model name the service expects.
    pub model: String,
    /// Bound on a whole job.
    pub timeout: Duration,
    /// Bound on the time until the first token (LLM) or the first audio (TTS).
    pub first_token_timeout: Duration,
    /// Extra headers sent with every request (organisation ids, proxies' keys).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for HttpProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and header values may be secrets: show only that they are set.
        f.debug_struct("HttpProviderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl HttpProviderConfig {
    /// A configuration without key or extra headers and the default timeouts.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: DEFAULT_TIMEOUT,
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            headers: Vec::new(),
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the bound on a whole job.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the bound on the time until the first token or audio.
    pub fn with_first_token_timeout(mut self, timeout: Duration) -> Self {
        self.first_token_timeout = timeout;
        self
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The URL of `path` (which starts with `/v1/`) on this server.
    pub fn endpoint(&self, path: &str) -> String {
        let base = self.base_url.trim_end_matches('/');
        match base.strip_suffix("/v1") {
            Some(root) if path.starts_with("/v1/") => format!("{root}{path}"),
            _ => format!("{base}{path}"),
        }
    }

    /// The extra headers as a header map; a name or value HTTP cannot carry is an error.
    pub fn header_map(&self, provider: &str) -> Result<HeaderMap, ProviderError> {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid_request(provider, format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid_request(provider, format!("invalid value for {name}")))?;
            value.set_sensitive(true);
            map.append(name, value);
        }
        Ok(map)
    }
}

/// Installs rustls' aws-lc-rs crypto provider as the process default, once. rustls panics when
/// both of its providers (ring and aws-lc-rs) are compiled in and none was chosen; several of
/// our dependencies enable both. Installing is harmless when another default is already set.
pub fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An `Err` means someone installed a provider first; theirs stays.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A `reqwest` client for the providers: rustls, a connect timeout, no proxy lookup surprises.
/// Clients are cheap to clone and share their connection pool.
pub fn http_client(config: &HttpProviderConfig) -> Result<reqwest::Client, ProviderError> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ProviderError::Connection {
            provider: "http".to_string(),
            message: error_chain(&e.without_url()),
        })
}

/// `e` and its sources, `: `-separated (reqwest's own message is terse).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}

/// Maps a transport error to `Timeout` or `Connection`, without the URL.
pub(crate) fn transport_error(provider: &str, e: reqwest::Error, after: Duration) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout {
            provider: provider.to_string(),
            after,
        };
    }
    ProviderError::Connection {
        provider: provider.to_string(),
        message: error_chain(&e.without_url()),
    }
}

pub(crate) fn invalid_request(provider: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: provider.to_string(),
        message: message.into(),
    }
}

pub(crate) fn invalid_response(provider: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::InvalidResponse {
        provider: provider.to_string(),
        message: message.into(),
    }
}

/// The service's error message in a JSON error body: `{"error":{"message":…}}` (OpenAI,
/// Anthropic, vLLM), `{"error":"…"}` (Ollama, llama.cpp variants), `{"message":…}` or
/// `{"detail":…}`; else the body's text, shortened. Empty when the body says nothing.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = value
            .pointer("/error/message")
            .or_else(|| value.get("error"))
            .or_else(|| value.get("message"))
            .or_else(|| value.pointer("/detail/message"))
            .or_else(|| value.get("detail"));
        match found {
            Some(serde_json::Value::String(s)) => return shorten(s),
            Some(serde_json::Value::Null) | None => {}
            Some(other) => return shorten(&other.to_string()),
        }
    }
    shorten(String::from_utf8_lossy(body).trim())
}

fn shorten(text: &str) -> String {
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Reads (at most [`MAX_ERROR_BODY`] of) a non-2xx response and turns it into
/// [`ProviderError::Http`] with the service's message, or the status' reason when it sent none.
pub(crate) async fn http_error(provider: &str, mut response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let mut message = error_message(&body);
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_string();
    }
    ProviderError::Http {
        provider: provider.to_string(),
        status: status.as_u16(),
        message,
    }
}

/// Sends `request`, maps transport errors and non-2xx answers, and returns the 2xx response.
pub(crate) async fn send(
    provider: &str,
    request: reqwest::RequestBuilder,
    after: Duration,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, e, after))?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(http_error(provider, response).await)
    }
}

/// The two bounds of a streaming job: the first output must arrive by `first`, everything by
/// `overall`. Time is tokio's, so paused-time tests drive it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobClock {
    start: tokio::time::Instant,
    first_after: Duration,
    overall_after: Duration,
    got_first: bool,
}

impl JobClock {
    pub(crate) fn start(config: &HttpProviderConfig) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            first_after: config.first_token_timeout.min(config.timeout),
            overall_after: config.timeout,
            got_first: false,
        }
    }

    /// Records that the first output arrived; from now on only the overall bound applies.
    pub(crate) fn first_output(&mut self) {
        self.got_first = true;
    }

    /// Whether the first output arrived.
    pub(crate) fn has_first(&self) -> bool {
        self.got_first
    }

    fn bound(&self) -> Duration {
        if self.got_first {
            self.overall_after
        } else {
            self.first_after
        }
    }

    /// Awaits `fut` within the bound that applies now, else `Timeout`.
    pub(crate) async fn within<T>(
        &self,
        provider: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, ProviderError> {
        let after = self.bound();
        tokio::time::timeout_at(self.start + after, fut)
            .await
            .map_err(|_| ProviderError::Timeout {
                provider: provider.to_string(),
                after,
            })
    }

    /// The next body chunk within the bound; `None` at the end of the body.
    pub(crate) async fn chunk(
        &self,
        provider: &str,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, ProviderError> {
        let after = self.bound();
        self.within(provider, response.chunk())
            .await?
            .map_err(|e| transport_error(provider, e, after))
    }
}

/// Spawns a provider job on the current runtime. It stops, without another event, when `cancel`
/// fires or the receiver is dropped; a failure is reported as the stream's last event.
pub(crate) fn spawn_job<E: Send + 'static>(
    provider: &str,
    tx: tokio::sync::mpsc::Sender<E>,
    cancel: CancellationToken,
    job: impl Future<Output = Result<(), ProviderError>> + Send + 'static,
    on_error: fn(ProviderError) -> E,
) {
    use tracing::Instrument;
    let span = tracing::debug_span!("http_provider_job", provider = %provider);
    tokio::spawn(
        async move {
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = tx.closed() => return,
                result = job => result,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "provider job failed");
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {}
                    _ = tx.send(on_error(e)) => {}
                }
            }
        }
        .instrument(span),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_of_the_usual_shapes() {
        let openai = br#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(openai), "Invalid API key");
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(anthropic), "Overloaded");
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(br#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_message(b"Bad Gateway\n"), "Bad Gateway");
        assert_eq!(error_message(b""), "");
    }

    #[test]
    fn endpoints_do_not_double_v1() {
        let c = HttpProviderConfig::new("https://api.openai.com/v1/", "m");
        assert_eq!(
            c.endpoint("/v1/chat/completions"),
            "https://api.openai.com/v1/chat/completions"
        );
        let c = HttpProviderConfig::new("http://127.0.0.1:8000", "m");
        assert_eq!(
            c.endpoint("/v1/messages"),
            "http://127.0.0.1:8000/v1/messages"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let c = HttpProviderConfig::new("http://x", "m")
            .with_api_key("sk-secret")
            .with_header("x-org", "org-secret");
        let text = format!("{c:?}");
        assert!(!text.contains("secret"), "{text}");
    }
}
