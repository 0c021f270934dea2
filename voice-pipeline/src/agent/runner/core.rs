//! The agent's decisions as a step machine: [`Core::handle`] takes one input (a listening event,
//! typed text, a provider's event, a tick) with the time it happened, and queues effects (start
//! this job, emit that event). It reads no clock and does no I/O, so scenario tests drive it in
//! virtual time; the async shell in `runner.rs` runs the jobs and feeds their events back.
//!
//! The playback queue ([`Egress`]) and the conversation are shared with the session handle and
//! changed only in short synchronous sections here. Barge-in has one contract: the egress
//! stage's [`Stage::on_interrupt`], called from [`Core::interrupt_answer`] only.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::answer::Answer;
use super::early::{Interim, Speculation};
use crate::agent::{AgentConfig, AgentEvent, AgentState, FirstFrame, TurnRecord};
use crate::conversation::Conversation;
use crate::egress::Egress;
use crate::frame::TurnId;
use crate::ingest::IngestEvent;
use crate::job::{JobTag, Priority, SessionId};
use crate::knowledge::{KnowledgeEvent, ToolEvent};
use crate::listening::Heard;
use crate::provider::{
    CancellationToken, LlmEvent, LlmRequest, SttEvent, SttRequest, ToolCall, ToolSpec, TtsEvent,
    TtsRequest,
};
use crate::stage::Stage;
use crate::text::normalize_words;
use crate::turn::{TranscriptForm, TurnEndReason, TurnSignals};

/// Sounds transcribed as words that do not interrupt the agent on their own.
pub(super) const FILLERS: &[&str] = &[
    "hmm", "hm", "mm", "mhm", "uh", "um", "ah", "oh", "er", "erm",
];

/// Words in a transcript that carry meaning (fillers and noise transcriptions excluded).
pub(super) fn spoken_words(text: &str) -> usize {
    normalize_words(text)
        .iter()
        .filter(|w| !FILLERS.contains(&w.as_str()))
        .count()
}

/// Whether `text`, said over the agent, only acknowledges it: the whole utterance (fillers
/// aside, at most four words) is one of `backchannels`, or each of its words is a one-word one.
pub(super) fn is_backchannel(text: &str, backchannels: &[String]) -> bool {
    let words = normalize_words(text);
    if words.is_empty() || words.len() > 4 {
        return false;
    }
    let listed = |candidate: &str| {
        backchannels
            .iter()
            .any(|b| normalize_words(b).join(" ") == candidate)
    };
    if listed(&words.join(" ")) {
        return true;
    }
    let mut content = words
        .iter()
        .filter(|w| !FILLERS.contains(&w.as_str()))
        .peekable();
    content.peek().is_some() && content.all(|w| listed(w))
}

/// A voice onset holds playback this long at most for the VAD to confirm speech; then it
/// resumes (a click, a breath). The VAD confirms after ~100 ms of speech.
pub(super) const ONSET_HOLD_LIMIT: Duration = Duration::from_millis(250);

/// A barge-in whose speech has ended waits this long at most for its transcript before it counts.
pub(super) const BARGE_IN_TRANSCRIPT_LIMIT: Duration = Duration::from_secs(10);

/// Identifies one provider job of this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct JobId(pub u64);

/// One thing that happened to the session.
#[derive(Debug)]
pub(crate) enum Input {
    /// The listening service heard something.
    Heard(Heard),
    /// The person typed a message.
    Text(String),
    /// A transcription job's event (`None`: its stream ended).
    Stt(JobId, Option<SttEvent>),
    /// A language-model job's event.
    Llm(JobId, Option<LlmEvent>),
    /// A speech job's event.
    Tts(JobId, Option<TtsEvent>),
    /// A knowledge lookup's event.
    Knowledge(JobId, Option<KnowledgeEvent>),
    /// A tool call's event.
    Tool(JobId, Option<ToolEvent>),
    /// Time passed (timers, playback progress).
    Tick,
}

/// Something the shell must do.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Start a transcription.
    Transcribe {
        job: JobId,
        request: SttRequest,
        cancel: CancellationToken,
    },
    /// Start an answer from the language model.
    Generate {
        job: JobId,
        request: LlmRequest,
        cancel: CancellationToken,
    },
    /// Let the language model read a likely prompt ahead (nothing comes back).
    ReadAhead {
        request: LlmRequest,
        cancel: CancellationToken,
    },
    /// Start speaking a chunk of an answer.
    Synthesize {
        job: JobId,
        request: TtsRequest,
        cancel: CancellationToken,
    },
    /// Look up passages for a question.
    Retrieve {
        job: JobId,
        query: String,
        limit: usize,
        cancel: CancellationToken,
    },
    /// Run a function the model asked for.
    CallTool {
        job: JobId,
        call: ToolCall,
        cancel: CancellationToken,
    },
    /// Tell the end-of-turn detector what the speech before the pause at `at` reads like.
    HintTurn { at: Duration, form: TranscriptForm },
    /// Tell the session's owner (and observer).
    Emit(AgentEvent),
}

/// What the core needs to know of its providers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProviderInfo {
    /// Speech to text, for turn records.
    pub stt: String,
    /// Language model, for turn records.
    pub llm: String,
    /// Text to speech, for turn records.
    pub tts: String,
    /// The rate text to speech produces.
    pub tts_rate: u32,
    /// Whether a knowledge base grounds answers.
    pub knowledge: bool,
    /// Functions the model may call.
    pub tools: Vec<ToolSpec>,
}

/// The final transcription of the latest user utterance.
pub(super) struct Listening {
    pub job: JobId,
    pub cancel: CancellationToken,
    pub reason: TurnEndReason,
    /// Instant the user stopped speaking (arrival of the deciding audio minus the end-of-turn
    /// wait).
    pub speech_end: Instant,
    pub end_of_turn: Duration,
}

/// A possible barge-in being judged.
#[derive(Debug, Clone, Copy)]
pub(super) struct BargeIn {
    pub since: Instant,
    /// The speech that started it has ended: its transcript decides.
    pub speech_ended: bool,
}

/// The agent's decisions.
pub(crate) struct Core {
    pub(super) config: AgentConfig,
    pub(super) providers: ProviderInfo,
    pub(super) session: SessionId,
    pub(super) egress: Arc<Mutex<Egress>>,
    first_frame: FirstFrame,
    conversation: Arc<Mutex<Conversation>>,
    effects: Vec<Effect>,
    next_job: u64,
    /// The latest user turn.
    pub(super) turn: TurnId,
    pub(super) listening: Option<Listening>,
    pub(super) speculation: Option<Speculation>,
    pub(super) interim: Option<Interim>,
    /// The LLM read-ahead of the utterance in progress.
    pub(super) read_ahead: Option<CancellationToken>,
    /// [`TurnRecord::decision_lag`] of the latest end of turn.
    pub(super) decision_lag: Duration,
    /// What the latest end-of-turn decision rested on.
    pub(super) turn_signals: TurnSignals,
    /// The latest transcript of the utterance in progress (the next transcription's draft).
    pub(super) draft: Option<Arc<str>>,
    pub(super) answer: Option<Answer>,
    pub(super) barge_in: Option<BargeIn>,
    /// Playback held at a voice onset, since then, until the VAD confirms speech or not.
    pub(super) onset_hold: Option<Instant>,
}

impl Core {
    pub(crate) fn new(
        config: AgentConfig,
        providers: ProviderInfo,
        egress: Arc<Mutex<Egress>>,
        first_frame: FirstFrame,
        conversation: Arc<Mutex<Conversation>>,
    ) -> Self {
        Self {
            config,
            providers,
            session: SessionId::fresh(),
            egress,
            first_frame,
            conversation,
            effects: Vec::new(),
            next_job: 0,
            turn: TurnId(0),
            listening: None,
            speculation: None,
            interim: None,
            read_ahead: None,
            decision_lag: Duration::ZERO,
            turn_signals: TurnSignals::default(),
            draft: None,
            answer: None,
            barge_in: None,
            onset_hold: None,
        }
    }

    /// Goes on as another agent (a handoff): new settings and providers, same conversation with
    /// the new system prompt. The answer in progress keeps its jobs; later ones use the new
    /// providers.
    pub(crate) fn reconfigure(&mut self, config: AgentConfig, providers: ProviderInfo) {
        self.conversation()
            .set_system_prompt(config.system_prompt.clone());
        let output_rate = self.config.output_rate;
        self.config = AgentConfig {
            // The track's rate is the transport's, not the agent's.
            output_rate,
            ..config
        };
        self.providers = providers;
    }

    /// The session's first words: it listens.
    pub(crate) fn start(&mut self) {
        self.emit(AgentEvent::State(AgentState::Listening));
    }

    /// One input at `now`.
    pub(crate) fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Heard(heard) => self.on_heard(heard, now),
            Input::Text(text) => self.on_user_text(text, None, now, Duration::ZERO, now),
            Input::Stt(job, event) => self.on_stt(job, event, now),
            Input::Llm(job, event) => self.on_llm(job, event, now),
            Input::Tts(job, event) => self.on_tts(job, event, now),
            Input::Knowledge(job, event) => self.on_knowledge(job, event, now),
            Input::Tool(job, event) => self.on_tool(job, event, now),
            Input::Tick => self.on_tick(now),
        }
    }

    /// The effects queued since the last call, in order.
    pub(crate) fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// Whether the shell should read `job`'s stream now: an answer's speech is read one chunk
    /// at a time, in order, and not while the answer is held.
    pub(crate) fn readable(&self, job: JobId) -> bool {
        match &self.answer {
            Some(answer) if answer.speaks(job) => answer.speaking_front(job),
            _ => true,
        }
    }

    /// Stops everything in flight (the session ends).
    pub(crate) fn stop(&mut self) {
        if let Some(listening) = self.listening.take() {
            listening.cancel.cancel();
        }
        self.drop_speculation();
        if let Some(interim) = self.interim.take() {
            interim.cancel.cancel();
        }
        if let Some(read_ahead) = self.read_ahead.take() {
            read_ahead.cancel();
        }
        if let Some(answer) = self.answer.take() {
            answer.cancel.cancel();
        }
    }

    pub(super) fn job(&mut self) -> JobId {
        self.next_job += 1;
        JobId(self.next_job)
    }

    pub(super) fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub(super) fn emit(&mut self, event: AgentEvent) {
        self.effects.push(Effect::Emit(event));
    }

    /// A tag for this session's `turn` at `priority`.
    pub(super) fn tag(&self, turn: TurnId, priority: Priority) -> JobTag {
        JobTag::new(self.session, turn, priority)
    }

    pub(super) fn egress(&self) -> MutexGuard<'_, Egress> {
        self.egress.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn conversation(&self) -> MutexGuard<'_, Conversation> {
        self.conversation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a finished (or cut) answer: its first frame's time, metrics, the event.
    pub(super) fn complete(&mut self, answer: Answer) {
        let mut record = answer.record;
        record.llm_first_token = answer
            .llm_first_at
            .map(|at| at.saturating_duration_since(answer.speech_end));
        record.first_frame_out = self
            .first_frame
            .of(answer.turn)
            .map(|at| at.saturating_duration_since(answer.speech_end));
        crate::metrics::record_turn(&record);
        self.emit(AgentEvent::TurnComplete(Box::new(record)));
    }

    /// Reports a turn that could not be answered: the person hears why, and it is counted.
    pub(super) fn fail_turn(&mut self, turn: TurnId, stage: &'static str, reason: String) {
        crate::metrics::record_turn_failed(stage);
        self.emit(AgentEvent::TurnFailed {
            turn,
            stage: stage.to_string(),
            reason,
        });
    }

    fn on_heard(&mut self, Heard { event, arrived }: Heard, now: Instant) {
        match event {
            IngestEvent::VoiceOnset { .. } => self.on_voice_onset(now),
            IngestEvent::SpeechStarted { .. } => {
                if let Some(barge_in) = &mut self.barge_in {
                    barge_in.speech_ended = false;
                }
                self.drop_speculation();
                self.on_speech_started(now);
            }
            IngestEvent::PauseStarted { at, audio } => self.speculate(at, audio),
            IngestEvent::PauseEnded { .. } => self.drop_speculation(),
            IngestEvent::SpeechSoFar { audio, .. } => self.on_speech_so_far(audio),
            IngestEvent::SpeechEnded { .. } => {
                if let Some(barge_in) = &mut self.barge_in {
                    barge_in.speech_ended = true;
                }
            }
            IngestEvent::TurnEnded(end) => self.on_turn_ended(end, arrived, now),
        }
    }

    /// Whether speech heard now may be the person talking over the agent (not its own voice
    /// leaking back in the first moments of an answer).
    fn may_barge_in(&self, now: Instant) -> bool {
        let Some(answer) = self.answer.as_ref() else {
            return false;
        };
        let echo_likely = answer
            .speaking_since
            .is_some_and(|since| now.saturating_duration_since(since) < self.config.echo_guard);
        self.barge_in.is_none() && !echo_likely
    }

    /// The first speech-like sound over the agent: playback holds at once, before the VAD has
    /// confirmed it is speech (which takes ~100 ms more); it resumes if no speech follows.
    fn on_voice_onset(&mut self, now: Instant) {
        if !self.config.onset_hold || self.onset_hold.is_some() || !self.may_barge_in(now) {
            return;
        }
        let mut egress = self.egress();
        if egress.is_speaking() && !egress.is_paused() {
            egress.pause();
            drop(egress);
            self.onset_hold = Some(now);
        }
    }

    /// Possible barge-in: playback holds at once; the transcript decides whether it was words.
    fn on_speech_started(&mut self, now: Instant) {
        if !self.may_barge_in(now) {
            self.release_onset_hold();
            return; // no answer, already judging one, or the agent's own voice most likely
        }
        self.onset_hold = None;
        self.barge_in = Some(BargeIn {
            since: now,
            speech_ended: false,
        });
        self.egress().pause();
        self.emit(AgentEvent::State(AgentState::Interrupted));
    }

    fn on_stt(&mut self, job: JobId, event: Option<SttEvent>, now: Instant) {
        if self.interim.as_ref().is_some_and(|i| i.job == job) {
            return self.on_interim(event);
        }
        if self
            .speculation
            .as_ref()
            .is_some_and(|s| s.job == Some(job))
        {
            return self.on_speculation(event, now);
        }
        if !self.listening.as_ref().is_some_and(|l| l.job == job) {
            return; // a job given up on
        }
        if let Some(SttEvent::Partial(text)) = event {
            let turn = self.turn.next();
            self.emit(AgentEvent::UserPartial { turn, text });
            return;
        }
        let listening = self.listening.take().expect("checked above");
        match event {
            Some(SttEvent::Final(text)) if self.acknowledges(&text) => self.backchannel(text),
            Some(SttEvent::Final(text)) if spoken_words(&text) > 0 => {
                self.on_user_text(
                    text,
                    Some(listening.reason),
                    listening.speech_end,
                    listening.end_of_turn,
                    now,
                );
            }
            Some(SttEvent::Error(error)) => {
                if self.barge_in.is_some() {
                    // Speech over the agent that could not be heard: the answer goes on.
                    self.emit(AgentEvent::Error(error.to_string()));
                    self.no_words();
                } else {
                    let turn = self.turn.next();
                    self.fail_turn(turn, "stt", error.to_string());
                    self.no_words();
                }
            }
            Some(SttEvent::Final(_) | SttEvent::Partial(_)) | None => self.no_words(),
        }
    }

    /// Whether `text` only acknowledges the answer being spoken over.
    pub(super) fn acknowledges(&self, text: &str) -> bool {
        self.barge_in.is_some() && is_backchannel(text, &self.config.backchannels)
    }

    /// The person acknowledged over the answer: it goes on, and nothing enters the history.
    pub(super) fn backchannel(&mut self, text: String) {
        if let Some(turn) = self.answer.as_ref().map(|a| a.turn) {
            self.emit(AgentEvent::Backchannel { turn, text });
        }
        self.no_words();
    }

    /// The utterance had no words: a cough or noise. A held answer resumes.
    pub(super) fn no_words(&mut self) {
        if self.barge_in.take().is_some() {
            self.egress().resume();
            if let Some(turn) = self.answer.as_ref().map(|a| a.turn) {
                self.emit(AgentEvent::Resumed { turn });
            }
            self.emit(AgentEvent::State(AgentState::Speaking));
        } else if self.answer.is_none() {
            self.emit(AgentEvent::State(AgentState::Listening));
        }
    }

    /// The person said something: any answer in progress is cut, and a new one starts.
    pub(super) fn on_user_text(
        &mut self,
        text: String,
        reason: Option<TurnEndReason>,
        speech_end: Instant,
        end_of_turn: Duration,
        now: Instant,
    ) {
        self.interrupt_answer();
        self.turn = self.turn.next();
        let turn = self.turn;
        self.emit(AgentEvent::UserTranscript {
            turn,
            text: text.clone(),
        });
        self.emit(AgentEvent::State(AgentState::Thinking));
        self.conversation().push_user(turn, text.clone());
        let mut record = self.new_record(turn, &text, reason, end_of_turn);
        record.stt_final = reason.map(|_| now.saturating_duration_since(speech_end));
        self.start_answer(
            turn,
            record,
            speech_end,
            &text,
            None,
            Priority::Critical,
            now,
        );
    }

    /// A turn's record before anything was answered.
    pub(super) fn new_record(
        &self,
        turn: TurnId,
        transcript: &str,
        reason: Option<TurnEndReason>,
        end_of_turn: Duration,
    ) -> TurnRecord {
        TurnRecord {
            turn,
            reason,
            end_of_turn,
            decision_lag: if reason.is_some() {
                self.decision_lag
            } else {
                Duration::ZERO
            },
            providers: (
                if reason.is_some() {
                    self.providers.stt.clone()
                } else {
                    "client".to_string()
                },
                self.providers.llm.clone(),
                self.providers.tts.clone(),
            ),
            transcript: transcript.to_string(),
            signals: reason.map(|_| self.turn_signals),
            ..TurnRecord::default()
        }
    }

    /// The one barge-in path: cuts the answer in progress to what the listener heard (the
    /// egress stage's interrupt contract), records it, and reports it.
    pub(super) fn interrupt_answer(&mut self) {
        self.barge_in = None;
        self.onset_hold = None;
        let Some(mut answer) = self.answer.take() else {
            return;
        };
        answer.cancel.cancel();
        if answer.held {
            // Nothing of it was said or recorded.
            crate::metrics::record_preemptive_answer_dropped();
            return;
        }
        if answer.is_done() && !self.egress().is_speaking() {
            // It had played to its end already: not an interruption.
            self.egress().resume();
            self.complete(answer);
            return;
        }
        let heard = {
            let mut egress = self.egress();
            egress.on_interrupt(answer.turn);
            egress.take_heard(answer.turn).text
        };
        // Without speech output the client got the text itself: all of it counts as heard.
        let heard = if self.config.speech_output {
            heard
        } else {
            answer.record.answer.trim().to_string()
        };
        {
            let mut conversation = self.conversation();
            if !conversation.truncate_assistant(answer.turn, &heard) && !heard.is_empty() {
                conversation.push_assistant(answer.turn, heard.clone());
            }
        }
        answer.record.interrupted = true;
        answer.record.answer = heard.clone();
        self.emit(AgentEvent::Interrupted {
            turn: answer.turn,
            heard,
        });
        self.complete(answer);
    }

    /// Playback held at a voice onset goes on: no speech followed.
    pub(super) fn release_onset_hold(&mut self) {
        if self.onset_hold.take().is_some() && self.barge_in.is_none() {
            self.egress().resume();
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self
            .onset_hold
            .is_some_and(|since| now.saturating_duration_since(since) >= ONSET_HOLD_LIMIT)
        {
            self.release_onset_hold();
        }
        // Speech over the agent that goes on past the window is an interruption, words or not;
        // once it has ended, its transcript decides (bounded, should the recogniser stall).
        if let Some(barge_in) = self.barge_in {
            let limit = if barge_in.speech_ended {
                BARGE_IN_TRANSCRIPT_LIMIT
            } else {
                self.config.false_interruption_window
            };
            if now.saturating_duration_since(barge_in.since) >= limit {
                self.interrupt_answer();
                self.emit(AgentEvent::State(AgentState::Listening));
                return;
            }
        }
        self.answer_tick(now);
        let finished = self.answer.as_ref().is_some_and(|a| !a.held && a.is_done())
            && self.barge_in.is_none()
            && !self.egress().is_speaking();
        if finished && let Some(answer) = self.answer.take() {
            self.complete(answer);
            self.emit(AgentEvent::State(AgentState::Listening));
        }
    }
}
