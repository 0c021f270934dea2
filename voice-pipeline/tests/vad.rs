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

const LIBRIVOX_DIR: &str = "/usr/share/pocketsphinx/test/data/librivox";

fn librivox_clips() -> Vec<Vec<f32>> {
    let mut names: Vec<_> = std::fs::read_dir(LIBRIVOX_DIR)
        .expect("pocketsphinx-testdata is installed (make setup)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| read_wav_16k(p.to_str().unwrap()))
        .collect()
}

/// Speech segments of every stream, run through one model one chunk-of-every-stream at a time.
fn batched_segments(vad: &mut SileroVad, streams: &[Vec<f32>]) -> Vec<Vec<(u64, u64)>> {
    use dartmouth_voice::vad::{CHUNK_SAMPLES, VadEvent, VadSegmenter, VadStream};
    let mut states = vec![VadStream::default(); streams.len()];
    let mut segmenters = vec![VadSegmenter::new(VadConfig::default()); streams.len()];
    let mut open = vec![None; streams.len()];
    let mut segments = vec![Vec::new(); streams.len()];
    let mut out = vec![0.0f32; streams.len()];
    let longest = streams.iter().map(Vec::len).max().unwrap_or(0) / CHUNK_SAMPLES;
    for step in 0..longest {
        // Streams of different lengths: only those with a chunk left take part.
        let active: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].len() / CHUNK_SAMPLES > step)
            .collect();
        let mut batch: Vec<(&mut VadStream, &[f32])> = Vec::new();
        let mut rest: &mut [VadStream] = &mut states;
        let mut offset = 0;
        for &i in &active {
            let (_, tail) = rest.split_at_mut(i - offset);
            let (state, tail) = tail.split_first_mut().unwrap();
            rest = tail;
            offset = i + 1;
            batch.push((state, &streams[i][step * CHUNK_SAMPLES..][..CHUNK_SAMPLES]));
        }
        vad.run_batch(batch.as_mut_slice(), &mut out).unwrap();
        for (k, &i) in active.iter().enumerate() {
            match segmenters[i].push(out[k]) {
                Some(VadEvent::SpeechStart { at_sample }) => open[i] = Some(at_sample),
                Some(VadEvent::SpeechEnd { at_sample }) => {
                    if let Some(start) = open[i].take() {
                        segments[i].push((start, at_sample));
                    }
                }
                None => {}
            }
        }
    }
    for (i, segmenter) in segmenters.iter_mut().enumerate() {
        if let (Some(VadEvent::SpeechEnd { at_sample }), Some(start)) =
            (segmenter.finish(), open[i].take())
        {
            segments[i].push((start, at_sample));
        }
    }
    segments
}

#[test]
fn batched_vad_decides_like_one_model_per_session() {
    let clips = librivox_clips();
    assert_eq!(clips.len(), 5);
    // 50 sessions, each a different stream: a clip, shifted by a different silence and scaled.
    let streams: Vec<Vec<f32>> = (0..50)
        .map(|i| {
            let mut s = vec![0.0f32; 700 * i + 3_000];
            let gain = 0.5 + (i % 7) as f32 * 0.1;
            s.extend(clips[i % clips.len()].iter().map(|x| x * gain));
            s.extend(vec![0.0f32; 16_000]);
            s
        })
        .collect();
    let mut model = vad();
    let alone: Vec<Vec<(u64, u64)>> = streams
        .iter()
        .map(|s| speech_segments(&mut model, VadConfig::default(), s).unwrap())
        .collect();
    let together = batched_segments(&mut model, &streams);
    assert!(
        alone.iter().all(|s| !s.is_empty()),
        "speech found in every stream"
    );
    assert_eq!(together, alone, "the same speech segments, batched or not");
    // The five clips themselves, batched together.
    let batched_clips = batched_segments(&mut model, &clips);
    for (clip, segments) in clips.iter().zip(batched_clips) {
        assert_eq!(
            segments,
            speech_segments(&mut model, VadConfig::default(), clip).unwrap()
        );
    }
}
