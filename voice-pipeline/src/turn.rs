//! End-of-turn: silence timing combined with the Smart Turn v3.2 model.
//!
//! [`EndOfTurn`] is a synchronous step machine fed the user's 16 kHz audio and the VAD's
//! speech start/end events, with time as an input. When speech ends it asks a [`TurnModel`]
//! once whether the person has finished; a confident "yes" ends the turn at once, otherwise it
//! waits for more speech (same turn) or for [`TurnConfig::max_silence_ms`] of silence. A
//! monologue is split every [`TurnConfig::max_turn_ms`], which also bounds its memory.
//!
//! [`SmartTurn`] is the embedded [`TurnModel`]: Smart Turn v3.2 (int8 ONNX) on the Whisper-style
//! log-mel features of the last 8 s of the utterance.
//!
//! ```
//! use std::time::Duration;
//! use dartmouth_voice::turn::{EndOfTurn, TurnConfig, TurnError, TurnModel};
//! use dartmouth_voice::vad::VadEvent;
//!
//! struct SaysDone;
//! impl TurnModel for SaysDone {
//!     fn predict(&mut self, _audio_16k: &[f32]) -> Result<f32, TurnError> {
//!         Ok(0.9)
//!     }
//! }
//!
//! let mut turns = EndOfTurn::new(TurnConfig::default());
//! let ms = Duration::from_millis;
//! turns.push_audio(ms(1000), &vec![0.0; 16_000]);
//! turns.push_vad(ms(1000), VadEvent::SpeechStart { at_sample: 4_000 });
//! turns.push_vad(ms(1000), VadEvent::SpeechEnd { at_sample: 12_000 });
//! let turn = turns.poll(ms(1000), &mut SaysDone).expect("the model says the turn is complete");
//! assert_eq!(turn.speech_end, ms(750));
//! ```

mod detector;
mod features;
mod smart_turn;

pub use detector::{EndOfTurn, TurnConfig, TurnEnd, TurnEndReason};
pub use features::LogMelFrontend;
pub use smart_turn::{SMART_TURN_SAMPLES, SmartTurn};

/// What can go wrong in end-of-turn detection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The model or ONNX Runtime could not be found or loaded.
    #[error("loading Smart Turn: {0}")]
    Load(#[from] dartmouth_models::Error),
    /// Computing the log-mel features failed.
    #[error("Smart Turn features: {0}")]
    Features(String),
    /// Inference failed or returned something unexpected.
    #[error("Smart Turn inference: {0}")]
    Inference(String),
}

/// A model that judges whether the speaker has finished their turn.
pub trait TurnModel {
    /// Probability in `[0, 1]` that the utterance (16 kHz mono, in `[-1, 1]`) is a complete turn.
    fn predict(&mut self, audio_16k: &[f32]) -> Result<f32, TurnError>;
}
