//! The Anthropic Messages API (`POST /v1/messages`, `stream: true`).
//!
//! System messages are joined (blank-line separated) into the top-level `system` field; the rest
//! go to `messages` as `user`/`assistant`. Stream events: `text_delta`s become
//! [`LlmEvent::Token`]s; a `tool_use` content block (its `id` and `name` at
//! `content_block_start`, its input as `input_json_delta` fragments) becomes an
//! [`LlmEvent::ToolCall`] at its `content_block_stop`; `message_start`/`message_delta` usage goes
//! into [`LlmEvent::Done`] at `message_stop`; an `error` event becomes [`ProviderError::Http`]
//! with the status Anthropic documents for its type (e.g. `overloaded_error` → 529); `ping` and
//! unknown events are ignored.
//!
//! Tool round trips: an assistant message with tool calls goes out as content blocks (its text,
//! then one `tool_use` block per call with the arguments parsed as the `input` object), and
//! tool results as `tool_result` blocks in a `user` message (consecutive results share one, as
//! the API requires).

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{HttpProviderConfig, JobClock, SseParser, invalid_response, spawn_job};
use crate::llm::{ChatMessage, Role};
use crate::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, LlmUsage, ProviderError, ToolCall,
    event_channel,
};

/// The API version this client speaks (`anthropic-version` header).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` sent when the request leaves it 0 (the API requires one).
pub const DEFAULT_MAX_TOKENS: usize = 1024;
/// Most content blocks accepted in one answer (a bound on a server-chosen index).
pub const MAX_CONTENT_BLOCKS: usize = 64;

/// A Claude model over the Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicLlm {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    name: String,
    config: HttpProviderConfig,
    client: reqwest::Client,
}

impl AnthropicLlm {
    /// A provider named `anthropic` with its own HTTP client.
    pub fn new(config: HttpProviderConfig) -> Result<Self, ProviderError> {
        let client = super::http_client(&config)?;
        Ok(Self::with_client(config, client))
    }

    /// A provider sharing `client` (and its connection pool) with others.
    pub fn with_client(config: HttpProviderConfig, client: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: "anthropic".to_string(),
                config,
                client,
            }),
        }
    }

    /// Renames the provider (logs, errors, turn records, the fallback chain's `Served`).
    pub fn with_name(self, name: impl Into<String>) -> Self {
        let inner = Arc::unwrap_or_clone(self.inner);
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                ..inner
            }),
        }
    }
}

impl Llm for AnthropicLlm {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn stream(&self, request: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent> {
        let (tx, rx) = event_channel();
        let inner = Arc::clone(&self.inner);
        let job_tx = tx.clone();
        spawn_job(
            &self.inner.name,
            tx,
            cancel,
            async move { run(&inner, &request, &job_tx).await },
            LlmEvent::Error,
        );
        rx
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

/// The non-system messages in the API's shape.
fn wire_messages(messages: &[ChatMessage]) -> Vec<WireMessage<'_>> {
    let mut out: Vec<WireMessage<'_>> = Vec::new();
    for m in messages.iter().filter(|m| m.role != Role::System) {
        match m.role {
            Role::Tool => {
                let block = WireBlock::ToolResult {
                    tool_use_id: m.tool_call_id.as_deref().unwrap_or_default(),
                    content: &m.content,
                };
                // Results of one round of calls go back together in one user message.
                if let Some(WireMessage {
                    role: "user",
                    content: WireContent::Blocks(blocks),
                }) = out.last_mut()
                    && matches!(blocks.last(), Some(WireBlock::ToolResult { .. }))
                {
                    blocks.push(block);
                } else {
                    out.push(WireMessage {
                        role: "user",
                        content: WireContent::Blocks(vec![block]),
                    });
                }
            }
            _ if !m.tool_calls.is_empty() => {
                let text = (!m.content.is_empty()).then_some(WireBlock::Text { text: &m.content });
                let calls = m.tool_calls.iter().map(|call| WireBlock::ToolUse {
                    id: &call.id,
                    name: &call.name,
                    input: serde_json::from_str::<serde_json::Value>(&call.arguments)
                        .ok()
                        .filter(serde_json::Value::is_object)
                        .unwrap_or_else(|| serde_json::json!({})),
                });
                out.push(WireMessage {
                    role: m.role.as_str(),
                    content: WireContent::Blocks(text.into_iter().chain(calls).collect()),
                });
            }
            _ => out.push(WireMessage {
                role: m.role.as_str(),
                content: WireContent::Text(&m.content),
            }),
        }
    }
    out
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a serde_json::Value,
}

fn body<'a>(config: &'a HttpProviderConfig, request: &'a LlmRequest) -> Body<'a> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    Body {
        model: &config.model,
        max_tokens: if request.max_tokens > 0 {
            request.max_tokens
        } else {
            DEFAULT_MAX_TOKENS
        },
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages: wire_messages(&request.messages),
        stream: true,
        temperature: request.temperature,
        tools: request
            .tools
            .iter()
            .map(|t| WireTool {
                name: &t.name,
                description: &t.description,
                input_schema: &t.parameters,
            })
            .collect(),
    }
}

/// One stream event; all event types share this flat shape (absent fields are `None`).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
    #[serde(default)]
    message: Option<MessageStart>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<usize>,
    #[serde(default)]
    output_tokens: Option<usize>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// The HTTP status Anthropic documents for an error type.
fn error_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

#[derive(Default)]
struct State {
    /// Tool-use blocks under assembly, by content block index.
    blocks: Vec<Option<ToolCall>>,
    usage: LlmUsage,
    stopped: bool,
}

impl State {
    fn add_usage(&mut self, usage: Usage) {
        if let Some(n) = usage.input_tokens {
            self.usage.prompt_tokens = Some(n);
        }
        if let Some(n) = usage.output_tokens {
            self.usage.completion_tokens = Some(n);
        }
    }

    fn slot(
        &mut self,
        provider: &str,
        index: usize,
    ) -> Result<&mut Option<ToolCall>, ProviderError> {
        if index >= MAX_CONTENT_BLOCKS {
            return Err(invalid_response(
                provider,
                format!("content block index {index} too large"),
            ));
        }
        if self.blocks.len() <= index {
            self.blocks.resize_with(index + 1, || None);
        }
        Ok(&mut self.blocks[index])
    }
}

/// What one event asks the job to send.
enum Step {
    Token(String),
    ToolCall(ToolCall),
    Started,
    Nothing,
}

fn handle_data(provider: &str, data: &str, state: &mut State) -> Result<Step, ProviderError> {
    let event: Event<'_> = serde_json::from_str(data)
        .map_err(|e| invalid_response(provider, format!("event is not valid JSON: {e}")))?;
    let index = event.index.unwrap_or(0);
    match event.kind.as_ref() {
        "message_start" => {
            if let Some(usage) = event.message.and_then(|m| m.usage) {
                state.add_usage(usage);
            }
        }
        "content_block_start" => {
            if let Some(block) = event.content_block
                && block.kind == "tool_use"
            {
                let arguments = match block.input {
                    Some(input) if input.as_object().is_some_and(|o| !o.is_empty()) => {
                        input.to_string()
                    }
                    _ => String::new(),
                };
                *state.slot(provider, index)? = Some(ToolCall {
                    id: block.id.map(Cow::into_owned).unwrap_or_default(),
                    name: block.name.map(Cow::into_owned).unwrap_or_default(),
                    arguments,
                });
                return Ok(Step::Started);
            }
        }
        "content_block_delta" => {
            if let Some(delta) = event.delta {
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    return Ok(Step::Token(text.into_owned()));
                }
                if let Some(json) = delta.partial_json
                    && let Some(call) = state.slot(provider, index)?.as_mut()
                {
                    call.arguments.push_str(&json);
                }
            }
        }
        "content_block_stop" => {
            if let Some(mut call) = state.slot(provider, index)?.take() {
                if call.arguments.trim().is_empty() {
                    call.arguments = "{}".to_string();
                }
                return Ok(Step::ToolCall(call));
            }
        }
        "message_delta" => {
            if let Some(usage) = event.usage {
                state.add_usage(usage);
            }
        }
        "message_stop" => state.stopped = true,
        "error" => {
            let error = event.error.unwrap_or(ErrorBody {
                kind: String::new(),
                message: String::new(),
            });
            return Err(ProviderError::Http {
                provider: provider.to_string(),
                status: error_status(&error.kind),
                message: if error.message.is_empty() {
                    error.kind
                } else {
                    error.message
                },
            });
        }
        // `ping` and event types added later.
        _ => {}
    }
    Ok(Step::Nothing)
}

async fn run(
    inner: &Inner,
    request: &LlmRequest,
    tx: &tokio::sync::mpsc::Sender<LlmEvent>,
) -> Result<(), ProviderError> {
    let provider = inner.name.as_str();
    let config = &inner.config;
    let mut clock = JobClock::start(config);
    let mut http = inner
        .client
        .post(config.endpoint("/v1/messages"))
        .headers(config.header_map(provider)?)
        .header("anthropic-version", ANTHROPIC_VERSION)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&body(config, request));
    if let Some(key) = &config.api_key {
        http = http.header("x-api-key", key);
    }
    let mut response = clock
        .within(provider, super::send(provider, http, config.timeout))
        .await??;

    let mut parser = SseParser::new();
    let mut state = State::default();
    let mut ended = false;
    while !ended && !state.stopped {
        match clock.chunk(provider, &mut response).await? {
            Some(bytes) => parser.push(&bytes),
            None => {
                parser.finish();
                ended = true;
            }
        }
        while !state.stopped {
            let step = {
                let event = parser
                    .next_event()
                    .map_err(|e| invalid_response(provider, e.to_string()))?;
                let Some(event) = event else { break };
                handle_data(provider, event.data, &mut state)?
            };
            let event = match step {
                Step::Nothing => continue,
                Step::Started => {
                    clock.first_output();
                    continue;
                }
                Step::Token(text) => LlmEvent::Token(text),
                Step::ToolCall(call) => LlmEvent::ToolCall(call),
            };
            clock.first_output();
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
    if !state.stopped {
        return Err(invalid_response(
            provider,
            "stream ended before message_stop",
        ));
    }
    let _ = tx.send(LlmEvent::Done(state.usage)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_goes_top_level() {
        let config = HttpProviderConfig::new("http://x", "claude");
        let request = LlmRequest {
            messages: vec![
                ChatMessage::system("a"),
                ChatMessage::user("hi"),
                ChatMessage::system("b"),
            ],
            ..Default::default()
        };
        let v = serde_json::to_value(body(&config, &request)).unwrap();
        assert_eq!(v["system"], "a\n\nb");
        assert_eq!(v["messages"].as_array().unwrap().len(), 1);
        assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn tool_use_blocks_assemble() {
        let mut s = State::default();
        let events = [
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"lookup","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
        ];
        for e in events {
            handle_data("t", e, &mut s).unwrap();
        }
        let stop = handle_data("t", r#"{"type":"content_block_stop","index":1}"#, &mut s);
        let Ok(Step::ToolCall(call)) = stop else {
            panic!("no tool call")
        };
        assert_eq!(
            (call.id.as_str(), call.name.as_str()),
            ("toolu_1", "lookup")
        );
        assert_eq!(call.arguments, r#"{"q":1}"#);
        let err = handle_data(
            "t",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            &mut s,
        );
        assert!(matches!(err, Err(ProviderError::Http { status: 529, .. })));
    }
}
