//! A bench-grade OpenAI-compatible test double for paid speech and language services: it answers
//! `/v1/audio/transcriptions` with a canned transcript, streams a canned `/v1/chat/completions`
//! answer as server-sent events, and streams canned `/v1/audio/speech` PCM (24 kHz s16le), each
//! after a fixed, configurable delay. Replies are built once at start, so a request costs the
//! HTTP stack and a timer, nothing else: what a benchmark measures on top of the delays is the
//! gateway's own work. Started with a script ([`MockOpenAi::start_scripted`]), its chat
//! completions call functions ([`MockTurn`]) and it keeps every chat request for the test to read
//! (the tool results the model was given).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// Sample rate of the speech the mock returns (OpenAI's `pcm` format).
pub const MOCK_TTS_RATE: u32 = 24_000;
/// Bytes of PCM per body chunk of a speech reply (100 ms at 24 kHz).
const SPEECH_PIECE_BYTES: usize = 4_800;

/// The mock's fixed delays and canned replies.
#[derive(Debug, Clone)]
pub struct MockReplies {
    /// Request fully read → transcription response.
    pub stt_delay: Duration,
    /// Request read → first SSE event (the whole answer follows at once).
    pub llm_delay: Duration,
    /// Request read → first audio bytes (the whole clip follows at once).
    pub tts_delay: Duration,
    /// What every transcription says.
    pub transcript: String,
    /// What every chat completion answers (streamed word by word).
    pub answer: String,
    /// What every speech request returns, 24 kHz mono.
    pub speech: Vec<i16>,
}

/// Requests served, per endpoint.
#[derive(Debug, Default)]
pub struct MockCounts {
    /// `/v1/audio/transcriptions` requests.
    pub stt: AtomicU64,
    /// `/v1/chat/completions` requests.
    pub llm: AtomicU64,
    /// `/v1/audio/speech` requests.
    pub tts: AtomicU64,
}

/// One scripted chat completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockTurn {
    /// The canned answer.
    Answer,
    /// A call of the function `name` with `arguments` (JSON text), as OpenAI streams it.
    Call {
        /// The function.
        name: String,
        /// Its arguments.
        arguments: String,
    },
}

/// The scripted turns still to come, and every chat request so far (as JSON).
#[derive(Default)]
struct Script {
    turns: Mutex<VecDeque<MockTurn>>,
    requests: Mutex<Vec<serde_json::Value>>,
}

struct Canned {
    /// `Some` when started with a script.
    script: Option<Arc<Script>>,
    stt_delay: Duration,
    llm_delay: Duration,
    tts_delay: Duration,
    transcript: Bytes,
    sse: Vec<Bytes>,
    speech: Vec<Bytes>,
    counts: Arc<MockCounts>,
}

/// A running mock; stops when dropped.
pub struct MockOpenAi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests served so far.
    pub counts: Arc<MockCounts>,
    script: Option<Arc<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockOpenAi {
    /// Starts the mock on 127.0.0.1 (ephemeral port) on the current runtime.
    pub async fn start(replies: MockReplies) -> std::io::Result<Self> {
        Self::serve(replies, None).await
    }

    /// Like [`MockOpenAi::start`], but chat completions follow `turns` in order (the canned
    /// answer once they run out), and every chat request is kept ([`MockOpenAi::chat_requests`]).
    pub async fn start_scripted(
        replies: MockReplies,
        turns: Vec<MockTurn>,
    ) -> std::io::Result<Self> {
        let script = Script {
            turns: Mutex::new(turns.into()),
            requests: Mutex::new(Vec::new()),
        };
        Self::serve(replies, Some(Arc::new(script))).await
    }

    /// The chat requests a scripted mock received, in order (empty without a script).
    pub fn chat_requests(&self) -> Vec<serde_json::Value> {
        self.script.as_ref().map_or_else(Vec::new, |s| {
            s.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
        })
    }

    async fn serve(replies: MockReplies, script: Option<Arc<Script>>) -> std::io::Result<Self> {
        let counts = Arc::new(MockCounts::default());
        let canned = Arc::new(Canned {
            script: script.clone(),
            stt_delay: replies.stt_delay,
            llm_delay: replies.llm_delay,
            tts_delay: replies.tts_delay,
            transcript: Bytes::from(serde_json::json!({ "text": replies.transcript }).to_string()),
            sse: sse_events(&replies.answer),
            speech: speech_pieces(&replies.speech),
            counts: counts.clone(),
        });
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/speech", post(speech))
            .layer(DefaultBodyLimit::max(32 << 20))
            .with_state(canned);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            counts,
            script,
            task,
        })
    }

    /// The server root URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer as OpenAI streams it: a role event, one content event per word, the finish
/// event, `[DONE]`.
fn sse_events(answer: &str) -> Vec<Bytes> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let event = serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
            "model": "mock", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        Bytes::from(format!("data: {event}\n\n"))
    };
    let mut events = vec![chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    )];
    for (i, word) in answer.split(' ').enumerate() {
        let token = if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        };
        events.push(chunk(serde_json::json!({ "content": token }), None));
    }
    events.push(chunk(serde_json::json!({}), Some("stop")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A function call as OpenAI streams it: a role event, the call (id, name, arguments), the
/// `tool_calls` finish, `[DONE]`.
fn tool_call_events(id: &str, name: &str, arguments: &str) -> Vec<Bytes> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let event = serde_json::json!({
            "id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1,
            "model": "mock", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        Bytes::from(format!("data: {event}\n\n"))
    };
    vec![
        chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        ),
        chunk(
            serde_json::json!({"tool_calls": [{
                "index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments}
            }]}),
            None,
        ),
        chunk(serde_json::json!({}), Some("tool_calls")),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]
}

/// `speech` as little-endian bytes in 100 ms pieces.
fn speech_pieces(speech: &[i16]) -> Vec<Bytes> {
    let bytes: Vec<u8> = speech.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes
        .chunks(SPEECH_PIECE_BYTES)
        .map(Bytes::copy_from_slice)
        .collect()
}

/// A body of the given pieces, sent back to back (the client reads them as they come).
fn body_of(pieces: &[Bytes]) -> Body {
    let pieces: Vec<Result<Bytes, std::convert::Infallible>> =
        pieces.iter().cloned().map(Ok).collect();
    Body::from_stream(futures_util::stream::iter(pieces))
}

async fn transcriptions(State(canned): State<Arc<Canned>>, _audio: Bytes) -> Response {
    canned.counts.stt.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(canned.stt_delay).await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        canned.transcript.clone(),
    )
        .into_response()
}

async fn chat(State(canned): State<Arc<Canned>>, request: Bytes) -> Response {
    let n = canned.counts.llm.fetch_add(1, Ordering::Relaxed);
    let turn = canned.script.as_ref().and_then(|script| {
        let body = serde_json::from_slice(&request).unwrap_or(serde_json::Value::Null);
        script
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(body);
        script
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    });
    tokio::time::sleep(canned.llm_delay).await;
    let call;
    let events: &[Bytes] = match turn {
        Some(MockTurn::Call { name, arguments }) => {
            call = tool_call_events(&format!("call_{n}"), &name, &arguments);
            &call
        }
        Some(MockTurn::Answer) | None => &canned.sse,
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body_of(events),
    )
        .into_response()
}

async fn speech(State(canned): State<Arc<Canned>>, _request: Bytes) -> Response {
    canned.counts.tts.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(canned.tts_delay).await;
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body_of(&canned.speech),
    )
        .into_response()
}

/// `text` spoken by espeak-ng at 24 kHz with the leading and trailing quiet cut (the first
/// 20 ms is already audible, so arrival of the answer's first frame is its first audible frame).
pub fn canned_speech(text: &str) -> Option<Vec<i16>> {
    let at_48k = crate::speak_48k(text)?;
    let floats: Vec<f32> = at_48k.iter().map(|s| f32::from(*s) / 32768.0).collect();
    let at_24k = dartmouth_voice::resample::resample_all(&floats, 48_000, MOCK_TTS_RATE).ok()?;
    let pcm: Vec<i16> = at_24k
        .iter()
        .map(|s| dartmouth_voice::frame::f32_to_i16(*s))
        .collect();
    // 10 ms windows: the first and last with some energy bound the speech.
    let window = MOCK_TTS_RATE as usize / 100;
    let loud = |w: &[i16]| crate::rms(w) > 0.05;
    let windows: Vec<&[i16]> = pcm.chunks(window).collect();
    let first = windows.iter().position(|w| loud(w))?;
    let last = windows.iter().rposition(|w| loud(w))?;
    Some(pcm[first * window..((last + 1) * window).min(pcm.len())].to_vec())
}
