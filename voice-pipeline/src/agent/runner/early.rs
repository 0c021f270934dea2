//! Work started before the end of the turn is decided:
//! - interim transcripts while the person speaks, each one the next transcription's draft;
//! - a speculative transcript of the speech so far at a pause;
//! - a preemptive answer to that transcript, held back (no audio, nothing in the conversation)
//!   until the turn really ends at that pause, and dropped if the person goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Listening, Runner, STT_TAIL, spoken_words};
use crate::agent::{AgentEvent, AgentState};
use crate::llm::ChatMessage;
use crate::provider::{CancellationToken, EventStream, LlmRequest, SttEvent};
use crate::turn::{TurnEnd, TurnEndReason};

/// A transcription of the speech so far, started at a pause.
pub(super) struct Speculation {
    /// Media time the pause began.
    at: Duration,
    cancel: CancellationToken,
    /// The audio, while an interim transcription is still running: its transcript is the better
    /// draft, and the recogniser would finish it first anyway.
    waiting: Option<Vec<f32>>,
    pub(super) stream: Option<EventStream<SttEvent>>,
    /// What it heard, and when.
    heard: Option<(String, Instant)>,
}

/// An interim transcription in flight (one at a time).
pub(super) struct Interim {
    pub(super) cancel: CancellationToken,
    pub(super) stream: EventStream<SttEvent>,
}

impl Runner {
    /// The person has spoken a while longer: transcribe what they said so far, unless the
    /// previous interim transcription is still running.
    pub(super) fn on_speech_so_far(&mut self, audio: Vec<f32>) {
        if !self.config.interim_transcripts || self.interim.is_some() {
            return;
        }
        let cancel = CancellationToken::new();
        let stream = self.providers.stt.transcribe_with_draft(
            audio.into(),
            self.draft.clone(),
            cancel.clone(),
        );
        self.interim = Some(Interim { cancel, stream });
    }

    pub(super) fn on_interim(&mut self, event: Option<SttEvent>) {
        match event {
            Some(SttEvent::Partial(_)) => return,
            Some(SttEvent::Final(text)) if spoken_words(&text) > 0 => {
                self.draft = Some(Arc::from(text.as_str()));
                self.read_ahead(&text);
                self.emit(AgentEvent::UserPartial {
                    turn: self.turn.next(),
                    text,
                });
            }
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
            ..LlmRequest::default()
        };
        self.providers.llm.read_ahead(request, cancel.clone());
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
            waiting: Some(audio),
            stream: None,
            heard: None,
        });
        if self.interim.is_none() {
            self.submit_waiting_speculation();
        }
    }

    fn submit_waiting_speculation(&mut self) {
        let Some(speculation) = self.speculation.as_mut() else {
            return;
        };
        let Some(audio) = speculation.waiting.take() else {
            return;
        };
        speculation.stream = Some(self.providers.stt.transcribe_with_draft(
            audio.into(),
            self.draft.clone(),
            speculation.cancel.clone(),
        ));
    }

    /// The speculative transcript is in: report it, and start a held answer when the agent is
    /// otherwise idle.
    pub(super) fn on_speculation(&mut self, event: Option<SttEvent>) {
        let text = match event {
            Some(SttEvent::Partial(_)) => return,
            Some(SttEvent::Final(text)) => text,
            // The turn's end transcribes again.
            Some(SttEvent::Error(_)) | None => return self.drop_speculation(),
        };
        let Some(speculation) = self.speculation.as_mut() else {
            return;
        };
        speculation.stream = None;
        speculation.heard = Some((text.clone(), Instant::now()));
        if spoken_words(&text) == 0 {
            return;
        }
        self.draft = Some(Arc::from(text.as_str()));
        self.emit(AgentEvent::UserPartial {
            turn: self.turn.next(),
            text: text.clone(),
        });
        if self.config.preemptive_answer && self.answer.is_none() {
            let turn = self.turn.next();
            let record = self.new_record(turn, &text, None, Duration::ZERO);
            let mut answer = self.start_answer(turn, record, Instant::now(), Some(&text));
            answer.held = true;
            self.answer = Some(answer);
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
    /// speech is placed on the wall clock before any lag of the listening thread.
    pub(super) fn on_turn_ended(&mut self, end: TurnEnd, arrived: Instant) {
        if let Some(previous) = self.listening.take() {
            previous.cancel.cancel();
        }
        let end_of_turn = end.decided_at.saturating_sub(end.speech_end);
        let speech_end = arrived.checked_sub(end_of_turn).unwrap_or(arrived);
        self.decision_lag = arrived.elapsed();
        // The speculation heard the same speech if the pause it started at is the turn's end.
        let last_speech_end = self.last_speech_end;
        let speculated = self
            .speculation
            .take_if(|s| end.reason != TurnEndReason::MaxDuration && Some(s.at) == last_speech_end);
        if speculated.is_none() {
            self.drop_speculation();
        }
        if let Some(interim) = self.interim.take() {
            interim.cancel.cancel();
        }
        let draft = self.draft.take();
        let (cancel, stream) = match speculated {
            Some(mut speculation) => {
                if let Some((text, heard_at)) = speculation.heard.take() {
                    return self.on_speculated_turn(
                        text,
                        heard_at,
                        end.reason,
                        speech_end,
                        end_of_turn,
                    );
                }
                let stream = match (speculation.stream.take(), speculation.waiting.take()) {
                    (Some(stream), _) => stream,
                    (None, audio) => self.providers.stt.transcribe_with_draft(
                        audio.unwrap_or_default().into(),
                        draft,
                        speculation.cancel.clone(),
                    ),
                };
                (speculation.cancel, stream)
            }
            None => {
                let cancel = CancellationToken::new();
                let mut audio = end.audio;
                let trailing = end
                    .decided_at
                    .saturating_sub(end.speech_end)
                    .saturating_sub(STT_TAIL);
                let cut = (trailing.as_secs_f64() * f64::from(crate::ingest::MODEL_RATE)) as usize;
                audio.truncate(audio.len().saturating_sub(cut));
                let stream =
                    self.providers
                        .stt
                        .transcribe_with_draft(audio.into(), draft, cancel.clone());
                (cancel, stream)
            }
        };
        self.listening = Some(Listening {
            cancel,
            stream,
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
    ) {
        if !self.answer.as_ref().is_some_and(|a| a.held) {
            if spoken_words(&text) > 0 {
                self.on_user_text(text, Some(reason), speech_end, end_of_turn);
            } else {
                self.no_words();
            }
            return;
        }
        let stt = self.providers.stt.name().to_string();
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.held = false;
        answer.speech_end = speech_end;
        let record = &mut answer.record;
        record.reason = Some(reason);
        record.end_of_turn = end_of_turn;
        record.decision_lag = self.decision_lag;
        record.stt_final = Some(heard_at.saturating_duration_since(speech_end));
        record.providers.0 = stt;
        let (turn, finished) = (answer.turn, answer.llm.is_none());
        let reply = record.answer.trim().to_string();
        self.turn = turn;
        self.emit(AgentEvent::UserTranscript {
            turn,
            text: text.clone(),
        });
        self.emit(AgentEvent::State(AgentState::Thinking));
        let mut conversation = self.conversation();
        conversation.push_user(turn, text);
        if finished && !reply.is_empty() {
            conversation.push_assistant(turn, reply);
        }
    }
}
