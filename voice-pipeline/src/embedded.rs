//! The embedded models as providers: each model runs on its own [`ModelWorker`] thread and
//! answers through the provider traits, exactly like the HTTP providers do.

use std::ops::ControlFlow;
use std::sync::Arc;

use dartmouth_models::ModelStore;

use crate::llm::{EmbeddedLlm, LlmOptions};
use crate::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, LlmUsage, ProviderError,
    SpeechChunk, Stt, SttEvent, Tts, TtsEvent, event_channel,
};
use crate::stt::moonshine::MoonshineStt;
use crate::stt::whisper::WhisperStt;
use crate::tts::espeak::EspeakTts;
use crate::tts::piper::PiperTts;
use crate::worker::{ModelWorker, WorkerError};

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
) -> Result<ModelWorker<M>, EmbeddedError> {
    ModelWorker::spawn(format!("model-{provider}"), load).map_err(|e| EmbeddedError::Load {
        provider,
        message: match e {
            WorkerError::Load(inner) => inner.to_string(),
            other => other.to_string(),
        },
    })
}

fn model_error(provider: &str, error: impl std::fmt::Display) -> ProviderError {
    ProviderError::Model {
        provider: provider.to_string(),
        message: error.to_string(),
    }
}

/// Submits `job` to `worker`; if the queue refuses it, reports the refusal on the stream.
fn submit_or_report<M: 'static, T: Send + 'static>(
    worker: &ModelWorker<M>,
    events: tokio::sync::mpsc::Sender<T>,
    as_error: fn(ProviderError) -> T,
    job: impl FnOnce(&mut M, tokio::sync::mpsc::Sender<T>) + Send + 'static,
) {
    let for_job = events.clone();
    if let Err(error) = worker.submit(move |model| job(model, for_job)) {
        let _ = events.try_send(as_error(error));
    }
}

/// Moonshine base-en speech recognition.
#[derive(Debug)]
pub struct MoonshineProvider {
    worker: ModelWorker<MoonshineStt>,
}

impl MoonshineProvider {
    /// Loads Moonshine on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let worker = start("moonshine", move || {
            MoonshineStt::load_with_threads(&store, MODEL_THREADS)
        })?;
        Ok(Self { worker })
    }
}

impl Stt for MoonshineProvider {
    fn name(&self) -> &str {
        "moonshine"
    }

    fn transcribe(
        &self,
        audio_16k: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> EventStream<SttEvent> {
        let (events, stream) = event_channel();
        submit_or_report(
            &self.worker,
            events,
            SttEvent::Error,
            move |model, events| {
                if cancel.is_cancelled() {
                    return;
                }
                let event = match model.transcribe(&audio_16k) {
                    Ok(text) => SttEvent::Final(text),
                    Err(e) => SttEvent::Error(model_error("moonshine", e)),
                };
                let _ = events.blocking_send(event);
            },
        );
        stream
    }
}

/// Whisper (whisper.cpp) speech recognition.
#[derive(Debug)]
pub struct WhisperProvider {
    worker: ModelWorker<WhisperStt>,
}

impl WhisperProvider {
    /// Loads Whisper on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let worker = start("whisper", move || WhisperStt::load(&store))?;
        Ok(Self { worker })
    }
}

impl Stt for WhisperProvider {
    fn name(&self) -> &str {
        "whisper"
    }

    fn transcribe(
        &self,
        audio_16k: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> EventStream<SttEvent> {
        let (events, stream) = event_channel();
        submit_or_report(
            &self.worker,
            events,
            SttEvent::Error,
            move |model, events| {
                if cancel.is_cancelled() {
                    return;
                }
                let event = match model.transcribe(&audio_16k) {
                    Ok(text) => SttEvent::Final(text),
                    Err(e) => SttEvent::Error(model_error("whisper", e)),
                };
                let _ = events.blocking_send(event);
            },
        );
        stream
    }
}

/// SmolLM2-135M-Instruct on candle. Tool definitions are ignored: the model is too small to
/// call functions reliably.
#[derive(Debug)]
pub struct EmbeddedLlmProvider {
    worker: ModelWorker<EmbeddedLlm>,
}

impl EmbeddedLlmProvider {
    /// Loads (and re-quantises) the model on its own thread.
    pub fn load(store: &ModelStore, options: LlmOptions) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let worker = start("smollm2", move || EmbeddedLlm::load(&store, options))?;
        Ok(Self { worker })
    }
}

impl Llm for EmbeddedLlmProvider {
    fn name(&self) -> &str {
        "smollm2"
    }

    fn stream(&self, request: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent> {
        let (events, stream) = event_channel();
        submit_or_report(
            &self.worker,
            events,
            LlmEvent::Error,
            move |model, events| {
                if cancel.is_cancelled() {
                    return;
                }
                let mut on_token = |piece: &str| {
                    if cancel.is_cancelled()
                        || events
                            .blocking_send(LlmEvent::Token(piece.to_string()))
                            .is_err()
                    {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                let max_tokens = if request.max_tokens == 0 {
                    256
                } else {
                    request.max_tokens
                };
                let event = match model.generate(&request.messages, max_tokens, &mut on_token) {
                    Ok(stats) => LlmEvent::Done(LlmUsage {
                        prompt_tokens: Some(stats.prompt_tokens),
                        completion_tokens: Some(stats.generated_tokens),
                    }),
                    Err(e) => LlmEvent::Error(model_error("smollm2", e)),
                };
                if !cancel.is_cancelled() {
                    let _ = events.blocking_send(event);
                }
            },
        );
        stream
    }
}

/// Piper neural speech (en_US-joe-medium by default).
#[derive(Debug)]
pub struct PiperProvider {
    worker: ModelWorker<PiperTts>,
    sample_rate: u32,
}

impl PiperProvider {
    /// Loads the voice on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let (rate_tx, rate_rx) = std::sync::mpsc::sync_channel(1);
        let worker = start("piper", move || {
            let tts = PiperTts::load_with_threads(&store, MODEL_THREADS)?;
            let _ = rate_tx.send(tts.sample_rate());
            Ok::<_, crate::tts::piper::PiperError>(tts)
        })?;
        let sample_rate = rate_rx.recv().unwrap_or(22_050);
        Ok(Self {
            worker,
            sample_rate,
        })
    }
}

impl Tts for PiperProvider {
    fn name(&self) -> &str {
        "piper"
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn synthesize(&self, text: String, cancel: CancellationToken) -> EventStream<TtsEvent> {
        let (events, stream) = event_channel();
        submit_or_report(
            &self.worker,
            events,
            TtsEvent::Error,
            move |model, events| {
                speak(&cancel, &events, "piper", text, |t| model.synthesize(t));
            },
        );
        stream
    }
}

/// espeak-ng's own (robotic, very fast) voice.
#[derive(Debug)]
pub struct EspeakProvider {
    worker: ModelWorker<EspeakTts>,
    sample_rate: u32,
}

impl EspeakProvider {
    /// Starts espeak-ng with `voice` (e.g. `en-us`).
    pub fn new(voice: &str) -> Result<Self, EmbeddedError> {
        let voice = voice.to_string();
        let (rate_tx, rate_rx) = std::sync::mpsc::sync_channel(1);
        let worker = start("espeak", move || {
            let tts = EspeakTts::new(&voice)?;
            let _ = rate_tx.send(tts.sample_rate());
            Ok::<_, crate::tts::espeak::EspeakError>(tts)
        })?;
        let sample_rate = rate_rx.recv().unwrap_or(22_050);
        Ok(Self {
            worker,
            sample_rate,
        })
    }
}

impl Tts for EspeakProvider {
    fn name(&self) -> &str {
        "espeak"
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn synthesize(&self, text: String, cancel: CancellationToken) -> EventStream<TtsEvent> {
        let (events, stream) = event_channel();
        submit_or_report(
            &self.worker,
            events,
            TtsEvent::Error,
            move |model, events| {
                speak(&cancel, &events, "espeak", text, |t| model.synthesize(t));
            },
        );
        stream
    }
}

fn speak<E: std::fmt::Display>(
    cancel: &CancellationToken,
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
