//! Voice activity detection with Silero VAD v6 on ONNX Runtime.
//!
//! [`SileroVad`] turns one 32 ms chunk of 16 kHz audio into a speech probability, carrying the
//! model's recurrent state and the 64-sample context the official pipeline prepends to every
//! chunk. [`VadSegmenter`] turns probabilities into speech start/end events with hysteresis, a
//! minimum speech duration and a minimum silence duration. Buffers are allocated once at load.

use ndarray::{Array0, Array2, Array3};
use ort::session::Session;
use ort::value::TensorRef;

use dartmouth_models::{Asset, ModelStore};

/// Sample rate the model runs at.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per chunk at 16 kHz (32 ms), the only size Silero v5/v6 accept at that rate.
pub const CHUNK_SAMPLES: usize = 512;
/// Samples of the previous chunk prepended to each chunk.
pub const CONTEXT_SAMPLES: usize = 64;
/// Width of the model's recurrent state.
const STATE_WIDTH: usize = 128;

/// What can go wrong in voice activity detection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VadError {
    /// The model could not be found or loaded.
    #[error("loading Silero VAD: {0}")]
    Load(#[from] dartmouth_models::Error),
    /// A chunk had the wrong number of samples.
    #[error("a VAD chunk must hold {CHUNK_SAMPLES} samples at 16 kHz, got {0}")]
    ChunkSize(usize),
    /// Inference failed.
    #[error("Silero VAD inference: {0}")]
    Inference(String),
}

/// One audio stream's VAD state: the model's recurrent state and the 64-sample context the
/// next chunk is read with. Plain data: a session holds this, not a model.
#[derive(Debug, Clone, PartialEq)]
pub struct VadStream {
    /// The tail of the previous chunk.
    context: [f32; CONTEXT_SAMPLES],
    /// `[2, 128]` recurrent state (this stream's row of the model's `[2, B, 128]`).
    state: [f32; 2 * STATE_WIDTH],
}

impl Default for VadStream {
    fn default() -> Self {
        Self {
            context: [0.0; CONTEXT_SAMPLES],
            state: [0.0; 2 * STATE_WIDTH],
        }
    }
}

impl VadStream {
    /// Forgets the state, as at the start of a new stream.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Streams whose next chunks [`SileroVad::run_batch`] reads together.
pub trait VadBatch {
    /// How many streams.
    fn streams(&self) -> usize;
    /// Stream `i`'s state and its next chunk.
    fn stream(&mut self, i: usize) -> (&mut VadStream, &[f32]);
}

impl VadBatch for [(&mut VadStream, &[f32])] {
    fn streams(&self) -> usize {
        self.len()
    }

    fn stream(&mut self, i: usize) -> (&mut VadStream, &[f32]) {
        let (stream, chunk) = &mut self[i];
        (stream, chunk)
    }
}

/// The Silero VAD model. One loaded model serves any number of streams: [`SileroVad::run_batch`]
/// reads one chunk of each in a single call. Its buffers grow to the largest batch seen and are
/// reused.
pub struct SileroVad {
    session: Session,
    /// `[B, CONTEXT + CHUNK]`: each stream's context, then its chunk.
    input: Array2<f32>,
    /// `[2, B, 128]` recurrent states.
    state: Array3<f32>,
    sample_rate: Array0<i64>,
    /// The stream [`SileroVad::probability`] reads.
    own: VadStream,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Loads the model from the store (one inference thread: a chunk takes a fraction of a
    /// millisecond and many sessions share the machine).
    pub fn load(store: &ModelStore) -> Result<Self, VadError> {
        let path = store.require(Asset::SileroVad)?;
        let session = dartmouth_models::onnx::session(store, &path, 1)?;
        Ok(Self {
            session,
            input: Array2::zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES)),
            state: Array3::zeros((2, 1, STATE_WIDTH)),
            sample_rate: Array0::from_elem((), i64::from(SAMPLE_RATE)),
            own: VadStream::default(),
        })
    }

    /// Forgets the state of the stream [`SileroVad::probability`] reads.
    pub fn reset(&mut self) {
        self.own.reset();
    }

    /// Speech probability of the next chunk of exactly [`CHUNK_SAMPLES`] samples in [-1, 1] of
    /// the model's own stream (one session, one model).
    pub fn probability(&mut self, chunk: &[f32]) -> Result<f32, VadError> {
        let mut own = std::mem::take(&mut self.own);
        let mut out = [0.0];
        let batch: &mut [(&mut VadStream, &[f32])] = &mut [(&mut own, chunk)];
        let result = self.run_batch(batch, &mut out);
        self.own = own;
        result.map(|()| out[0])
    }

    /// Speech probabilities of one chunk of each stream of `batch`, in one model call: `out[i]`
    /// receives the probability of stream `i`'s chunk of [`CHUNK_SAMPLES`]. Each stream's state
    /// moves on exactly as if it had been run alone. Allocates only when the batch is larger
    /// than any before.
    pub fn run_batch(
        &mut self,
        batch: &mut (impl VadBatch + ?Sized),
        out: &mut [f32],
    ) -> Result<(), VadError> {
        let n = batch.streams();
        if n == 0 {
            return Ok(());
        }
        if out.len() < n {
            return Err(VadError::Inference(format!(
                "{n} streams but room for {} probabilities",
                out.len()
            )));
        }
        for i in 0..n {
            let chunk = batch.stream(i).1;
            if chunk.len() != CHUNK_SAMPLES {
                return Err(VadError::ChunkSize(chunk.len()));
            }
        }
        if self.input.nrows() != n {
            self.input = Array2::zeros((n, CONTEXT_SAMPLES + CHUNK_SAMPLES));
            self.state = Array3::zeros((2, n, STATE_WIDTH));
        }
        {
            let input = self.input.as_slice_mut().expect("input is contiguous");
            let state = self.state.as_slice_mut().expect("state is contiguous");
            for i in 0..n {
                let (stream, chunk) = batch.stream(i);
                let row = &mut input[i * (CONTEXT_SAMPLES + CHUNK_SAMPLES)..]
                    [..CONTEXT_SAMPLES + CHUNK_SAMPLES];
                row[..CONTEXT_SAMPLES].copy_from_slice(&stream.context);
                row[CONTEXT_SAMPLES..].copy_from_slice(chunk);
                for layer in 0..2 {
                    state[(layer * n + i) * STATE_WIDTH..][..STATE_WIDTH]
                        .copy_from_slice(&stream.state[layer * STATE_WIDTH..][..STATE_WIDTH]);
                }
            }
        }
        let fail = |e: ort::Error| VadError::Inference(e.to_string());
        let outputs = self
            .session
            .run(ort::inputs![
                "input" => TensorRef::from_array_view(&self.input).map_err(fail)?,
                "state" => TensorRef::from_array_view(&self.state).map_err(fail)?,
                "sr" => TensorRef::from_array_view(&self.sample_rate).map_err(fail)?,
            ])
            .map_err(fail)?;
        let (_, probabilities) = outputs["output"]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        if probabilities.len() < n {
            return Err(VadError::Inference(format!(
                "{} probabilities for {n} streams",
                probabilities.len()
            )));
        }
        out[..n].copy_from_slice(&probabilities[..n]);
        let (_, next_state) = outputs["stateN"]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        if next_state.len() != 2 * n * STATE_WIDTH {
            return Err(VadError::Inference(format!(
                "state of {} values for {n} streams",
                next_state.len()
            )));
        }
        for i in 0..n {
            let (stream, chunk) = batch.stream(i);
            for layer in 0..2 {
                stream.state[layer * STATE_WIDTH..][..STATE_WIDTH]
                    .copy_from_slice(&next_state[(layer * n + i) * STATE_WIDTH..][..STATE_WIDTH]);
            }
            // The tail of this chunk is the context of the next.
            stream
                .context
                .copy_from_slice(&chunk[CHUNK_SAMPLES - CONTEXT_SAMPLES..]);
        }
        Ok(())
    }
}

/// Thresholds and durations that turn probabilities into speech segments.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct VadConfig {
    /// Probability at or above which a chunk counts as speech.
    pub threshold: f32,
    /// Probability below which a chunk counts as silence (hysteresis; below `threshold`).
    pub negative_threshold: f32,
    /// Speech must last this long before a start is reported (filters clicks).
    pub min_speech_ms: u32,
    /// Silence must last this long before an end is reported (bridges short pauses).
    pub min_silence_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            negative_threshold: 0.35,
            min_speech_ms: 96,
            min_silence_ms: 320,
        }
    }
}

/// A change of speech state, stamped with the stream position in samples at 16 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at this sample (the first chunk of the confirmed run).
    SpeechStart {
        /// Stream position of the onset, in samples.
        at_sample: u64,
    },
    /// Speech ended at this sample (the first silent chunk of the confirmed silence).
    SpeechEnd {
        /// Stream position of the end, in samples.
        at_sample: u64,
    },
}

/// Hysteresis state machine over per-chunk probabilities.
#[derive(Debug, Clone)]
pub struct VadSegmenter {
    config: VadConfig,
    speaking: bool,
    /// Stream position of the next chunk.
    position: u64,
    /// Where the current candidate run (speech while silent, silence while speaking) began.
    candidate_since: Option<u64>,
}

impl VadSegmenter {
    /// A segmenter at stream position 0, not speaking.
    pub fn new(config: VadConfig) -> Self {
        Self {
            config,
            speaking: false,
            position: 0,
            candidate_since: None,
        }
    }

    /// Whether speech is in progress.
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds the probability of the next chunk; returns an event when the state changes.
    pub fn push(&mut self, probability: f32) -> Option<VadEvent> {
        let chunk_start = self.position;
        self.position += CHUNK_SAMPLES as u64;
        let samples_per_ms = u64::from(SAMPLE_RATE / 1000);
        let is_speech = probability >= self.config.threshold;
        let is_silence = probability < self.config.negative_threshold;
        let looks_opposite = if self.speaking { is_silence } else { is_speech };
        if !looks_opposite {
            // While speaking, a chunk between the two thresholds neither confirms speech nor
            // breaks a run of silence; anything else breaks the candidate run.
            let between = self.speaking && !is_speech;
            if !between {
                self.candidate_since = None;
            }
            return None;
        }
        let since = *self.candidate_since.get_or_insert(chunk_start);
        let lasted_ms = (self.position - since) / samples_per_ms;
        if self.speaking && lasted_ms >= u64::from(self.config.min_silence_ms) {
            self.speaking = false;
            self.candidate_since = None;
            Some(VadEvent::SpeechEnd { at_sample: since })
        } else if !self.speaking && lasted_ms >= u64::from(self.config.min_speech_ms) {
            self.speaking = true;
            self.candidate_since = None;
            Some(VadEvent::SpeechStart { at_sample: since })
        } else {
            None
        }
    }

    /// Ends the stream: reports the end of speech in progress.
    pub fn finish(&mut self) -> Option<VadEvent> {
        if self.speaking {
            self.speaking = false;
            Some(VadEvent::SpeechEnd {
                at_sample: self.position,
            })
        } else {
            None
        }
    }
}

/// Runs the model and segmenter over a whole 16 kHz clip (the tail shorter than a chunk is
/// ignored); returns the speech segments as `(start, end)` sample positions.
pub fn speech_segments(
    vad: &mut SileroVad,
    config: VadConfig,
    pcm_16k: &[f32],
) -> Result<Vec<(u64, u64)>, VadError> {
    vad.reset();
    let mut segmenter = VadSegmenter::new(config);
    let mut segments = Vec::new();
    let mut open = None;
    let mut on_event = |event| match event {
        VadEvent::SpeechStart { at_sample } => open = Some(at_sample),
        VadEvent::SpeechEnd { at_sample } => {
            if let Some(start) = open.take() {
                segments.push((start, at_sample));
            }
        }
    };
    for chunk in pcm_16k.chunks_exact(CHUNK_SAMPLES) {
        if let Some(event) = segmenter.push(vad.probability(chunk)?) {
            on_event(event);
        }
    }
    if let Some(event) = segmenter.finish() {
        on_event(event);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(segmenter: &mut VadSegmenter, probabilities: &[f32]) -> Vec<VadEvent> {
        probabilities
            .iter()
            .filter_map(|&p| segmenter.push(p))
            .collect()
    }

    #[test]
    fn a_short_blip_is_not_speech() {
        let mut segmenter = VadSegmenter::new(VadConfig::default());
        // One 32 ms chunk of "speech" is shorter than the 96 ms minimum.
        assert!(run(&mut segmenter, &[0.0, 0.9, 0.0, 0.0]).is_empty());
    }

    #[test]
    fn speech_starts_at_the_first_chunk_of_the_run_and_ends_after_min_silence() {
        let mut segmenter = VadSegmenter::new(VadConfig::default());
        let mut probabilities = vec![0.0; 2];
        probabilities.extend([0.9; 10]);
        probabilities.extend([0.0; 12]);
        let events = run(&mut segmenter, &probabilities);
        assert_eq!(
            events,
            vec![
                VadEvent::SpeechStart { at_sample: 1024 },
                VadEvent::SpeechEnd {
                    at_sample: 12 * 512
                },
            ]
        );
    }

    #[test]
    fn a_pause_shorter_than_min_silence_does_not_end_speech() {
        let mut segmenter = VadSegmenter::new(VadConfig::default());
        let mut probabilities = vec![0.9; 5];
        probabilities.extend([0.0; 5]); // 160 ms < 320 ms
        probabilities.extend([0.9; 5]);
        let events = run(&mut segmenter, &probabilities);
        assert_eq!(events, vec![VadEvent::SpeechStart { at_sample: 0 }]);
        assert!(segmenter.is_speaking());
        assert_eq!(
            segmenter.finish(),
            Some(VadEvent::SpeechEnd {
                at_sample: 15 * 512
            })
        );
    }
}
