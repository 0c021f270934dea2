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

/// A speech recogniser that can live on a model thread.
pub trait Recognizer: 'static {
    /// Transcribes 16 kHz mono samples.
    fn recognize(&mut self, audio_16k: &[f32]) -> Result<String, String>;
    /// Transcribes 16 kHz mono samples, given what a shorter prefix was heard as (see
    /// [`Stt::transcribe_with_draft`]). The default ignores the draft.
    fn recognize_with_draft(
        &mut self,
        audio_16k: &[f32],
        draft: Option<&str>,
    ) -> Result<String, String> {
        let _ = draft;
        self.recognize(audio_16k)
    }
}

impl Recognizer for MoonshineStt {
    fn recognize(&mut self, audio_16k: &[f32]) -> Result<String, String> {
        self.transcribe(audio_16k).map_err(|e| e.to_string())
    }

    fn recognize_with_draft(
        &mut self,
        audio_16k: &[f32],
        draft: Option<&str>,
    ) -> Result<String, String> {
        self.transcribe_with_draft(audio_16k, draft)
            .map_err(|e| e.to_string())
    }
}

impl Recognizer for WhisperStt {
    fn recognize(&mut self, audio_16k: &[f32]) -> Result<String, String> {
        self.transcribe(audio_16k).map_err(|e| e.to_string())
    }
}

/// An embedded recogniser on its own thread, as an [`Stt`] provider.
#[derive(Debug)]
pub struct EmbeddedStt<M> {
    name: &'static str,
    worker: ModelWorker<M>,
}

/// Moonshine base-en speech recognition.
pub type MoonshineProvider = EmbeddedStt<MoonshineStt>;
/// Whisper (whisper.cpp) speech recognition.
pub type WhisperProvider = EmbeddedStt<WhisperStt>;

impl EmbeddedStt<MoonshineStt> {
    /// Loads Moonshine on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let worker = start("moonshine", move || {
            MoonshineStt::load_with_threads(&store, MODEL_THREADS).map(|mut stt| {
                // The first run sets ONNX Runtime up: not in a turn.
                let _ = stt.transcribe(&[0.0; 16_000]);
                stt
            })
        })?;
        Ok(Self {
            name: "moonshine",
            worker,
        })
    }
}

impl EmbeddedStt<WhisperStt> {
    /// Loads Whisper on its own thread.
    pub fn load(store: &ModelStore) -> Result<Self, EmbeddedError> {
        let store = store.clone();
        let worker = start("whisper", move || WhisperStt::load(&store))?;
        Ok(Self {
            name: "whisper",
            worker,
        })
    }
}

impl<M: Recognizer> Stt for EmbeddedStt<M> {
    fn name(&self) -> &str {
        self.name
    }

    fn transcribe(
        &self,
        audio_16k: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> EventStream<SttEvent> {
        self.transcribe_with_draft(audio_16k, None, cancel)
    }

    fn transcribe_with_draft(
        &self,
        audio_16k: Arc<[f32]>,
        draft: Option<Arc<str>>,
        cancel: CancellationToken,
    ) -> EventStream<SttEvent> {
        let (events, stream) = event_channel();
        let name = self.name;
        submit_or_report(
            &self.worker,
            events,
            SttEvent::Error,
            move |model, events| {
                if cancel.is_cancelled() {
                    return;
                }
                let event = match model.recognize_with_draft(&audio_16k, draft.as_deref()) {
                    Ok(text) => SttEvent::Final(text),
                    Err(e) => SttEvent::Error(model_error(name, e)),
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

    fn read_ahead(&self, request: LlmRequest, cancel: CancellationToken) {
        let job = move |model: &mut EmbeddedLlm| {
            if cancel.is_cancelled() {
                return;
            }
            if let Err(e) = model.read_ahead(&request.messages, request.max_tokens) {
                tracing::debug!(error = %e, "embedded LLM read-ahead failed");
            }
        };
        // A full queue only loses the head start.
        let _ = self.worker.submit(job);
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
    worker: ModelWorker<M>,
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
        let worker = start(name, move || {
            let (voice, rate) = load()?;
            let _ = rate_tx.send(rate);
            Ok::<_, E>(voice)
        })?;
        let sample_rate = rate_rx.recv().unwrap_or(22_050);
        Ok(Self {
            name,
            worker,
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

    fn synthesize(&self, text: String, cancel: CancellationToken) -> EventStream<TtsEvent> {
        let (events, stream) = event_channel();
        let name = self.name;
        submit_or_report(
            &self.worker,
            events,
            TtsEvent::Error,
            move |model, events| {
                speak(&cancel, &events, name, text, |t| model.speak(t));
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
