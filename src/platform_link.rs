//! The gateway's link to the platform sidecar: the embedded voice models offered to the
//! sidecar's OpenAI-compatible endpoints (its backend traits over our providers), and the agent's
//! side of the sidecar — knowledge retrieval and events — reached only through
//! `dartmouth_platform::client` over HTTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dartmouth_platform::ai::{
    BackendFuture, Backends, CHAT_STREAM_CAPACITY, ChatBackend, ChatChunk, ChatRequest, Speech,
    SpeechBackend, TranscribeBackend, Usage,
};
use dartmouth_platform::client::PlatformClient;
use dartmouth_voice::agent::AgentEvent;
use dartmouth_voice::knowledge::{AgentObserver, Knowledge, KnowledgeEvent, Passage};
use dartmouth_voice::llm::{ChatMessage, Role};
use dartmouth_voice::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, ProviderError, Stt, SttEvent,
    SttRequest, ToolCall, ToolSpec, Tts, TtsEvent, TtsRequest, event_channel,
};
use serde_json::json;
use tokio::sync::mpsc;

/// Events an agent session may have queued for the sidecar before new ones are dropped.
pub const OBSERVER_QUEUE_CAPACITY: usize = 64;
/// Attempts to publish one event before it is given up (the sidecar is down).
const PUBLISH_ATTEMPTS: u32 = 3;

/// The embedded chat model as the sidecar's [`ChatBackend`].
struct LlmBackend {
    llm: Arc<dyn Llm>,
    model: String,
}

fn role(name: &str) -> Role {
    match name {
        "system" => Role::System,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => Role::User,
    }
}

impl ChatBackend for LlmBackend {
    fn name(&self) -> &str {
        self.llm.name()
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn chat(&self, request: ChatRequest, cancel: CancellationToken) -> mpsc::Receiver<ChatChunk> {
        let messages = request
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: role(&m.role),
                content: m.content.clone(),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| ToolCall {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect(),
                tool_call_id: m.tool_call_id.clone(),
            })
            .collect();
        let tools = request
            .tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| ToolSpec {
                name: f["name"].as_str().unwrap_or_default().into(),
                description: f["description"].as_str().unwrap_or_default().into(),
                parameters: f.get("parameters").cloned().unwrap_or(json!({})),
            })
            .collect();
        let llm_request = LlmRequest {
            messages,
            tools,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            ..LlmRequest::default()
        };
        let mut events = self.llm.stream(llm_request, cancel.clone());
        let (tx, rx) = mpsc::channel(CHAT_STREAM_CAPACITY);
        tokio::spawn(async move {
            let _stop = cancel.drop_guard();
            let mut calls = false;
            while let Some(event) = events.recv().await {
                let chunk = match event {
                    LlmEvent::Token(t) => ChatChunk::Text(t),
                    LlmEvent::ToolCall(c) => {
                        calls = true;
                        ChatChunk::ToolCall(dartmouth_platform::ai::ToolCall {
                            id: c.id,
                            name: c.name,
                            arguments: c.arguments,
                        })
                    }
                    LlmEvent::Served { .. } => continue,
                    LlmEvent::Done(usage) => ChatChunk::Done {
                        usage: Usage {
                            prompt_tokens: usage.prompt_tokens.unwrap_or(0) as u64,
                            completion_tokens: usage.completion_tokens.unwrap_or(0) as u64,
                        },
                        finish_reason: if calls { "tool_calls" } else { "stop" }.into(),
                    },
                    LlmEvent::Error(e) => ChatChunk::Error(e.to_string()),
                };
                let last = matches!(chunk, ChatChunk::Done { .. } | ChatChunk::Error(_));
                if tx.send(chunk).await.is_err() || last {
                    break;
                }
            }
        });
        rx
    }
}

/// The embedded speech to text as the sidecar's [`TranscribeBackend`].
struct SttBackend(Arc<dyn Stt>);

impl TranscribeBackend for SttBackend {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn transcribe(&self, audio_16k: Vec<f32>) -> BackendFuture<String> {
        let mut events = self
            .0
            .transcribe(SttRequest::new(audio_16k), CancellationToken::new());
        Box::pin(async move {
            while let Some(event) = events.recv().await {
                match event {
                    SttEvent::Final(text) => return Ok(text),
                    SttEvent::Error(e) => return Err(e.to_string()),
                    SttEvent::Partial(_) => {}
                }
            }
            Err("speech to text ended without a transcript".into())
        })
    }
}

/// The embedded voices as the sidecar's [`SpeechBackend`]: `piper` (default) and `espeak`.
struct TtsBackend(Vec<(String, Arc<dyn Tts>)>);

impl SpeechBackend for TtsBackend {
    fn name(&self) -> &str {
        "embedded-tts"
    }

    fn voices(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }

    fn synthesize(&self, text: String, voice: String) -> BackendFuture<Speech> {
        let tts = self
            .0
            .iter()
            .find(|(n, _)| *n == voice)
            .or(self.0.first())
            .map(|(_, t)| t.clone());
        Box::pin(async move {
            let tts = tts.ok_or("no voice is loaded")?;
            let sample_rate = tts.sample_rate();
            let mut events = tts.synthesize(TtsRequest::new(text), CancellationToken::new());
            let mut samples = Vec::new();
            while let Some(event) = events.recv().await {
                match event {
                    TtsEvent::Audio(chunk) => samples.extend_from_slice(&chunk.samples),
                    TtsEvent::Done => {
                        return Ok(Speech {
                            samples,
                            sample_rate,
                        });
                    }
                    TtsEvent::Error(e) => return Err(e.to_string()),
                }
            }
            Err("text to speech ended early".into())
        })
    }
}

/// The sidecar's backends over the gateway's loaded providers.
pub fn backends(
    stt: Arc<dyn Stt>,
    llm: Arc<dyn Llm>,
    voices: Vec<(String, Arc<dyn Tts>)>,
) -> Backends {
    Backends {
        chat: Some(Arc::new(LlmBackend {
            model: "dartmouth-embedded".into(),
            llm,
        })),
        transcribe: Some(Arc::new(SttBackend(stt))),
        speech: Some(Arc::new(TtsBackend(voices))),
    }
}

/// An agent's knowledge base, searched through the sidecar (`POST …/knowledge/search`).
pub struct PlatformKnowledge {
    client: PlatformClient,
    agent: String,
}

impl PlatformKnowledge {
    /// The knowledge of `agent` on the sidecar `client` talks to.
    pub fn new(client: PlatformClient, agent: &str) -> Self {
        Self {
            client,
            agent: agent.to_string(),
        }
    }
}

impl Knowledge for PlatformKnowledge {
    fn name(&self) -> &str {
        "platform"
    }

    fn retrieve(
        &self,
        query: String,
        limit: usize,
        cancel: CancellationToken,
    ) -> EventStream<KnowledgeEvent> {
        let (tx, rx) = event_channel();
        let (client, agent) = (self.client.clone(), self.agent.clone());
        tokio::spawn(async move {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = client.search_knowledge(&agent, &query, limit) => r,
            };
            let event = match result {
                Ok(passages) => KnowledgeEvent::Passages(
                    passages
                        .into_iter()
                        .map(|p| Passage {
                            text: p.text,
                            source: p.citation,
                            score: p.score,
                        })
                        .collect(),
                ),
                Err(e) => KnowledgeEvent::Error(ProviderError::Connection {
                    provider: "platform".into(),
                    message: e.to_string(),
                }),
            };
            let _ = tx.send(event).await;
        });
        rx
    }
}

/// Publishes an agent session's turns (and its start and end) to the sidecar: `on_event` only
/// queues (bounded, dropping when full); a task owned by the queue does the HTTP.
pub struct PlatformObserver {
    queue: mpsc::Sender<(String, String, serde_json::Value)>,
    sequence: AtomicU64,
    conversation: String,
    agent: String,
    room: String,
    identity: String,
    dropped: AtomicU64,
    last_turn: Mutex<u64>,
}

impl PlatformObserver {
    /// Starts the publishing task and announces `call.started`.
    pub fn start(client: PlatformClient, agent: &str, room: &str, identity: &str) -> Arc<Self> {
        let queue = publisher(client);
        let conversation = uuid_like();
        let observer = Arc::new(Self {
            queue,
            conversation,
            agent: agent.into(),
            room: room.into(),
            identity: identity.into(),
            dropped: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            last_turn: Mutex::new(0),
        });
        observer.send("call.started", json!({}));
        observer
    }

    fn send(&self, topic: &str, mut data: serde_json::Value) {
        data["conversation_id"] = json!(self.conversation);
        data["agent"] = json!(self.agent);
        data["room"] = json!(self.room);
        data["identity"] = json!(self.identity);
        // The id makes a retried publish a conflict, not a duplicate.
        let id = format!(
            "{}-{}",
            self.conversation,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        if self.queue.try_send((id, topic.to_string(), data)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A bounded queue of (id, topic, data) and the task that publishes it; the task ends when every
/// sender is gone and the queue is drained.
fn publisher(client: PlatformClient) -> mpsc::Sender<(String, String, serde_json::Value)> {
    let (queue, mut rx) =
        mpsc::channel::<(String, String, serde_json::Value)>(OBSERVER_QUEUE_CAPACITY);
    tokio::spawn(async move {
        while let Some((id, topic, data)) = rx.recv().await {
            for attempt in 1..=PUBLISH_ATTEMPTS {
                match client.publish_event(&topic, data.clone(), Some(&id)).await {
                    Ok(_) => break,
                    Err(dartmouth_platform::PlatformError::Api { status: 409, .. }) => break,
                    Err(e) if attempt == PUBLISH_ATTEMPTS => {
                        tracing::warn!(error = %e, topic, "could not publish an event to the platform");
                    }
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(
                            200 * u64::from(attempt),
                        ))
                        .await
                    }
                }
            }
        }
    });
    queue
}

/// Room events of the gateway (`room.participant_joined` / `_left`), published to the sidecar.
pub struct PlatformRoomEvents {
    queue: mpsc::Sender<(String, String, serde_json::Value)>,
}

impl PlatformRoomEvents {
    /// Starts the publishing task (it ends when this is dropped).
    pub fn new(client: PlatformClient) -> Self {
        Self {
            queue: publisher(client),
        }
    }

    fn send(&self, topic: &str, room: &str, identity: &str) {
        let id = uuid_like();
        let data = json!({"room": room, "identity": identity});
        if self.queue.try_send((id, topic.into(), data)).is_err() {
            tracing::debug!(topic, "room event dropped: the platform queue is full");
        }
    }
}

impl dartmouth_signaling::RoomEvents for PlatformRoomEvents {
    fn joined(&self, room: &str, identity: &str) {
        self.send("room.participant_joined", room, identity);
    }

    fn left(&self, room: &str, identity: &str) {
        self.send("room.participant_left", room, identity);
    }
}

fn uuid_like() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Option<std::time::Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| json!(d.as_secs_f64() * 1e3))
}

impl AgentObserver for PlatformObserver {
    fn on_event(&self, event: &AgentEvent) {
        if let AgentEvent::TurnFailed {
            turn,
            stage,
            reason,
        } = event
        {
            // What the platform's error-rate SLAs count.
            self.send(
                "conversation.turn_failed",
                json!({"turn": turn.0, "stage": stage, "reason": reason}),
            );
        }
        if let AgentEvent::TurnComplete(record) = event {
            if let Ok(mut last) = self.last_turn.lock() {
                *last = record.turn.0;
            }
            self.send(
                "conversation.turn",
                json!({
                    "turn": record.turn.0,
                    "user_text": record.transcript,
                    "agent_text": record.answer,
                    "interrupted": record.interrupted,
                    "providers": [record.providers.0, record.providers.1, record.providers.2],
                    "latency_ms": {
                        "end_of_turn": record.end_of_turn.as_secs_f64() * 1e3,
                        "stt_final": millis(record.stt_final),
                        "llm_first_token": millis(record.llm_first_token),
                        "tts_first_audio": millis(record.tts_first_audio),
                        "first_frame_out": millis(record.first_frame_out),
                    },
                }),
            );
        }
    }
}

impl Drop for PlatformObserver {
    fn drop(&mut self) {
        let turns = self.last_turn.lock().map(|t| *t).unwrap_or(0);
        let dropped = self.dropped.load(Ordering::Relaxed);
        self.send(
            "call.ended",
            json!({"turns": turns, "events_dropped": dropped}),
        );
    }
}
