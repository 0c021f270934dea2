//! The agent runner: one session's voice agent. Audio frames go to the shared
//! [`ListeningService`] (resample → VAD → end-of-turn, batched with every other session), and an
//! async task drives STT → LLM → sentence chunker → TTS → egress, handling barge-in, false
//! interruptions and turn records.
//!
//! Every task belongs to the [`AgentSession`] handle; dropping it (or calling
//! [`AgentSession::stop`]) stops them and leaves the listening service.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::admission::AdmissionGuard;
use crate::conversation::Conversation;
use crate::egress::Egress;
use crate::frame::{AudioFrame, TurnId};
use crate::knowledge::{AgentObserver, AgentTools, Knowledge};
use crate::listening::{ListenConfig, ListenerHandle, ListeningService};
use crate::provider::{CancellationToken, Llm, Stt, Tts};
use crate::turn::{TurnEndReason, TurnSignals};

mod runner;

/// Events a session reports to its owner, at most this many queued (oldest kept; the owner is
/// expected to keep up, a full queue drops new events).
pub const AGENT_EVENT_CAPACITY: usize = 256;
/// Listening events queued between the listening thread and the agent task.
const INGEST_EVENT_CAPACITY: usize = 64;
/// Typed user messages queued.
const TEXT_INPUT_CAPACITY: usize = 16;
/// Control messages (handoffs) queued.
const CONTROL_CAPACITY: usize = 4;

/// What the session's owner asks of the running agent.
pub(crate) enum Control {
    /// Go on as another agent: new settings and providers, same conversation.
    Handoff(Box<(AgentConfig, Providers)>),
}

/// Per-agent settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The system prompt.
    pub system_prompt: String,
    /// Longest answer in tokens.
    pub max_tokens: usize,
    /// Sample rate of the agent's outgoing track.
    pub output_rate: u32,
    /// Speech over the agent that lasts longer than this is an interruption, words or not;
    /// shorter speech is judged by its transcript (no words: the answer resumes).
    pub false_interruption_window: Duration,
    /// Echo guard: speech onsets within this long after the agent starts speaking are ignored
    /// (its own voice leaking into the microphone); zero disables the guard.
    pub echo_guard: Duration,
    /// Hold the answer's audio at the first speech-like sound over it (default), before the VAD
    /// confirms speech ~100 ms later; off where the far end echoes the agent (a phone line),
    /// whose residue would chop the answer.
    pub onset_hold: bool,
    /// Audio the listener had not yet heard when playback stopped (their jitter buffer).
    pub listener_lag: Duration,
    /// Whether the agent speaks its answers (default). When false (client-side TTS) nothing is
    /// synthesized: the answer arrives only as [`AgentEvent::AgentSpeech`] text chunks,
    /// [`AgentSession::pull_frame`] stays silent, and a barge-in counts all the text sent so far
    /// as heard.
    pub speech_output: bool,
    /// Speculative transcription (default on): when the person pauses, STT starts on the speech
    /// so far while the end of the turn is still being decided, and its transcript is used if
    /// no more speech came. Saves up to the VAD's confirmation silence per turn, at the cost of
    /// transcribing again after mid-sentence pauses (worth turning off for paid STT services).
    pub speculative_stt: bool,
    /// Interim transcripts (default on): every 400 ms of speech, the utterance so far is
    /// transcribed in the background and reported as [`AgentEvent::UserPartial`]; each one is
    /// the next transcription's draft, which an embedded recogniser checks in one step instead
    /// of decoding those words again.
    pub interim_transcripts: bool,
    /// Preemptive answer (default on): when the speculative transcript is in before the end of
    /// the turn is decided, the LLM and TTS start on it. Its audio is held, and nothing enters
    /// the conversation, until the turn ends at that pause; if the person goes on, it is
    /// dropped. Costs the LLM work of such false starts (worth turning off for paid LLMs).
    pub preemptive_answer: bool,
    /// Voice activity and end-of-turn settings.
    pub listening: ListenConfig,
    /// Words and phrases that, said alone over the agent, acknowledge rather than interrupt
    /// ("uh-huh", "right", "okay"): the agent keeps talking and the sound is reported as
    /// [`AgentEvent::Backchannel`]. Anything else with words ("wait", "stop", a question)
    /// interrupts. Defaults to [`DEFAULT_BACKCHANNELS`] (English).
    pub backchannels: Vec<String>,
}

/// English acknowledgements that do not interrupt the agent.
pub const DEFAULT_BACKCHANNELS: &[&str] = &[
    "uh-huh",
    "uh huh",
    "mhm",
    "right",
    "okay",
    "ok",
    "yeah",
    "yep",
    "yup",
    "sure",
    "alright",
    "all right",
    "i see",
    "got it",
    "cool",
    "great",
    "exactly",
    "true",
    "nice",
    "wow",
];

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt:
                "You are a helpful voice assistant. Answer in one or two short sentences.".into(),
            max_tokens: 96,
            output_rate: 48_000,
            false_interruption_window: Duration::from_millis(1_500),
            echo_guard: Duration::from_millis(250),
            onset_hold: true,
            listener_lag: Duration::ZERO,
            speech_output: true,
            speculative_stt: true,
            interim_transcripts: true,
            preemptive_answer: true,
            listening: ListenConfig::default(),
            backchannels: DEFAULT_BACKCHANNELS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What an agent runs on: its three providers, and optionally a knowledge base that grounds its
/// answers and an observer that hears its events.
#[derive(Clone)]
pub struct Providers {
    /// Speech to text.
    pub stt: Arc<dyn Stt>,
    /// Language model.
    pub llm: Arc<dyn Llm>,
    /// Text to speech.
    pub tts: Arc<dyn Tts>,
    /// Passages retrieved for each user turn go into the prompt (`None`: no grounding).
    pub knowledge: Option<Arc<dyn Knowledge>>,
    /// Hears every event the session reports (`None`: only the session's owner does).
    pub observer: Option<Arc<dyn AgentObserver>>,
    /// Functions the model may call while answering (`None`: no tools).
    pub tools: Option<Arc<dyn AgentTools>>,
}

impl Providers {
    /// The three providers, without knowledge base or observer.
    pub fn new(stt: Arc<dyn Stt>, llm: Arc<dyn Llm>, tts: Arc<dyn Tts>) -> Self {
        Self {
            stt,
            llm,
            tts,
            knowledge: None,
            observer: None,
            tools: None,
        }
    }
}

/// What the agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Waiting for the person.
    Listening,
    /// Transcribing and generating.
    Thinking,
    /// Playing an answer.
    Speaking,
    /// Paused by a possible barge-in, judging whether it had words.
    Interrupted,
}

/// Per-turn latencies: each is the time from the end of the user's speech.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnRecord {
    /// The turn.
    pub turn: TurnId,
    /// Why the turn ended (`None` for typed input).
    pub reason: Option<TurnEndReason>,
    /// What the end-of-turn decision rested on (`None` for typed input).
    pub signals: Option<TurnSignals>,
    /// End of speech → end-of-turn decision (media time).
    pub end_of_turn: Duration,
    /// Arrival of the audio that decided the end of turn → the agent acting on the decision
    /// (the listening chain's compute, Smart Turn mostly, and queueing). Wall clock, and part
    /// of every figure below: they count from the end of speech placed on the wall clock at
    /// that audio's arrival.
    pub decision_lag: Duration,
    /// … → final transcript.
    pub stt_final: Option<Duration>,
    /// … → first LLM token.
    pub llm_first_token: Option<Duration>,
    /// … → first synthesized audio queued for playback.
    pub tts_first_audio: Option<Duration>,
    /// … → first frame of the answer handed out by [`AgentSession::pull_frame`] (wall clock,
    /// like the fields above). `None` when no frame of the answer was pulled: the turn was cut
    /// before it played, or speech output is off.
    pub first_frame_out: Option<Duration>,
    /// STT, LLM and TTS providers that served.
    pub providers: (String, String, String),
    /// The transcript.
    pub transcript: String,
    /// The answer as generated (or as heard, when interrupted).
    pub answer: String,
    /// Whether the person barged in.
    pub interrupted: bool,
}

/// What a session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The agent's state changed.
    State(AgentState),
    /// An interim transcript of what the person is saying (speculative recognition); the
    /// turn's [`AgentEvent::UserTranscript`] supersedes it.
    UserPartial {
        /// The turn the speech will start if it has words.
        turn: TurnId,
        /// The hypothesis so far.
        text: String,
    },
    /// The person's final transcript for a turn.
    UserTranscript {
        /// The turn.
        turn: TurnId,
        /// What they said.
        text: String,
    },
    /// A piece of the agent's answer was queued for speech (or, without speech output, sent as
    /// text).
    AgentSpeech {
        /// The turn.
        turn: TurnId,
        /// The chunk's text.
        text: String,
    },
    /// The person barged in; the answer was cut to what they heard.
    Interrupted {
        /// The interrupted turn.
        turn: TurnId,
        /// What they heard of it.
        heard: String,
    },
    /// The person acknowledged over the agent ("uh-huh", "right"): it kept talking.
    Backchannel {
        /// The turn whose answer went on.
        turn: TurnId,
        /// What they said.
        text: String,
    },
    /// A false interruption (no words): the answer resumed.
    Resumed {
        /// The resumed turn.
        turn: TurnId,
    },
    /// A turn's answer finished (or was cut), with its latencies.
    TurnComplete(Box<TurnRecord>),
    /// The person's turn could not be answered (a model failed or was saturated): they should
    /// be told, and it is counted in [`crate::metrics::TURNS_FAILED_TOTAL`].
    TurnFailed {
        /// The turn.
        turn: TurnId,
        /// Where it failed: `stt` or `llm`.
        stage: String,
        /// Why.
        reason: String,
    },
    /// Something failed; the session keeps running.
    Error(String),
}

/// A running voice agent.
pub struct AgentSession {
    audio_in: ListenerHandle,
    text_in: mpsc::Sender<String>,
    control: mpsc::Sender<Control>,
    egress: Arc<Mutex<Egress>>,
    first_frame: FirstFrame,
    events: mpsc::Receiver<AgentEvent>,
    conversation: Arc<Mutex<Conversation>>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The session's place in the machine's capacity, given back when it ends.
    admission: Option<AdmissionGuard>,
}

impl AgentSession {
    /// Starts a session on the current tokio runtime, listening through `listening`.
    pub fn start(config: AgentConfig, providers: Providers, listening: &ListeningService) -> Self {
        let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_EVENT_CAPACITY);
        let (text_tx, text_rx) = mpsc::channel(TEXT_INPUT_CAPACITY);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_CAPACITY);
        let (event_tx, events) = mpsc::channel(AGENT_EVENT_CAPACITY);
        let egress = Arc::new(Mutex::new(Egress::new(config.output_rate)));
        let conversation = Arc::new(Mutex::new(Conversation::new(config.system_prompt.clone())));
        let cancel = CancellationToken::new();
        let first_frame = FirstFrame::default();
        let mut listen = config.listening;
        if !config.speculative_stt {
            // No transcript of a pause will come: verdicts must not wait for one.
            listen.turn = listen.turn.without_transcripts();
        }
        let audio_in = listening.open(listen, ingest_tx, event_tx.clone());
        let runner = runner::Runner::new(
            config,
            providers,
            egress.clone(),
            first_frame.clone(),
            conversation.clone(),
            event_tx,
            Some(audio_in.transcript_hints()),
        );
        let task = tokio::spawn(runner.run(ingest_rx, text_rx, control_rx, cancel.clone()));
        Self {
            audio_in,
            text_in: text_tx,
            control: control_tx,
            egress,
            first_frame,
            events,
            conversation,
            cancel,
            task: Some(task),
            admission: None,
        }
    }

    /// Holds `guard` (the session's admitted place) until the session ends.
    pub fn with_admission(mut self, guard: AdmissionGuard) -> Self {
        self.admission = Some(guard);
        self
    }

    /// Feeds one frame of the person's audio (never blocks; the oldest audio is dropped if the
    /// listening thread falls behind).
    pub fn push_audio(&self, frame: AudioFrame) {
        self.audio_in.push(frame);
    }

    /// Hands the conversation to another agent mid-call: from the next job on, the session
    /// answers with `config` (system prompt, answer length, early work) and `providers`
    /// (voice, language model, tools, knowledge); the conversation so far stays, and an answer
    /// in progress finishes in the voice it started in. False if the session has ended.
    pub fn handoff(&self, config: AgentConfig, providers: Providers) -> bool {
        self.control
            .try_send(Control::Handoff(Box::new((config, providers))))
            .is_ok()
    }

    /// Sends a typed message (client-side STT): it is answered like a spoken turn.
    pub fn push_text(&self, text: impl Into<String>) -> bool {
        self.text_in.try_send(text.into()).is_ok()
    }

    /// The next 20 ms of the agent's speech, or `None` for silence. The moment an answer's first
    /// frame is pulled is its turn's [`TurnRecord::first_frame_out`].
    pub fn pull_frame(&self, timestamp: Duration) -> Option<AudioFrame> {
        let mut egress = self.egress.lock().unwrap_or_else(|p| p.into_inner());
        let frame = egress.next_frame(timestamp).and_then(Result::ok);
        if let Some(turn) = egress.take_turn_started() {
            self.first_frame.set(turn, Instant::now());
        }
        frame
    }

    /// How much of the agent's played audio has not reached the listener's ear yet (their
    /// jitter buffer and the network, from RTCP where the peer sends it): it counts as unheard
    /// when they barge in.
    pub fn set_listener_lag(&self, lag: Duration) {
        self.egress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_listener_lag(lag);
    }

    /// Whether speech is queued for playback.
    pub fn is_speaking(&self) -> bool {
        self.egress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_speaking()
    }

    /// The next event.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        self.events.recv().await
    }

    /// The next event if one is ready.
    pub fn try_event(&mut self) -> Option<AgentEvent> {
        self.events.try_recv().ok()
    }

    /// A copy of the conversation so far.
    pub fn conversation(&self) -> Conversation {
        self.conversation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Frames dropped because listening fell behind.
    pub fn dropped_frames(&self) -> u64 {
        self.audio_in.dropped_frames()
    }

    /// Ends the input: audio already pushed is still processed, then listening stops.
    pub fn finish_input(&self) {
        self.audio_in.finish();
    }

    /// Stops every task and thread of the session.
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn shutdown(&mut self) {
        self.cancel.cancel();
        self.audio_in.finish();
        self.admission.take();
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The latest turn whose answer started playing, and when its first frame was pulled.
#[derive(Debug, Clone, Default)]
struct FirstFrame(Arc<Mutex<Option<(TurnId, Instant)>>>);

impl FirstFrame {
    fn set(&self, turn: TurnId, at: Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((turn, at));
    }

    /// When `turn`'s first frame was pulled, if it was.
    fn of(&self, turn: TurnId) -> Option<Instant> {
        match *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((t, at)) if t == turn => Some(at),
            _ => None,
        }
    }
}
