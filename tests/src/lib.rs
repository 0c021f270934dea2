//! # dartmouth-tests
//!
//! Cross-crate end-to-end scenarios, one file per behaviour under `tests/`, sharing the harness in
//! this library: a gateway on loopback ports ([`TestGateway`]), a real WebRTC client built on
//! str0m that speaks a WAV and records what it hears ([`RtcClient`]), and speech fixtures.

pub mod bench;
pub mod bench_janus;
pub mod bench_load;
pub mod bench_remote;
pub mod bench_sfu;
pub mod client;
pub mod gateway;
pub mod impair;
pub mod mock_openai;
pub mod processes;
pub mod remote_caller;
pub mod remote_report;
pub mod sip;
pub mod sip_bench;
pub mod soak;

pub use client::{Call, CallOptions, RtcClient};
pub use gateway::TestGateway;

use std::path::Path;

/// Synthesises `text` with espeak-ng into 48 kHz mono samples (None if espeak-ng is missing).
pub fn speak_48k(text: &str) -> Option<Vec<i16>> {
    let dir = std::env::temp_dir().join(format!("dartmouth-speech-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    // One file per call: tests of one process speaking the same text at once must not read
    // each other's half-written file (that read failed and looked like a missing espeak-ng).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wav = dir.join(format!("{:x}-{call}.wav", fxhash(text)));
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let read = read_wav_i16(&wav);
    let _ = std::fs::remove_file(&wav);
    let (samples, rate) = read?;
    let floats: Vec<f32> = samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
    let resampled = dartmouth_voice::resample::resample_all(&floats, rate, 48_000).ok()?;
    Some(
        resampled
            .iter()
            .map(|s| dartmouth_voice::frame::f32_to_i16(*s))
            .collect(),
    )
}

/// What `stt` hears in 48 kHz mono audio a client received (in 25 s pieces, with half a second
/// of silence added: Moonshine repeats the last word of audio that stops abruptly).
pub async fn transcribe_48k(stt: &dyn dartmouth_voice::provider::Stt, heard: &[i16]) -> String {
    use dartmouth_voice::provider::{CancellationToken, SttEvent, SttRequest};
    let floats: Vec<f32> = heard
        .iter()
        .map(|s| f32::from(*s) / 32768.0)
        .chain(std::iter::repeat_n(0.0, 24_000))
        .collect();
    let Ok(audio) = dartmouth_voice::resample::resample_all(&floats, 48_000, 16_000) else {
        return String::new();
    };
    let mut words = String::new();
    for piece in audio.chunks(16_000 * 25) {
        let mut stream = stt.transcribe(SttRequest::new(piece), CancellationToken::new());
        while let Some(event) = stream.recv().await {
            if let SttEvent::Final(text) = event {
                words.push_str(text.trim());
                words.push(' ');
            }
        }
    }
    words.trim().to_string()
}

/// What `stt` hears when `tts` says `text` directly (no network, no pipeline), in the chunks an
/// agent speaks it in: the reference an answer heard over a call is compared with, so the
/// recogniser's own mistakes on a voice cancel out and what is left measures the call.
pub async fn spoken_reference(
    tts: &dyn dartmouth_voice::provider::Tts,
    stt: &dyn dartmouth_voice::provider::Stt,
    text: &str,
) -> String {
    use dartmouth_voice::chunker::SentenceChunker;
    use dartmouth_voice::provider::{CancellationToken, TtsEvent, TtsRequest};
    let mut chunker = SentenceChunker::new();
    let mut chunks = chunker.push(text);
    chunks.extend(chunker.finish());
    let mut samples = Vec::new();
    for chunk in chunks {
        let mut stream = tts.synthesize(TtsRequest::new(chunk), CancellationToken::new());
        while let Some(event) = stream.recv().await {
            if let TtsEvent::Audio(chunk) = event {
                samples.extend(chunk.samples.iter().map(|s| f32::from(*s) / 32768.0));
            }
        }
    }
    let Ok(at_48k) = dartmouth_voice::resample::resample_all(&samples, tts.sample_rate(), 48_000)
    else {
        return String::new();
    };
    let pcm: Vec<i16> = at_48k
        .iter()
        .map(|s| dartmouth_voice::frame::f32_to_i16(*s))
        .collect();
    transcribe_48k(stt, &pcm).await
}

/// Writes 48 kHz mono samples to a WAV file (for looking at what a test heard).
pub fn write_wav_48k(path: &str, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    if let Ok(mut wav) = hound::WavWriter::create(path, spec) {
        for sample in samples {
            let _ = wav.write_sample(*sample);
        }
        let _ = wav.finalize();
    }
}

/// Reads a 16-bit mono WAV.
pub fn read_wav_i16(path: &Path) -> Option<(Vec<i16>, u32)> {
    let mut reader = hound::WavReader::open(path).ok()?;
    let rate = reader.spec().sample_rate;
    let samples = reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((samples, rate))
}

/// Root-mean-square level of 16-bit samples, in [0, 1].
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|s| (f64::from(*s) / 32768.0).powi(2))
        .sum();
    (sum / samples.len() as f64).sqrt()
}

fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
