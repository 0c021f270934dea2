//! The agent task: a thin async shell around the decision step machine ([`core::Core`]). It
//! waits for the next input (a listening event, typed text, an event of a running provider job,
//! or a 20 ms tick), hands it to the core with the time, and carries out the effects the core
//! queued (start provider jobs, emit events). It decides nothing itself.

mod answer;
mod core;
mod early;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub(crate) use self::core::{Core, Effect, Input, JobId, ProviderInfo};
use super::{AgentConfig, AgentEvent, Control, FirstFrame, Providers};
use crate::conversation::Conversation;
use crate::egress::Egress;
use crate::knowledge::{KnowledgeEvent, ToolEvent};
use crate::listening::{Heard, TranscriptHints};
use crate::provider::{CancellationToken, EventStream, LlmEvent, SttEvent, TtsEvent};

/// How often the loop wakes to check timers and playback when nothing else happens.
const TICK: Duration = Duration::from_millis(20);

/// A running provider job's event stream.
enum Stream {
    Stt(EventStream<SttEvent>),
    Llm(EventStream<LlmEvent>),
    Tts(EventStream<TtsEvent>),
    Knowledge(EventStream<KnowledgeEvent>),
    Tool(EventStream<ToolEvent>),
}

struct Running {
    id: JobId,
    cancel: CancellationToken,
    stream: Stream,
}

pub(super) struct Runner {
    core: Core,
    providers: Providers,
    events: mpsc::Sender<AgentEvent>,
    jobs: Vec<Running>,
    /// The session's end-of-turn detector, for what speculative transcripts read like.
    hints: Option<TranscriptHints>,
}

impl Runner {
    pub(super) fn new(
        config: AgentConfig,
        providers: Providers,
        egress: Arc<Mutex<Egress>>,
        first_frame: FirstFrame,
        conversation: Arc<Mutex<Conversation>>,
        events: mpsc::Sender<AgentEvent>,
        hints: Option<TranscriptHints>,
    ) -> Self {
        let info = provider_info(&providers);
        Self {
            core: Core::new(config, info, egress, first_frame, conversation),
            providers,
            events,
            jobs: Vec::new(),
            hints,
        }
    }

    pub(super) async fn run(
        mut self,
        mut ingest: mpsc::Receiver<Heard>,
        mut text: mpsc::Receiver<String>,
        mut control: mpsc::Receiver<Control>,
        cancel: CancellationToken,
    ) {
        self.core.start();
        self.carry_out();
        let (mut ingest_open, mut text_open, mut control_open) = (true, true, true);
        loop {
            let input = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                order = control.recv(), if control_open => {
                    match order {
                        Some(Control::Handoff(handoff)) => {
                            let (config, providers) = *handoff;
                            self.core.reconfigure(config, provider_info(&providers));
                            self.providers = providers;
                            self.carry_out();
                        }
                        None => control_open = false,
                    }
                    continue;
                }
                heard = ingest.recv(), if ingest_open => match heard {
                    Some(heard) => Input::Heard(heard),
                    None => {
                        ingest_open = false;
                        continue;
                    }
                },
                message = text.recv(), if text_open => match message {
                    Some(message) => Input::Text(message),
                    None => {
                        text_open = false;
                        continue;
                    }
                },
                input = next_job_event(&mut self.jobs, &self.core) => input,
                _ = tokio::time::sleep(TICK) => Input::Tick,
            };
            self.core.handle(Instant::now(), input);
            self.carry_out();
        }
        self.core.stop();
        for job in &self.jobs {
            job.cancel.cancel();
        }
    }

    /// Carries out the core's effects, and lets go of the streams of jobs it gave up on.
    fn carry_out(&mut self) {
        for effect in self.core.take_effects() {
            let running = match effect {
                Effect::Emit(event) => {
                    if let Some(observer) = &self.providers.observer {
                        observer.on_event(&event);
                    }
                    let _ = self.events.try_send(event);
                    continue;
                }
                Effect::HintTurn { at, form } => {
                    if let Some(hints) = &self.hints {
                        hints.send(at, form);
                    }
                    continue;
                }
                Effect::ReadAhead { request, cancel } => {
                    self.providers.llm.read_ahead(request, cancel);
                    continue;
                }
                Effect::Transcribe {
                    job,
                    request,
                    cancel,
                } => Running {
                    id: job,
                    stream: Stream::Stt(self.providers.stt.transcribe(request, cancel.clone())),
                    cancel,
                },
                Effect::Generate {
                    job,
                    request,
                    cancel,
                } => Running {
                    id: job,
                    stream: Stream::Llm(self.providers.llm.stream(request, cancel.clone())),
                    cancel,
                },
                Effect::Synthesize {
                    job,
                    request,
                    cancel,
                } => Running {
                    id: job,
                    stream: Stream::Tts(self.providers.tts.synthesize(request, cancel.clone())),
                    cancel,
                },
                Effect::Retrieve {
                    job,
                    query,
                    limit,
                    cancel,
                } => match &self.providers.knowledge {
                    Some(knowledge) => Running {
                        id: job,
                        stream: Stream::Knowledge(knowledge.retrieve(query, limit, cancel.clone())),
                        cancel,
                    },
                    None => continue,
                },
                Effect::CallTool { job, call, cancel } => match &self.providers.tools {
                    Some(tools) => Running {
                        id: job,
                        stream: Stream::Tool(tools.call(call, cancel.clone())),
                        cancel,
                    },
                    None => continue,
                },
            };
            self.jobs.push(running);
        }
        self.jobs.retain(|job| !job.cancel.is_cancelled());
    }
}

/// What the core needs to know of `providers`.
fn provider_info(providers: &Providers) -> ProviderInfo {
    ProviderInfo {
        stt: providers.stt.name().to_string(),
        llm: providers.llm.name().to_string(),
        tts: providers.tts.name().to_string(),
        tts_rate: providers.tts.sample_rate(),
        knowledge: providers.knowledge.is_some(),
        tools: providers
            .tools
            .as_ref()
            .map(|tools| tools.specs())
            .unwrap_or_default(),
    }
}

/// The next event of a running job the core wants to read now (a finished job's stream gives
/// one `None` and is dropped). Pending forever when there is none.
async fn next_job_event(jobs: &mut Vec<Running>, core: &Core) -> Input {
    poll_fn(|cx| {
        for i in 0..jobs.len() {
            let job = &mut jobs[i];
            if !core.readable(job.id) {
                continue;
            }
            let id = job.id;
            let input = match &mut job.stream {
                Stream::Stt(s) => s.poll_recv(cx).map(|e| Input::Stt(id, e)),
                Stream::Llm(s) => s.poll_recv(cx).map(|e| Input::Llm(id, e)),
                Stream::Tts(s) => s.poll_recv(cx).map(|e| Input::Tts(id, e)),
                Stream::Knowledge(s) => s.poll_recv(cx).map(|e| Input::Knowledge(id, e)),
                Stream::Tool(s) => s.poll_recv(cx).map(|e| Input::Tool(id, e)),
            };
            if let Poll::Ready(input) = input {
                let ended = matches!(
                    input,
                    Input::Stt(_, None)
                        | Input::Llm(_, None)
                        | Input::Tts(_, None)
                        | Input::Knowledge(_, None)
                        | Input::Tool(_, None)
                );
                if ended {
                    jobs.swap_remove(i);
                }
                return Poll::Ready(input);
            }
        }
        Poll::Pending
    })
    .await
}
