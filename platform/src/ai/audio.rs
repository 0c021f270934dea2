//! The other OpenAI-compatible endpoints: transcriptions (WAV upload), speech (WAV or PCM),
//! embeddings (MiniLM), moderations (the content filter), and the model list.

use super::chat::caller;
use super::types::{EmbeddingRequest, ModerationRequest, SpeechRequest, input_strings};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

/// Most inputs in one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Longest embedding input, in characters.
const MAX_EMBEDDING_CHARS: usize = 32_000;
/// Rate of `pcm` speech output (OpenAI's).
const PCM_RATE: u32 = 24_000;
/// Longest recording transcribed, in seconds.
const MAX_AUDIO_SECS: usize = 600;

/// Linear resampling of mono samples (speech only needs the band below 8 kHz).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let ratio = f64::from(from) / f64::from(to);
    let len = (samples.len() as f64 / ratio).floor() as usize;
    (0..len)
        .map(|i| {
            let pos = i as f64 * ratio;
            let j = pos as usize;
            let frac = (pos - j as f64) as f32;
            let a = samples[j];
            let b = samples.get(j + 1).copied().unwrap_or(a);
            a + (b - a) * frac
        })
        .collect()
}

/// A WAV file as 16 kHz mono samples in [-1, 1].
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a WAV file: {e}"))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    if spec.sample_rate < 8_000 || spec.sample_rate > 192_000 {
        return Err(format!("unsupported sample rate {}", spec.sample_rate));
    }
    if reader.duration() as usize > MAX_AUDIO_SECS * spec.sample_rate as usize {
        return Err(format!(
            "recordings longer than {MAX_AUDIO_SECS} s are not accepted"
        ));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample.clamp(8, 32) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
        }
    }
    .map_err(|e| format!("unreadable WAV samples: {e}"))?;
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    Ok(resample(&mono, spec.sample_rate, 16_000))
}

fn wav_bytes(samples: &[i16], rate: u32) -> Result<Vec<u8>, ApiError> {
    let mut out = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::new(&mut out, spec).map_err(ApiError::internal)?;
    for s in samples {
        writer.write_sample(*s).map_err(ApiError::internal)?;
    }
    writer.finalize().map_err(ApiError::internal)?;
    Ok(out.into_inner())
}

/// Transcribe a WAV recording (OpenAI-compatible multipart: `file`, `model`, `response_format`).
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "ai", security(("bearer" = [])),
    request_body(content = String, content_type = "multipart/form-data", description = "file (WAV), model, response_format (json, text, verbose_json)"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn transcriptions(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &principal, &headers).await?;
    let backend = state
        .ai
        .backends
        .transcribe
        .clone()
        .ok_or_else(|| ApiError::unavailable("no speech-to-text model is loaded"))?;
    let mut file = None;
    let mut format = "json".to_string();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?
    {
        match field.name().unwrap_or_default() {
            "file" => {
                file = Some(
                    field
                        .bytes()
                        .await
                        .map_err(|e| ApiError::payload_too_large(format!("file: {e}")))?,
                )
            }
            "response_format" => {
                format = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            _ => {
                // model, language, prompt, temperature: accepted, not needed.
                let _ = field.bytes().await;
            }
        }
    }
    let file = file
        .ok_or_else(|| ApiError::bad_request("the form needs a `file` field (a WAV recording)"))?;
    if !matches!(format.as_str(), "json" | "text" | "verbose_json") {
        return Err(ApiError::bad_request(
            "response_format: json, text or verbose_json",
        ));
    }
    let audio = decode_wav(&file)
        .map_err(|e| ApiError::bad_request(format!("file: {e} (send a WAV file)")))?;
    let seconds = audio.len() as f64 / 16_000.0;
    let text = backend
        .transcribe(audio)
        .await
        .map_err(ApiError::bad_gateway)?;
    state
        .audit(
            &caller.actor,
            "ai.transcribe",
            &format!("agent:{}", caller.agent),
            "ok",
            &format!("{seconds:.1} s"),
        )
        .await;
    Ok(match format.as_str() {
        "text" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        "verbose_json" => Json(json!({
            "task": "transcribe", "language": "english", "duration": seconds, "text": text,
            "segments": [{"id": 0, "start": 0.0, "end": seconds, "text": text}],
        }))
        .into_response(),
        _ => Json(json!({"text": text})).into_response(),
    })
}

/// Speak a text (OpenAI-compatible; `wav` by default, or `pcm`: 24 kHz s16le mono).
#[utoipa::path(post, path = "/v1/audio/speech", tag = "ai", security(("bearer" = [])),
    request_body = SpeechRequest,
    responses((status = 200, content_type = "audio/wav", body = String), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn speech(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(request): Json<SpeechRequest>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &principal, &headers).await?;
    let backend = state
        .ai
        .backends
        .speech
        .clone()
        .ok_or_else(|| ApiError::unavailable("no text-to-speech model is loaded"))?;
    let chars = request.input.chars().count();
    if request.input.trim().is_empty() || chars > state.config.ai.max_speech_chars {
        return Err(ApiError::bad_request(format!(
            "input: 1-{} characters",
            state.config.ai.max_speech_chars
        )));
    }
    let format = request
        .response_format
        .clone()
        .unwrap_or_else(|| "wav".into());
    if !matches!(format.as_str(), "wav" | "pcm") {
        return Err(ApiError::bad_request(format!(
            "response_format {format:?} is not supported; use wav or pcm"
        )));
    }
    if request.speed.is_some_and(|s| (s - 1.0).abs() > 1e-6) {
        return Err(ApiError::bad_request("only speed 1.0 is supported"));
    }
    let voices = backend.voices();
    // OpenAI voice names (alloy, nova …) map onto the default voice.
    let voice = if voices.contains(&request.voice) {
        request.voice.clone()
    } else {
        voices.first().cloned().unwrap_or_default()
    };
    let speech = backend
        .synthesize(request.input.clone(), voice)
        .await
        .map_err(ApiError::bad_gateway)?;
    state
        .audit(
            &caller.actor,
            "ai.speech",
            &format!("agent:{}", caller.agent),
            "ok",
            &format!("{chars} characters"),
        )
        .await;
    Ok(match format.as_str() {
        "pcm" => {
            let floats: Vec<f32> = speech
                .samples
                .iter()
                .map(|s| f32::from(*s) / 32768.0)
                .collect();
            let bytes: Vec<u8> = resample(&floats, speech.sample_rate, PCM_RATE)
                .iter()
                .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
                .collect();
            ([(header::CONTENT_TYPE, "audio/pcm")], bytes).into_response()
        }
        _ => (
            [(header::CONTENT_TYPE, "audio/wav")],
            wav_bytes(&speech.samples, speech.sample_rate)?,
        )
            .into_response(),
    })
}

/// Embed texts with MiniLM (OpenAI-compatible; `encoding_format` float or base64).
#[utoipa::path(post, path = "/v1/embeddings", tag = "ai", security(("bearer" = [])),
    request_body = EmbeddingRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(request): Json<EmbeddingRequest>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &principal, &headers).await?;
    let texts = input_strings(&request.input, MAX_EMBEDDING_INPUTS)?;
    if texts
        .iter()
        .any(|t| t.chars().count() > MAX_EMBEDDING_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "each input: at most {MAX_EMBEDDING_CHARS} characters"
        )));
    }
    if request
        .dimensions
        .is_some_and(|d| d != crate::embed::EMBEDDING_DIM)
    {
        return Err(ApiError::bad_request(format!(
            "dimensions: only {}",
            crate::embed::EMBEDDING_DIM
        )));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format {other:?}: float or base64"
            )));
        }
    };
    let tokens: u64 = texts
        .iter()
        .map(|t| (t.chars().count() as u64).div_ceil(4))
        .sum();
    let vectors = state.embedder()?.embed(texts).await?;
    crate::cost::record(
        &state,
        crate::cost::UsageRecord {
            agent: caller.agent,
            user: caller.user,
            provider: super::EMBEDDED.into(),
            model: crate::embed::MODEL_NAME.into(),
            usage: super::Usage {
                prompt_tokens: tokens,
                completion_tokens: 0,
            },
            cached: false,
        },
    )
    .await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "data": data, "model": crate::embed::MODEL_NAME,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// Classify texts with the content filter (OpenAI-compatible moderation results).
#[utoipa::path(post, path = "/v1/moderations", tag = "ai", security(("bearer" = [])),
    request_body = ModerationRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn moderations(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(request): Json<ModerationRequest>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &principal, &headers).await?;
    let texts = input_strings(&request.input, 32)?;
    let mut results = Vec::with_capacity(texts.len());
    for text in &texts {
        let verdict = state.filter.check(&state, text).await?;
        results.push(crate::filter::moderation_result(&verdict));
    }
    Ok(Json(json!({
        "id": format!("modr-{}", uuid::Uuid::new_v4().simple()),
        "model": "dartmouth-filter",
        "results": results,
    })))
}

/// The models this sidecar answers with (OpenAI-compatible).
#[utoipa::path(get, path = "/v1/models", tag = "ai", security(("bearer" = [])),
    responses((status = 200, body = Object)))]
pub(crate) async fn models(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &principal, &headers).await?;
    let mut ids: Vec<String> = Vec::new();
    if let Some(chat) = &state.ai.backends.chat {
        ids.push(chat.model().into());
    }
    for remote in state.ai.remotes.values() {
        ids.extend(remote.config.models.iter().cloned());
    }
    if state.embedder.is_some() {
        ids.push(crate::embed::MODEL_NAME.into());
    }
    ids.dedup();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "dartmouth"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trip_resamples_to_16k_mono() {
        let samples: Vec<i16> = (0..22_050)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let bytes = wav_bytes(&samples, 22_050).unwrap();
        let decoded = decode_wav(&bytes).unwrap();
        assert!(
            (decoded.len() as i64 - 16_000).abs() <= 1,
            "{}",
            decoded.len()
        );
        assert!(decode_wav(b"RIFF nonsense").is_err());
    }
}
