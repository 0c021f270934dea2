//! # dartmouth-tests
//!
//! Cross-crate end-to-end scenarios, one file per behaviour under `tests/`, sharing the harness in
//! this library: a gateway on loopback ports ([`TestGateway`]), a real WebRTC client built on
//! str0m that speaks a WAV and records what it hears ([`RtcClient`]), and speech fixtures.

pub mod bench;
pub mod client;
pub mod gateway;

pub use client::{Call, CallOptions, RtcClient};
pub use gateway::TestGateway;

use std::path::Path;

/// Synthesises `text` with espeak-ng into 48 kHz mono samples (None if espeak-ng is missing).
pub fn speak_48k(text: &str) -> Option<Vec<i16>> {
    let dir = std::env::temp_dir().join(format!("dartmouth-speech-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let wav = dir.join(format!("{:x}.wav", fxhash(text)));
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let (samples, rate) = read_wav_i16(&wav)?;
    let floats: Vec<f32> = samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
    let resampled = dartmouth_voice::resample::resample_all(&floats, rate, 48_000).ok()?;
    Some(
        resampled
            .iter()
            .map(|s| dartmouth_voice::frame::f32_to_i16(*s))
            .collect(),
    )
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
