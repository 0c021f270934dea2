//! The provider contract: one trait each for speech to text, language models and text to speech.
//!
//! Every call starts a job and returns a bounded event stream at once; the job runs on the
//! provider's own worker thread (embedded models) or as a task on the current tokio runtime (HTTP
//! providers), never inside the caller. Each call takes a [`CancellationToken`]: cancelling it
//! (barge-in, a superseded turn, a fallback timeout) stops the job promptly, and the stream then
//! ends. Dropping the stream has the same effect on the next send. Providers are chosen at one
//! point (the agent configuration) and the pipeline sees only these traits.

use std::sync::Arc;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

pub use crate::job::{JobTag, Priority, SessionId};
use crate::llm::ChatMessage;
use crate::scheduler::SchedulerLoad;

/// Capacity of a provider's event stream; senders wait (backpressure) when it is full.
pub const PROVIDER_EVENT_CAPACITY: usize = 64;

/// A provider's stream of events for one job.
pub type EventStream<T> = tokio::sync::mpsc::Receiver<T>;

/// Creates the bounded channel a provider job reports through.
pub fn event_channel<T>() -> (tokio::sync::mpsc::Sender<T>, EventStream<T>) {
    tokio::sync::mpsc::channel(PROVIDER_EVENT_CAPACITY)
}

/// Why a provider job failed. Messages are for operators; no secrets or request bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The request was refused or malformed on our side (bad input, unsupported option).
    #[error("{provider}: invalid request: {message}")]
    InvalidRequest {
        /// Provider name.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// The remote service answered with an error status.
    #[error("{provider}: HTTP {status}: {message}")]
    Http {
        /// Provider name.
        provider: String,
        /// HTTP status code.
        status: u16,
        /// The service's error message, if it sent one.
        message: String,
    },
    /// The service's answer could not be understood.
    #[error("{provider}: invalid response: {message}")]
    InvalidResponse {
        /// Provider name.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// No answer (or no first token) in time.
    #[error("{provider}: timed out after {after:?}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// How long we waited.
        after: Duration,
    },
    /// The connection failed.
    #[error("{provider}: connection failed: {message}")]
    Connection {
        /// Provider name.
        provider: String,
        /// What the transport said.
        message: String,
    },
    /// The local model failed.
    #[error("{provider}: model error: {message}")]
    Model {
        /// Provider name.
        provider: String,
        /// What the model said.
        message: String,
    },
    /// The provider's worker is gone (process shutting down).
    #[error("{provider}: worker stopped")]
    WorkerStopped {
        /// Provider name.
        provider: String,
    },
    /// The job was cancelled before it finished.
    #[error("{provider}: cancelled")]
    Cancelled {
        /// Provider name.
        provider: String,
    },
    /// The provider is saturated: the job was shed or refused (see its message).
    #[error("{provider}: overloaded: {message}")]
    Overloaded {
        /// Provider name.
        provider: String,
        /// What happened to the job.
        message: String,
    },
}

/// What speech-to-text providers report.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// An interim hypothesis that may still change.
    Partial(String),
    /// The final transcript of the utterance (may be empty: no words).
    Final(String),
    /// The job failed; the stream ends.
    Error(ProviderError),
}

/// One utterance to transcribe.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SttRequest {
    /// 16 kHz mono samples in [-1, 1].
    pub audio: Arc<[f32]>,
    /// What an earlier call heard in a shorter prefix of the same utterance. A provider may use
    /// it to decode faster; it must not change the result.
    pub draft: Option<Arc<str>>,
    /// What the job is for (session, turn, priority).
    pub tag: JobTag,
}

impl SttRequest {
    /// A request for `audio` (16 kHz mono) outside any session, at critical priority.
    pub fn new(audio: impl Into<Arc<[f32]>>) -> Self {
        Self {
            audio: audio.into(),
            ..Self::default()
        }
    }

    /// With `draft` as the guess of the first words.
    pub fn with_draft(mut self, draft: Option<Arc<str>>) -> Self {
        self.draft = draft;
        self
    }

    /// Tagged with `tag`.
    pub fn tagged(mut self, tag: JobTag) -> Self {
        self.tag = tag;
        self
    }
}

/// Speech to text over a whole utterance.
pub trait Stt: Send + Sync + 'static {
    /// Short provider name for logs and turn records (`moonshine`, `whisper`, `openai`).
    fn name(&self) -> &str;
    /// Transcribes the request's audio.
    fn transcribe(&self, request: SttRequest, cancel: CancellationToken) -> EventStream<SttEvent>;
    /// How loaded the provider's local model is (`None` for remote services).
    fn scheduler_load(&self) -> Option<SchedulerLoad> {
        None
    }
}

/// A function the model may call, in the OpenAI tool shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolSpec {
    /// Function name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// Provider-assigned call id, echoed back with the result.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as a JSON text (as the model wrote them).
    pub arguments: String,
}

/// One request to a language model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmRequest {
    /// The conversation so far, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Functions the model may call.
    pub tools: Vec<ToolSpec>,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy); `None` leaves the provider's default.
    pub temperature: Option<f64>,
    /// What the job is for (session, turn, priority).
    pub tag: JobTag,
}

/// Usage and timing a model reports at the end of a job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmUsage {
    /// Prompt tokens, when known.
    pub prompt_tokens: Option<usize>,
    /// Generated tokens, when known.
    pub completion_tokens: Option<usize>,
}

/// What language models report.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// The next piece of the answer's text (whole UTF-8 characters).
    Token(String),
    /// The model asks for a function call.
    ToolCall(ToolCall),
    /// Which provider is answering, sent once before the first `Token` or `ToolCall` by
    /// providers that choose among others (`fallback::FallbackLlm`); plain providers never send
    /// it. Consumers that do not care may ignore it.
    Served {
        /// Name of the provider whose answer follows.
        provider: String,
    },
    /// The answer is complete; the stream ends.
    Done(LlmUsage),
    /// The job failed; the stream ends.
    Error(ProviderError),
}

/// A streaming language model.
pub trait Llm: Send + Sync + 'static {
    /// Short provider name for logs and turn records.
    fn name(&self) -> &str;
    /// Starts generating an answer to `request`.
    fn stream(&self, request: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent>;
    /// `request` is likely to be asked soon, with its last message (the user's, still being
    /// spoken) grown: a provider may read its start ahead of time (the embedded model fills its
    /// prompt cache). Nothing is reported; cancelling skips it. The default does nothing.
    fn read_ahead(&self, request: LlmRequest, cancel: CancellationToken) {
        let _ = (request, cancel);
    }
    /// How loaded the provider's local model is (`None` for remote services).
    fn scheduler_load(&self) -> Option<SchedulerLoad> {
        None
    }
}

/// A piece of synthesised speech and the text it speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechChunk {
    /// Mono samples at the provider's sample rate.
    pub samples: Vec<i16>,
    /// The text this audio speaks (a sentence or clause; empty for trailing audio).
    pub text: String,
}

/// What text-to-speech providers report.
#[derive(Debug, Clone, PartialEq)]
pub enum TtsEvent {
    /// Audio for (part of) the text.
    Audio(SpeechChunk),
    /// All audio for the text was sent; the stream ends.
    Done,
    /// The job failed; the stream ends.
    Error(ProviderError),
}

/// A piece of text to speak.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TtsRequest {
    /// The text (usually one sentence).
    pub text: String,
    /// What the job is for (session, turn, priority).
    pub tag: JobTag,
}

impl TtsRequest {
    /// A request to speak `text` outside any session, at critical priority.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            tag: JobTag::default(),
        }
    }

    /// Tagged with `tag`.
    pub fn tagged(mut self, tag: JobTag) -> Self {
        self.tag = tag;
        self
    }
}

/// Streaming text to speech.
pub trait Tts: Send + Sync + 'static {
    /// Short provider name for logs and turn records.
    fn name(&self) -> &str;
    /// Sample rate of the audio this provider produces.
    fn sample_rate(&self) -> u32;
    /// Speaks the request's text.
    fn synthesize(&self, request: TtsRequest, cancel: CancellationToken) -> EventStream<TtsEvent>;
    /// How loaded the provider's local model is (`None` for remote services).
    fn scheduler_load(&self) -> Option<SchedulerLoad> {
        None
    }
}
