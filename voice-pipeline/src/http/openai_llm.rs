//! OpenAI-compatible chat completions (`POST /v1/chat/completions`, `stream: true`): OpenAI,
//! Ollama, llama.cpp's server, vLLM and others speaking the same wire format.
//!
//! Text deltas become [`LlmEvent::Token`]s as they arrive. Streamed `tool_calls` deltas (an
//! `index`, then `id` and `function.name` once, then `function.arguments` in fragments) are
//! assembled per index and sent as [`LlmEvent::ToolCall`]s, in index order, when the answer ends.
//! Usage, when the server reports it (`stream_options.include_usage`), goes into
//! [`LlmEvent::Done`].
//!
//! Messages map by role (`system`, `user`, `assistant`, `tool`). An assistant message's tool
//! calls go out as `tool_calls` (`{id, type: "function", function: {name, arguments}}`, content
//! `null` when it said nothing), and a tool result as `{role: "tool", tool_call_id, content}`, so
//! a conversation can continue after the tools ran.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{HttpProviderConfig, JobClock, SseParser, invalid_response, spawn_job};
use crate::llm::ChatMessage;
use crate::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, LlmUsage, ProviderError, ToolCall,
    ToolSpec, event_channel,
};

/// Most parallel tool calls accepted in one answer (a bound on a server-chosen index).
pub const MAX_TOOL_CALLS: usize = 32;

/// An OpenAI-compatible streaming chat model.
#[derive(Debug, Clone)]
pub struct OpenAiLlm {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    name: String,
    config: HttpProviderConfig,
    client: reqwest::Client,
}

impl OpenAiLlm {
    /// A provider named `openai` with its own HTTP client.
    pub fn new(config: HttpProviderConfig) -> Result<Self, ProviderError> {
        let client = super::http_client(&config)?;
        Ok(Self::with_client(config, client))
    }

    /// A provider sharing `client` (and its connection pool) with others.
    pub fn with_client(config: HttpProviderConfig, client: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: "openai".to_string(),
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

impl Llm for OpenAiLlm {
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
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` only for an assistant message that just calls tools.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    r#type: &'static str,
    function: &'a ToolSpec,
}

fn body<'a>(config: &'a HttpProviderConfig, request: &'a LlmRequest) -> Body<'a> {
    Body {
        model: &config.model,
        messages: request.messages.iter().map(wire_message).collect(),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        max_tokens: (request.max_tokens > 0).then_some(request.max_tokens),
        temperature: request.temperature,
        tools: request
            .tools
            .iter()
            .map(|function| WireTool {
                r#type: "function",
                function,
            })
            .collect(),
    }
}

fn wire_message(m: &ChatMessage) -> WireMessage<'_> {
    let calls_only = !m.tool_calls.is_empty() && m.content.is_empty();
    WireMessage {
        role: m.role.as_str(),
        content: (!calls_only).then_some(m.content.as_str()),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|call| WireToolCall {
                id: &call.id,
                r#type: "function",
                function: WireFunction {
                    name: &call.name,
                    arguments: &call.arguments,
                },
            })
            .collect(),
        tool_call_id: m.tool_call_id.as_deref(),
    }
}

/// One streamed chunk; fields borrow from the event data when they hold no escapes.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: FirstChoice<'a>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The first element of `choices`, read without collecting the array (no allocation per chunk).
#[derive(Default)]
struct FirstChoice<'a>(Option<Choice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = FirstChoice<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(FirstChoice(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<Choice<'a>>()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    completion_tokens: Option<usize>,
}

/// Tool calls under assembly, by index.
#[derive(Debug, Default)]
pub(crate) struct ToolCalls {
    calls: Vec<ToolCall>,
}

impl ToolCalls {
    fn apply(
        &mut self,
        provider: &str,
        position: usize,
        d: ToolCallDelta<'_>,
    ) -> Result<(), ProviderError> {
        let index = d.index.unwrap_or(position);
        if index >= MAX_TOOL_CALLS {
            return Err(invalid_response(
                provider,
                format!("tool call index {index} too large"),
            ));
        }
        while self.calls.len() <= index {
            self.calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut self.calls[index];
        if let Some(id) = d.id.filter(|id| !id.is_empty()) {
            call.id = id.into_owned();
        }
        if let Some(f) = d.function {
            if let Some(name) = f.name {
                call.name.push_str(&name);
            }
            if let Some(arguments) = f.arguments {
                call.arguments.push_str(&arguments);
            }
        }
        Ok(())
    }

    /// The assembled calls in index order; missing ids become `call_{index}`, empty arguments
    /// `{}`. Slots the server never named are dropped.
    fn finish(self) -> impl Iterator<Item = ToolCall> {
        self.calls
            .into_iter()
            .enumerate()
            .filter_map(|(i, mut call)| {
                if call.name.is_empty() {
                    return None;
                }
                if call.id.is_empty() {
                    call.id = format!("call_{i}");
                }
                if call.arguments.trim().is_empty() {
                    call.arguments = "{}".to_string();
                }
                Some(call)
            })
    }
}

/// What one chunk asks the job to do.
enum Step {
    Token(String),
    Nothing,
}

/// The HTTP status an in-stream error body stands for: its numeric `code`, else 500.
fn in_stream_error(provider: &str, error: &serde_json::Value) -> ProviderError {
    let status = error
        .get("code")
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .filter(|c| (100..600).contains(c))
        .unwrap_or(500) as u16;
    let message = match error.get("message").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None => super::error_message(error.to_string().as_bytes()),
    };
    ProviderError::Http {
        provider: provider.to_string(),
        status,
        message,
    }
}

struct State {
    tools: ToolCalls,
    usage: LlmUsage,
    finished: bool,
}

fn handle_data(provider: &str, data: &str, state: &mut State) -> Result<Step, ProviderError> {
    let chunk: Chunk<'_> = serde_json::from_str(data)
        .map_err(|e| invalid_response(provider, format!("chunk is not valid JSON: {e}")))?;
    if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
        return Err(in_stream_error(provider, &error));
    }
    if let Some(usage) = chunk.usage {
        state.usage.prompt_tokens = usage.prompt_tokens.or(state.usage.prompt_tokens);
        state.usage.completion_tokens = usage.completion_tokens.or(state.usage.completion_tokens);
    }
    // We ask for one choice (no `n`); any others are ignored.
    let Some(choice) = chunk.choices.0 else {
        return Ok(Step::Nothing);
    };
    if choice.finish_reason.is_some() {
        state.finished = true;
    }
    let Some(delta) = choice.delta else {
        return Ok(Step::Nothing);
    };
    for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
        state.tools.apply(provider, position, call)?;
    }
    match delta.content {
        Some(text) if !text.is_empty() => Ok(Step::Token(text.into_owned())),
        _ => Ok(Step::Nothing),
    }
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
        .post(config.endpoint("/v1/chat/completions"))
        .headers(config.header_map(provider)?)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&body(config, request));
    if let Some(key) = &config.api_key {
        http = http.bearer_auth(key);
    }
    let mut response = clock
        .within(provider, super::send(provider, http, config.timeout))
        .await??;

    let mut parser = SseParser::new();
    let mut state = State {
        tools: ToolCalls::default(),
        usage: LlmUsage::default(),
        finished: false,
    };
    let mut done = false;
    while !done {
        match clock.chunk(provider, &mut response).await? {
            Some(bytes) => parser.push(&bytes),
            None => {
                parser.finish();
                done = true;
            }
        }
        loop {
            let step = {
                let event = parser
                    .next_event()
                    .map_err(|e| invalid_response(provider, e.to_string()))?;
                let Some(event) = event else { break };
                if event.is_done() {
                    state.finished = true;
                    done = true;
                    break;
                }
                handle_data(provider, event.data, &mut state)?
            };
            if !clock.has_first()
                && (matches!(step, Step::Token(_)) || !state.tools.calls.is_empty())
            {
                clock.first_output();
            }
            if let Step::Token(text) = step
                && tx.send(LlmEvent::Token(text)).await.is_err()
            {
                return Ok(());
            }
        }
    }
    if !state.finished {
        return Err(invalid_response(
            provider,
            "stream ended before the answer was complete",
        ));
    }
    for call in state.tools.finish() {
        if tx.send(LlmEvent::ToolCall(call)).await.is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(LlmEvent::Done(state.usage)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            tools: ToolCalls::default(),
            usage: LlmUsage::default(),
            finished: false,
        }
    }

    #[test]
    fn assembles_tool_call_fragments() {
        let mut s = state();
        let chunks = [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
        ];
        for c in chunks {
            handle_data("t", c, &mut s).unwrap();
        }
        assert!(s.finished);
        assert_eq!(s.usage.completion_tokens, Some(7));
        let calls: Vec<_> = s.tools.finish().collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "call_a");
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
    }

    #[test]
    fn escaped_text_is_unescaped_and_errors_map_to_http() {
        let mut s = state();
        let step = handle_data(
            "t",
            r#"{"choices":[{"delta":{"content":"a\"b\n"}}]}"#,
            &mut s,
        );
        assert!(matches!(step, Ok(Step::Token(t)) if t == "a\"b\n"));
        let err = handle_data("t", r#"{"error":{"message":"boom","code":503}}"#, &mut s);
        assert!(
            matches!(err, Err(ProviderError::Http { status: 503, ref message, .. }) if message == "boom")
        );
        let bad = handle_data("t", "{not json", &mut s);
        assert!(matches!(bad, Err(ProviderError::InvalidResponse { .. })));
    }

    #[test]
    fn request_body_has_the_openai_shape() {
        let config = HttpProviderConfig::new("http://x", "m");
        let request = LlmRequest {
            messages: vec![ChatMessage::system("s"), ChatMessage::user("u")],
            tools: vec![ToolSpec {
                name: "f".into(),
                description: "d".into(),
                parameters: serde_json::json!({"type":"object"}),
            }],
            max_tokens: 0,
            temperature: Some(0.5),
            ..LlmRequest::default()
        };
        let v = serde_json::to_value(body(&config, &request)).unwrap();
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["tools"][0]["type"], "function");
        assert_eq!(v["tools"][0]["function"]["name"], "f");
        assert!(v.get("max_tokens").is_none());
        assert_eq!(v["stream"], true);
    }
}
