//! A voice agent as an in-process participant of a room.
//!
//! The bridge task listens to one person's track (Opus packets tapped from the media driver →
//! jitter buffer with loss concealment → decode → the agent's listening queue), sends the agent's
//! speech back every 20 ms (agent frame → Opus → the driver, which forwards it like any
//! participant's audio), and turns the agent's events into wire messages for the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dartmouth_media::opus_codec::MAX_PACKET_BYTES;
use dartmouth_media::{MediaHandle, OpusDecoder, OpusEncoder, OutgoingFrame, PeerId, TapPacket};
use dartmouth_voice::agent::{AgentEvent, AgentSession, AgentState, TurnRecord};
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION};
use tokio::sync::{mpsc, watch};

use crate::proto::{AgentOutput, AgentStateWire, ServerMessage, Speaker, TurnLatency};

/// Wire messages queued from an agent to its client connection.
pub const AGENT_MESSAGE_CAPACITY: usize = 128;
/// Typed messages queued to an agent.
pub const AGENT_TEXT_CAPACITY: usize = 16;
/// Samples in one 20 ms frame at 48 kHz.
const FRAME_SAMPLES: usize = 960;
/// RTP clock rate of Opus.
const RTP_RATE: u32 = 48_000;

/// One agent a deployment offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentInfo {
    /// Its name (what clients ask for).
    pub name: String,
    /// What it does.
    pub description: String,
}

/// Where agents come from: the binary implements it on its loaded models and settings.
pub trait AgentFactory: Send + Sync + 'static {
    /// The agents on offer.
    fn agents(&self) -> Vec<AgentInfo>;
    /// The agent `room` gets when the client names none (`None`: no agent). Rooms may be
    /// configured with their own agent; `""` asks for the deployment-wide default.
    fn default_agent(&self, room: &str) -> Option<String>;
    /// Starts a session of agent `name` (called on a blocking thread inside the runtime; may load
    /// small per-session models). `output` says whether it speaks or only writes.
    fn start(&self, name: &str, output: AgentOutput) -> Result<AgentSession, String>;
}

/// A factory with no agents: rooms and forwarding work, agent requests are refused with the
/// reason (a gateway whose models are missing, or signaling tests that need none).
pub struct NoAgents;

impl AgentFactory for NoAgents {
    fn agents(&self) -> Vec<AgentInfo> {
        Vec::new()
    }

    fn default_agent(&self, _room: &str) -> Option<String> {
        None
    }

    fn start(&self, name: &str, _output: AgentOutput) -> Result<AgentSession, String> {
        Err(format!(
            "no agent named {name:?}: the models are missing (run `dartmouth models fetch`)"
        ))
    }
}

/// A running agent bridge; stopping it stops the agent session.
pub struct AgentBridge {
    /// Typed messages to the agent.
    pub text: mpsc::Sender<String>,
    /// While set, the agent hears silence (the person muted their microphone).
    pub muted: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentBridge {
    /// Starts the bridge: `session` listens to `person` (already tapped into `taps`) and speaks
    /// as `speaker` in the room; wire messages go to `messages`.
    pub fn start(
        media: MediaHandle,
        speaker: PeerId,
        session: AgentSession,
        taps: mpsc::Receiver<TapPacket>,
        messages: mpsc::Sender<ServerMessage>,
    ) -> Self {
        let (text_tx, text_rx) = mpsc::channel(AGENT_TEXT_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let muted = Arc::new(AtomicBool::new(false));
        let bridge = Bridge {
            muted: muted.clone(),
            media,
            speaker,
            messages,
            answer: String::new(),
            seq: 0,
            state: None,
        };
        let task = tokio::spawn(bridge.run(session, taps, text_rx, stopped));
        Self {
            text: text_tx,
            muted,
            stop,
            task,
        }
    }

    /// Stops the agent and waits for its tasks to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Bridge {
    muted: Arc<AtomicBool>,
    media: MediaHandle,
    speaker: PeerId,
    messages: mpsc::Sender<ServerMessage>,
    answer: String,
    seq: u16,
    state: Option<AgentState>,
}

impl Bridge {
    async fn run(
        mut self,
        mut session: AgentSession,
        mut taps: mpsc::Receiver<TapPacket>,
        mut text: mpsc::Receiver<String>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let (decoder, mut encoder) =
            match (OpusDecoder::new(RTP_RATE, 1), OpusEncoder::new(RTP_RATE, 1)) {
                (Ok(d), Ok(e)) => (d, e),
                _ => {
                    self.send(ServerMessage::error(
                        crate::proto::ErrorCode::Media,
                        "cannot create the Opus codec",
                    ));
                    return;
                }
            };
        let mut ears = Ears::new(decoder, self.muted.clone());
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut ticks: u32 = 0;
        let mut ticker = tokio::time::interval(FRAME_DURATION);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                packet_in = taps.recv() => {
                    let Some(p) = packet_in else { break };
                    ears.hear(&session, &p);
                }
                typed = text.recv() => {
                    if let Some(typed) = typed {
                        session.push_text(typed);
                    }
                }
                event = session.next_event() => {
                    let Some(event) = event else { break };
                    self.on_event(event);
                }
                _ = ticker.tick() => {
                    // Keep the listener's clock running through gaps in the person's audio.
                    ears.tick(&session);
                    // Speak: the agent's next frame, if it is talking.
                    let rtp_time = ticks.wrapping_mul(FRAME_SAMPLES as u32);
                    ticks = ticks.wrapping_add(1);
                    if let Some(frame) = session.pull_frame(ears.media_time)
                        && let Ok(n) = encoder.encode(frame.samples(), &mut packet)
                    {
                        self.seq = self.seq.wrapping_add(1);
                        self.media.write_audio(self.speaker, OutgoingFrame::new(self.seq, rtp_time, &packet[..n]));
                    }
                }
            }
        }
        session.stop().await;
    }

    fn on_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::State(state) => {
                if self.state == Some(state) {
                    return;
                }
                self.state = Some(state);
                if state == AgentState::Thinking {
                    self.answer.clear();
                }
                self.send(ServerMessage::AgentState {
                    state: wire_state(state),
                });
            }
            AgentEvent::UserTranscript { turn, text } => self.send(ServerMessage::Transcript {
                speaker: Speaker::User,
                text,
                is_final: true,
                turn: turn.0,
            }),
            AgentEvent::UserPartial { turn, text } => self.send(ServerMessage::Transcript {
                speaker: Speaker::User,
                text,
                is_final: false,
                turn: turn.0,
            }),
            AgentEvent::AgentSpeech { turn, text } => {
                if !self.answer.is_empty() {
                    self.answer.push(' ');
                }
                self.answer.push_str(text.trim());
                self.send(ServerMessage::Transcript {
                    speaker: Speaker::Agent,
                    text: self.answer.clone(),
                    is_final: false,
                    turn: turn.0,
                });
            }
            AgentEvent::Interrupted { turn, heard } => {
                self.send(ServerMessage::Interrupted {
                    turn: turn.0,
                    heard,
                });
            }
            AgentEvent::Resumed { .. } => {
                self.state = Some(AgentState::Speaking);
                self.send(ServerMessage::AgentState {
                    state: AgentStateWire::Speaking,
                });
            }
            AgentEvent::TurnComplete(record) => {
                self.send(ServerMessage::Transcript {
                    speaker: Speaker::Agent,
                    text: record.answer.trim().to_string(),
                    is_final: true,
                    turn: record.turn.0,
                });
                let latency = latency_of(&record);
                self.send(ServerMessage::Latency {
                    turn: record.turn.0,
                    latency,
                    providers: [
                        record.providers.0.clone(),
                        record.providers.1.clone(),
                        record.providers.2.clone(),
                    ],
                });
                self.answer.clear();
            }
            AgentEvent::Error(message) => self.send(ServerMessage::error(
                crate::proto::ErrorCode::Media,
                format!("agent: {message}"),
            )),
        }
    }

    fn send(&self, message: ServerMessage) {
        let _ = self.messages.try_send(message);
    }
}

/// Frames concealed at most for one gap in the person's packets.
const MAX_CONCEALED_FRAMES: u16 = 5;
/// Without packets for this long, the listener hears silence (a muted or DTX-silent sender).
const SILENCE_AFTER: Duration = Duration::from_millis(60);

/// The agent's ears. Packets are decoded as they arrive, in order (gaps concealed, late ones
/// dropped), instead of through a playout jitter buffer: the listener is a model, not a person,
/// so smoothing playout would only delay its decisions. Silence is fed when packets stop, so
/// voice activity and end-of-turn timing keep going.
struct Ears {
    decoder: OpusDecoder,
    muted: Arc<AtomicBool>,
    expected: Option<u16>,
    last_audio: Instant,
    media_time: Duration,
    pcm: [i16; FRAME_SAMPLES],
}

impl Ears {
    fn new(decoder: OpusDecoder, muted: Arc<AtomicBool>) -> Self {
        Self {
            decoder,
            muted,
            expected: None,
            last_audio: Instant::now(),
            media_time: Duration::ZERO,
            pcm: [0; FRAME_SAMPLES],
        }
    }

    /// One packet of the person's audio.
    fn hear(&mut self, session: &AgentSession, packet: &TapPacket) {
        if let Some(expected) = self.expected {
            let ahead = packet.seq.wrapping_sub(expected);
            if ahead > u16::MAX / 2 {
                return; // late or duplicate
            }
            for _ in 0..ahead.min(MAX_CONCEALED_FRAMES) {
                if self.decoder.conceal(&mut self.pcm).is_ok() {
                    self.push(session, true);
                }
            }
        }
        self.expected = Some(packet.seq.wrapping_add(1));
        let decoded = self.decoder.decode(&packet.payload, &mut self.pcm);
        self.push(session, matches!(decoded, Ok(FRAME_SAMPLES)));
        self.last_audio = Instant::now();
    }

    /// Called every 20 ms: silence when the person's packets have stopped.
    fn tick(&mut self, session: &AgentSession) {
        if self.last_audio.elapsed() >= SILENCE_AFTER {
            self.push(session, false);
            self.last_audio += FRAME_DURATION;
        }
    }

    fn push(&mut self, session: &AgentSession, decoded: bool) {
        let audible = decoded && !self.muted.load(Ordering::Relaxed);
        if !audible {
            self.pcm = [0; FRAME_SAMPLES];
        }
        if let Ok(frame) = AudioFrame::new(&self.pcm, RTP_RATE, 1, self.media_time) {
            session.push_audio(frame);
        }
        self.media_time += FRAME_DURATION;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn latency_of(record: &TurnRecord) -> TurnLatency {
    TurnLatency {
        end_of_turn_ms: ms(record.end_of_turn),
        stt_ms: record.stt_final.map(ms),
        llm_first_token_ms: record.llm_first_token.map(ms),
        tts_first_audio_ms: record.tts_first_audio.map(ms),
        first_packet_out_ms: record.first_frame_out.map(ms),
    }
}

fn wire_state(state: AgentState) -> AgentStateWire {
    match state {
        AgentState::Listening => AgentStateWire::Listening,
        AgentState::Thinking => AgentStateWire::Thinking,
        AgentState::Speaking => AgentStateWire::Speaking,
        AgentState::Interrupted => AgentStateWire::Interrupted,
    }
}

/// Shared pointer to a factory.
pub type SharedAgentFactory = Arc<dyn AgentFactory>;
