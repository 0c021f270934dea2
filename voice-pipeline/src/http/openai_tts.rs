//! OpenAI-compatible speech (`POST /v1/audio/speech` with `response_format: "pcm"`): raw 24 kHz
//! signed 16-bit little-endian mono, streamed as it arrives.
//!
//! Audio goes out in [`TtsEvent::Audio`] chunks of [`CHUNK_SAMPLES`] (100 ms; the last one may be
//! shorter). Text convention: the **first** chunk carries the whole input text, every later chunk
//! has empty text, so a consumer that truncates the conversation at the audio actually played
//! credits the text once, when its first audio leaves. The first audio must arrive within the
//! configuration's `first_token_timeout`, the whole job within its `timeout`.

use std::sync::Arc;

use super::{HttpProviderConfig, JobClock, spawn_job};
use crate::provider::{
    CancellationToken, EventStream, ProviderError, SpeechChunk, Tts, TtsEvent, TtsRequest,
    event_channel,
};

/// Sample rate of OpenAI's `pcm` format.
pub const TTS_SAMPLE_RATE: u32 = 24_000;
/// Samples per audio event: 100 ms at 24 kHz.
pub const CHUNK_SAMPLES: usize = 2_400;
/// The voice used unless [`OpenAiTts::with_voice`] chooses another.
pub const DEFAULT_VOICE: &str = "alloy";

/// An OpenAI-compatible text-to-speech service.
#[derive(Debug, Clone)]
pub struct OpenAiTts {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    name: String,
    config: HttpProviderConfig,
    client: reqwest::Client,
    voice: String,
}

impl OpenAiTts {
    /// A provider named `openai-tts` speaking with [`DEFAULT_VOICE`], with its own HTTP client.
    pub fn new(config: HttpProviderConfig) -> Result<Self, ProviderError> {
        let client = super::http_client(&config)?;
        Ok(Self::with_client(config, client))
    }

    /// A provider sharing `client` (and its connection pool) with others.
    pub fn with_client(config: HttpProviderConfig, client: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: "openai-tts".to_string(),
                config,
                client,
                voice: DEFAULT_VOICE.to_string(),
            }),
        }
    }

    /// Renames the provider (logs, errors, turn records).
    pub fn with_name(self, name: impl Into<String>) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.name = name.into();
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Chooses the voice (`alloy`, `nova`, … or whatever the service offers).
    pub fn with_voice(self, voice: impl Into<String>) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.voice = voice.into();
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl Tts for OpenAiTts {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn sample_rate(&self) -> u32 {
        TTS_SAMPLE_RATE
    }

    fn synthesize(&self, request: TtsRequest, cancel: CancellationToken) -> EventStream<TtsEvent> {
        let text = request.text;
        let (tx, rx) = event_channel();
        let inner = Arc::clone(&self.inner);
        let job_tx = tx.clone();
        spawn_job(
            &self.inner.name,
            tx,
            cancel,
            async move { run(&inner, text, &job_tx).await },
            TtsEvent::Error,
        );
        rx
    }
}

#[derive(serde::Serialize)]
struct Body<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
}

/// Cuts a byte stream of s16le samples into chunks of [`CHUNK_SAMPLES`], across any byte split.
#[derive(Debug, Default)]
struct Chunker {
    samples: Vec<i16>,
    odd: Option<u8>,
}

impl Chunker {
    /// Adds bytes; returns full chunks through `out`.
    fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Vec<i16>>) {
        if let (Some(lo), Some((&hi, rest))) = (self.odd, bytes.split_first()) {
            self.odd = None;
            self.add(i16::from_le_bytes([lo, hi]), out);
            bytes = rest;
        }
        let mut pairs = bytes.chunks_exact(2);
        for pair in &mut pairs {
            self.add(i16::from_le_bytes([pair[0], pair[1]]), out);
        }
        if let [last] = pairs.remainder() {
            self.odd = Some(*last);
        }
    }

    fn add(&mut self, sample: i16, out: &mut Vec<Vec<i16>>) {
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(CHUNK_SAMPLES);
        }
        self.samples.push(sample);
        if self.samples.len() == CHUNK_SAMPLES {
            out.push(std::mem::take(&mut self.samples));
        }
    }

    /// The last, shorter chunk (a dangling odd byte is dropped).
    fn finish(self) -> Option<Vec<i16>> {
        (!self.samples.is_empty()).then_some(self.samples)
    }
}

async fn run(
    inner: &Inner,
    text: String,
    tx: &tokio::sync::mpsc::Sender<TtsEvent>,
) -> Result<(), ProviderError> {
    let provider = inner.name.as_str();
    let config = &inner.config;
    let mut clock = JobClock::start(config);
    let mut http = inner
        .client
        .post(config.endpoint("/v1/audio/speech"))
        .headers(config.header_map(provider)?)
        .json(&Body {
            model: &config.model,
            input: &text,
            voice: &inner.voice,
            response_format: "pcm",
        });
    if let Some(key) = &config.api_key {
        http = http.bearer_auth(key);
    }
    let mut response = clock
        .within(provider, super::send(provider, http, config.timeout))
        .await??;
    let mut chunker = Chunker::default();
    let mut ready = Vec::new();
    let mut text = Some(text);
    let send = async |samples: Vec<i16>, text: &mut Option<String>| {
        let chunk = SpeechChunk {
            samples,
            text: text.take().unwrap_or_default(),
        };
        tx.send(TtsEvent::Audio(chunk)).await.is_ok()
    };
    while let Some(bytes) = clock.chunk(provider, &mut response).await? {
        if !bytes.is_empty() {
            clock.first_output();
        }
        chunker.push(&bytes, &mut ready);
        for samples in ready.drain(..) {
            if !send(samples, &mut text).await {
                return Ok(());
            }
        }
    }
    if let Some(samples) = chunker.finish()
        && !send(samples, &mut text).await
    {
        return Ok(());
    }
    let _ = tx.send(TtsEvent::Done).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_survive_odd_byte_splits() {
        let samples: Vec<i16> = (0..5_000).map(|i| (i * 7 - 9_000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut chunker = Chunker::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(333) {
            chunker.push(piece, &mut out);
        }
        out.extend(chunker.finish());
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [CHUNK_SAMPLES, CHUNK_SAMPLES, 200]
        );
        assert_eq!(out.concat(), samples);
    }
}
