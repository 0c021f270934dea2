//! A local axum server speaking the real wire formats of OpenAI-compatible and Anthropic APIs,
//! for the HTTP provider tests. The chat endpoints choose a behaviour by the request's `model`.

// Each test binary may use a different subset.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The key the mock accepts.
pub const API_KEY: &str = "test-key";
/// The text the `text` and `claude-text` models stream.
pub const TEXT_TOKENS: &[&str] = &[
    "Hello",
    ",",
    " world",
    "!",
    " Café",
    " ☕",
    " \"quoted\"\n",
    "done.",
];
/// The system prompt the Anthropic endpoint expects at top level.
pub const SYSTEM_PROMPT: &str = "Be brief.";
/// Samples the speech endpoint streams (350 ms at 24 kHz).
pub const SPEECH_SAMPLES: usize = 8_400;
/// The message of the mock's 500 answer.
pub const SERVER_ERROR: &str = "The server had an error while processing your request.";

/// The `i`-th sample the speech endpoint sends.
pub fn speech_sample(i: usize) -> i16 {
    ((i * 13) % 2_000) as i16 - 1_000
}

/// What the server observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Calls to the `flaky` model (odd calls answer with broken JSON).
    pub flaky_calls: AtomicUsize,
    /// A `hang` stream was dropped (the client went away).
    pub hang_dropped: AtomicBool,
    /// A `slow` stream was dropped (the client went away).
    pub slow_dropped: AtomicBool,
    /// Tokens the `slow` model sent.
    pub slow_sent: AtomicUsize,
}

/// A running mock server; stops when dropped.
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it observed.
    pub observed: Arc<Observed>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts the server on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Self {
        let observed = Arc::new(Observed::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(messages))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/speech", post(speech))
            .with_state(Arc::clone(&observed));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            observed,
            task,
        }
    }

    /// The server root URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets its flag when dropped: tells the test that the server's body stream was dropped.
struct DropFlag(Arc<Observed>, fn(&Observed) -> &AtomicBool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        (self.1)(&self.0).store(true, Ordering::SeqCst);
    }
}

fn error_json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    error_json(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "code": null}}),
    )
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}

/// `text` cut into pieces of 5 to 23 bytes (anywhere, even inside a UTF-8 character), sent with
/// a short pause between pieces so they arrive as separate chunks.
fn split_body(text: String) -> Body {
    let bytes = text.into_bytes();
    let mut pieces = VecDeque::new();
    let (mut at, mut size) = (0, 5);
    while at < bytes.len() {
        let end = (at + size).min(bytes.len());
        pieces.push_back(Bytes::copy_from_slice(&bytes[at..end]));
        at = end;
        size = 5 + (size * 7) % 19;
    }
    Body::from_stream(futures_util::stream::unfold(
        pieces,
        |mut pieces| async move {
            let piece = pieces.pop_front()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
            Some((Ok::<_, std::convert::Infallible>(piece), pieces))
        },
    ))
}

fn data(value: Value) -> String {
    format!("data: {value}\n\n")
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    data(json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    }))
}

fn text_stream(tokens: &[&str]) -> String {
    let mut s = String::from(": mock keep-alive\n\n");
    s += &chunk(json!({"role": "assistant", "content": ""}), None);
    for (i, t) in tokens.iter().enumerate() {
        let c = chunk(json!({"content": t}), None);
        // Some servers end lines with CRLF; mix both.
        s += &if i % 2 == 0 {
            c.replace('\n', "\r\n")
        } else {
            c
        };
    }
    s += &chunk(json!({}), Some("stop"));
    s += &data(
        json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": tokens.len(), "total_tokens": 12 + tokens.len()}}),
    );
    s + "data: [DONE]\n\n"
}

fn tool_stream() -> String {
    let call = |index: usize, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        let mut call = json!({"index": index});
        if let Some(name) = name {
            function["name"] = json!(name);
            call["id"] = json!(id);
            call["type"] = json!("function");
        }
        call["function"] = function;
        chunk(json!({"tool_calls": [call]}), None)
    };
    let mut s = chunk(json!({"role": "assistant", "content": null}), None);
    s += &call(0, Some("call_w"), Some("get_weather"), "");
    s += &call(0, None, None, "{\"ci");
    s += &call(0, None, None, "ty\": \"Pa");
    s += &call(0, None, None, "ris\"}");
    s += &call(1, Some("call_t"), Some("get_time"), "{\"tz\":");
    s += &call(1, None, None, "\"CET\"}");
    s += &chunk(json!({}), Some("tool_calls"));
    s + "data: [DONE]\n\n"
}

async fn chat(State(observed): State<Arc<Observed>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {API_KEY}")) {
        return openai_error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    if request["stream"] != json!(true) || !request["messages"].is_array() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "expected stream: true and messages",
        );
    }
    match request["model"].as_str().unwrap_or_default() {
        "text" => sse_response(split_body(text_stream(TEXT_TOKENS))),
        "tools" => {
            if request["tools"][0]["type"] != "function"
                || request["tools"][0]["function"]["name"] != "get_weather"
            {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "tools missing or not in OpenAI shape",
                );
            }
            sse_response(split_body(tool_stream()))
        }
        // A conversation that continues after a tool ran: the assistant's call in the OpenAI
        // shape, then the result as a `tool` message naming the call; the answer quotes it.
        "tool-result" => {
            let messages = request["messages"].as_array().cloned().unwrap_or_default();
            let call = messages
                .iter()
                .position(|m| m["role"] == "assistant" && m["tool_calls"].is_array());
            let shaped = call.is_some_and(|i| {
                let call = &messages[i]["tool_calls"][0];
                let result = &messages[i + 1..];
                messages[i].get("content").is_some_and(Value::is_null)
                    && call["id"] == "call_1"
                    && call["type"] == "function"
                    && call["function"]["name"] == "get_weather"
                    && call["function"]["arguments"].is_string()
                    && result.first().is_some_and(|r| {
                        r["role"] == "tool"
                            && r["tool_call_id"] == "call_1"
                            && r["content"].is_string()
                    })
            });
            if !shaped {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "expected an assistant tool_calls message followed by its tool result",
                );
            }
            let result = messages
                .iter()
                .find(|m| m["role"] == "tool")
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_string();
            sse_response(split_body(text_stream(&["It is ", &result, "."])))
        }
        "error500" => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"message": SERVER_ERROR, "type": "server_error", "param": null, "code": null}}),
        ),
        "flaky" => {
            let call = observed.flaky_calls.fetch_add(1, Ordering::SeqCst);
            if call % 2 == 0 {
                let mut s = chunk(json!({"content": "Hel"}), None);
                s += "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}\n\n";
                s += &chunk(json!({"content": "!"}), None);
                sse_response(split_body(s + "data: [DONE]\n\n"))
            } else {
                sse_response(split_body(text_stream(TEXT_TOKENS)))
            }
        }
        "hang" => {
            let flag = DropFlag(observed, |o| &o.hang_dropped);
            let stream = futures_util::stream::unfold((flag, true), |(flag, first)| async move {
                if !first {
                    std::future::pending::<()>().await;
                }
                let piece = Bytes::from_static(b": waiting\n\n");
                Some((Ok::<_, std::convert::Infallible>(piece), (flag, false)))
            });
            sse_response(Body::from_stream(stream))
        }
        "slow" => {
            let flag = DropFlag(observed, |o| &o.slow_dropped);
            let stream = futures_util::stream::unfold((flag, 0usize), |(flag, n)| async move {
                if n >= 200 {
                    return None;
                }
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                flag.0.slow_sent.fetch_add(1, Ordering::SeqCst);
                let piece = Bytes::from(chunk(json!({"content": "tick "}), None));
                Some((Ok::<_, std::convert::Infallible>(piece), (flag, n + 1)))
            });
            sse_response(Body::from_stream(stream))
        }
        other => openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{other}` does not exist"),
        ),
    }
}

fn anthropic_event(kind: &str, value: Value) -> String {
    format!("event: {kind}\ndata: {value}\n\n")
}

fn anthropic_stream(tokens: &[&str], tool: bool) -> String {
    let mut s = anthropic_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-mock", "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    );
    s += &anthropic_event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    s += &anthropic_event("ping", json!({"type": "ping"}));
    for t in tokens {
        s += &anthropic_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
        );
    }
    s += &anthropic_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    if tool {
        s += &anthropic_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        );
        for part in ["", "{\"city\": ", "\"Par", "is\"}"] {
            s += &anthropic_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}),
            );
        }
        s += &anthropic_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        );
    }
    let stop = if tool { "tool_use" } else { "end_turn" };
    s += &anthropic_event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 15}}),
    );
    s + &anthropic_event("message_stop", json!({"type": "message_stop"}))
}

async fn messages(headers: HeaderMap, body: Bytes) -> Response {
    let anthropic_error = |status: StatusCode, kind: &str, message: &str| {
        error_json(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    };
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        != Some("2023-06-01")
    {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version missing",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body is not JSON",
        );
    };
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    if request["system"] != SYSTEM_PROMPT
        || messages.iter().any(|m| m["role"] == "system")
        || !request["max_tokens"].is_u64()
        || request["stream"] != json!(true)
    {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad request shape",
        );
    }
    match request["model"].as_str().unwrap_or_default() {
        "claude-text" => sse_response(split_body(anthropic_stream(TEXT_TOKENS, false))),
        "claude-tools" => {
            if request["tools"][0]["input_schema"]["type"] != "object" {
                return anthropic_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "tools.0.input_schema missing",
                );
            }
            sse_response(split_body(anthropic_stream(&["Let me check."], true)))
        }
        // Tool results as `tool_result` blocks in one user message after the `tool_use` blocks.
        "claude-tool-result" => {
            let uses = messages
                .iter()
                .position(|m| m["role"] == "assistant" && m["content"].is_array());
            let ids = |m: &Value, kind: &str, field: &str| -> Vec<String> {
                m["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|b| b["type"] == kind)
                    .filter_map(|b| b[field].as_str().map(str::to_string))
                    .collect()
            };
            let shaped = uses.is_some_and(|i| {
                let asked = ids(&messages[i], "tool_use", "id");
                let inputs_are_objects = messages[i]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|b| b["type"] == "tool_use")
                    .all(|b| b["input"].is_object());
                messages.get(i + 1).is_some_and(|r| {
                    r["role"] == "user" && ids(r, "tool_result", "tool_use_id") == asked
                }) && inputs_are_objects
                    && !asked.is_empty()
            });
            if !shaped {
                return anthropic_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "tool_use ids must be answered by tool_result blocks in the next user message",
                );
            }
            let results: Vec<String> = messages
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .filter(|b| b["type"] == "tool_result")
                .filter_map(|b| b["content"].as_str().map(str::to_string))
                .collect();
            let answer = results.join(" and ");
            sse_response(split_body(anthropic_stream(&[&answer], false)))
        }
        "claude-overloaded" => {
            let mut s = anthropic_event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 3, "output_tokens": 0}}}),
            );
            s += &anthropic_event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            );
            sse_response(split_body(s))
        }
        _ => anthropic_error(StatusCode::NOT_FOUND, "not_found_error", "model not found"),
    }
}

/// Splits `hay` at every occurrence of `needle`.
fn split_bytes<'a>(hay: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            parts.push(&hay[start..i]);
            i += needle.len();
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(&hay[start..]);
    parts
}

/// The named parts of a multipart body: (name, content).
fn multipart_parts<'a>(boundary: &str, body: &'a [u8]) -> Option<Vec<(String, &'a [u8])>> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    for raw in split_bytes(body, delimiter.as_bytes()).into_iter().skip(1) {
        if raw.starts_with(b"--") {
            break;
        }
        let raw = raw.strip_prefix(b"\r\n")?.strip_suffix(b"\r\n")?;
        let split = split_bytes(raw, b"\r\n\r\n");
        let head = std::str::from_utf8(split.first()?).ok()?;
        let content = &raw[head.len() + 4..];
        let name = head.split("name=\"").nth(1)?.split('"').next()?.to_string();
        parts.push((name, content));
    }
    Some(parts)
}

async fn transcriptions(headers: HeaderMap, body: Bytes) -> Response {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return openai_error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.");
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") else {
        return openai_error(StatusCode::BAD_REQUEST, "expected multipart/form-data");
    };
    let Some(parts) = multipart_parts(boundary, &body) else {
        return openai_error(StatusCode::BAD_REQUEST, "malformed multipart body");
    };
    let field = |name: &str| parts.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
    if field("model") != Some(b"whisper-1") || field("response_format") != Some(b"json") {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "model and response_format=json required",
        );
    }
    let Some(wav) = field("file") else {
        return openai_error(StatusCode::BAD_REQUEST, "file missing");
    };
    let u32_at = |at: usize| u32::from_le_bytes(wav[at..at + 4].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes(wav[at..at + 2].try_into().unwrap());
    if wav.len() < 44
        || &wav[..4] != b"RIFF"
        || &wav[8..16] != b"WAVEfmt "
        || u16_at(20) != 1
        || u16_at(22) != 1
        || u32_at(24) != 16_000
        || u16_at(34) != 16
        || u32_at(40) as usize != wav.len() - 44
    {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "file is not a 16 kHz mono 16-bit WAV",
        );
    }
    let samples = (wav.len() - 44) / 2;
    axum::Json(json!({"text": format!("  heard {samples} samples ")})).into_response()
}

async fn speech(headers: HeaderMap, body: Bytes) -> Response {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return openai_error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    if request["response_format"] != "pcm"
        || request["voice"] != "nova"
        || !request["input"].is_string()
    {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "expected response_format pcm, voice nova, input",
        );
    }
    let pcm: Vec<u8> = (0..SPEECH_SAMPLES)
        .flat_map(|i| speech_sample(i).to_le_bytes())
        .collect();
    // Odd-sized pieces: samples split across chunks.
    let pieces: VecDeque<Bytes> = pcm.chunks(1_001).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold(pieces, |mut pieces| async move {
        let piece = pieces.pop_front()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, std::convert::Infallible>(piece), pieces))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
