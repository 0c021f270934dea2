//! Helpers shared by the model tests: WAV loading, the LibriVox reference clips, resampling and
//! simple signal measures.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Where Debian's `pocketsphinx-testdata` puts the LibriVox clips.
pub const LIBRIVOX_DIR: &str = "/usr/share/pocketsphinx/test/data/librivox";

/// One LibriVox clip and what is said in it.
#[derive(Debug, Clone)]
pub struct Clip {
    /// File id, e.g. `sense_and_sensibility_01_austen_64kb-0870`.
    pub id: String,
    /// The WAV file (16 kHz mono).
    pub wav: PathBuf,
    /// The reference transcript, lower case, without `<s>`/`</s>` markers.
    pub reference: String,
}

/// The LibriVox clips listed in `transcription` (lines `<s> text </s> (fileid)`), in file order.
/// Panics with a hint when `pocketsphinx-testdata` is not installed.
pub fn librivox_clips() -> Vec<Clip> {
    let dir = Path::new(LIBRIVOX_DIR);
    let listing = std::fs::read_to_string(dir.join("transcription")).unwrap_or_else(|e| {
        panic!("{LIBRIVOX_DIR}/transcription: {e} (apt-get install pocketsphinx-testdata)")
    });
    listing
        .lines()
        .filter_map(|line| parse_transcription_line(dir, line))
        .collect()
}

fn parse_transcription_line(dir: &Path, line: &str) -> Option<Clip> {
    let line = line.trim();
    let open = line.rfind('(')?;
    let id = line[open + 1..].strip_suffix(')')?.trim().to_string();
    let reference = line[..open]
        .split_whitespace()
        .filter(|w| *w != "<s>" && *w != "</s>")
        .collect::<Vec<_>>()
        .join(" ");
    Some(Clip {
        wav: dir.join(format!("{id}.wav")),
        id,
        reference,
    })
}

/// Reads a 16-bit PCM WAV file as mono f32 samples in [-1, 1] (channels averaged) and its rate.
pub fn read_wav(path: &Path) -> (Vec<f32>, u32) {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(
        spec.bits_per_sample,
        16,
        "{}: only 16-bit PCM is supported",
        path.display()
    );
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("readable sample"))
        .collect();
    let mono = samples
        .chunks(channels)
        .map(|frame| frame.iter().map(|&s| f32::from(s) / 32768.0).sum::<f32>() / channels as f32)
        .collect();
    (mono, spec.sample_rate)
}

/// 16-bit PCM to f32 in [-1, 1].
pub fn i16_to_f32(pcm: &[i16]) -> Vec<f32> {
    pcm.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

/// Root-mean-square level of 16-bit PCM, in full-scale units (0 = digital silence).
pub fn rms_i16(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (f64::from(s) / 32768.0).powi(2)).sum();
    (sum / pcm.len() as f64).sqrt()
}

/// Band-limited resampling with a Hann-windowed sinc (32 zero crossings each side), low-passed
/// at the lower of the two Nyquist frequencies. Slow but exact enough for tests.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if from_hz == to_hz || input.is_empty() {
        return input.to_vec();
    }
    const HALF_TAPS: f64 = 32.0;
    let ratio = f64::from(to_hz) / f64::from(from_hz);
    let cutoff = ratio.min(1.0) * 0.97; // fraction of the input Nyquist
    let half_width = HALF_TAPS / cutoff; // in input samples
    let out_len = (input.len() as f64 * ratio).round() as usize;
    (0..out_len)
        .map(|n| {
            let center = n as f64 / ratio;
            let first = (center - half_width).ceil().max(0.0) as usize;
            let last = ((center + half_width).floor() as usize).min(input.len() - 1);
            let mut acc = 0.0;
            for (k, &x) in input.iter().enumerate().take(last + 1).skip(first) {
                let t = k as f64 - center;
                let window = 0.5 + 0.5 * (std::f64::consts::PI * t / half_width).cos();
                acc += f64::from(x) * cutoff * sinc(cutoff * t) * window;
            }
            acc as f32
        })
        .collect()
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

#[test]
fn transcription_lines_parse_without_sentence_markers() {
    let clip =
        parse_transcription_line(Path::new("/d"), "<s> he was not </s> (clip-0880)").unwrap();
    assert_eq!(clip.id, "clip-0880");
    assert_eq!(clip.reference, "he was not");
    assert_eq!(clip.wav, PathBuf::from("/d/clip-0880.wav"));
}

#[test]
fn resampling_keeps_a_tone_and_its_length() {
    let tone: Vec<f32> = (0..22_050)
        .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 22_050.0).sin() * 0.5)
        .collect();
    let out = resample(&tone, 22_050, 16_000);
    assert_eq!(out.len(), 16_000);
    let rms = (out[1000..15_000].iter().map(|x| x * x).sum::<f32>() / 14_000.0).sqrt();
    assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.01, "rms {rms}");
}
