//! OpenAI-compatible AI endpoints: `/v1/chat/completions` (streamed and not, tools, images
//! forwarded to vision providers), `/v1/audio/transcriptions`, `/v1/audio/speech`,
//! `/v1/embeddings`, `/v1/moderations`, `/v1/models`. Chat is served by the embedded model or by
//! configured remote providers (OpenAI-compatible, Anthropic) through a fallback chain, with an
//! exact-match response cache, token and cost accounting, and per-agent budgets (see `cost`).
//!
//! The platform stands alone: the embedded models come in through the small backend traits here
//! ([`ChatBackend`], [`TranscribeBackend`], [`SpeechBackend`]), which the binary implements over
//! its voice providers; embeddings use MiniLM directly.

mod answer;
pub mod audio;
pub mod cache;
pub mod chat;
mod fallback;
pub mod remote;
pub mod types;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Pieces of an answer queued from a chat backend.
pub const CHAT_STREAM_CAPACITY: usize = 64;
/// Name of the built-in (embedded) chat provider in the chain.
pub const EMBEDDED: &str = "embedded";

/// One chat message as backends see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text content (parts joined).
    pub content: String,
    /// Image URLs of the message (data: or http(s):), for vision providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Tool calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A function call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// Function name.
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

/// A chat request as backends see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model name the provider should use.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools in the OpenAI shape (`{"type":"function","function":{…}}`).
    pub tools: Vec<serde_json::Value>,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
}

/// What a chat backend reports, in order; the stream ends after `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// The next piece of the answer.
    Text(String),
    /// A function call.
    ToolCall(ToolCall),
    /// The answer is complete.
    Done {
        /// Token counts.
        usage: Usage,
        /// `stop`, `length` or `tool_calls`.
        finish_reason: String,
    },
    /// It failed (before `Done`).
    Error(String),
}

/// A chat model: starts generating at once, answers on a bounded stream; cancelling stops it.
pub trait ChatBackend: Send + Sync + 'static {
    /// Provider name for usage records.
    fn name(&self) -> &str;
    /// The model name it reports.
    fn model(&self) -> &str;
    /// Starts answering `request`.
    fn chat(&self, request: ChatRequest, cancel: CancellationToken) -> mpsc::Receiver<ChatChunk>;
}

/// A boxed future of a backend.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// Speech to text over a whole recording.
pub trait TranscribeBackend: Send + Sync + 'static {
    /// Provider name.
    fn name(&self) -> &str;
    /// Transcribes 16 kHz mono samples in [-1, 1].
    fn transcribe(&self, audio_16k: Vec<f32>) -> BackendFuture<String>;
}

/// Synthesised speech: mono samples and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// Samples.
    pub samples: Vec<i16>,
    /// Sample rate.
    pub sample_rate: u32,
}

/// Text to speech.
pub trait SpeechBackend: Send + Sync + 'static {
    /// Provider name.
    fn name(&self) -> &str;
    /// Voices it offers (the first is the default; OpenAI names map onto it).
    fn voices(&self) -> Vec<String>;
    /// Speaks `text` with `voice`.
    fn synthesize(&self, text: String, voice: String) -> BackendFuture<Speech>;
}

/// The embedded models the binary supplies.
#[derive(Clone, Default)]
pub struct Backends {
    /// The embedded chat model.
    pub chat: Option<Arc<dyn ChatBackend>>,
    /// The embedded speech to text.
    pub transcribe: Option<Arc<dyn TranscribeBackend>>,
    /// The embedded text to speech.
    pub speech: Option<Arc<dyn SpeechBackend>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("chat", &self.chat.as_ref().map(|b| b.name().to_string()))
            .field(
                "transcribe",
                &self.transcribe.as_ref().map(|b| b.name().to_string()),
            )
            .field(
                "speech",
                &self.speech.as_ref().map(|b| b.name().to_string()),
            )
            .finish()
    }
}

/// A remote chat provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its name in the chain and in usage records.
    pub name: String,
    /// `openai` (any OpenAI-compatible server) or `anthropic`.
    pub kind: String,
    /// Base URL, e.g. `https://api.openai.com/v1` or `https://api.anthropic.com`.
    pub base_url: String,
    /// Environment variable holding its API key (empty: none).
    #[serde(default)]
    pub api_key_env: String,
    /// Model names it serves (a request for one goes to it first).
    #[serde(default)]
    pub models: Vec<String>,
    /// Model it uses when it answers as a fallback for another model.
    #[serde(default)]
    pub default_model: String,
    /// Whether it accepts images in messages.
    #[serde(default)]
    pub vision: bool,
    /// Seconds to wait for the first token before falling back. Default 10.
    #[serde(default = "default_first_token_secs")]
    pub first_token_timeout_secs: u64,
}

fn default_first_token_secs() -> u64 {
    10
}

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_million: f64,
    /// Per million generated tokens.
    pub output_per_million: f64,
}

/// Settings of the AI endpoints (`[platform.ai]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct AiConfig {
    /// Remote providers.
    pub providers: Vec<ProviderConfig>,
    /// Fallback order of provider names (`embedded` is the built-in model). Default `["embedded"]`.
    pub chain: Vec<String>,
    /// How long a cached answer is served, in seconds (0 disables the cache). Default 3600.
    pub cache_ttl_secs: u64,
    /// Most answers cached. Default 10 000.
    pub cache_capacity: usize,
    /// Prices per model name (unlisted models cost nothing, e.g. the embedded one).
    pub prices: BTreeMap<String, Price>,
    /// Default answer length when a request sets none. Default 256.
    pub default_max_tokens: usize,
    /// Largest audio upload for transcription, in bytes. Default 25 MiB.
    pub max_audio_bytes: usize,
    /// Longest text to speak, in characters. Default 4096.
    pub max_speech_chars: usize,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            chain: vec![EMBEDDED.into()],
            cache_ttl_secs: 3600,
            cache_capacity: 10_000,
            prices: BTreeMap::new(),
            default_max_tokens: 256,
            max_audio_bytes: 25 * 1024 * 1024,
            max_speech_chars: 4096,
        }
    }
}

pub(crate) fn router() -> utoipa_axum::router::OpenApiRouter<crate::state::AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(chat::chat_completions))
        .routes(routes!(audio::speech))
        .routes(routes!(audio::embeddings))
        .routes(routes!(audio::moderations))
        .routes(routes!(audio::models))
}

/// The transcription route (its own, larger body limit).
pub(crate) fn upload_router() -> utoipa_axum::router::OpenApiRouter<crate::state::AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(audio::transcriptions))
}

/// The AI service: backends, remote providers and the cache.
#[derive(Debug)]
pub struct Ai {
    /// Embedded backends.
    pub backends: Backends,
    /// Remote providers by name.
    pub(crate) remotes: BTreeMap<String, remote::Remote>,
    /// The response cache.
    pub cache: cache::ResponseCache,
}

impl Ai {
    /// Builds the service from its configuration (API keys read from the environment now).
    pub fn new(config: &AiConfig, backends: Backends) -> Result<Ai, crate::PlatformError> {
        let mut remotes = BTreeMap::new();
        for provider in &config.providers {
            remotes.insert(provider.name.clone(), remote::Remote::new(provider)?);
        }
        for name in &config.chain {
            if name != EMBEDDED && !remotes.contains_key(name) {
                return Err(crate::PlatformError::Config(format!(
                    "ai.chain names {name:?}, which is not a configured provider"
                )));
            }
        }
        Ok(Ai {
            backends,
            remotes,
            cache: cache::ResponseCache::new(config.cache_capacity),
        })
    }
}
