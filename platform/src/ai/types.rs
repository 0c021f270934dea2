//! The OpenAI wire shapes the endpoints read and write (only what they use; unknown request
//! fields are ignored, as OpenAI-compatible servers do).

use super::{Message, ToolCall, Usage};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Model name (a configured provider's, or any name for the default chain).
    pub model: String,
    /// The conversation: `{role, content}` where content is a string or a list of parts
    /// (`{"type":"text","text"}`, `{"type":"image_url","image_url":{"url"}}`).
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}` adds a final usage chunk to a stream.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub stream_options: Option<Value>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (0–2).
    pub temperature: Option<f64>,
    /// Functions the model may call (OpenAI tool shape).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<Value>,
    /// Stop sequences (string or list).
    #[schema(value_type = Object)]
    pub stop: Option<Value>,
    /// Number of choices; only 1 is supported.
    pub n: Option<u32>,
    /// End-user id (recorded with usage).
    pub user: Option<String>,
}

/// Parses one message of the request.
pub fn parse_message(value: &Value) -> Result<Message, ApiError> {
    let role = value
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("every message needs a role"))?;
    if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
        return Err(ApiError::bad_request(format!(
            "unknown message role {role:?}"
        )));
    }
    let mut text = String::new();
    let mut images = Vec::new();
    match value.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                ApiError::bad_request("image_url part needs image_url.url")
                            })?;
                        images.push(url.to_string());
                    }
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported content part type {other:?}"
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "content must be a string or a list of parts",
            ));
        }
    }
    let tool_calls = value
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    name: c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    arguments: c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}")
                        .into(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Message {
        role: if role == "developer" {
            "system".into()
        } else {
            role.into()
        },
        content: text,
        images,
        tool_calls,
        tool_call_id: value
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(String::from),
    })
}

/// Tool calls in the OpenAI response shape.
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "index": i, "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })
            })
            .collect(),
    )
}

/// Usage in the OpenAI shape.
pub fn usage_json(usage: Usage) -> Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Model name (any; the embedded MiniLM answers).
    pub model: String,
    /// `float` (default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// Unsupported unless 384.
    pub dimensions: Option<usize>,
    /// End-user id.
    pub user: Option<String>,
}

/// `POST /v1/audio/speech` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SpeechRequest {
    /// Model name (any; the embedded voice answers).
    pub model: String,
    /// The text.
    pub input: String,
    /// A voice of the backend, or an OpenAI voice name (mapped to the default voice).
    pub voice: String,
    /// `wav` (default) or `pcm` (24 kHz signed 16-bit little-endian mono).
    pub response_format: Option<String>,
    /// Unsupported unless 1.
    pub speed: Option<f64>,
    /// Ignored.
    pub instructions: Option<String>,
}

/// `POST /v1/moderations` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModerationRequest {
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Ignored (the platform's filter answers).
    pub model: Option<String>,
}

/// Strings of an `input` that is a string or a list of strings.
pub fn input_strings(input: &Value, max: usize) -> Result<Vec<String>, ApiError> {
    let strings: Vec<String> = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| ApiError::bad_request("input must be a string or a list of strings (token arrays are not supported)"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(ApiError::bad_request("input must be a string or a list of strings")),
    };
    if strings.is_empty() || strings.len() > max {
        return Err(ApiError::bad_request(format!("input: 1-{max} strings")));
    }
    Ok(strings)
}
