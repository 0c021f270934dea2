//! Faults of a remote LLM as an agent meets them (the agent's chain: an OpenAI-compatible server,
//! then a backup, with the two-second first-token limit `dartmouth serve` configures): a server
//! that stalls and one that answers garbage are both left for the backup within that limit, and
//! the backup's answer is whole. The real HTTP client talks to a local mock server.

mod mock_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dartmouth_voice::fallback::FallbackLlm;
use dartmouth_voice::http::{HttpProviderConfig, OpenAiLlm};
use dartmouth_voice::llm::ChatMessage;
use dartmouth_voice::provider::{CancellationToken, Llm, LlmEvent, LlmRequest};
use mock_server::{API_KEY, MockServer, SYSTEM_PROMPT, TEXT_TOKENS};

/// The agent's first-token limit for a remote LLM (src/agents.rs).
const FIRST_TOKEN_LIMIT: Duration = Duration::from_secs(2);

fn remote(server: &MockServer, model: &str, name: &str) -> Arc<dyn Llm> {
    let config = HttpProviderConfig::new(server.url(), model)
        .with_api_key(API_KEY)
        .with_first_token_timeout(FIRST_TOKEN_LIMIT);
    Arc::new(OpenAiLlm::new(config).unwrap().with_name(name))
}

/// What one request produced.
#[derive(Debug, Default)]
struct Answer {
    served: String,
    text: String,
    first_token: Option<Duration>,
    error: Option<String>,
}

/// Asks `llm` and collects its answer.
async fn ask(llm: &FallbackLlm) -> Answer {
    let request = LlmRequest {
        messages: vec![ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user("Hi!")],
        max_tokens: 64,
        temperature: Some(0.0),
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = llm.stream(request, CancellationToken::new());
    let mut answer = Answer::default();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.recv())
            .await
            .expect("an event within 10 s");
        match event {
            Some(LlmEvent::Served { provider }) => answer.served = provider,
            Some(LlmEvent::Token(token)) => {
                answer.first_token.get_or_insert_with(|| started.elapsed());
                answer.text.push_str(&token);
            }
            Some(LlmEvent::Error(e)) => {
                answer.error = Some(e.to_string());
                break;
            }
            Some(LlmEvent::Done(_)) | None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    answer
}

/// A server that answers every request with `200` and `body` as its event stream, then closes.
async fn garbage_server(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_stalled_server_is_left_for_the_backup_within_the_limit() {
    let server = MockServer::start().await;
    let llm = FallbackLlm::new(
        vec![
            remote(&server, "hang", "remote"),
            remote(&server, "text", "backup"),
        ],
        FIRST_TOKEN_LIMIT,
    );
    let answer = ask(&llm).await;
    assert_eq!(answer.served, "backup", "{answer:?}");
    assert_eq!(answer.text, TEXT_TOKENS.concat());
    let first = answer.first_token.unwrap();
    assert!(
        first < FIRST_TOKEN_LIMIT + Duration::from_secs(1),
        "first token after {first:?}"
    );
}

#[tokio::test]
async fn a_server_answering_garbage_is_left_for_the_backup() {
    let server = MockServer::start().await;
    for body in [
        "data: {not json\n\n",
        "<html><body>502 Bad Gateway</body></html>",
        "data: {\"choices\": 7}\n\ndata: [DONE]\n\n",
    ] {
        let url = garbage_server(body).await;
        let config = HttpProviderConfig::new(url, "m")
            .with_api_key(API_KEY)
            .with_first_token_timeout(FIRST_TOKEN_LIMIT);
        let garbage: Arc<dyn Llm> = Arc::new(OpenAiLlm::new(config).unwrap().with_name("remote"));
        let llm = FallbackLlm::new(
            vec![garbage, remote(&server, "text", "backup")],
            FIRST_TOKEN_LIMIT,
        );
        let answer = ask(&llm).await;
        assert_eq!(answer.served, "backup", "{body:?}: {answer:?}");
        assert_eq!(answer.text, TEXT_TOKENS.concat());
        assert!(
            answer.first_token.unwrap() < FIRST_TOKEN_LIMIT,
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn garbage_after_the_answer_began_ends_it_with_an_error_and_the_next_turn_is_whole() {
    let server = MockServer::start().await;
    // `flaky` breaks its first answer after one token; the answer is already being spoken, so
    // it ends there with an error rather than switching voices mid-sentence.
    let llm = FallbackLlm::new(
        vec![
            remote(&server, "flaky", "remote"),
            remote(&server, "text", "backup"),
        ],
        FIRST_TOKEN_LIMIT,
    );
    let broken = ask(&llm).await;
    assert_eq!(broken.served, "remote");
    assert_eq!(broken.text, "Hel");
    assert!(broken.error.is_some(), "{broken:?}");
    let next = ask(&llm).await;
    assert_eq!(next.served, "remote", "{next:?}");
    assert_eq!(next.text, TEXT_TOKENS.concat());
    assert!(next.error.is_none());
}
