//! The agent task's event loop: one `select!` over listening events, typed input and the current
//! turn's provider streams. Locks on the egress queue and conversation are held only for short
//! synchronous sections, never across an await.

mod early;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{
    AgentConfig, AgentEvent, AgentState, FirstFrame, Heard, Providers, TurnRecord, next_or_pending,
};
use crate::chunker::SentenceChunker;
use crate::conversation::Conversation;
use crate::egress::Egress;
use crate::frame::{TurnId, f32_to_i16, i16_to_f32};
use crate::ingest::IngestEvent;
use crate::llm::ChatMessage;
use crate::provider::{CancellationToken, EventStream, LlmEvent, LlmRequest, SttEvent, TtsEvent};
use crate::resample::StreamResampler;
use crate::text::normalize_words;
use crate::turn::TurnEndReason;
use early::{Interim, Speculation};

/// Sounds transcribed as words that do not interrupt the agent on their own.
const FILLERS: &[&str] = &[
    "hmm", "hm", "mm", "mhm", "uh", "um", "ah", "oh", "er", "erm",
];

/// Words in a transcript that carry meaning (fillers and noise transcriptions excluded).
fn spoken_words(text: &str) -> usize {
    normalize_words(text)
        .iter()
        .filter(|w| !FILLERS.contains(&w.as_str()))
        .count()
}

/// How often the loop wakes to check timers and playback when nothing else happens.
const TICK: Duration = Duration::from_millis(20);
/// A barge-in whose speech has ended waits this long at most for its transcript before it counts.
const BARGE_IN_TRANSCRIPT_LIMIT: Duration = Duration::from_secs(10);
/// Largest TTS chunk resampled in one call (samples).
const TTS_BLOCK: usize = 4_096;
/// Silence kept after the end of speech in the audio sent to STT. The turn's audio runs up to
/// the end-of-turn decision; Moonshine returns nothing for a short question followed by 1.5 s of
/// silence ("What is two plus two?" from espeak-ng), so the rest is cut.
const STT_TAIL: Duration = Duration::from_millis(200);

/// A transcription in progress for the latest user utterance.
struct Listening {
    cancel: CancellationToken,
    stream: EventStream<SttEvent>,
    reason: TurnEndReason,
    /// Instant the user stopped speaking (arrival of the deciding audio minus the end-of-turn
    /// wait).
    speech_end: Instant,
    end_of_turn: Duration,
}

/// The agent's answer in progress or playing.
struct Answer {
    turn: TurnId,
    cancel: CancellationToken,
    speech_end: Instant,
    record: TurnRecord,
    llm: Option<EventStream<LlmEvent>>,
    chunker: SentenceChunker,
    tts: VecDeque<EventStream<TtsEvent>>,
    resampler: Option<StreamResampler>,
    /// One block of TTS audio as f32, reused for every block.
    block: Vec<f32>,
    resampled: Vec<f32>,
    samples: Vec<i16>,
    /// Text of the chunk the front TTS stream speaks.
    tts_texts: VecDeque<String>,
    speaking_since: Option<Instant>,
    /// Started on a speculative transcript before the turn ended: its audio waits, and the
    /// conversation does not have its turn yet.
    held: bool,
    /// When the first LLM token arrived (the record's figure is derived when the turn completes,
    /// against the final `speech_end`).
    llm_first_at: Option<Instant>,
}

enum Wake {
    Ingest(Option<Heard>),
    Text(Option<String>),
    Stt(Option<SttEvent>),
    Interim(Option<SttEvent>),
    Speculation(Option<SttEvent>),
    Llm(Option<LlmEvent>),
    Tts(Option<TtsEvent>),
    Tick,
    Stop,
}

pub(super) struct Runner {
    config: AgentConfig,
    providers: Providers,
    egress: Arc<Mutex<Egress>>,
    first_frame: FirstFrame,
    conversation: Arc<Mutex<Conversation>>,
    events: mpsc::Sender<AgentEvent>,
    turn: TurnId,
    listening: Option<Listening>,
    speculation: Option<Speculation>,
    interim: Option<Interim>,
    /// The LLM read-ahead of the utterance in progress (see `early::read_ahead`).
    read_ahead: Option<CancellationToken>,
    /// [`TurnRecord::decision_lag`] of the latest end of turn.
    decision_lag: Duration,
    /// The latest transcript of the utterance in progress (the next transcription's draft).
    draft: Option<Arc<str>>,
    /// Media time of the latest end of speech the VAD reported.
    last_speech_end: Option<Duration>,
    answer: Option<Answer>,
    barge_in: Option<Instant>,
    /// The speech that started the pending barge-in has ended (its transcript decides).
    barge_in_speech_ended: bool,
}

impl Runner {
    pub(super) fn new(
        config: AgentConfig,
        providers: Providers,
        egress: Arc<Mutex<Egress>>,
        first_frame: FirstFrame,
        conversation: Arc<Mutex<Conversation>>,
        events: mpsc::Sender<AgentEvent>,
    ) -> Self {
        Self {
            config,
            providers,
            egress,
            first_frame,
            conversation,
            events,
            turn: TurnId(0),
            listening: None,
            speculation: None,
            interim: None,
            read_ahead: None,
            decision_lag: Duration::ZERO,
            draft: None,
            last_speech_end: None,
            answer: None,
            barge_in: None,
            barge_in_speech_ended: false,
        }
    }

    pub(super) async fn run(
        mut self,
        mut ingest: mpsc::Receiver<Heard>,
        mut text: mpsc::Receiver<String>,
        cancel: CancellationToken,
    ) {
        self.emit(AgentEvent::State(AgentState::Listening));
        let (mut ingest_open, mut text_open) = (true, true);
        loop {
            let wake = {
                let stt = self.listening.as_mut().map(|l| &mut l.stream);
                let interim = self.interim.as_mut().map(|i| &mut i.stream);
                let speculation = self.speculation.as_mut().and_then(|s| s.stream.as_mut());
                let (llm, tts) = match self.answer.as_mut() {
                    // A held answer's audio waits in its stream until the turn ends.
                    Some(a) => (a.llm.as_mut(), a.tts.front_mut().filter(|_| !a.held)),
                    None => (None, None),
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Wake::Stop,
                    event = ingest.recv(), if ingest_open => Wake::Ingest(event),
                    message = text.recv(), if text_open => Wake::Text(message),
                    event = next_or_pending(stt) => Wake::Stt(event),
                    event = next_or_pending(speculation) => Wake::Speculation(event),
                    event = next_or_pending(interim) => Wake::Interim(event),
                    event = next_or_pending(llm) => Wake::Llm(event),
                    event = next_or_pending(tts) => Wake::Tts(event),
                    _ = tokio::time::sleep(TICK) => Wake::Tick,
                }
            };
            match wake {
                Wake::Stop => break,
                Wake::Ingest(None) => ingest_open = false,
                Wake::Ingest(Some(event)) => self.on_ingest(event),
                Wake::Text(None) => text_open = false,
                Wake::Text(Some(message)) => {
                    self.on_user_text(message, None, Instant::now(), Duration::ZERO)
                }
                Wake::Stt(event) => self.on_stt(event),
                Wake::Speculation(event) => self.on_speculation(event),
                Wake::Interim(event) => self.on_interim(event),
                Wake::Llm(event) => self.on_llm(event),
                Wake::Tts(event) => self.on_tts(event),
                Wake::Tick => self.on_tick(),
            }
        }
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

    fn emit(&self, event: AgentEvent) {
        let _ = self.events.try_send(event);
    }

    /// Reports a finished (or cut) answer: its first frame's time, metrics, the event.
    fn complete(&self, answer: Answer) {
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

    fn egress(&self) -> MutexGuard<'_, Egress> {
        self.egress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conversation(&self) -> MutexGuard<'_, Conversation> {
        self.conversation.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_ingest(&mut self, Heard { event, arrived }: Heard) {
        match event {
            IngestEvent::SpeechStarted { .. } => {
                self.barge_in_speech_ended = false;
                self.drop_speculation();
                self.on_speech_started();
            }
            IngestEvent::PauseStarted { at, audio } => self.speculate(at, audio),
            IngestEvent::PauseEnded { .. } => self.drop_speculation(),
            IngestEvent::SpeechSoFar { audio, .. } => self.on_speech_so_far(audio),
            IngestEvent::SpeechEnded { at } => {
                self.last_speech_end = Some(at);
                self.barge_in_speech_ended = self.barge_in.is_some();
            }
            IngestEvent::TurnEnded(end) => self.on_turn_ended(end, arrived),
        }
    }

    /// Possible barge-in: playback holds at once; the transcript decides whether it was words.
    fn on_speech_started(&mut self) {
        let Some(answer) = self.answer.as_ref() else {
            return;
        };
        if self.barge_in.is_some() {
            return;
        }
        if answer
            .speaking_since
            .is_some_and(|since| since.elapsed() < self.config.echo_guard)
        {
            return; // the agent's own voice, most likely
        }
        self.barge_in = Some(Instant::now());
        self.egress().pause();
        self.emit(AgentEvent::State(AgentState::Interrupted));
    }

    fn on_stt(&mut self, event: Option<SttEvent>) {
        let Some(listening) = self.listening.take() else {
            return;
        };
        match event {
            Some(SttEvent::Partial(text)) => {
                self.listening = Some(listening);
                self.emit(AgentEvent::UserPartial {
                    turn: self.turn.next(),
                    text,
                });
            }
            Some(SttEvent::Final(text)) if spoken_words(&text) > 0 => {
                self.on_user_text(
                    text,
                    Some(listening.reason),
                    listening.speech_end,
                    listening.end_of_turn,
                );
            }
            Some(SttEvent::Error(error)) => {
                self.emit(AgentEvent::Error(error.to_string()));
                self.no_words();
            }
            Some(SttEvent::Final(_)) | None => self.no_words(),
        }
    }

    /// The utterance had no words: a cough or noise. A held answer resumes.
    fn no_words(&mut self) {
        if self.barge_in.take().is_some() {
            self.egress().resume();
            if let Some(answer) = &self.answer {
                self.emit(AgentEvent::Resumed { turn: answer.turn });
            }
            self.emit(AgentEvent::State(AgentState::Speaking));
        } else if self.answer.is_none() {
            self.emit(AgentEvent::State(AgentState::Listening));
        }
    }

    /// The person said something: any answer in progress is cut, and a new one starts.
    fn on_user_text(
        &mut self,
        text: String,
        reason: Option<TurnEndReason>,
        speech_end: Instant,
        end_of_turn: Duration,
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
        record.stt_final = reason.map(|_| speech_end.elapsed());
        self.answer = Some(self.start_answer(turn, record, speech_end, None));
    }

    /// A turn's record before anything was answered.
    fn new_record(
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
                reason
                    .map_or("client", |_| self.providers.stt.name())
                    .to_string(),
                self.providers.llm.name().to_string(),
                self.providers.tts.name().to_string(),
            ),
            transcript: transcript.to_string(),
            ..TurnRecord::default()
        }
    }

    /// Starts the LLM on the conversation, followed by `pending_user` when the user's message is
    /// not in it yet (a held answer).
    fn start_answer(
        &self,
        turn: TurnId,
        record: TurnRecord,
        speech_end: Instant,
        pending_user: Option<&str>,
    ) -> Answer {
        let mut messages = self.conversation().to_messages();
        messages.extend(pending_user.map(ChatMessage::user));
        let cancel = CancellationToken::new();
        let request = LlmRequest {
            messages,
            max_tokens: self.config.max_tokens,
            ..LlmRequest::default()
        };
        let llm = self.providers.llm.stream(request, cancel.clone());
        Answer {
            turn,
            cancel,
            speech_end,
            record,
            llm: Some(llm),
            chunker: SentenceChunker::new(),
            tts: VecDeque::new(),
            resampler: None,
            block: Vec::with_capacity(TTS_BLOCK),
            resampled: Vec::with_capacity(TTS_BLOCK * 4),
            samples: Vec::with_capacity(TTS_BLOCK * 4),
            tts_texts: VecDeque::new(),
            speaking_since: None,
            held: false,
            llm_first_at: None,
        }
    }

    /// Cuts the answer in progress to what the listener heard and records it.
    fn interrupt_answer(&mut self) {
        self.barge_in = None;
        let Some(mut answer) = self.answer.take() else {
            return;
        };
        answer.cancel.cancel();
        if answer.held {
            // Nothing of it was said or recorded.
            crate::metrics::record_preemptive_answer_dropped();
            return;
        }
        let played = self.egress().interrupt(self.config.listener_lag).text;
        // Without speech output the client got the text itself: all of it counts as heard.
        let heard = if self.config.speech_output {
            played
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

    fn on_llm(&mut self, event: Option<LlmEvent>) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        match event {
            Some(LlmEvent::Token(token)) => {
                answer.llm_first_at.get_or_insert_with(Instant::now);
                answer.record.answer.push_str(&token);
                for chunk in answer.chunker.push(&token) {
                    self.speak(chunk);
                }
            }
            Some(LlmEvent::Served { provider }) => answer.record.providers.1 = provider,
            Some(LlmEvent::ToolCall(_)) => {}
            Some(LlmEvent::Error(error)) => {
                answer.llm = None;
                let message = error.to_string();
                self.finish_answer_text();
                self.emit(AgentEvent::Error(message));
            }
            Some(LlmEvent::Done(_)) | None => self.finish_answer_text(),
        }
    }

    fn finish_answer_text(&mut self) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.llm = None;
        let rest = answer.chunker.finish();
        let (turn, text, held) = (
            answer.turn,
            answer.record.answer.trim().to_string(),
            answer.held,
        );
        if let Some(rest) = rest {
            self.speak(rest);
        }
        // A held answer joins the conversation after its user turn, when the turn ends.
        if !text.is_empty() && !held {
            self.conversation().push_assistant(turn, text);
        }
    }

    /// Sends a chunk of the answer to TTS, or, without speech output, straight to the owner.
    fn speak(&mut self, chunk: String) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        if !self.config.speech_output {
            let turn = answer.turn;
            self.emit(AgentEvent::AgentSpeech { turn, text: chunk });
            return;
        }
        answer.tts_texts.push_back(chunk.clone());
        answer
            .tts
            .push_back(self.providers.tts.synthesize(chunk, answer.cancel.clone()));
    }

    fn on_tts(&mut self, event: Option<TtsEvent>) {
        let output_rate = self.config.output_rate;
        let tts_rate = self.providers.tts.sample_rate();
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        match event {
            Some(TtsEvent::Audio(chunk)) => {
                if answer.resampler.is_none() {
                    match StreamResampler::new(tts_rate, output_rate, TTS_BLOCK) {
                        Ok(r) => answer.resampler = Some(r),
                        Err(e) => {
                            self.emit(AgentEvent::Error(format!("speech output: {e}")));
                            return;
                        }
                    }
                }
                let resampler = answer.resampler.as_mut().expect("set above");
                answer.resampled.clear();
                let mut failed = None;
                // The answer's first sound should be its first frame, not a quiet lead-in.
                let samples = if answer.record.tts_first_audio.is_none() {
                    skip_lead_in(&chunk.samples, tts_rate)
                } else {
                    &chunk.samples[..]
                };
                for block in samples.chunks(TTS_BLOCK) {
                    answer.block.clear();
                    answer.block.extend(block.iter().map(|&s| i16_to_f32(s)));
                    if let Err(e) = resampler.process(&answer.block, &mut answer.resampled) {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    self.emit(AgentEvent::Error(format!("speech output: {e}")));
                    return;
                }
                answer.samples.clear();
                answer
                    .samples
                    .extend(answer.resampled.iter().map(|&s| f32_to_i16(s)));
                let text = if chunk.text.is_empty() {
                    answer.tts_texts.front().cloned().unwrap_or_default()
                } else {
                    chunk.text.clone()
                };
                let (turn, first) = (answer.turn, answer.record.tts_first_audio.is_none());
                if first {
                    answer.record.tts_first_audio = Some(answer.speech_end.elapsed());
                    answer.speaking_since = Some(Instant::now());
                }
                let pushed = self.egress.lock().unwrap_or_else(|p| p.into_inner()).push(
                    turn,
                    &answer.samples,
                    &text,
                );
                if let Err(e) = pushed {
                    self.emit(AgentEvent::Error(e.to_string()));
                }
                self.emit(AgentEvent::AgentSpeech { turn, text });
                if first && self.barge_in.is_none() {
                    self.emit(AgentEvent::State(AgentState::Speaking));
                }
            }
            Some(TtsEvent::Error(error)) => {
                answer.tts.pop_front();
                answer.tts_texts.pop_front();
                self.emit(AgentEvent::Error(error.to_string()));
            }
            Some(TtsEvent::Done) | None => {
                answer.tts.pop_front();
                answer.tts_texts.pop_front();
            }
        }
    }

    fn on_tick(&mut self) {
        // Speech over the agent that goes on past the window is an interruption, words or not; once
        // it has ended, its transcript decides (bounded, should the recogniser stall).
        let limit = if self.barge_in_speech_ended {
            BARGE_IN_TRANSCRIPT_LIMIT
        } else {
            self.config.false_interruption_window
        };
        if let Some(since) = self.barge_in
            && since.elapsed() >= limit
        {
            self.interrupt_answer();
            self.emit(AgentEvent::State(AgentState::Listening));
            return;
        }
        let finished = self
            .answer
            .as_ref()
            .is_some_and(|a| !a.held && a.llm.is_none() && a.tts.is_empty())
            && self.barge_in.is_none()
            && !self.egress().is_speaking();
        if finished && let Some(answer) = self.answer.take() {
            self.complete(answer);
            self.emit(AgentEvent::State(AgentState::Listening));
        }
    }
}

/// Samples quieter than this (about -50 dBFS) before the first sound are a lead-in.
const LEAD_IN_LEVEL: i16 = 100;
/// Longest lead-in removed, and audio kept before the first sound (so its onset is whole).
const LEAD_IN_MAX: Duration = Duration::from_millis(300);
const LEAD_IN_KEEP: Duration = Duration::from_millis(5);

/// `samples` without the near-silence a TTS voice starts with (at most [`LEAD_IN_MAX`]).
fn skip_lead_in(samples: &[i16], rate: u32) -> &[i16] {
    let at = |d: Duration| (d.as_secs_f64() * f64::from(rate)) as usize;
    let limit = at(LEAD_IN_MAX).min(samples.len());
    let first_sound = samples[..limit]
        .iter()
        .position(|s| s.unsigned_abs() > LEAD_IN_LEVEL.unsigned_abs())
        .unwrap_or(limit);
    &samples[first_sound.saturating_sub(at(LEAD_IN_KEEP))..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quiet_lead_in_is_skipped_but_not_the_onset_or_long_silence() {
        let mut audio = vec![3i16; 1_000]; // 62.5 ms of near-silence at 16 kHz
        audio.extend([2_000, -2_000, 1_500]);
        let trimmed = super::skip_lead_in(&audio, 16_000);
        assert_eq!(trimmed.len(), 3 + 80, "5 ms kept before the first sound");
        let silent = vec![0i16; 16_000];
        assert_eq!(
            super::skip_lead_in(&silent, 16_000).len(),
            16_000 - 4_800 + 80
        );
        assert!(super::skip_lead_in(&[], 16_000).is_empty());
    }

    #[test]
    fn fillers_and_noise_are_not_words() {
        assert_eq!(super::spoken_words("Hmm."), 0);
        assert_eq!(super::spoken_words("uh, um"), 0);
        assert_eq!(super::spoken_words(""), 0);
        assert_eq!(super::spoken_words("Um, stop please"), 2);
    }
}
