//! Scenario tests of the agent's decisions in virtual time: no models, no threads, no clock.
//! Each test plays the providers' part by answering the effects the core asks for, and plays
//! the listener's part by pulling frames from the egress queue as a media track would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::core::{Core, Effect, Input, JobId, ProviderInfo};
use crate::agent::{AgentConfig, AgentEvent, AgentState, FirstFrame};
use crate::conversation::Conversation;
use crate::egress::Egress;
use crate::frame::TurnId;
use crate::ingest::IngestEvent;
use crate::job::Priority;
use crate::knowledge::{KnowledgeEvent, Passage, ToolEvent};
use crate::listening::Heard;
use crate::llm::Role;
use crate::provider::{
    LlmEvent, LlmRequest, LlmUsage, ProviderError, SpeechChunk, SttEvent, SttRequest, ToolCall,
    ToolSpec, TtsEvent, TtsRequest,
};
use crate::turn::{TurnEnd, TurnEndReason};

/// The rate the fake voice speaks at, and the track's: no resampling surprises.
const RATE: u32 = 16_000;
/// Samples one 20 ms frame takes.
const FRAME: usize = 320;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// What the core asked for, by kind.
#[derive(Debug, Default)]
struct Asked {
    stt: Vec<(JobId, SttRequest)>,
    llm: Vec<(JobId, LlmRequest)>,
    read_ahead: Vec<LlmRequest>,
    tts: Vec<(JobId, TtsRequest)>,
    knowledge: Vec<(JobId, String)>,
    tools: Vec<(JobId, ToolCall)>,
    hints: Vec<(Duration, crate::turn::TranscriptForm)>,
}

struct Scenario {
    core: Core,
    egress: Arc<Mutex<Egress>>,
    conversation: Arc<Mutex<Conversation>>,
    first_frame: FirstFrame,
    start: Instant,
    now: Instant,
    events: Vec<AgentEvent>,
    asked: Asked,
}

impl Scenario {
    fn new(config: AgentConfig) -> Self {
        Self::with(config, ProviderInfo::default())
    }

    fn with(config: AgentConfig, mut info: ProviderInfo) -> Self {
        let config = AgentConfig {
            output_rate: RATE,
            ..config
        };
        info.tts_rate = RATE;
        info.stt = "stt".into();
        info.llm = "llm".into();
        info.tts = "tts".into();
        let egress = Arc::new(Mutex::new(Egress::new(RATE)));
        let conversation = Arc::new(Mutex::new(Conversation::new(config.system_prompt.clone())));
        let first_frame = FirstFrame::default();
        let core = Core::new(
            config,
            info,
            egress.clone(),
            first_frame.clone(),
            conversation.clone(),
        );
        let start = Instant::now();
        let mut scenario = Self {
            core,
            egress,
            conversation,
            first_frame,
            start,
            now: start,
            events: Vec::new(),
            asked: Asked::default(),
        };
        scenario.core.start();
        scenario.collect();
        scenario
    }

    /// The listener ends a turn of `samples` of audio whose speech ended at `speech_end`.
    fn turn_ends(
        &mut self,
        samples: usize,
        speech_end: Duration,
        decided_at: Duration,
        reason: TurnEndReason,
    ) {
        self.heard(IngestEvent::TurnEnded(TurnEnd {
            audio: vec![0.1; samples],
            speech_end,
            decided_at,
            reason,
            signals: Default::default(),
        }));
    }

    /// Moves virtual time to `at` after the start.
    fn at(&mut self, at: Duration) {
        self.now = self.start + at;
    }

    fn input(&mut self, input: Input) {
        self.core.handle(self.now, input);
        self.collect();
    }

    fn collect(&mut self) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Emit(event) => self.events.push(event),
                Effect::HintTurn { at, form } => self.asked.hints.push((at, form)),
                Effect::Transcribe { job, request, .. } => self.asked.stt.push((job, request)),
                Effect::Generate { job, request, .. } => self.asked.llm.push((job, request)),
                Effect::ReadAhead { request, .. } => self.asked.read_ahead.push(request),
                Effect::Synthesize { job, request, .. } => self.asked.tts.push((job, request)),
                Effect::Retrieve { job, query, .. } => self.asked.knowledge.push((job, query)),
                Effect::CallTool { job, call, .. } => self.asked.tools.push((job, call)),
            }
        }
    }

    fn heard(&mut self, event: IngestEvent) {
        let arrived = self.now;
        self.input(Input::Heard(Heard { event, arrived }));
    }

    /// The person speaks from `from` to `to` (media time = virtual time here), and the
    /// detector ends the turn `decided_after` later (at which point virtual time is).
    fn says(&mut self, from: Duration, to: Duration, decided_after: Duration) {
        self.at(from + ms(100));
        self.heard(IngestEvent::SpeechStarted { at: from });
        self.at(to + ms(320));
        self.heard(IngestEvent::SpeechEnded { at: to });
        self.at(to + decided_after);
        self.turn_ends(
            16 * (to - from).as_millis() as usize,
            to,
            to + decided_after,
            TurnEndReason::Complete { probability: 0.9 },
        );
    }

    fn last_stt(&self) -> JobId {
        self.asked
            .stt
            .last()
            .expect("a transcription was asked for")
            .0
    }

    fn last_llm(&self) -> JobId {
        self.asked.llm.last().expect("an answer was asked for").0
    }

    /// The model answers `words`, then ends.
    fn answers(&mut self, job: JobId, words: &[&str]) {
        for word in words {
            self.input(Input::Llm(job, Some(LlmEvent::Token((*word).into()))));
        }
        self.input(Input::Llm(job, Some(LlmEvent::Done(LlmUsage::default()))));
        self.input(Input::Llm(job, None));
    }

    /// Every speech job asked for and not yet answered gets `frames` frames of audio, in
    /// order, as far as the core reads them (the shell does not read a held answer's speech).
    fn speaks_all(&mut self, frames: usize) {
        while let Some((job, request)) = self.asked.tts.first() {
            if !self.core.readable(*job) {
                return;
            }
            let (job, text) = (*job, request.text.clone());
            self.asked.tts.remove(0);
            self.input(Input::Tts(
                job,
                Some(TtsEvent::Audio(SpeechChunk {
                    samples: vec![5_000; FRAME * frames],
                    text,
                })),
            ));
            self.input(Input::Tts(job, Some(TtsEvent::Done)));
            self.input(Input::Tts(job, None));
        }
    }

    /// The media track pulls frames for `duration`, ticking the core as time goes on.
    fn plays(&mut self, duration: Duration) -> usize {
        let mut frames = 0;
        for _ in 0..duration.as_millis() / 20 {
            self.now += ms(20);
            let mut egress = self.egress.lock().unwrap();
            if egress.next_frame(Duration::ZERO).is_some() {
                frames += 1;
            }
            if let Some(turn) = egress.take_turn_started() {
                self.first_frame.set(turn, self.now);
            }
            drop(egress);
            self.input(Input::Tick);
        }
        frames
    }

    fn records(&self) -> Vec<&crate::agent::TurnRecord> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::TurnComplete(record) => Some(record.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn interrupted(&self) -> Vec<(TurnId, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Interrupted { turn, heard } => Some((*turn, heard.clone())),
                _ => None,
            })
            .collect()
    }

    fn history(&self) -> Vec<(Role, String)> {
        self.conversation
            .lock()
            .unwrap()
            .history()
            .map(|m| (m.role, m.content.clone()))
            .collect()
    }

    /// One whole exchange: the person asks, the agent answers `words` (one chunk each
    /// sentence), and the answer plays to its end.
    fn exchange(&mut self, at: Duration, question: &str, words: &[&str]) {
        self.says(at, at + ms(1_000), ms(300));
        let stt = self.last_stt();
        self.input(Input::Stt(stt, Some(SttEvent::Final(question.into()))));
        let llm = self.last_llm();
        self.answers(llm, words);
        self.speaks_all(10);
        self.plays(ms(2_000));
    }
}

fn no_early_work() -> AgentConfig {
    AgentConfig {
        speculative_stt: false,
        interim_transcripts: false,
        preemptive_answer: false,
        ..AgentConfig::default()
    }
}

#[test]
fn a_question_is_transcribed_answered_spoken_and_timed_from_the_end_of_speech() {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let (stt, request) = &s.asked.stt[0];
    assert_eq!(request.tag.priority.get(), Priority::Critical);
    let stt = *stt;
    s.at(ms(1_450));
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("What is Rust?".into())),
    ));
    let llm = s.last_llm();
    s.at(ms(1_600));
    s.answers(llm, &["It is ", "a language."]);
    s.at(ms(1_700));
    s.speaks_all(5);
    s.plays(ms(400));
    let records = s.records();
    assert_eq!(records.len(), 1);
    let record = records[0];
    assert_eq!(record.transcript, "What is Rust?");
    assert_eq!(record.end_of_turn, ms(300));
    assert_eq!(record.stt_final, Some(ms(450)));
    assert_eq!(record.llm_first_token, Some(ms(600)));
    assert_eq!(record.tts_first_audio, Some(ms(700)));
    assert_eq!(record.first_frame_out, Some(ms(720)));
    assert!(!record.interrupted);
    assert_eq!(
        s.history(),
        [
            (Role::User, "What is Rust?".into()),
            (Role::Assistant, "It is a language.".into())
        ]
    );
    assert!(matches!(
        s.events.last(),
        Some(AgentEvent::State(AgentState::Listening))
    ));
}

#[test]
fn barge_in_over_three_turns_records_only_the_third_turns_heard_prefix() {
    let mut s = Scenario::new(no_early_work());
    s.exchange(ms(0), "First question?", &["One."]);
    s.exchange(ms(5_000), "Second question?", &["Two."]);
    // Turn 3: a two-sentence answer; the person talks over it half-way into the second.
    s.says(ms(10_000), ms(11_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("Third question?".into())),
    ));
    let llm = s.last_llm();
    s.answers(llm, &["Three starts. ", "And then it goes on."]);
    s.speaks_all(10);
    s.plays(ms(300)); // all 10 frames of the first chunk, 5 of the second
    s.heard(IngestEvent::SpeechStarted { at: ms(11_600) });
    assert!(
        s.egress.lock().unwrap().is_paused(),
        "playback holds at the onset"
    );
    assert_eq!(s.plays(ms(100)), 0, "no agent frame after the onset");
    s.heard(IngestEvent::SpeechEnded { at: ms(12_000) });
    s.turn_ends(
        8_000,
        ms(12_000),
        ms(12_300),
        TurnEndReason::Complete { probability: 0.9 },
    );
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Wait, stop.".into()))));
    assert_eq!(
        s.interrupted(),
        [(TurnId(3), "Three starts. And then".to_string())],
        "only turn 3's heard words, nothing of turns 1 and 2"
    );
    let history = s.history();
    assert_eq!(
        history[1],
        (Role::Assistant, "One.".into()),
        "turn 1 intact"
    );
    assert_eq!(
        history[3],
        (Role::Assistant, "Two.".into()),
        "turn 2 intact"
    );
    assert_eq!(
        history[5],
        (Role::Assistant, "Three starts. And then".into())
    );
    assert_eq!(history[6], (Role::User, "Wait, stop.".into()));
    let records = s.records();
    assert_eq!(records.len(), 3);
    assert!(records[2].interrupted && !records[0].interrupted && !records[1].interrupted);
    assert_eq!(records[2].answer, "Three starts. And then");
}

#[test]
fn what_is_still_in_the_listeners_buffer_was_not_heard() {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Tell me.".into()))));
    let llm = s.last_llm();
    // Two chunks: the first three words, then seven more; ten frames each.
    s.answers(llm, &["one two three four five six seven eight nine ten"]);
    s.speaks_all(10);
    s.plays(ms(320)); // 16 frames left the queue...
    s.egress.lock().unwrap().set_listener_lag(ms(60)); // ...but the last 3 are in their buffer
    s.heard(IngestEvent::SpeechStarted { at: ms(1_500) });
    s.heard(IngestEvent::SpeechEnded { at: ms(1_900) });
    s.turn_ends(
        8_000,
        ms(1_900),
        ms(2_200),
        TurnEndReason::Complete { probability: 0.9 },
    );
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Stop.".into()))));
    assert_eq!(
        s.interrupted(),
        [(TurnId(1), "one two three four five".to_string())]
    );
}

#[test]
fn a_cough_over_the_agent_pauses_it_and_it_resumes_where_it_stopped() {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Hi.".into()))));
    let llm = s.last_llm();
    s.answers(llm, &["Hello there, how are you?"]);
    s.speaks_all(20);
    s.plays(ms(400)); // past the echo guard
    s.heard(IngestEvent::SpeechStarted { at: ms(1_800) });
    s.heard(IngestEvent::SpeechEnded { at: ms(2_000) });
    s.turn_ends(3_200, ms(2_000), ms(2_300), TurnEndReason::SilenceTimeout);
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Hmm.".into()))));
    assert!(
        s.events
            .iter()
            .any(|e| matches!(e, AgentEvent::Resumed { turn } if *turn == TurnId(1)))
    );
    assert!(s.interrupted().is_empty());
    assert_eq!(s.plays(ms(1_000)), 20, "the rest of the answer plays");
    assert!(!s.records()[0].interrupted);
}

#[test]
fn speech_over_the_agent_that_goes_on_past_the_window_interrupts_words_or_not() {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Go on.".into()))));
    let llm = s.last_llm();
    s.answers(llm, &["A long answer that keeps going."]);
    s.speaks_all(100);
    s.plays(ms(400));
    s.heard(IngestEvent::SpeechStarted { at: ms(1_700) });
    s.plays(ms(1_600)); // longer than the 1.5 s false-interruption window
    assert_eq!(s.interrupted().len(), 1);
    assert!(
        !s.egress.lock().unwrap().is_speaking(),
        "the answer's audio is gone"
    );
}

#[test]
fn a_final_transcript_that_fails_is_reported_never_silently_lost() {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Error(ProviderError::Overloaded {
            provider: "moonshine".into(),
            message: "the model's queue is full".into(),
        })),
    ));
    assert!(
        s.events.iter().any(|e| matches!(
            e,
            AgentEvent::TurnFailed { turn, stage, reason }
                if *turn == TurnId(1) && stage == "stt" && reason.contains("queue is full")
        )),
        "{:?}",
        s.events
    );
    // The session goes on: the next question is answered.
    s.exchange(ms(3_000), "Again?", &["Yes."]);
    assert_eq!(s.records().len(), 1);
}

#[test]
fn an_answer_held_at_a_pause_is_confirmed_when_the_turn_ends_there_and_becomes_critical() {
    let mut s = Scenario::new(AgentConfig::default());
    s.at(ms(100));
    s.heard(IngestEvent::SpeechStarted { at: ms(0) });
    s.at(ms(1_064));
    s.heard(IngestEvent::PauseStarted {
        at: ms(1_000),
        audio: vec![0.1; 16_000],
    });
    let (stt, request) = &s.asked.stt[0];
    assert_eq!(request.tag.priority.get(), Priority::Speculative);
    let (stt, speculation_priority) = (*stt, request.tag.priority.clone());
    s.at(ms(1_200));
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("What time is it?".into())),
    ));
    let (llm, request) = s.asked.llm.last().unwrap();
    let (llm, llm_priority) = (*llm, request.tag.priority.clone());
    assert_eq!(
        llm_priority.get(),
        Priority::Speculative,
        "a held answer is speculative"
    );
    s.answers(llm, &["It is noon."]);
    s.speaks_all(5);
    assert_eq!(s.asked.tts.len(), 1, "its speech waits unread");
    assert_eq!(s.plays(ms(100)), 0, "a held answer does not play");
    assert!(s.history().is_empty(), "nor is it in the conversation");
    s.at(ms(1_320));
    s.heard(IngestEvent::SpeechEnded { at: ms(1_000) });
    s.at(ms(1_350));
    s.turn_ends(
        16_000,
        ms(1_000),
        ms(1_350),
        TurnEndReason::Complete { probability: 0.9 },
    );
    assert_eq!(
        llm_priority.get(),
        Priority::Critical,
        "confirmed: its jobs are critical"
    );
    assert_eq!(
        speculation_priority.get(),
        Priority::Speculative,
        "done before it mattered"
    );
    s.speaks_all(5);
    assert!(s.plays(ms(200)) > 0, "now it plays");
    assert_eq!(
        s.history(),
        [
            (Role::User, "What time is it?".into()),
            (Role::Assistant, "It is noon.".into())
        ]
    );
    let records = s.records();
    assert_eq!(records[0].stt_final, Some(ms(200)));
}

#[test]
fn an_answer_held_at_a_pause_is_dropped_without_a_trace_when_the_person_goes_on() {
    let mut s = Scenario::new(AgentConfig::default());
    s.heard(IngestEvent::SpeechStarted { at: ms(0) });
    s.at(ms(1_064));
    s.heard(IngestEvent::PauseStarted {
        at: ms(1_000),
        audio: vec![0.1; 16_000],
    });
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("I would like".into())),
    ));
    assert_eq!(s.asked.llm.len(), 1, "a held answer started");
    s.at(ms(1_400));
    s.heard(IngestEvent::PauseEnded { at: ms(1_400) });
    assert!(s.core.answer.is_none(), "dropped");
    s.says(ms(1_400), ms(2_500), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("I would like tea.".into())),
    ));
    let llm = s.last_llm();
    s.answers(llm, &["Tea it is."]);
    s.speaks_all(3);
    s.plays(ms(200));
    assert_eq!(s.records().len(), 1, "one turn");
    assert_eq!(s.history()[0], (Role::User, "I would like tea.".into()));
}

#[test]
fn interim_transcripts_are_opportunistic_and_read_the_prompt_ahead() {
    let mut s = Scenario::new(AgentConfig::default());
    s.heard(IngestEvent::SpeechStarted { at: ms(0) });
    s.heard(IngestEvent::SpeechSoFar {
        at: ms(400),
        audio: vec![0.1; 6_400],
    });
    let (job, request) = &s.asked.stt[0];
    assert_eq!(request.tag.priority.get(), Priority::Opportunistic);
    let job = *job;
    s.input(Input::Stt(job, Some(SttEvent::Final("What is".into()))));
    assert!(
        s.events
            .iter()
            .any(|e| matches!(e, AgentEvent::UserPartial { text, .. } if text == "What is"))
    );
    assert_eq!(s.asked.read_ahead.len(), 1);
    assert_eq!(
        s.asked.read_ahead[0].tag.priority.get(),
        Priority::Opportunistic
    );
    // An interim shed under load costs nothing but its head start.
    s.heard(IngestEvent::SpeechSoFar {
        at: ms(800),
        audio: vec![0.1; 12_800],
    });
    let job = s.last_stt();
    s.input(Input::Stt(
        job,
        Some(SttEvent::Error(ProviderError::Overloaded {
            provider: "stt".into(),
            message: "shed".into(),
        })),
    ));
    assert!(
        !s.events
            .iter()
            .any(|e| matches!(e, AgentEvent::TurnFailed { .. }))
    );
}

fn with_knowledge() -> ProviderInfo {
    ProviderInfo {
        knowledge: true,
        ..ProviderInfo::default()
    }
}

#[test]
fn passages_from_the_knowledge_base_go_before_the_question() {
    let mut s = Scenario::with(no_early_work(), with_knowledge());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("What port does it use?".into())),
    ));
    assert!(s.asked.llm.is_empty(), "the model waits for the passages");
    let (job, query) = s.asked.knowledge[0].clone();
    assert_eq!(query, "What port does it use?");
    s.input(Input::Knowledge(
        job,
        Some(KnowledgeEvent::Passages(vec![Passage {
            text: "The gateway listens on port 8080.".into(),
            source: "README.md".into(),
            score: 1.0,
        }])),
    ));
    let (_, request) = s.asked.llm.last().unwrap();
    let n = request.messages.len();
    assert_eq!(request.messages[n - 1].content, "What port does it use?");
    assert_eq!(request.messages[n - 2].role, Role::System);
    assert!(
        request.messages[n - 2]
            .content
            .contains("port 8080. [README.md]")
    );
    assert_eq!(
        s.history(),
        [(Role::User, "What port does it use?".into())],
        "the passages are not part of the conversation"
    );
}

#[test]
fn a_slow_knowledge_base_is_skipped_after_its_budget() {
    let mut s = Scenario::with(no_early_work(), with_knowledge());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Hello?".into()))));
    s.plays(ms(300));
    assert!(s.asked.llm.is_empty());
    s.plays(ms(200));
    assert_eq!(s.asked.llm.len(), 1, "answered without it after the budget");
    let job = s.asked.knowledge[0].0;
    s.input(Input::Knowledge(
        job,
        Some(KnowledgeEvent::Passages(vec![])),
    ));
    assert_eq!(s.asked.llm.len(), 1, "a late lookup changes nothing");
}

fn with_tools() -> ProviderInfo {
    ProviderInfo {
        tools: vec![ToolSpec {
            name: "send_digits".into(),
            description: "Press phone keys".into(),
            parameters: serde_json::json!({"type": "object"}),
        }],
        ..ProviderInfo::default()
    }
}

#[test]
fn a_tool_call_runs_and_the_answer_goes_on_with_its_result() {
    let mut s = Scenario::with(no_early_work(), with_tools());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Press one.".into()))));
    let (llm, request) = s.asked.llm[0].clone();
    assert_eq!(request.tools[0].name, "send_digits");
    let call = ToolCall {
        id: "call_1".into(),
        name: "send_digits".into(),
        arguments: r#"{"digits":"1"}"#.into(),
    };
    s.input(Input::Llm(llm, Some(LlmEvent::ToolCall(call.clone()))));
    s.input(Input::Llm(llm, Some(LlmEvent::Done(LlmUsage::default()))));
    assert_eq!(s.asked.tools.len(), 1);
    let (tool, asked_call) = s.asked.tools[0].clone();
    assert_eq!(asked_call, call);
    s.input(Input::Tool(tool, Some(ToolEvent::Output("sent".into()))));
    let (llm2, request) = s.asked.llm[1].clone();
    let n = request.messages.len();
    assert_eq!(request.messages[n - 2].tool_calls, [call]);
    assert_eq!(request.messages[n - 1].role, Role::Tool);
    assert_eq!(request.messages[n - 1].content, "sent");
    assert_eq!(
        request.messages[n - 1].tool_call_id.as_deref(),
        Some("call_1")
    );
    s.answers(llm2, &["Done, I pressed one."]);
    s.speaks_all(5);
    s.plays(ms(300));
    assert_eq!(s.records()[0].answer, "Done, I pressed one.");
}

#[test]
fn a_held_answer_runs_no_tool_until_its_turn_is_confirmed() {
    let mut s = Scenario::with(AgentConfig::default(), with_tools());
    s.heard(IngestEvent::SpeechStarted { at: ms(0) });
    s.at(ms(1_064));
    s.heard(IngestEvent::PauseStarted {
        at: ms(1_000),
        audio: vec![0.1; 16_000],
    });
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("Transfer me.".into())),
    ));
    let llm = s.last_llm();
    let call = ToolCall {
        id: "t".into(),
        name: "send_digits".into(),
        arguments: "{}".into(),
    };
    s.input(Input::Llm(llm, Some(LlmEvent::ToolCall(call))));
    s.input(Input::Llm(llm, Some(LlmEvent::Done(LlmUsage::default()))));
    assert!(
        s.asked.tools.is_empty(),
        "no side effects from a speculative answer"
    );
    s.heard(IngestEvent::SpeechEnded { at: ms(1_000) });
    s.turn_ends(
        16_000,
        ms(1_000),
        ms(1_350),
        TurnEndReason::Complete { probability: 0.9 },
    );
    assert_eq!(s.asked.tools.len(), 1, "confirmed: the tool runs");
}

#[test]
fn a_handoff_keeps_the_conversation_and_answers_with_the_new_agent() {
    let mut s = Scenario::new(AgentConfig {
        system_prompt: "You are agent A.".into(),
        ..no_early_work()
    });
    s.exchange(ms(0), "Where is my order?", &["Let me hand you to orders."]);
    s.core.reconfigure(
        AgentConfig {
            system_prompt: "You are agent B, the order desk.".into(),
            ..no_early_work()
        },
        ProviderInfo {
            stt: "stt".into(),
            llm: "llm-b".into(),
            tts: "tts-b".into(),
            tts_rate: RATE,
            ..ProviderInfo::default()
        },
    );
    s.exchange(
        ms(5_000),
        "It is order twelve.",
        &["Order twelve ships today."],
    );
    let (_, request) = s.asked.llm.last().unwrap();
    assert_eq!(
        request.messages[0].content,
        "You are agent B, the order desk."
    );
    assert!(
        request
            .messages
            .iter()
            .any(|m| m.content == "Let me hand you to orders."),
        "B sees the conversation so far"
    );
    let records = s.records();
    assert_eq!(records[1].providers.1, "llm-b");
    assert_eq!(records[1].providers.2, "tts-b");
    assert_eq!(s.history().len(), 4);
}

/// Speaks an answer, then has the person say `over` on top of it; returns the scenario.
fn say_over_the_answer(over: &str) -> Scenario {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("Tell me more.".into())),
    ));
    let llm = s.last_llm();
    s.answers(llm, &["Sure, here is a long and detailed answer for you."]);
    s.speaks_all(20);
    s.plays(ms(400)); // past the echo guard
    s.heard(IngestEvent::SpeechStarted { at: ms(1_800) });
    s.heard(IngestEvent::SpeechEnded { at: ms(2_200) });
    s.turn_ends(
        6_400,
        ms(2_200),
        ms(2_500),
        TurnEndReason::Complete { probability: 0.8 },
    );
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final(over.into()))));
    s
}

#[test]
fn a_backchannel_over_the_agent_keeps_it_talking_and_takes_no_turn() {
    for over in [
        "Uh-huh.",
        "Right.",
        "Okay, okay.",
        "Mm-hmm, yeah.",
        "I see.",
    ] {
        let mut s = say_over_the_answer(over);
        assert!(
            s.events.iter().any(
                |e| matches!(e, AgentEvent::Backchannel { turn, text } if *turn == TurnId(1) && text == over)
            ),
            "{over:?} is reported as a backchannel"
        );
        assert!(s.interrupted().is_empty(), "{over:?} did not interrupt");
        assert_eq!(s.plays(ms(1_000)), 20, "the rest of the answer plays");
        let users = s
            .history()
            .iter()
            .filter(|(role, _)| *role == Role::User)
            .count();
        assert_eq!(users, 1, "{over:?} is not a turn");
    }
}

#[test]
fn words_that_are_not_a_backchannel_interrupt() {
    for over in [
        "Wait, stop.",
        "No, that's wrong.",
        "What about Paris?",
        "Okay, but why?",
    ] {
        let s = say_over_the_answer(over);
        assert_eq!(s.interrupted().len(), 1, "{over:?} interrupts");
        assert!(
            !s.events
                .iter()
                .any(|e| matches!(e, AgentEvent::Backchannel { .. })),
            "{over:?}"
        );
        assert_eq!(s.history().last().map(|(_, t)| t.as_str()), Some(over));
    }
}

#[test]
fn a_speculative_transcript_tells_the_turn_detector_its_form() {
    let mut s = Scenario::new(AgentConfig {
        preemptive_answer: false,
        interim_transcripts: false,
        ..AgentConfig::default()
    });
    s.heard(IngestEvent::SpeechStarted { at: ms(100) });
    s.heard(IngestEvent::PauseStarted {
        at: ms(1_500),
        audio: vec![0.1; 22_400],
    });
    let stt = s.last_stt();
    s.input(Input::Stt(
        stt,
        Some(SttEvent::Final("Which planet has the most moons?".into())),
    ));
    assert_eq!(
        s.asked.hints,
        vec![(ms(1_500), crate::turn::TranscriptForm::Question)]
    );
}

/// An answer of 40 frames playing, 20 of them played (past the echo guard).
fn answer_playing() -> Scenario {
    let mut s = Scenario::new(no_early_work());
    s.says(ms(0), ms(1_000), ms(300));
    let stt = s.last_stt();
    s.input(Input::Stt(stt, Some(SttEvent::Final("Go on.".into()))));
    let llm = s.last_llm();
    s.answers(llm, &["A long answer."]);
    s.speaks_all(40);
    assert_eq!(s.plays(ms(400)), 20);
    s
}

#[test]
fn a_voice_onset_holds_playback_at_once_and_confirmed_speech_keeps_it_held() {
    let mut s = answer_playing();
    s.heard(IngestEvent::VoiceOnset { at: ms(2_000) });
    // Not one more frame from the first speech-like chunk on: the VAD's confirmation ~100 ms
    // later finds the agent already silent.
    assert_eq!(s.plays(ms(100)), 0);
    s.heard(IngestEvent::SpeechStarted { at: ms(2_000) });
    assert!(
        s.events
            .contains(&AgentEvent::State(AgentState::Interrupted))
    );
    assert_eq!(s.plays(ms(400)), 0, "held while the barge-in is judged");
}

#[test]
fn a_voice_onset_without_speech_releases_playback() {
    let mut s = answer_playing();
    s.heard(IngestEvent::VoiceOnset { at: ms(2_000) });
    assert_eq!(s.plays(ms(200)), 0, "held");
    // A click: the VAD never confirms speech; playback goes on where it stopped, whole.
    assert_eq!(s.plays(ms(1_000)), 20, "the rest of the answer plays");
    assert!(s.interrupted().is_empty());
    assert!(
        !s.events
            .contains(&AgentEvent::State(AgentState::Interrupted))
    );
}
