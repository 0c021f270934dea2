//! The HTTP providers and the fallback chain against a local mock server speaking the real wire
//! formats (SSE chat completions, Anthropic event streams, multipart transcription, PCM speech).
//! The real client code talks HTTP over loopback; every wait is bounded.

mod mock_server;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dartmouth_voice::fallback::FallbackLlm;
use dartmouth_voice::http::{
    AnthropicLlm, HttpProviderConfig, OpenAiLlm, OpenAiStt, OpenAiTts, openai_tts::CHUNK_SAMPLES,
};
use dartmouth_voice::llm::ChatMessage;
use dartmouth_voice::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, ProviderError, Stt, SttEvent,
    SttRequest, ToolSpec, Tts, TtsEvent, TtsRequest,
};
use mock_server::{API_KEY, MockServer, SERVER_ERROR, SYSTEM_PROMPT, TEXT_TOKENS};

/// Longest wait for any one event.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn config(server: &MockServer, model: &str) -> HttpProviderConfig {
    HttpProviderConfig::new(server.url(), model)
        .with_api_key(API_KEY)
        .with_timeout(Duration::from_secs(20))
        .with_first_token_timeout(Duration::from_secs(5))
}

fn openai(server: &MockServer, model: &str) -> OpenAiLlm {
    OpenAiLlm::new(config(server, model)).unwrap()
}

fn request() -> LlmRequest {
    LlmRequest {
        messages: vec![ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user("Hi!")],
        max_tokens: 64,
        temperature: Some(0.0),
        ..Default::default()
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

/// All events until the stream ends (bounded in count and time).
async fn collect<T>(mut rx: EventStream<T>) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < 10_000 {
        match tokio::time::timeout(EVENT_WAIT, rx.recv()).await {
            Ok(Some(event)) => out.push(event),
            Ok(None) => break,
            Err(_) => panic!("no event within {EVENT_WAIT:?}"),
        }
    }
    out
}

fn tokens(events: &[LlmEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            LlmEvent::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn single_error(events: &[LlmEvent]) -> &ProviderError {
    match events {
        [.., LlmEvent::Error(e)] => e,
        other => panic!("expected an error last, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_streams_tokens_in_order_with_usage() {
    let server = MockServer::start().await;
    let events = collect(openai(&server, "text").stream(request(), CancellationToken::new())).await;
    assert_eq!(tokens(&events), TEXT_TOKENS);
    assert_eq!(tokens(&events).concat(), TEXT_TOKENS.concat());
    match events.last() {
        Some(LlmEvent::Done(usage)) => {
            assert_eq!(usage.prompt_tokens, Some(12));
            assert_eq!(usage.completion_tokens, Some(TEXT_TOKENS.len()));
        }
        other => panic!("expected Done last, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_assembles_streamed_tool_calls() {
    let server = MockServer::start().await;
    let mut req = request();
    req.tools = vec![weather_tool()];
    let events = collect(openai(&server, "tools").stream(req, CancellationToken::new())).await;
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            LlmEvent::ToolCall(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2, "{events:?}");
    assert_eq!(
        (calls[0].id.as_str(), calls[0].name.as_str()),
        ("call_w", "get_weather")
    );
    let args: serde_json::Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert_eq!(args, serde_json::json!({"city": "Paris"}));
    assert_eq!(
        (calls[1].id.as_str(), calls[1].name.as_str()),
        ("call_t", "get_time")
    );
    assert_eq!(calls[1].arguments, r#"{"tz":"CET"}"#);
    assert!(matches!(events.last(), Some(LlmEvent::Done(_))));
}

#[tokio::test]
async fn openai_500_is_an_http_error_with_the_servers_message() {
    let server = MockServer::start().await;
    let events =
        collect(openai(&server, "error500").stream(request(), CancellationToken::new())).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        single_error(&events),
        &ProviderError::Http {
            provider: "openai".into(),
            status: 500,
            message: SERVER_ERROR.into(),
        }
    );
}

#[tokio::test]
async fn openai_wrong_key_is_401() {
    let server = MockServer::start().await;
    let llm = OpenAiLlm::new(config(&server, "text").with_api_key("wrong")).unwrap();
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert!(
        matches!(single_error(&events), ProviderError::Http { status: 401, message, .. } if message.contains("API key")),
        "{events:?}"
    );
}

#[tokio::test]
async fn openai_first_token_timeout_on_a_hanging_server() {
    let server = MockServer::start().await;
    let cfg = config(&server, "hang").with_first_token_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let events = collect(
        OpenAiLlm::new(cfg)
            .unwrap()
            .stream(request(), CancellationToken::new()),
    )
    .await;
    assert!(
        matches!(single_error(&events), ProviderError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{events:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn openai_refused_connection_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = HttpProviderConfig::new(format!("http://{addr}"), "text");
    let events = collect(
        OpenAiLlm::new(cfg)
            .unwrap()
            .stream(request(), CancellationToken::new()),
    )
    .await;
    assert!(
        matches!(single_error(&events), ProviderError::Connection { .. }),
        "{events:?}"
    );
}

#[tokio::test]
async fn openai_invalid_json_is_invalid_response_and_the_next_request_works() {
    let server = MockServer::start().await;
    let llm = openai(&server, "flaky");
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert!(
        matches!(single_error(&events), ProviderError::InvalidResponse { .. }),
        "{events:?}"
    );
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert_eq!(tokens(&events).concat(), TEXT_TOKENS.concat());
    assert!(matches!(events.last(), Some(LlmEvent::Done(_))));
    assert_eq!(server.observed.flaky_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn cancelling_mid_stream_stops_the_stream_and_the_request() {
    let server = MockServer::start().await;
    let cancel = CancellationToken::new();
    let mut rx = openai(&server, "slow").stream(request(), cancel.clone());
    for _ in 0..2 {
        let event = tokio::time::timeout(EVENT_WAIT, rx.recv()).await.unwrap();
        assert!(matches!(event, Some(LlmEvent::Token(_))), "{event:?}");
    }
    cancel.cancel();
    let cancelled_at = Instant::now();
    // At most the events already queued, then the end.
    let rest = collect(rx).await;
    assert!(
        cancelled_at.elapsed() < Duration::from_millis(500),
        "{:?}",
        cancelled_at.elapsed()
    );
    assert!(
        rest.iter().all(|e| matches!(e, LlmEvent::Token(_))),
        "{rest:?}"
    );
    // The server sees the connection go away.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !server.observed.slow_dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "server still streaming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.observed.slow_sent.load(Ordering::SeqCst) < 200);
}

#[tokio::test]
async fn dropping_the_stream_stops_the_request() {
    let server = MockServer::start().await;
    let mut rx = openai(&server, "slow").stream(request(), CancellationToken::new());
    let event = tokio::time::timeout(EVENT_WAIT, rx.recv()).await.unwrap();
    assert!(matches!(event, Some(LlmEvent::Token(_))), "{event:?}");
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !server.observed.slow_dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "server still streaming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn anthropic(server: &MockServer, model: &str) -> AnthropicLlm {
    AnthropicLlm::new(config(server, model)).unwrap()
}

#[tokio::test]
async fn anthropic_streams_text_with_the_system_prompt_top_level() {
    let server = MockServer::start().await;
    let events =
        collect(anthropic(&server, "claude-text").stream(request(), CancellationToken::new()))
            .await;
    assert_eq!(tokens(&events), TEXT_TOKENS, "{events:?}");
    match events.last() {
        Some(LlmEvent::Done(usage)) => {
            assert_eq!(usage.prompt_tokens, Some(25));
            assert_eq!(usage.completion_tokens, Some(15));
        }
        other => panic!("expected Done last, got {other:?}"),
    }
}

#[tokio::test]
async fn anthropic_assembles_tool_use_blocks() {
    let server = MockServer::start().await;
    let mut req = request();
    req.tools = vec![weather_tool()];
    let events =
        collect(anthropic(&server, "claude-tools").stream(req, CancellationToken::new())).await;
    assert_eq!(tokens(&events), ["Let me check."]);
    let call = events
        .iter()
        .find_map(|e| match e {
            LlmEvent::ToolCall(c) => Some(c),
            _ => None,
        })
        .expect("a tool call");
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("toolu_01", "get_weather")
    );
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args, serde_json::json!({"city": "Paris"}));
    assert!(matches!(events.last(), Some(LlmEvent::Done(_))));
}

/// The conversation after a weather tool ran: the assistant's calls, then their results.
fn after_tools(calls: &[(&str, &str)]) -> LlmRequest {
    let mut req = request();
    req.tools = vec![weather_tool()];
    req.messages.push(ChatMessage::assistant_tool_calls(
        "",
        calls
            .iter()
            .map(|(id, city)| dartmouth_voice::provider::ToolCall {
                id: id.to_string(),
                name: "get_weather".into(),
                arguments: format!(r#"{{"city":"{city}"}}"#),
            })
            .collect(),
    ));
    for (id, city) in calls {
        req.messages
            .push(ChatMessage::tool_result(*id, format!("sunny in {city}")));
    }
    req
}

#[tokio::test]
async fn openai_tool_results_go_back_as_tool_messages() {
    let server = MockServer::start().await;
    let req = after_tools(&[("call_1", "Oslo")]);
    let events =
        collect(openai(&server, "tool-result").stream(req, CancellationToken::new())).await;
    assert_eq!(
        tokens(&events).concat(),
        "It is sunny in Oslo.",
        "{events:?}"
    );
    // Without the result the server refuses the conversation, as OpenAI does.
    let mut bare = after_tools(&[("call_1", "Oslo")]);
    bare.messages.pop();
    let events =
        collect(openai(&server, "tool-result").stream(bare, CancellationToken::new())).await;
    assert!(matches!(
        single_error(&events),
        ProviderError::Http { status: 400, .. }
    ));
}

#[tokio::test]
async fn anthropic_tool_results_go_back_as_tool_result_blocks() {
    let server = MockServer::start().await;
    let req = after_tools(&[("toolu_01", "Oslo"), ("toolu_02", "Rome")]);
    let events =
        collect(anthropic(&server, "claude-tool-result").stream(req, CancellationToken::new()))
            .await;
    assert_eq!(
        tokens(&events).concat(),
        "sunny in Oslo and sunny in Rome",
        "both results in one user message: {events:?}"
    );
}

#[tokio::test]
async fn anthropic_error_event_and_bad_key_are_http_errors() {
    let server = MockServer::start().await;
    let events = collect(
        anthropic(&server, "claude-overloaded").stream(request(), CancellationToken::new()),
    )
    .await;
    assert!(
        matches!(single_error(&events), ProviderError::Http { status: 529, message, .. } if message == "Overloaded"),
        "{events:?}"
    );
    let llm = AnthropicLlm::new(config(&server, "claude-text").with_api_key("wrong")).unwrap();
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert!(
        matches!(single_error(&events), ProviderError::Http { status: 401, message, .. } if message == "invalid x-api-key"),
        "{events:?}"
    );
}

fn chain(first: OpenAiLlm, second: OpenAiLlm) -> FallbackLlm {
    let providers: Vec<Arc<dyn Llm>> = vec![
        Arc::new(first.with_name("primary")),
        Arc::new(second.with_name("backup")),
    ];
    FallbackLlm::new(providers, Duration::from_millis(300))
}

#[tokio::test]
async fn fallback_serves_from_the_second_provider_when_the_first_returns_500() {
    let server = MockServer::start().await;
    let llm = chain(openai(&server, "error500"), openai(&server, "text"));
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert_eq!(
        events[0],
        LlmEvent::Served {
            provider: "backup".into()
        }
    );
    assert_eq!(tokens(&events).concat(), TEXT_TOKENS.concat());
    assert!(matches!(events.last(), Some(LlmEvent::Done(_))));
}

#[tokio::test]
async fn fallback_serves_from_the_second_provider_when_the_first_hangs() {
    let server = MockServer::start().await;
    let llm = chain(openai(&server, "hang"), openai(&server, "text"));
    let started = Instant::now();
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert_eq!(
        events[0],
        LlmEvent::Served {
            provider: "backup".into()
        }
    );
    assert_eq!(tokens(&events).concat(), TEXT_TOKENS.concat());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The slow provider's request was cancelled: the server sees its stream dropped.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !server.observed.hang_dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "hanging request not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fallback_reports_the_first_provider_when_it_answers() {
    let server = MockServer::start().await;
    let llm = chain(openai(&server, "text"), openai(&server, "error500"));
    let events = collect(llm.stream(request(), CancellationToken::new())).await;
    assert_eq!(
        events[0],
        LlmEvent::Served {
            provider: "primary".into()
        }
    );
    assert_eq!(tokens(&events), TEXT_TOKENS);
}

#[tokio::test]
async fn stt_uploads_a_wav_in_multipart_and_returns_the_final_text() {
    let server = MockServer::start().await;
    let stt = OpenAiStt::new(config(&server, "whisper-1")).unwrap();
    let audio: Arc<[f32]> = (0..16_000)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.5)
        .collect();
    let events = collect(stt.transcribe(SttRequest::new(audio), CancellationToken::new())).await;
    assert_eq!(events, [SttEvent::Final("heard 16000 samples".into())]);

    let bad = OpenAiStt::new(config(&server, "not-whisper")).unwrap();
    let events =
        collect(bad.transcribe(SttRequest::new(vec![0.0; 160]), CancellationToken::new())).await;
    assert!(
        matches!(
            &events[..],
            [SttEvent::Error(ProviderError::Http { status: 400, .. })]
        ),
        "{events:?}"
    );
}

#[tokio::test]
async fn tts_streams_pcm_in_100ms_chunks_with_the_text_on_the_first() {
    let server = MockServer::start().await;
    let tts = OpenAiTts::new(config(&server, "tts-1"))
        .unwrap()
        .with_voice("nova");
    assert_eq!(tts.sample_rate(), 24_000);
    let text = "Hello there.".to_string();
    let events =
        collect(tts.synthesize(TtsRequest::new(text.clone()), CancellationToken::new())).await;
    assert_eq!(events.last(), Some(&TtsEvent::Done));
    let chunks: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Audio(c) => Some(c),
            _ => None,
        })
        .collect();
    let sizes: Vec<usize> = chunks.iter().map(|c| c.samples.len()).collect();
    assert_eq!(sizes, [CHUNK_SAMPLES, CHUNK_SAMPLES, CHUNK_SAMPLES, 1_200]);
    assert_eq!(chunks[0].text, text);
    assert!(chunks[1..].iter().all(|c| c.text.is_empty()));
    let samples: Vec<i16> = chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect();
    let expected: Vec<i16> = (0..mock_server::SPEECH_SAMPLES)
        .map(mock_server::speech_sample)
        .collect();
    assert_eq!(samples, expected);
}
