//! The embedded models as providers: each model runs on its own thread behind a
//! [`ModelScheduler`] shared by every session, and answers through the provider traits exactly
//! like the HTTP providers do. Jobs are ordered by their [`JobTag`](crate::job::JobTag) and check
//! their cancellation inside the decoding loops.

use std::ops::ControlFlow;

use dartmouth_models::ModelStore;

use crate::job::Priority;
use crate::llm::embedded::Generation;
use crate::llm::{EmbeddedLlm, LlmError, LlmOptions};
use crate::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, LlmUsage, ProviderError,
    SpeechChunk, Stt, SttEvent, SttRequest, Tts, TtsEvent, TtsRequest, event_channel,
};
use crate::scheduler::{JobContext, ModelScheduler, QueuePolicy, SchedulerError, SchedulerLoad};
use crate::stt::moonshine::{MoonshineError, MoonshineStt};
use crate::stt::whisper::WhisperStt;
use crate::tts::espeak::EspeakTts;
use crate::tts::piper::PiperTts;

/// Threads each embedded model uses for one inference (the machine target has two cores).
pub const MODEL_THREADS: usize = 2;

/// Why an embedded provider could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The model failed to load (missing file, bad format).
    #[error("{provider}: {message}")]
    Load {
        /// Provider name.
        provider: &'static str,
        /// What went wrong.
        message: String,
    },
}

fn start<M: 'static, E: std::fmt::Display + Send + 'static>(
    provider: &'static str,
    load: impl FnOnce() -> Result<M, E> + Send + 'static,
) -> Result<ModelScheduler<M>, EmbeddedError> {
    ModelScheduler::spawn(format!("model-{provider}"), QueuePolicy::default(), load).map_err(|e| {
        EmbeddedError::Load {
            provider,
            message: match e {
                SchedulerError::Load(inner) => inner.to_string(),
                other => other.to_string(),
            },
        }
    })
}

fn model_error(provider: &str, error: impl std::fmt::Display) -> ProviderError {
    ProviderError::Model {
        provider: provider.to_string(),
        message: error.to_string(),
    }
}

/// Submits `job` for `tag`; if it leaves the queue without running, the reason is reported on
/// the stream (so a turn is never lost without a word).
fn submit_or_report<M: 'static, T: Send + 'static>(
    scheduler: &ModelScheduler<M>,
    tag: crate::job::JobTag,
    cancel: CancellationToken,
    events: tokio::sync::mpsc::Sender<T>,
    as_error: fn(ProviderError) -> T,
    job: impl FnOnce(&mut M, &JobContext<'_, M>, tokio::sync::mpsc::Sender<T>) + Send + 'static,
) {
    let for_job = events.clone();
    scheduler.submit(
        tag,
        cancel,
        move |model, context| job(model, context, for_job),
        move |error| {
            let _ = events.try_send(as_error(error));
        },
    );
}

/// A speech recogniser that can live on a model thread.
pub trait Recognizer: 'static {
    /// Transcribes 16 kHz mono samples, given what a shorter prefix was heard as (see
    /// [`SttRequest::draft`]; a recogniser may ignore it), stopping early with `Ok(None)` when
    /// `cancelled` says so.
    fn recognize(
        &mut self,
        audio_16k: &[f32],
        draft: Option<&str>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<String>, String>;
}

impl Recognizer for MoonshineStt {
    fn recognize(
        &mut self,
        audio_16k: &[f32],
        draft: Option<&str>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<String>, String> {
        match self.transcribe_cancellable(audio_16k, draft, cancelled) {
            Ok(text) => Ok(Some(text)),
            Err(MoonshineError::Cancelled) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Recognizer for WhisperStt {
    fn recognize(
        &mut self,
        audio_16k: &[f32],
        _draft: Option<&str>,
        _cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<String>, String> {
        self.transcribe(audio_16k)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// An embedded recogniser on its own thread, as an [`Stt`] provider.
#[derive(Debug)]
pub struct EmbeddedStt<M> {
    name: &'static str,
    scheduler: ModelScheduler<M>,
}

/// Moonshine base-en speech recognition.
pub type MoonshineProvider = EmbeddedStt<MoonshineStt>;
/// Whisper (whisper.cpp) speech recognition.
pub type WhisperProvider = EmbeddedStt<WhisperStt>;

impl EmbeddedStt<MoonshineStt> {
    /// Loads Moonshine on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let scheduler = start("moonshine", move || {
            MoonshineStt::load_with_threads(&store, MODEL_THREADS).map(|mut stt| {
                // The first run sets ONNX Runtime up: not in a turn.
                let _ = stt.transcribe(&[0.0; 16_000]);
                stt
            })
        })?;
        Ok(Self {
            name: "moonshine",
            scheduler,
        })
    }
}

impl EmbeddedStt<WhisperStt> {
    /// Loads Whisper on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let scheduler = start("whisper", move || WhisperStt::load(&store))?;
        Ok(Self {
            name: "whisper",
            scheduler,
        })
    }
}

impl<M: Recognizer> Stt for EmbeddedStt<M> {
    fn name(&self) -> &str {
        self.name
    }

    fn transcribe(&self, request: SttRequest, cancel: CancellationToken) -> EventStream<SttEvent> {
        let (events, stream) = event_channel();
        let name = self.name;
        let SttRequest { audio, draft, tag } = request;
        submit_or_report(
            &self.scheduler,
            tag,
            cancel,
            events,
            SttEvent::Error,
            move |model, context, events| {
                let cancelled = || context.is_cancelled();
                let event = match model.recognize(&audio, draft.as_deref(), &cancelled) {
                    Ok(Some(text)) => SttEvent::Final(text),
                    Ok(None) => return,
                    Err(e) => SttEvent::Error(model_error(name, e)),
                };
                let _ = events.blocking_send(event);
            },
        );
        stream
    }

    fn scheduler_load(&self) -> Option<SchedulerLoad> {
        Some(self.scheduler.load())
    }
}

/// SmolLM2-135M-Instruct on candle. Tool definitions are ignored: the model is too small to
/// call functions reliably.
#[derive(Debug)]
pub struct EmbeddedLlmProvider {
    scheduler: ModelScheduler<EmbeddedLlm>,
}

impl EmbeddedLlmProvider {
    /// Loads (and re-quantises) the model on its own thread.
    pub fn load(store: &ModelStore, options: LlmOptions) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let scheduler = start("smollm2", move || EmbeddedLlm::load(&store, options))?;
        Ok(Self { scheduler })
    }
}

impl Llm for EmbeddedLlmProvider {
    fn name(&self) -> &str {
        "smollm2"
    }

    fn stream(&self, request: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent> {
        let (events, stream) = event_channel();
        let tag = request.tag.clone();
        submit_or_report(
            &self.scheduler,
            tag,
            cancel,
            events,
            LlmEvent::Error,
            move |model, context, events| {
                let max_tokens = if request.max_tokens == 0 {
                    256
                } else {
                    request.max_tokens
                };
                let cancelled = || context.is_cancelled();
                match model.begin(&request.messages, max_tokens, &cancelled) {
                    Ok(generation) => {
                        decode_slice(model, context, generation, FIRST_SLICE_TOKENS, events)
                    }
                    Err(LlmError::Cancelled) => {}
                    Err(e) => {
                        let _ = events.blocking_send(LlmEvent::Error(model_error("smollm2", e)));
                    }
                }
            },
        );
        stream
    }

    fn read_ahead(&self, request: LlmRequest, cancel: CancellationToken) {
        let tag = request.tag.clone();
        // Refused or shed: only the head start is lost.
        self.scheduler.submit(
            tag,
            cancel,
            move |model: &mut EmbeddedLlm, context| {
                let cancelled = || context.is_cancelled();
                match model.read_ahead_cancellable(
                    &request.messages,
                    request.max_tokens,
                    &cancelled,
                ) {
                    Ok(_) | Err(LlmError::Cancelled) => {}
                    Err(e) => tracing::debug!(error = %e, "embedded LLM read-ahead failed"),
                }
            },
            |_| {},
        );
    }

    fn scheduler_load(&self) -> Option<SchedulerLoad> {
        Some(self.scheduler.load())
    }
}

/// Tokens the first slice of an answer decodes before the model turns to other sessions' work:
/// enough for the first chunk of speech (its first three words) with room to spare.
pub const FIRST_SLICE_TOKENS: usize = 12;
/// Tokens each later slice decodes. The answer's first chunk is playing meanwhile, so later
/// slices wait behind other sessions' first chunks, not in front of them.
pub const SLICE_TOKENS: usize = 16;

/// Decodes the next `steps` tokens of an answer; if it is not over, the rest goes back in the
/// queue (as speculative work: behind other sessions' critical path) and the model is free.
fn decode_slice(
    model: &mut EmbeddedLlm,
    context: &JobContext<'_, EmbeddedLlm>,
    mut generation: Generation,
    steps: usize,
    events: tokio::sync::mpsc::Sender<LlmEvent>,
) {
    let cancelled = || context.is_cancelled();
    let mut on_token = |piece: &str| {
        if context.is_cancelled()
            || events
                .blocking_send(LlmEvent::Token(piece.to_string()))
                .is_err()
        {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    match model.step(&mut generation, steps, &cancelled, &mut on_token) {
        Ok(Some(stats)) => {
            if !context.is_cancelled() {
                let _ = events.blocking_send(LlmEvent::Done(LlmUsage {
                    prompt_tokens: Some(stats.prompt_tokens),
                    completion_tokens: Some(stats.generated_tokens),
                }));
            }
        }
        Ok(None) => context.requeue(Priority::Speculative, move |model, context| {
            decode_slice(model, context, generation, SLICE_TOKENS, events)
        }),
        Err(LlmError::Cancelled) => {}
        Err(e) => {
            let _ = events.blocking_send(LlmEvent::Error(model_error("smollm2", e)));
        }
    }
}

/// A voice that can live on a model thread.
pub trait Voice: 'static {
    /// Speaks `text` as mono 16-bit samples.
    fn speak(&mut self, text: &str) -> Result<Vec<i16>, String>;
}

impl Voice for PiperTts {
    fn speak(&mut self, text: &str) -> Result<Vec<i16>, String> {
        self.synthesize(text).map_err(|e| e.to_string())
    }
}

impl Voice for EspeakTts {
    fn speak(&mut self, text: &str) -> Result<Vec<i16>, String> {
        self.synthesize(text).map_err(|e| e.to_string())
    }
}

/// An embedded voice on its own thread, as a [`Tts`] provider.
#[derive(Debug)]
pub struct EmbeddedTts<M> {
    name: &'static str,
    scheduler: ModelScheduler<M>,
    sample_rate: u32,
}

/// Piper neural speech (en_US-joe-medium by default).
pub type PiperProvider = EmbeddedTts<PiperTts>;
/// espeak-ng's own (robotic, very fast) voice.
pub type EspeakProvider = EmbeddedTts<EspeakTts>;

impl<M: Voice> EmbeddedTts<M> {
    /// Starts `load` on a model thread and learns the voice's sample rate from it.
    fn spawn<E: std::fmt::Display + Send + 'static>(
        name: &'static str,
        load: impl FnOnce() -> Result<(M, u32), E> + Send + 'static,
    ) -> Result<Self, EmbeddedError> {
        let (rate_tx, rate_rx) = std::sync::mpsc::sync_channel(1);
        let scheduler = start(name, move || {
            let (voice, rate) = load()?;
            let _ = rate_tx.send(rate);
            Ok::<_, E>(voice)
        })?;
        let sample_rate = rate_rx.recv().unwrap_or(22_050);
        Ok(Self {
            name,
            scheduler,
            sample_rate,
        })
    }
}

impl EmbeddedTts<PiperTts> {
    /// Loads the voice on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        Self::spawn("piper", move || {
            PiperTts::load_with_threads(&store, MODEL_THREADS).map(|mut tts| {
                // The first run sets ONNX Runtime up (~600 ms against ~100 ms later): not in a turn.
                let _ = tts.synthesize("Hello.");
                let rate = tts.sample_rate();
                (tts, rate)
            })
        })
    }
}

impl EmbeddedTts<EspeakTts> {
    /// Starts espeak-ng with `voice` (e.g. `en-us`).
    pub fn new(voice: &str) -> Result<Self, EmbeddedError> {
        let voice = voice.to_string();
        Self::spawn("espeak", move || {
            EspeakTts::new(&voice).map(|tts| {
                let rate = tts.sample_rate();
                (tts, rate)
            })
        })
    }
}

impl<M: Voice> Tts for EmbeddedTts<M> {
    fn name(&self) -> &str {
        self.name
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn synthesize(&self, request: TtsRequest, cancel: CancellationToken) -> EventStream<TtsEvent> {
        let (events, stream) = event_channel();
        let name = self.name;
        let TtsRequest { text, tag } = request;
        submit_or_report(
            &self.scheduler,
            tag,
            cancel,
            events,
            TtsEvent::Error,
            move |model, context, events| {
                speak(context, &events, name, text, |t| model.speak(t));
            },
        );
        stream
    }

    fn scheduler_load(&self) -> Option<SchedulerLoad> {
        Some(self.scheduler.load())
    }
}

fn speak<M, E: std::fmt::Display>(
    cancel: &JobContext<'_, M>,
    events: &tokio::sync::mpsc::Sender<TtsEvent>,
    provider: &str,
    text: String,
    synthesize: impl FnOnce(&str) -> Result<Vec<i16>, E>,
) {
    if cancel.is_cancelled() {
        return;
    }
    let event = match synthesize(&text) {
        Ok(samples) => TtsEvent::Audio(SpeechChunk { samples, text }),
        Err(e) => TtsEvent::Error(model_error(provider, e)),
    };
    if cancel.is_cancelled() {
        return;
    }
    let ok = !matches!(event, TtsEvent::Error(_));
    if events.blocking_send(event).is_ok() && ok {
        let _ = events.blocking_send(TtsEvent::Done);
    }
}
