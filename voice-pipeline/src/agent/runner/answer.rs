//! An answer in progress: grounding (passages from the knowledge base), the language model's
//! tokens, the tool calls it asks for, the sentence chunker, speech, and playback.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::core::{Core, Effect, JobId};
use crate::agent::{AgentEvent, AgentState, TurnRecord};
use crate::chunker::SentenceChunker;
use crate::frame::{TurnId, f32_to_i16, i16_to_f32};
use crate::job::{Priority, SharedPriority};
use crate::knowledge::{KnowledgeEvent, Passage, ToolEvent};
use crate::llm::ChatMessage;
use crate::provider::{CancellationToken, LlmEvent, LlmRequest, ToolCall, TtsEvent, TtsRequest};
use crate::resample::StreamResampler;

/// Largest TTS chunk resampled in one call (samples).
const TTS_BLOCK: usize = 4_096;
/// Longest wait for the knowledge base before answering without it.
pub(super) const KNOWLEDGE_BUDGET: Duration = Duration::from_millis(400);
/// Passages put into the prompt.
pub(super) const KNOWLEDGE_PASSAGES: usize = 3;
/// Rounds of tool calls one answer may make before it must answer.
const MAX_TOOL_ROUNDS: usize = 4;
/// Samples quieter than this (about -50 dBFS) before the first sound are a lead-in.
const LEAD_IN_LEVEL: i16 = 100;
/// Longest lead-in removed, and audio kept before the first sound (so its onset is whole).
const LEAD_IN_MAX: Duration = Duration::from_millis(300);
const LEAD_IN_KEEP: Duration = Duration::from_millis(5);

/// Where an answer is.
enum Phase {
    /// Waiting for passages (at most until `until`) before asking the model.
    Grounding { job: JobId, until: Instant },
    /// The model is answering.
    Generating { job: JobId },
    /// The model asked for functions: their results, in order, before it goes on.
    /// (Each call's job once started, and its result once in.)
    Tools {
        pending: Vec<(Option<JobId>, ToolCall, Option<String>)>,
    },
    /// All text is in.
    Written,
}

/// The agent's answer in progress or playing.
pub(in crate::agent) struct Answer {
    pub turn: TurnId,
    pub cancel: CancellationToken,
    /// The priority of its jobs: speculative while held, critical once the turn is confirmed.
    pub priority: SharedPriority,
    pub speech_end: Instant,
    pub record: TurnRecord,
    phase: Phase,
    /// What the model reads (and re-reads after tool calls).
    messages: Vec<ChatMessage>,
    /// Tool calls the model asked for in the current round.
    calls: Vec<ToolCall>,
    tool_rounds: usize,
    chunker: SentenceChunker,
    /// Speech jobs in the order they play, with the text each speaks and the rate its voice
    /// speaks at (a handoff may change the voice mid-answer).
    tts: VecDeque<(JobId, String, u32)>,
    resampler: Option<StreamResampler>,
    /// One block of TTS audio as f32, reused for every block.
    block: Vec<f32>,
    resampled: Vec<f32>,
    samples: Vec<i16>,
    pub speaking_since: Option<Instant>,
    /// Started on a speculative transcript before the turn ended: its audio waits, its tools
    /// wait, and the conversation does not have its turn yet.
    pub held: bool,
    /// When the first LLM token arrived (the record's figure is derived at completion).
    pub llm_first_at: Option<Instant>,
}

impl Answer {
    /// Whether all of its text is in and all of its speech was queued for playback.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Written) && self.tts.is_empty()
    }

    /// Whether the model has written all of its text.
    pub fn text_written(&self) -> bool {
        matches!(self.phase, Phase::Written)
    }

    /// Whether `job` is one of its speech jobs.
    pub fn speaks(&self, job: JobId) -> bool {
        self.tts.iter().any(|(j, _, _)| *j == job)
    }

    /// Whether `job` is the speech job to play next (and the answer may play).
    pub fn speaking_front(&self, job: JobId) -> bool {
        !self.held && self.tts.front().is_some_and(|(j, _, _)| *j == job)
    }

    fn generating(&self, job: JobId) -> bool {
        matches!(self.phase, Phase::Generating { job: j } if j == job)
    }
}

/// The last user message of `messages`, with the passages put before it as context.
fn ground(messages: &mut Vec<ChatMessage>, passages: &[Passage]) {
    if passages.is_empty() {
        return;
    }
    let mut context = String::from(
        "Answer from this information when it is relevant (say so if it does not cover the question):",
    );
    for passage in passages {
        context.push_str("\n- ");
        context.push_str(passage.text.trim());
        if !passage.source.is_empty() {
            context.push_str(" [");
            context.push_str(&passage.source);
            context.push(']');
        }
    }
    let at = messages
        .iter()
        .rposition(|m| m.role == crate::llm::Role::User)
        .unwrap_or(messages.len());
    messages.insert(at, ChatMessage::system(context));
}

impl Core {
    /// Starts answering `question`: the conversation (plus `pending_user`, the question, when
    /// it is not in the conversation yet: a held answer), grounded in the knowledge base when
    /// there is one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_answer(
        &mut self,
        turn: TurnId,
        record: TurnRecord,
        speech_end: Instant,
        question: &str,
        pending_user: Option<&str>,
        priority: Priority,
        now: Instant,
    ) {
        let mut messages = self.conversation().to_messages();
        messages.extend(pending_user.map(ChatMessage::user));
        let cancel = CancellationToken::new();
        let priority = SharedPriority::new(priority);
        let held = priority.get() != Priority::Critical;
        let mut answer = Answer {
            turn,
            cancel: cancel.clone(),
            priority,
            speech_end,
            record,
            phase: Phase::Written,
            messages,
            calls: Vec::new(),
            tool_rounds: 0,
            chunker: SentenceChunker::new(),
            tts: VecDeque::new(),
            resampler: None,
            block: Vec::with_capacity(TTS_BLOCK),
            resampled: Vec::with_capacity(TTS_BLOCK * 4),
            samples: Vec::with_capacity(TTS_BLOCK * 4),
            speaking_since: None,
            held,
            llm_first_at: None,
        };
        if self.providers.knowledge {
            let job = self.job();
            answer.phase = Phase::Grounding {
                job,
                until: now + KNOWLEDGE_BUDGET,
            };
            self.push(Effect::Retrieve {
                job,
                query: question.to_string(),
                limit: KNOWLEDGE_PASSAGES,
                cancel,
            });
            self.answer = Some(answer);
        } else {
            self.answer = Some(answer);
            self.generate();
        }
    }

    /// Asks the model for the answer's (next) text.
    fn generate(&mut self) {
        let job = self.job();
        let (tools, max_tokens) = (self.providers.tools.clone(), self.config.max_tokens);
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.phase = Phase::Generating { job };
        let request = LlmRequest {
            messages: answer.messages.clone(),
            tools: if answer.tool_rounds < MAX_TOOL_ROUNDS {
                tools
            } else {
                Vec::new()
            },
            max_tokens,
            tag: crate::job::JobTag::with_shared(self.session, answer.turn, &answer.priority),
            ..LlmRequest::default()
        };
        let cancel = answer.cancel.clone();
        self.push(Effect::Generate {
            job,
            request,
            cancel,
        });
    }

    /// Timers of the answer: grounding that takes too long is skipped.
    pub(super) fn answer_tick(&mut self, now: Instant) {
        let late = self
            .answer
            .as_ref()
            .is_some_and(|a| matches!(a.phase, Phase::Grounding { until, .. } if now >= until));
        if late {
            self.generate();
        }
    }

    pub(super) fn on_knowledge(
        &mut self,
        job: JobId,
        event: Option<KnowledgeEvent>,
        _now: Instant,
    ) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        if !matches!(answer.phase, Phase::Grounding { job: j, .. } if j == job) {
            return; // late: the answer went on without it
        }
        match event {
            Some(KnowledgeEvent::Passages(passages)) => ground(&mut answer.messages, &passages),
            Some(KnowledgeEvent::Error(error)) => {
                tracing::debug!(%error, "knowledge lookup failed; answering without it");
            }
            None => {}
        }
        self.generate();
    }

    pub(super) fn on_llm(&mut self, job: JobId, event: Option<LlmEvent>, now: Instant) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        if !answer.generating(job) {
            return;
        }
        match event {
            Some(LlmEvent::Token(token)) => {
                answer.llm_first_at.get_or_insert(now);
                answer.record.answer.push_str(&token);
                for chunk in answer.chunker.push(&token) {
                    self.speak(chunk);
                }
            }
            Some(LlmEvent::Served { provider }) => answer.record.providers.1 = provider,
            Some(LlmEvent::ToolCall(call)) => answer.calls.push(call),
            Some(LlmEvent::Error(error)) => {
                let (turn, wrote) = (answer.turn, !answer.record.answer.trim().is_empty());
                self.finish_answer_text();
                if wrote {
                    self.emit(AgentEvent::Error(error.to_string()));
                } else {
                    self.fail_turn(turn, "llm", error.to_string());
                }
            }
            Some(LlmEvent::Done(_)) | None => {
                if answer.calls.is_empty() || self.providers.tools.is_empty() {
                    self.finish_answer_text();
                } else {
                    self.start_tools();
                }
            }
        }
    }

    /// The model asked for functions: run them (a held answer waits until it is confirmed).
    fn start_tools(&mut self) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        let calls = std::mem::take(&mut answer.calls);
        answer.tool_rounds += 1;
        // The text so far is spoken; what the model says after the results follows it.
        let spoken = answer.record.answer.clone();
        answer.messages.push(ChatMessage {
            tool_calls: calls.clone(),
            ..ChatMessage::assistant(spoken)
        });
        let pending = calls.into_iter().map(|call| (None, call, None)).collect();
        answer.phase = Phase::Tools { pending };
        if !answer.held {
            self.run_tools();
        }
    }

    /// Starts the calls of the current tool round.
    pub(super) fn run_tools(&mut self) {
        let Some(answer) = self.answer.as_ref() else {
            return;
        };
        let Phase::Tools { pending } = &answer.phase else {
            return;
        };
        let calls: Vec<ToolCall> = pending.iter().map(|(_, call, _)| call.clone()).collect();
        let cancel = answer.cancel.clone();
        let mut jobs = Vec::with_capacity(calls.len());
        for call in calls {
            let job = self.job();
            jobs.push(job);
            self.push(Effect::CallTool {
                job,
                call,
                cancel: cancel.clone(),
            });
        }
        if let Some(Answer {
            phase: Phase::Tools { pending },
            ..
        }) = self.answer.as_mut()
        {
            for ((slot, _, _), job) in pending.iter_mut().zip(jobs) {
                *slot = Some(job);
            }
        }
    }

    pub(super) fn on_tool(&mut self, job: JobId, event: Option<ToolEvent>, _now: Instant) {
        let Some(Answer {
            phase: Phase::Tools { pending },
            messages,
            ..
        }) = self.answer.as_mut()
        else {
            return;
        };
        let Some(slot) = pending.iter_mut().find(|(j, _, _)| *j == Some(job)) else {
            return;
        };
        if slot.2.is_some() {
            return;
        }
        slot.2 = Some(match event {
            Some(ToolEvent::Output(output)) => output,
            Some(ToolEvent::Error(error)) => format!("error: {error}"),
            None => "error: the tool gave no result".into(),
        });
        if pending.iter().any(|(_, _, result)| result.is_none()) {
            return;
        }
        for (_, call, result) in pending.drain(..) {
            messages.push(ChatMessage {
                tool_call_id: Some(call.id),
                ..ChatMessage::new(crate::llm::Role::Tool, result.unwrap_or_default())
            });
        }
        self.generate();
    }

    /// The model has said everything: the last words go to speech, and the answer enters the
    /// conversation (a held one when its turn is confirmed).
    pub(super) fn finish_answer_text(&mut self) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.phase = Phase::Written;
        let rest = answer.chunker.finish();
        let (turn, text, held) = (
            answer.turn,
            answer.record.answer.trim().to_string(),
            answer.held,
        );
        if let Some(rest) = rest {
            self.speak(rest);
        }
        if !text.is_empty() && !held {
            self.conversation().push_assistant(turn, text);
        }
    }

    /// A held answer's turn was confirmed: its jobs become critical, its tools may run.
    pub(super) fn confirm_held_answer(&mut self) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.held = false;
        answer.priority.set(Priority::Critical);
        if matches!(answer.phase, Phase::Tools { ref pending } if pending.iter().all(|(j, _, _)| j.is_none()))
        {
            self.run_tools();
        }
    }

    /// Sends a chunk of the answer to TTS, or, without speech output, straight to the owner.
    fn speak(&mut self, chunk: String) {
        if !self.config.speech_output {
            if let Some(turn) = self.answer.as_ref().map(|a| a.turn) {
                self.emit(AgentEvent::AgentSpeech { turn, text: chunk });
            }
            return;
        }
        let job = self.job();
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer
            .tts
            .push_back((job, chunk.clone(), self.providers.tts_rate));
        let tag = crate::job::JobTag::with_shared(self.session, answer.turn, &answer.priority);
        let cancel = answer.cancel.clone();
        self.push(Effect::Synthesize {
            job,
            request: TtsRequest::new(chunk).tagged(tag),
            cancel,
        });
    }

    pub(super) fn on_tts(&mut self, job: JobId, event: Option<TtsEvent>, now: Instant) {
        let output_rate = self.config.output_rate;
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        let Some(&(front, _, tts_rate)) = answer.tts.front() else {
            return;
        };
        if front != job {
            return;
        }
        match event {
            Some(TtsEvent::Audio(chunk)) => {
                if answer.resampler.as_ref().map(StreamResampler::from_hz) != Some(tts_rate) {
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
                    answer
                        .tts
                        .front()
                        .map(|(_, t, _)| t.clone())
                        .unwrap_or_default()
                } else {
                    chunk.text.clone()
                };
                let (turn, first) = (answer.turn, answer.record.tts_first_audio.is_none());
                if first {
                    answer.record.tts_first_audio =
                        Some(now.saturating_duration_since(answer.speech_end));
                    answer.speaking_since = Some(now);
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
                self.emit(AgentEvent::Error(error.to_string()));
            }
            Some(TtsEvent::Done) | None => {
                answer.tts.pop_front();
            }
        }
    }
}

/// `samples` without the near-silence a TTS voice starts with (at most [`LEAD_IN_MAX`]).
pub(super) fn skip_lead_in(samples: &[i16], rate: u32) -> &[i16] {
    let at = |d: Duration| (d.as_secs_f64() * f64::from(rate)) as usize;
    let limit = at(LEAD_IN_MAX).min(samples.len());
    let first_sound = samples[..limit]
        .iter()
        .position(|s| s.unsigned_abs() > LEAD_IN_LEVEL.unsigned_abs())
        .unwrap_or(limit);
    &samples[first_sound.saturating_sub(at(LEAD_IN_KEEP))..]
}
