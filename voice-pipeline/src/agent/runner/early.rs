//! Work started before the end of the turn is decided:
//! - interim transcripts while the person speaks, each one the next transcription's draft
//!   (opportunistic: the first work shed under load);
//! - a speculative transcript of the speech so far at a pause;
//! - a preemptive answer to that transcript, held back (no audio, nothing in the conversation,
//!   no tool calls) until the turn really ends at that pause, and dropped if the person goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{Core, Effect, JobId, Listening, spoken_words};
use crate::agent::{AgentEvent, AgentState};
use crate::job::{Priority, SharedPriority};
use crate::llm::ChatMessage;
use crate::provider::{CancellationToken, LlmRequest, SttEvent, SttRequest};
use crate::turn::{TranscriptForm, TurnEnd, TurnEndReason};

/// Silence kept after the end of speech in the audio sent to STT. The turn's audio runs up to
/// the end-of-turn decision; Moonshine returns nothing for a short question followed by 1.5 s of
/// silence ("What is two plus two?" from espeak-ng), so the rest is cut.
const STT_TAIL: Duration = Duration::from_millis(200);

/// A speculation and a turn's end belong to the same pause if their times differ by less than
/// a VAD chunk.
const SAME_PAUSE_TOLERANCE: Duration = Duration::from_millis(20);

/// A transcription of the speech so far, started at a pause.
pub(super) struct Speculation {
    /// Media time the pause began.
    at: Duration,
    cancel: CancellationToken,
    /// Speculative until the turn ends at this pause; then critical.
    priority: SharedPriority,
    /// The audio, while an interim transcription is still running: its transcript is the better
    /// draft, and the recogniser would finish it first anyway.
    waiting: Option<Vec<f32>>,
    /// The transcription job, once started.
    pub(super) job: Option<JobId>,
    /// What it heard, and when.
    heard: Option<(String, Instant)>,
}

/// An interim transcription in flight (one at a time).
pub(super) struct Interim {
    pub(super) job: JobId,
    pub(super) cancel: CancellationToken,
}

impl Core {
    /// The person has spoken a while longer: transcribe what they said so far, unless the
    /// previous interim transcription is still running.
    pub(super) fn on_speech_so_far(&mut self, audio: Vec<f32>) {
        if !self.config.interim_transcripts || self.interim.is_some() {
            return;
        }
        let (job, cancel) = (self.job(), CancellationToken::new());
        let request = SttRequest::new(audio)
            .with_draft(self.draft.clone())
            .tagged(self.tag(self.turn.next(), Priority::Opportunistic));
        self.push(Effect::Transcribe {
            job,
            request,
            cancel: cancel.clone(),
        });
        self.interim = Some(Interim { job, cancel });
    }

    pub(super) fn on_interim(&mut self, event: Option<SttEvent>) {
        match event {
            Some(SttEvent::Partial(_)) => return,
            Some(SttEvent::Final(text)) if spoken_words(&text) > 0 => {
                self.draft = Some(Arc::from(text.as_str()));
                self.read_ahead(&text);
                let turn = self.turn.next();
                self.emit(AgentEvent::UserPartial { turn, text });
            }
            // Shed under load, or no words: only a head start is lost.
            Some(SttEvent::Final(_) | SttEvent::Error(_)) | None => {}
        }
        self.interim = None;
        self.submit_waiting_speculation();
    }

    /// Lets the LLM read the conversation plus what the person has said so far, while they go
    /// on speaking: the answer's prompt is then mostly read already (one read-ahead at a time;
    /// only when an answer would start, i.e. the agent is idle).
    fn read_ahead(&mut self, heard_so_far: &str) {
        if !self.config.preemptive_answer || self.answer.is_some() {
            return;
        }
        if let Some(previous) = self.read_ahead.take() {
            previous.cancel();
        }
        let mut messages = self.conversation().to_messages();
        messages.push(ChatMessage::user(heard_so_far));
        let cancel = CancellationToken::new();
        let request = LlmRequest {
            messages,
            max_tokens: self.config.max_tokens,
            tag: self.tag(self.turn.next(), Priority::Opportunistic),
            ..LlmRequest::default()
        };
        self.push(Effect::ReadAhead {
            request,
            cancel: cancel.clone(),
        });
        self.read_ahead = Some(cancel);
    }

    /// Starts transcribing the speech so far at a pause (replacing an older speculation).
    pub(super) fn speculate(&mut self, at: Duration, audio: Vec<f32>) {
        self.drop_speculation();
        if !self.config.speculative_stt {
            return;
        }
        self.speculation = Some(Speculation {
            at,
            cancel: CancellationToken::new(),
            priority: SharedPriority::new(Priority::Speculative),
            waiting: Some(audio),
            job: None,
            heard: None,
        });
        if self.interim.is_none() {
            self.submit_waiting_speculation();
        }
    }

    fn submit_waiting_speculation(&mut self) {
        let job = self.job();
        let turn = self.turn.next();
        let draft = self.draft.clone();
        let Some(speculation) = self.speculation.as_mut() else {
            return;
        };
        let Some(audio) = speculation.waiting.take() else {
            return;
        };
        speculation.job = Some(job);
        let request =
            SttRequest::new(audio)
                .with_draft(draft)
                .tagged(crate::job::JobTag::with_shared(
                    self.session,
                    turn,
                    &speculation.priority,
                ));
        let cancel = speculation.cancel.clone();
        self.push(Effect::Transcribe {
            job,
            request,
            cancel,
        });
    }

    /// The speculative transcript is in: report it, and start a held answer when the agent is
    /// otherwise idle.
    pub(super) fn on_speculation(&mut self, event: Option<SttEvent>, now: Instant) {
        let text = match event {
            Some(SttEvent::Partial(_)) => return,
            Some(SttEvent::Final(text)) => text,
            // The turn's end transcribes again.
            Some(SttEvent::Error(_)) | None => return self.drop_speculation(),
        };
        let Some(speculation) = self.speculation.as_mut() else {
            return;
        };
        speculation.job = None;
        speculation.heard = Some((text.clone(), now));
        let at = speculation.at;
        self.push(Effect::HintTurn {
            at,
            form: TranscriptForm::of(&text),
        });
        if spoken_words(&text) == 0 {
            return;
        }
        self.draft = Some(Arc::from(text.as_str()));
        let turn = self.turn.next();
        self.emit(AgentEvent::UserPartial {
            turn,
            text: text.clone(),
        });
        if self.config.preemptive_answer && self.answer.is_none() {
            let record = self.new_record(turn, &text, None, Duration::ZERO);
            self.start_answer(
                turn,
                record,
                now,
                &text,
                Some(&text),
                Priority::Speculative,
                now,
            );
        }
    }

    /// Cancels the speculation and the answer held for it, if any.
    pub(super) fn drop_speculation(&mut self) {
        if let Some(speculation) = self.speculation.take() {
            speculation.cancel.cancel();
        }
        if let Some(answer) = self.answer.take_if(|a| a.held) {
            answer.cancel.cancel();
            crate::metrics::record_preemptive_answer_dropped();
        }
    }

    /// The turn is over; `arrived` is when the audio that decided it arrived, so the end of
    /// speech is placed on the wall clock before any lag of the listening threads.
    pub(super) fn on_turn_ended(&mut self, end: TurnEnd, arrived: Instant, now: Instant) {
        if let Some(previous) = self.listening.take() {
            previous.cancel.cancel();
        }
        let end_of_turn = end.decided_at.saturating_sub(end.speech_end);
        let speech_end = arrived.checked_sub(end_of_turn).unwrap_or(arrived);
        self.decision_lag = now.saturating_duration_since(arrived);
        self.turn_signals = end.signals;
        // The speculation heard the same speech if the pause it started at is the turn's end
        // (the detector may decide before the VAD confirms that end).
        let speculated = self.speculation.take_if(|s| {
            end.reason != TurnEndReason::MaxDuration
                && s.at.abs_diff(end.speech_end) <= SAME_PAUSE_TOLERANCE
        });
        if speculated.is_none() {
            self.drop_speculation();
        }
        if let Some(interim) = self.interim.take() {
            interim.cancel.cancel();
        }
        let draft = self.draft.take();
        let turn = self.turn.next();
        let (job, cancel) = match speculated {
            Some(mut speculation) => {
                if let Some((text, heard_at)) = speculation.heard.take() {
                    return self.on_speculated_turn(
                        text,
                        heard_at,
                        end.reason,
                        speech_end,
                        end_of_turn,
                        now,
                    );
                }
                // Someone waits for it now.
                speculation.priority.set(Priority::Critical);
                let job = match (speculation.job, speculation.waiting.take()) {
                    (Some(job), _) => job,
                    (None, audio) => {
                        let job = self.job();
                        self.push(Effect::Transcribe {
                            job,
                            request: SttRequest::new(audio.unwrap_or_default())
                                .with_draft(draft)
                                .tagged(self.tag(turn, Priority::Critical)),
                            cancel: speculation.cancel.clone(),
                        });
                        job
                    }
                };
                (job, speculation.cancel)
            }
            None => {
                let (job, cancel) = (self.job(), CancellationToken::new());
                let mut audio = end.audio;
                let trailing = end
                    .decided_at
                    .saturating_sub(end.speech_end)
                    .saturating_sub(STT_TAIL);
                let cut = (trailing.as_secs_f64() * f64::from(crate::ingest::MODEL_RATE)) as usize;
                audio.truncate(audio.len().saturating_sub(cut));
                self.push(Effect::Transcribe {
                    job,
                    request: SttRequest::new(audio)
                        .with_draft(draft)
                        .tagged(self.tag(turn, Priority::Critical)),
                    cancel: cancel.clone(),
                });
                (job, cancel)
            }
        };
        self.listening = Some(Listening {
            job,
            cancel,
            reason: end.reason,
            speech_end,
            end_of_turn,
        });
        if self.answer.is_none() {
            self.emit(AgentEvent::State(AgentState::Thinking));
        }
    }

    /// The turn ended where the speculation started, and its transcript is already in.
    fn on_speculated_turn(
        &mut self,
        text: String,
        heard_at: Instant,
        reason: TurnEndReason,
        speech_end: Instant,
        end_of_turn: Duration,
        now: Instant,
    ) {
        if !self.answer.as_ref().is_some_and(|a| a.held) {
            if self.acknowledges(&text) {
                self.backchannel(text);
            } else if spoken_words(&text) > 0 {
                self.on_user_text(text, Some(reason), speech_end, end_of_turn, now);
            } else {
                self.no_words();
            }
            return;
        }
        let (stt, decision_lag) = (self.providers.stt.clone(), self.decision_lag);
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.speech_end = speech_end;
        let record = &mut answer.record;
        record.reason = Some(reason);
        record.signals = Some(self.turn_signals);
        record.end_of_turn = end_of_turn;
        record.decision_lag = decision_lag;
        record.stt_final = Some(heard_at.saturating_duration_since(speech_end));
        record.providers.0 = stt;
        let turn = answer.turn;
        let reply = answer
            .text_written()
            .then(|| answer.record.answer.trim().to_string());
        self.turn = turn;
        self.confirm_held_answer();
        self.emit(AgentEvent::UserTranscript {
            turn,
            text: text.clone(),
        });
        self.emit(AgentEvent::State(AgentState::Thinking));
        let mut conversation = self.conversation();
        conversation.push_user(turn, text);
        if let Some(reply) = reply.filter(|r| !r.is_empty()) {
            conversation.push_assistant(turn, reply);
        }
    }
}
