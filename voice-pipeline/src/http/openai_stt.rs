//! OpenAI-compatible transcription (`POST /v1/audio/transcriptions`): the utterance is uploaded
//! as a 16-bit mono WAV built in memory, in a `multipart/form-data` body with the fields `model`,
//! `response_format=json`, optional `language`, and `file`; the answer `{"text": …}` becomes one
//! [`SttEvent::Final`] (trimmed). The whole job is bounded by the configuration's `timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{HttpProviderConfig, JobClock, invalid_response, spawn_job};
use crate::provider::{
    CancellationToken, EventStream, ProviderError, Stt, SttEvent, SttRequest, event_channel,
};

/// Sample rate of the audio the pipeline transcribes (and of the uploaded WAV).
pub const STT_SAMPLE_RATE: u32 = 16_000;

/// An OpenAI-compatible speech-to-text service (OpenAI, faster-whisper servers, whisper.cpp's).
#[derive(Debug, Clone)]
pub struct OpenAiStt {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    name: String,
    config: HttpProviderConfig,
    client: reqwest::Client,
    language: Option<String>,
}

impl OpenAiStt {
    /// A provider named `openai-stt` with its own HTTP client.
    pub fn new(config: HttpProviderConfig) -> Result<Self, ProviderError> {
        let client = super::http_client(&config)?;
        Ok(Self::with_client(config, client))
    }

    /// A provider sharing `client` (and its connection pool) with others.
    pub fn with_client(config: HttpProviderConfig, client: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: "openai-stt".to_string(),
                config,
                client,
                language: None,
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

    /// Tells the service the spoken language (ISO 639-1, e.g. `en`) instead of detecting it.
    pub fn with_language(self, language: impl Into<String>) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.language = Some(language.into());
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl Stt for OpenAiStt {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn transcribe(&self, request: SttRequest, cancel: CancellationToken) -> EventStream<SttEvent> {
        let audio_16k = request.audio;
        let (tx, rx) = event_channel();
        let inner = Arc::clone(&self.inner);
        let job_tx = tx.clone();
        spawn_job(
            &self.inner.name,
            tx,
            cancel,
            async move {
                let text = run(&inner, &audio_16k).await?;
                let _ = job_tx.send(SttEvent::Final(text)).await;
                Ok(())
            },
            SttEvent::Error,
        );
        rx
    }
}

/// A 16-bit PCM mono WAV file of `samples` (clamped to [-1, 1]) at `sample_rate`.
pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A boundary unlikely to occur in the parts: a fixed prefix, the process id, the time and a
/// counter (the multipart rules need no secrecy, only absence from the content).
fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("----dartmouth-{:x}-{nanos:x}-{n:x}", std::process::id())
}

/// The `multipart/form-data` body: text fields, then the WAV as `file`.
fn multipart(boundary: &str, fields: &[(&str, &str)], wav: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(wav.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.wav\"\r\n\
             Content-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(wav);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[derive(serde::Deserialize)]
struct Transcription {
    text: String,
}

async fn run(inner: &Inner, audio: &[f32]) -> Result<String, ProviderError> {
    let provider = inner.name.as_str();
    let config = &inner.config;
    // The upload has no first token: the whole job gets the overall bound.
    let mut clock = JobClock::start(config);
    clock.first_output();
    let boundary = boundary();
    let mut fields = vec![
        ("model", config.model.as_str()),
        ("response_format", "json"),
    ];
    if let Some(language) = &inner.language {
        fields.push(("language", language.as_str()));
    }
    let body = multipart(&boundary, &fields, &wav_bytes(audio, STT_SAMPLE_RATE));
    let mut http = inner
        .client
        .post(config.endpoint("/v1/audio/transcriptions"))
        .headers(config.header_map(provider)?)
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    if let Some(key) = &config.api_key {
        http = http.bearer_auth(key);
    }
    let mut response = clock
        .within(provider, super::send(provider, http, config.timeout))
        .await??;
    let mut bytes = Vec::new();
    while let Some(chunk) = clock.chunk(provider, &mut response).await? {
        if bytes.len() + chunk.len() > super::MAX_ERROR_BODY * 16 {
            return Err(invalid_response(provider, "transcription too large"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let answer: Transcription = serde_json::from_slice(&bytes).map_err(|e| {
        invalid_response(
            provider,
            format!("transcription is not JSON with text: {e}"),
        )
    })?;
    Ok(answer.text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_and_samples() {
        let wav = wav_bytes(&[0.0, 1.0, -1.0, 2.0], 16_000);
        assert_eq!(wav.len(), 44 + 8);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 8);
        let s: Vec<i16> = wav[44..]
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(s, [0, i16::MAX, -i16::MAX, i16::MAX]);
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(boundary(), boundary());
    }
}
