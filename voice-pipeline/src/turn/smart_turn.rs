//! Smart Turn v3.2 on ONNX Runtime: "has the person finished speaking?" from the audio alone.
//!
//! Preprocessing, as the model was trained: keep the last 8 s of 16 kHz audio (shorter audio is
//! padded with zeros at the *start*, so the speech stays at the end), normalise that window to
//! zero mean and unit variance (padding included), then Whisper's 80-band log-mel features
//! (`[1, 80, 800]`). The graph ends in a sigmoid: its single output (named `logits`, shape
//! `[B, 1]`) is already the probability that the turn is complete.

use ndarray::Array3;
use ort::session::Session;
use ort::value::TensorRef;

use dartmouth_models::{Asset, ModelStore};

use super::features::LogMelFrontend;
use super::{TurnError, TurnModel};

/// Samples the model looks at: the last 8 s at 16 kHz.
pub const SMART_TURN_SAMPLES: usize = 8 * 16_000;
/// Mel bands of the model's input.
const N_MELS: usize = 80;
/// Frames of the model's input (8 s at a 10 ms hop).
const N_FRAMES: usize = SMART_TURN_SAMPLES / dartmouth_models::mel::HOP_LENGTH;
/// Added to the variance before dividing, so digital silence stays finite.
const VARIANCE_EPSILON: f64 = 1e-7;
/// Intra-op threads of the default session: one, since many sessions share the machine and a
/// call is rare (once per pause in speech).
const DEFAULT_THREADS: usize = 1;

/// The Smart Turn v3.2 model with its input buffers, allocated once at load.
pub struct SmartTurn {
    session: Session,
    frontend: LogMelFrontend,
    /// The normalised 8 s window.
    window: Vec<f32>,
    /// `[1, 80, 800]` model input.
    features: Array3<f32>,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn").finish_non_exhaustive()
    }
}

impl SmartTurn {
    /// Loads the model from the store with one inference thread.
    pub fn load(store: &ModelStore) -> Result<Self, TurnError> {
        Self::load_with_threads(store, DEFAULT_THREADS)
    }

    /// Loads the model from the store with `threads` intra-op threads.
    pub fn load_with_threads(store: &ModelStore, threads: usize) -> Result<Self, TurnError> {
        let path = store.require(Asset::SmartTurn)?;
        let session = dartmouth_models::onnx::session(store, &path, threads.max(1))?;
        Ok(Self {
            session,
            frontend: LogMelFrontend::new(N_MELS),
            window: vec![0.0; SMART_TURN_SAMPLES],
            features: Array3::zeros((1, N_MELS, N_FRAMES)),
        })
    }

    /// Probability that the utterance is a complete turn, judged on its last 8 s.
    pub fn predict(&mut self, audio_16k: &[f32]) -> Result<f32, TurnError> {
        let mut out = [0.0];
        self.predict_batch(&[audio_16k], &mut out)?;
        Ok(out[0])
    }

    /// [`SmartTurn::predict`] for several utterances in one model call: `out[i]` receives the
    /// probability for `utterances[i]`. The feature buffer grows to the largest batch seen.
    pub fn predict_batch(
        &mut self,
        utterances: &[&[f32]],
        out: &mut [f32],
    ) -> Result<(), TurnError> {
        let n = utterances.len();
        if n == 0 {
            return Ok(());
        }
        if out.len() < n {
            return Err(TurnError::Inference(format!(
                "{n} utterances but room for {} probabilities",
                out.len()
            )));
        }
        if self.features.shape()[0] != n {
            self.features = Array3::zeros((n, N_MELS, N_FRAMES));
        }
        for (i, audio) in utterances.iter().enumerate() {
            self.prepare(audio, i)?;
        }
        let fail = |e: ort::Error| TurnError::Inference(e.to_string());
        let outputs = self
            .session
            .run(ort::inputs![
                "input_features" => TensorRef::from_array_view(&self.features).map_err(fail)?,
            ])
            .map_err(fail)?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        if values.len() < n {
            return Err(TurnError::Inference(format!(
                "{} outputs for {n} utterances",
                values.len()
            )));
        }
        for (slot, &probability) in out.iter_mut().zip(&values[..n]) {
            if !probability.is_finite() {
                return Err(TurnError::Inference(format!(
                    "probability is {probability}"
                )));
            }
            *slot = probability.clamp(0.0, 1.0);
        }
        Ok(())
    }

    /// The model input for `audio_16k` (`[1, 80, 800]`), as [`SmartTurn::predict`] computes it.
    pub fn features(&mut self, audio_16k: &[f32]) -> Result<&Array3<f32>, TurnError> {
        if self.features.shape()[0] != 1 {
            self.features = Array3::zeros((1, N_MELS, N_FRAMES));
        }
        self.prepare(audio_16k, 0)?;
        Ok(&self.features)
    }

    /// Fills the window (last 8 s, zeros in front), normalises it and computes the features
    /// into row `row` of the model input.
    fn prepare(&mut self, audio_16k: &[f32], row: usize) -> Result<(), TurnError> {
        let tail = &audio_16k[audio_16k.len().saturating_sub(SMART_TURN_SAMPLES)..];
        let pad = SMART_TURN_SAMPLES - tail.len();
        self.window[..pad].fill(0.0);
        self.window[pad..].copy_from_slice(tail);
        normalise(&mut self.window);
        let out = self
            .features
            .as_slice_mut()
            .ok_or_else(|| TurnError::Features("feature buffer is not contiguous".into()))?;
        self.frontend.compute(
            &self.window,
            &mut out[row * N_MELS * N_FRAMES..][..N_MELS * N_FRAMES],
        )
    }
}

impl TurnModel for SmartTurn {
    fn predict(&mut self, audio_16k: &[f32]) -> Result<f32, TurnError> {
        SmartTurn::predict(self, audio_16k)
    }

    fn predict_batch(&mut self, utterances: &[&[f32]], out: &mut Vec<Result<f32, TurnError>>) {
        let mut probabilities = vec![0.0; utterances.len()];
        match SmartTurn::predict_batch(self, utterances, &mut probabilities) {
            Ok(()) => out.extend(probabilities.into_iter().map(Ok)),
            Err(error) => {
                let message = error.to_string();
                out.extend(
                    utterances
                        .iter()
                        .map(|_| Err(TurnError::Inference(message.clone()))),
                );
            }
        }
    }
}

/// Zero mean, unit variance (population variance plus a small epsilon).
fn normalise(samples: &mut [f32]) {
    if samples.is_empty() {
        return;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let variance = samples
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = 1.0 / (variance + VARIANCE_EPSILON).sqrt();
    for s in samples.iter_mut() {
        *s = ((f64::from(*s) - mean) * scale) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_gives_zero_mean_and_unit_variance() {
        let mut x: Vec<f32> = (0..1000).map(|n| (n % 7) as f32 * 0.1 + 0.3).collect();
        normalise(&mut x);
        let mean = x.iter().sum::<f32>() / 1000.0;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 1000.0;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
        let mut silence = vec![0.0f32; 10];
        normalise(&mut silence);
        assert!(silence.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn input_shape_matches_the_model() {
        assert_eq!(N_FRAMES, 800);
        assert_eq!(LogMelFrontend::frames_for(SMART_TURN_SAMPLES), N_FRAMES);
    }
}
