//! A voice agent as an in-process participant of a room.
//!
//! The bridge task listens to what the media driver delivers for it (one participant, the active
//! speaker, or everyone: Opus packets → decode with loss concealment per source → mixed when
//! several speak → the agent's listening queue), sends the agent's speech back every 20 ms (agent
//! frame → Opus → the driver, which forwards it like any participant's audio, with its level for
//! active-speaker selection), and turns the agent's events into wire messages. Each transcript of
//! what people said is attributed to the participant whose voice dominated the turn; agents of one
//! room share a [`Floor`], so two agents take turns instead of talking over each other.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dartmouth_media::opus_codec::MAX_PACKET_BYTES;
use dartmouth_media::{
    MediaHandle, OpusEncoder, OutgoingFrame, PeerId, PeerStats, TapPacket, level_dbov,
};
use dartmouth_voice::admission::AdmissionState;
use dartmouth_voice::agent::{AgentEvent, AgentSession, AgentState, TurnRecord};
use dartmouth_voice::frame::FRAME_DURATION;
use dartmouth_voice::turn::TurnEndReason;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

mod ears;

use ears::Ears;

use crate::proto::{
    AgentOutput, AgentStateWire, ServerMessage, Speaker, TurnDecision, TurnLatency,
};

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
    /// Starts a session of the agent `request` names (called on a blocking thread inside the
    /// runtime), or says why not: [`AgentRefusal::Unavailable`] when the machine has no room
    /// for one more (the client should retry later), [`AgentRefusal::Failed`] otherwise.
    fn start(&self, request: &AgentRequest) -> Result<AgentSession, AgentRefusal>;
    /// How many sessions the agents carry and how loaded their models are (`None`: not
    /// limited by models, e.g. remote services only).
    fn capacity(&self) -> Option<AdmissionState> {
        None
    }
}

/// Why an agent session was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentRefusal {
    /// No room for one more session now (capacity, or the models are saturated).
    #[error("{0}")]
    Unavailable(String),
    /// The agent could not start.
    #[error("{0}")]
    Failed(String),
}

/// What a new agent session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRequest {
    /// The agent's name (one of [`AgentFactory::agents`]).
    pub agent: String,
    /// The room it joins.
    pub room: String,
    /// The identity of the participant it talks to.
    pub identity: String,
    /// Whether it speaks or only writes.
    pub output: AgentOutput,
    /// Sample rate of the agent's speech (48 kHz for WebRTC's Opus; 8 or 16 kHz on a SIP leg,
    /// which then needs no resampling on the way out).
    pub output_rate: u32,
    /// The far end plays the agent's voice back into its microphone (a phone line's echo):
    /// barge-in then waits for the VAD to confirm speech instead of holding the agent's audio
    /// at the first speech-like sound, which echo residue would chop.
    pub echo_path: bool,
    /// The phone call the agent answers, whose keys and transfer its model may use as tools
    /// (`None` for every session that is not a SIP call).
    pub phone: Option<crate::sip::CallTools>,
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

    fn start(&self, request: &AgentRequest) -> Result<AgentSession, AgentRefusal> {
        Err(AgentRefusal::Failed(format!(
            "no agent named {:?}: the models are missing (run `dartmouth models fetch`)",
            request.agent
        )))
    }
}

/// Who may speak in a room: one agent at a time. An agent holds the floor while it sends speech
/// and for [`FLOOR_RELEASE`] after its last frame; the others hold their answers back meanwhile.
#[derive(Debug, Default)]
pub struct Floor {
    holder: Mutex<Option<(PeerId, Instant)>>,
}

/// How long after an agent's last frame of speech another agent may start.
pub const FLOOR_RELEASE: Duration = Duration::from_millis(400);

impl Floor {
    /// Whether `agent` may send a frame of speech at `now` (taking or keeping the floor).
    pub fn try_speak(&self, agent: PeerId, now: Instant) -> bool {
        let mut holder = self.holder.lock().unwrap_or_else(|p| p.into_inner());
        match *holder {
            Some((other, last)) if other != agent && now.duration_since(last) < FLOOR_RELEASE => {
                false
            }
            _ => {
                *holder = Some((agent, now));
                true
            }
        }
    }
}

/// Names the participants of a room for transcripts (peer → identity).
pub type Names = Arc<dyn Fn(PeerId) -> Option<String> + Send + Sync>;

/// Where a bridge sits: its room's floor and how to name the people it hears.
#[derive(Clone)]
pub struct RoomSeat {
    /// Shared by the agents of the room.
    pub floor: Arc<Floor>,
    /// Identity of a participant.
    pub names: Names,
}

impl Default for RoomSeat {
    fn default() -> Self {
        Self {
            floor: Arc::default(),
            names: Arc::new(|_| None),
        }
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
    /// Starts the bridge: `session` hears what arrives on `taps` (see
    /// [`MediaHandle::listen`]) and speaks as `speaker` in the room; wire messages go to
    /// `messages`. `listener` is the WebRTC peer the agent talks to: its RTCP reports (round
    /// trip, jitter, loss) set how much of the agent's speech counts as still on its way at a
    /// barge-in and how much forward error correction the agent's voice carries.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        media: MediaHandle,
        speaker: PeerId,
        listener: PeerId,
        session: AgentSession,
        taps: mpsc::Receiver<TapPacket>,
        messages: mpsc::Sender<ServerMessage>,
        seat: RoomSeat,
    ) -> Self {
        let (text_tx, text_rx) = mpsc::channel(AGENT_TEXT_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let muted = Arc::new(AtomicBool::new(false));
        let bridge = Bridge {
            muted: muted.clone(),
            media,
            speaker,
            listener,
            messages,
            answer: String::new(),
            seq: 0,
            state: None,
            seat,
            heard_from: HashMap::new(),
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
    listener: PeerId,
    messages: mpsc::Sender<ServerMessage>,
    answer: String,
    seq: u16,
    state: Option<AgentState>,
    seat: RoomSeat,
    /// Voiced energy per source since the last final transcript (who spoke this turn).
    heard_from: HashMap<PeerId, f64>,
}

impl Bridge {
    async fn run(
        mut self,
        mut session: AgentSession,
        mut taps: mpsc::Receiver<TapPacket>,
        mut text: mpsc::Receiver<String>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let Ok(mut encoder) = OpusEncoder::new(RTP_RATE, 1) else {
            self.send(ServerMessage::error(
                crate::proto::ErrorCode::Media,
                "cannot create the Opus codec",
            ));
            return;
        };
        let mut ears = Ears::new(self.muted.clone());
        // The loss the encoder's in-band FEC is tuned for (percent; 0: off until RTCP says).
        let mut fec_loss = 0u8;
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut ticks: u32 = 0;
        let mut ticker = tokio::time::interval(FRAME_DURATION);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                packet_in = taps.recv() => {
                    let Some(p) = packet_in else { break };
                    ears.hear(&session, &p, &mut self.heard_from);
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
                due = ticker.tick() => {
                    dartmouth_voice::metrics::record_egress_tick(due.into_std(), Instant::now());
                    // Mix what several sources said; keep the listener's clock running
                    // through gaps in the people's audio.
                    ears.tick(&session);
                    if ticks.is_multiple_of(LISTENER_LAG_REFRESH_TICKS) {
                        let stats = self.media.peer_stats(self.listener);
                        session.set_listener_lag(listener_lag(stats.as_ref()));
                        let loss = expected_loss_percent(stats.as_ref());
                        if loss != fec_loss {
                            fec_loss = loss;
                            let _ = encoder.set_fec(loss > 0, loss);
                        }
                    }
                    // Speak: the agent's next frame, if it is talking and has the floor.
                    let rtp_time = ticks.wrapping_mul(FRAME_SAMPLES as u32);
                    ticks = ticks.wrapping_add(1);
                    if session.is_speaking()
                        && !self.seat.floor.try_speak(self.speaker, Instant::now())
                    {
                        continue;
                    }
                    if let Some(frame) = session.pull_frame(ears.media_time)
                        && let Ok(n) = encoder.encode(frame.samples(), &mut packet)
                    {
                        self.seq = self.seq.wrapping_add(1);
                        let level = level_dbov(frame.samples());
                        let out = OutgoingFrame::new(self.seq, rtp_time, &packet[..n]).with_level(level);
                        self.media.write_audio(self.speaker, out);
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
            AgentEvent::UserTranscript { turn, text } => {
                let participant = self.speaker_of_turn();
                self.heard_from.clear();
                self.send(ServerMessage::Transcript {
                    speaker: Speaker::User,
                    text,
                    is_final: true,
                    turn: turn.0,
                    participant,
                })
            }
            AgentEvent::UserPartial { turn, text } => {
                let participant = self.speaker_of_turn();
                self.send(ServerMessage::Transcript {
                    speaker: Speaker::User,
                    text,
                    is_final: false,
                    turn: turn.0,
                    participant,
                })
            }
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
                    participant: None,
                });
            }
            AgentEvent::Interrupted { turn, heard } => {
                self.send(ServerMessage::Interrupted {
                    turn: turn.0,
                    heard,
                });
            }
            AgentEvent::Backchannel { turn, text } => {
                self.send(ServerMessage::Backchannel { turn: turn.0, text });
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
                    participant: None,
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
            AgentEvent::TurnFailed { stage, reason, .. } => self.send(ServerMessage::error(
                crate::proto::ErrorCode::AgentFailed,
                format!("the agent could not answer ({stage}): {reason}; please say it again"),
            )),
        }
    }

    fn send(&self, message: ServerMessage) {
        let _ = self.messages.try_send(message);
    }

    /// The identity of the participant heard most this turn.
    fn speaker_of_turn(&self) -> Option<String> {
        let (peer, _) = self.heard_from.iter().max_by(|a, b| a.1.total_cmp(b.1))?;
        (self.seat.names)(*peer)
    }
}

/// Frames between two updates of the listener's lag from the peer's RTCP (one second).
const LISTENER_LAG_REFRESH_TICKS: u32 = 50;
/// A browser's jitter buffer when the peer reports no jitter: WebRTC's playout delay on a
/// clean link is a few frames.
const DEFAULT_JITTER_BUFFER: Duration = Duration::from_millis(40);
/// The jitter buffer a receiver keeps, in multiples of the interarrival jitter it reports
/// (libwebrtc's NetEq targets about this much), within these bounds.
const JITTER_BUFFER_PER_JITTER: u32 = 3;
const MIN_JITTER_BUFFER: Duration = Duration::from_millis(20);
const MAX_JITTER_BUFFER: Duration = Duration::from_millis(250);

/// How much of the agent's played audio is still on its way to the listener's ear: half the
/// round trip (the network) plus the listener's jitter buffer, from the RTCP the peer sends;
/// without reports, the default buffer of a clean link. A barge-in counts that audio unheard.
fn listener_lag(stats: Option<&PeerStats>) -> Duration {
    let one_way = stats
        .and_then(|s| s.rtt)
        .map(|rtt| rtt / 2)
        .unwrap_or_default();
    let buffer = stats
        .and_then(|s| s.jitter)
        .map(|jitter| {
            (jitter * JITTER_BUFFER_PER_JITTER).clamp(MIN_JITTER_BUFFER, MAX_JITTER_BUFFER)
        })
        .unwrap_or(DEFAULT_JITTER_BUFFER);
    one_way + buffer
}

/// The loss the listener reports for the agent's audio (RTCP receiver reports), in percent,
/// rounded up and at most [`MAX_FEC_LOSS_PERCENT`]: what the encoder's in-band FEC is tuned for.
fn expected_loss_percent(stats: Option<&PeerStats>) -> u8 {
    let lost = stats.and_then(|s| s.fraction_lost).unwrap_or(0.0);
    (f64::from(lost) * 100.0)
        .ceil()
        .clamp(0.0, f64::from(MAX_FEC_LOSS_PERCENT)) as u8
}

/// Beyond this much loss more FEC only takes bits from the voice itself.
const MAX_FEC_LOSS_PERCENT: u8 = 30;

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
        decision: record
            .reason
            .zip(record.signals)
            .map(|(reason, signals)| TurnDecision {
                reason: match reason {
                    TurnEndReason::Complete { .. } => "model",
                    TurnEndReason::TranscriptComplete => "transcript",
                    TurnEndReason::SilenceTimeout => "silence",
                    TurnEndReason::MaxDuration => "max_duration",
                }
                .to_string(),
                probability: signals
                    .probability
                    .map(|p| (f64::from(p) * 1000.0).round() / 1000.0),
                asks: signals.asks,
                threshold: (f64::from(signals.threshold) * 1000.0).round() / 1000.0,
                transcript_form: serde_name(&signals.form),
                eagerness: serde_name(&signals.eagerness),
            }),
    }
}

/// The name serde gives a unit variant (`"question"`, `"normal"`).
fn serde_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_lag_is_half_the_round_trip_plus_the_jitter_buffer() {
        let ms = Duration::from_millis;
        assert_eq!(listener_lag(None), DEFAULT_JITTER_BUFFER, "no reports yet");
        let stats = PeerStats {
            rtt: Some(ms(120)),
            jitter: Some(ms(15)),
            ..PeerStats::default()
        };
        assert_eq!(listener_lag(Some(&stats)), ms(60 + 45));
        let bad_link = PeerStats {
            rtt: Some(ms(400)),
            jitter: Some(ms(300)),
            ..PeerStats::default()
        };
        assert_eq!(listener_lag(Some(&bad_link)), ms(200) + MAX_JITTER_BUFFER);
        let clean = PeerStats {
            rtt: Some(ms(1)),
            jitter: Some(Duration::ZERO),
            ..PeerStats::default()
        };
        assert_eq!(
            listener_lag(Some(&clean)),
            Duration::from_micros(500) + MIN_JITTER_BUFFER
        );
    }

    #[test]
    fn the_fec_follows_the_loss_the_listener_reports() {
        assert_eq!(expected_loss_percent(None), 0, "no reports: no FEC");
        let lossy = |fraction| PeerStats {
            fraction_lost: Some(fraction),
            ..PeerStats::default()
        };
        assert_eq!(expected_loss_percent(Some(&lossy(0.0))), 0);
        assert_eq!(
            expected_loss_percent(Some(&lossy(0.004))),
            1,
            "any loss turns it on"
        );
        assert_eq!(expected_loss_percent(Some(&lossy(0.12))), 12);
        assert_eq!(
            expected_loss_percent(Some(&lossy(0.9))),
            MAX_FEC_LOSS_PERCENT
        );
    }
}
