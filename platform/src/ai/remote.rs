//! Remote chat providers: any OpenAI-compatible `chat/completions` server, and Anthropic's
//! Messages API, both streamed (server-sent events) into [`ChatChunk`]s.

use super::{
    CHAT_STREAM_CAPACITY, ChatChunk, ChatRequest, Message, ProviderConfig, ToolCall, Usage,
};
use crate::error::PlatformError;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest answer a remote provider may stream, in bytes (a runaway server cannot fill memory).
const MAX_STREAM_BYTES: usize = 8 * 1024 * 1024;

/// A configured remote provider.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Its configuration.
    pub config: ProviderConfig,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Remote {
    /// Reads the API key from the environment and prepares the client.
    pub fn new(config: &ProviderConfig) -> Result<Remote, PlatformError> {
        if !matches!(config.kind.as_str(), "openai" | "anthropic") {
            return Err(PlatformError::Config(format!(
                "ai provider {}: kind must be openai or anthropic",
                config.name
            )));
        }
        let api_key = match config.api_key_env.as_str() {
            "" => None,
            var => Some(std::env::var(var).map_err(|_| {
                PlatformError::Config(format!(
                    "ai provider {}: environment variable {var} is not set",
                    config.name
                ))
            })?),
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| PlatformError::Config(format!("ai provider {}: {e}", config.name)))?;
        Ok(Remote {
            config: config.clone(),
            api_key,
            http,
        })
    }

    /// Starts streaming an answer.
    pub fn chat(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> mpsc::Receiver<ChatChunk> {
        let (tx, rx) = mpsc::channel(CHAT_STREAM_CAPACITY);
        let remote = self.clone();
        tokio::spawn(async move {
            let run = async {
                match remote.config.kind.as_str() {
                    "anthropic" => remote.anthropic(request, &tx).await,
                    _ => remote.openai(request, &tx).await,
                }
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tx.closed() => return,
                r = run => r,
            };
            if let Err(e) = result {
                let _ = tx
                    .send(ChatChunk::Error(format!("{}: {e}", remote.config.name)))
                    .await;
            }
        });
        rx
    }

    async fn post(
        &self,
        url: String,
        body: Value,
        anthropic: bool,
    ) -> Result<reqwest::Response, String> {
        let mut builder = self.http.post(url).json(&body);
        if let Some(key) = &self.api_key {
            builder = if anthropic {
                builder.header("x-api-key", key)
            } else {
                builder.bearer_auth(key)
            };
        }
        if anthropic {
            builder = builder.header("anthropic-version", "2023-06-01");
        }
        let response = builder
            .send()
            .await
            .map_err(|e| format!("connection failed: {e}"))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        Ok(response)
    }

    async fn openai(
        &self,
        request: ChatRequest,
        tx: &mpsc::Sender<ChatChunk>,
    ) -> Result<(), String> {
        let messages: Vec<Value> = request.messages.iter().map(openai_message).collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": request.max_tokens,
        });
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if !request.tools.is_empty() {
            body["tools"] = json!(request.tools);
        }
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let response = self.post(url, body, false).await?;
        let mut usage = Usage::default();
        let mut finish = "stop".to_string();
        let mut calls: BTreeMap<u64, ToolCall> = BTreeMap::new();
        let mut events = SseEvents::new(response);
        while let Some(data) = events.next().await? {
            if data == "[DONE]" {
                break;
            }
            let chunk: Value =
                serde_json::from_str(&data).map_err(|e| format!("bad chunk: {e}"))?;
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                usage.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                usage.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
            }
            let Some(choice) = chunk.pointer("/choices/0") else {
                continue;
            };
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                finish = reason.to_string();
            }
            if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str)
                && !text.is_empty()
                && tx.send(ChatChunk::Text(text.into())).await.is_err()
            {
                return Ok(());
            }
            for call in choice
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let entry = calls
                    .entry(call["index"].as_u64().unwrap_or(0))
                    .or_insert_with(|| ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                if let Some(id) = call["id"].as_str() {
                    entry.id = id.into();
                }
                if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                    entry.name.push_str(name);
                }
                if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    entry.arguments.push_str(args);
                }
            }
        }
        for call in calls.into_values() {
            let _ = tx.send(ChatChunk::ToolCall(call)).await;
        }
        let _ = tx
            .send(ChatChunk::Done {
                usage,
                finish_reason: finish,
            })
            .await;
        Ok(())
    }

    async fn anthropic(
        &self,
        request: ChatRequest,
        tx: &mpsc::Sender<ChatChunk>,
    ) -> Result<(), String> {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != "system")
            .map(anthropic_message)
            .collect();
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "stream": true,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n"));
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t.min(1.0));
        }
        if !request.stop.is_empty() {
            body["stop_sequences"] = json!(request.stop);
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .filter_map(|t| t.get("function"))
                .map(|f| json!({"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}))
                .collect();
            body["tools"] = json!(tools);
        }
        let url = format!(
            "{}/v1/messages",
            self.config
                .base_url
                .trim_end_matches('/')
                .trim_end_matches("/v1")
        );
        let response = self.post(url, body, true).await?;
        let mut usage = Usage::default();
        let mut finish = "stop".to_string();
        let mut call: Option<ToolCall> = None;
        let mut events = SseEvents::new(response);
        while let Some(data) = events.next().await? {
            let event: Value =
                serde_json::from_str(&data).map_err(|e| format!("bad event: {e}"))?;
            match event["type"].as_str().unwrap_or_default() {
                "message_start" => {
                    usage.prompt_tokens = event
                        .pointer("/message/usage/input_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                }
                "content_block_start"
                    if event.pointer("/content_block/type") == Some(&json!("tool_use")) =>
                {
                    call = Some(ToolCall {
                        id: event
                            .pointer("/content_block/id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        name: event
                            .pointer("/content_block/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        arguments: String::new(),
                    });
                }
                "content_block_delta" => {
                    if let Some(text) = event.pointer("/delta/text").and_then(Value::as_str)
                        && tx.send(ChatChunk::Text(text.into())).await.is_err()
                    {
                        return Ok(());
                    }
                    if let (Some(c), Some(part)) = (
                        &mut call,
                        event.pointer("/delta/partial_json").and_then(Value::as_str),
                    ) {
                        c.arguments.push_str(part);
                    }
                }
                "content_block_stop" => {
                    if let Some(c) = call.take() {
                        let _ = tx.send(ChatChunk::ToolCall(c)).await;
                    }
                }
                "message_delta" => {
                    usage.completion_tokens = event
                        .pointer("/usage/output_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    finish = match event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        Some("max_tokens") => "length",
                        Some("tool_use") => "tool_calls",
                        _ => "stop",
                    }
                    .into();
                }
                "error" => return Err(format!("provider error: {}", event["error"])),
                "message_stop" => break,
                _ => {}
            }
        }
        let _ = tx
            .send(ChatChunk::Done {
                usage,
                finish_reason: finish,
            })
            .await;
        Ok(())
    }
}

fn openai_message(m: &Message) -> Value {
    let content = if m.images.is_empty() {
        json!(m.content)
    } else {
        let mut parts = vec![json!({"type": "text", "text": m.content})];
        parts.extend(
            m.images
                .iter()
                .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
        );
        json!(parts)
    };
    let mut v = json!({"role": m.role, "content": content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = super::types::tool_calls_json(&m.tool_calls);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

fn anthropic_message(m: &Message) -> Value {
    if let Some(id) = &m.tool_call_id {
        return json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": m.content}]});
    }
    let mut parts = Vec::new();
    for url in &m.images {
        if let Some((meta, data)) = url
            .strip_prefix("data:")
            .and_then(|u| u.split_once(";base64,"))
        {
            parts.push(json!({"type": "image", "source": {"type": "base64", "media_type": meta, "data": data}}));
        } else {
            parts.push(json!({"type": "image", "source": {"type": "url", "url": url}}));
        }
    }
    if !m.content.is_empty() {
        parts.push(json!({"type": "text", "text": m.content}));
    }
    for c in &m.tool_calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or(json!({}));
        parts.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    json!({"role": if m.role == "assistant" { "assistant" } else { "user" }, "content": parts})
}

/// The `data:` payloads of a server-sent-event response, bounded in size.
struct SseEvents {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buffer: String,
    data: String,
    total: usize,
    utf8: crate::rag::extract::Utf8Stream,
}

impl SseEvents {
    fn new(response: reqwest::Response) -> SseEvents {
        SseEvents {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            data: String::new(),
            total: 0,
            utf8: Default::default(),
        }
    }

    async fn next(&mut self) -> Result<Option<String>, String> {
        loop {
            while let Some(newline) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=newline).collect();
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !self.data.is_empty() {
                        return Ok(Some(std::mem::take(&mut self.data)));
                    }
                } else if let Some(data) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(data.trim_start());
                }
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.total += bytes.len();
                    if self.total > MAX_STREAM_BYTES {
                        return Err("the provider's answer is too long".into());
                    }
                    let text = self.utf8.push(&bytes);
                    self.buffer.push_str(&text);
                }
                Some(Err(e)) => return Err(format!("stream broke: {e}")),
                None => {
                    return Ok((!self.data.is_empty()).then(|| std::mem::take(&mut self.data)));
                }
            }
        }
    }
}
