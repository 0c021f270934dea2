//! Silero VAD finds speech in recorded speech and none in silence or faint noise.

use dartmouth_models::ModelStore;
use dartmouth_voice::vad::{SileroVad, VadConfig, speech_segments};

const LIBRIVOX: &str =
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav";

fn read_wav_16k(path: &str) -> Vec<f32> {
    let mut reader =
        hound::WavReader::open(path).expect("pocketsphinx-testdata is installed (make setup)");
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels), (16_000, 1), "{path}");
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

fn vad() -> SileroVad {
    SileroVad::load(&ModelStore::from_env()).expect("Silero VAD is provisioned: run `make models`")
}

#[test]
fn recorded_speech_is_found_and_covers_most_of_the_clip() {
    let mut clip = vec![0.0f32; 16_000];
    clip.extend(read_wav_16k(LIBRIVOX));
    clip.extend(vec![0.0f32; 16_000]);
    let segments = speech_segments(&mut vad(), VadConfig::default(), &clip).unwrap();
    assert!(!segments.is_empty(), "speech found");
    let first_start = segments[0].0;
    let last_end = segments.last().unwrap().1;
    // One second of leading silence: the onset comes after it, within the first half second of speech.
    assert!(
        (14_000..24_000).contains(&first_start),
        "onset at sample {first_start}"
    );
    // The trailing second of silence is not speech.
    assert!(
        last_end <= clip.len() as u64 - 8_000,
        "end at {last_end} of {}",
        clip.len()
    );
    let speech: u64 = segments.iter().map(|(s, e)| e - s).sum();
    let spoken = (clip.len() - 32_000) as f64;
    assert!(
        speech as f64 > 0.6 * spoken,
        "{speech} of {spoken} samples marked speech"
    );
}

#[test]
fn silence_and_faint_noise_have_no_speech() {
    let mut vad = vad();
    let silence = vec![0.0f32; 48_000];
    assert!(
        speech_segments(&mut vad, VadConfig::default(), &silence)
            .unwrap()
            .is_empty()
    );
    // Deterministic faint white noise (about -50 dBFS).
    let mut seed = 0x2545_f491_u32;
    let noise: Vec<f32> = (0..48_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32 - 0.5) * 0.006
        })
        .collect();
    assert!(
        speech_segments(&mut vad, VadConfig::default(), &noise)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_chunk_of_the_wrong_size_is_an_error_not_a_panic() {
    let mut vad = vad();
    assert!(vad.probability(&[0.0; 100]).is_err());
    assert!(
        vad.probability(&[0.0; 512]).is_ok(),
        "the session keeps working"
    );
}
