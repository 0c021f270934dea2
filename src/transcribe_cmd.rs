//! `dartmouth transcribe`: speech to text on a WAV file with the embedded recogniser (used by
//! the interop tests to check what a client heard).

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use dartmouth_models::ModelStore;
use dartmouth_voice::embedded::MoonshineProvider;
use dartmouth_voice::frame::i16_to_f32;
use dartmouth_voice::provider::{CancellationToken, Stt, SttEvent, SttRequest};
use dartmouth_voice::resample::resample_all;

/// Longest piece handed to the recogniser at once, in seconds.
const PIECE_SECONDS: usize = 25;
/// The recogniser's rate.
const STT_RATE: u32 = 16_000;

/// Prints the transcript of a WAV file on standard output.
pub fn transcribe(store: &ModelStore, input: &Path) -> anyhow::Result<()> {
    let (samples, rate) = crate::voice_cmd::read_wav_mono(input)?;
    // Half a second of trailing silence: Moonshine repeats the last word of audio that stops
    // abruptly (recordings of an agent's answer do).
    let floats: Vec<f32> = samples
        .iter()
        .copied()
        .map(i16_to_f32)
        .chain(std::iter::repeat_n(0.0, rate as usize / 2))
        .collect();
    let audio = resample_all(&floats, rate, STT_RATE)?;
    let stt = MoonshineProvider::load(store)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut words = Vec::new();
    for piece in audio.chunks(PIECE_SECONDS * STT_RATE as usize) {
        let piece: Arc<[f32]> = Arc::from(piece);
        let text = runtime.block_on(async {
            let mut stream = stt.transcribe(SttRequest::new(piece), CancellationToken::new());
            while let Some(event) = stream.recv().await {
                match event {
                    SttEvent::Final(text) => return Ok(text),
                    SttEvent::Error(e) => bail!("{e}"),
                    SttEvent::Partial(_) => {}
                }
            }
            Ok(String::new())
        })?;
        if !text.trim().is_empty() {
            words.push(text.trim().to_string());
        }
    }
    println!("{}", words.join(" "));
    Ok(())
}
