//! Language models: the embedded SmolLM2 on candle, streaming tokens, and the chat messages
//! every provider takes.

pub mod chat;
pub mod embedded;
mod gguf;
mod options;
mod prefix_cache;
mod stream;

pub use chat::{ChatMessage, Role};
pub use embedded::{
    EmbeddedLlm, GenerationStats, LlmError, LlmOptions, StopReason, set_cpu_threads,
};
