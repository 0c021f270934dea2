//! Provider wrappers that stamp when each job starts and when its first useful event arrives, so
//! the benchmark can split a turn's latency into model compute and pipeline overhead.
//!
//! Each wrapper forwards its provider's events through one extra hop (a task on the runtime);
//! that hop's few microseconds count as model compute, so the overhead measured is, if anything,
//! slightly low.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dartmouth_voice::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, Stt, SttEvent, SttRequest, Tts,
    TtsEvent, TtsRequest, event_channel,
};

/// One provider job: when it was started and when its first result arrived.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// The provider was called.
    pub started: Instant,
    /// The first result (STT: the final transcript; LLM: the first token; TTS: the first audio).
    pub first: Option<Instant>,
}

/// Jobs recorded since the last [`Timeline::take`], per provider kind.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// Speech-to-text jobs.
    pub stt: Vec<Job>,
    /// LLM jobs.
    pub llm: Vec<Job>,
    /// Text-to-speech jobs.
    pub tts: Vec<Job>,
}

/// The shared record the three wrappers write to.
#[derive(Debug, Default, Clone)]
pub struct Recorder(Arc<Mutex<Timeline>>);

#[derive(Clone, Copy)]
enum Kind {
    Stt,
    Llm,
    Tts,
}

impl Recorder {
    /// Everything recorded so far; the record starts empty again.
    pub fn take(&self) -> Timeline {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Registers a job; returns its index.
    fn start(&self, kind: Kind) -> usize {
        let mut timeline = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let jobs = timeline.jobs(kind);
        jobs.push(Job {
            started: Instant::now(),
            first: None,
        });
        jobs.len() - 1
    }

    fn first(&self, kind: Kind, index: usize) {
        let mut timeline = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(job) = timeline.jobs(kind).get_mut(index) {
            job.first.get_or_insert_with(Instant::now);
        }
    }

    /// Forwards the events of job `index`, stamping the first one `is_result` accepts.
    fn forward<T: Send + 'static>(
        &self,
        kind: Kind,
        index: usize,
        mut inner: EventStream<T>,
        is_result: fn(&T) -> bool,
    ) -> EventStream<T> {
        let (tx, rx) = event_channel();
        let recorder = self.clone();
        tokio::spawn(async move {
            while let Some(event) = inner.recv().await {
                if is_result(&event) {
                    recorder.first(kind, index);
                }
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        });
        rx
    }
}

impl Timeline {
    fn jobs(&mut self, kind: Kind) -> &mut Vec<Job> {
        match kind {
            Kind::Stt => &mut self.stt,
            Kind::Llm => &mut self.llm,
            Kind::Tts => &mut self.tts,
        }
    }
}

/// A speech-to-text provider whose jobs are timed.
pub struct TimedStt(pub Arc<dyn Stt>, pub Recorder);
/// A language model whose jobs are timed.
pub struct TimedLlm(pub Arc<dyn Llm>, pub Recorder);
/// A text-to-speech provider whose jobs are timed.
pub struct TimedTts(pub Arc<dyn Tts>, pub Recorder);

impl Stt for TimedStt {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn transcribe(&self, request: SttRequest, cancel: CancellationToken) -> EventStream<SttEvent> {
        let index = self.1.start(Kind::Stt);
        let inner = self.0.transcribe(request, cancel);
        self.1
            .forward(Kind::Stt, index, inner, |e| matches!(e, SttEvent::Final(_)))
    }
}

impl Llm for TimedLlm {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn read_ahead(&self, request: LlmRequest, cancel: CancellationToken) {
        self.0.read_ahead(request, cancel);
    }

    fn stream(&self, request: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent> {
        let index = self.1.start(Kind::Llm);
        let inner = self.0.stream(request, cancel);
        self.1
            .forward(Kind::Llm, index, inner, |e| matches!(e, LlmEvent::Token(_)))
    }
}

impl Tts for TimedTts {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }

    fn synthesize(&self, request: TtsRequest, cancel: CancellationToken) -> EventStream<TtsEvent> {
        let index = self.1.start(Kind::Tts);
        let inner = self.0.synthesize(request, cancel);
        self.1
            .forward(Kind::Tts, index, inner, |e| matches!(e, TtsEvent::Audio(_)))
    }
}
