//! End-of-turn: silence timing combined with the Smart Turn v3.2 model.
//!
//! [`EndOfTurn`] is a synchronous step machine fed the user's 16 kHz audio and the VAD's
//! speech start/end events, with time as an input. While a pause lasts it asks a [`TurnModel`]
//! whether the person has finished, again as the silence grows; the threshold the answer must
//! reach falls with the silence, and the form of a speculative transcript ([`TranscriptForm`]:
//! a question, a whole statement, or words that need more) moves it and the silence limit. A
//! per-agent [`Eagerness`] picks the thresholds. Speech that resumes continues the same turn. A
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
mod form;
mod smart_turn;

pub use detector::{
    Eagerness, EndOfTurn, TurnConfig, TurnEnd, TurnEndReason, TurnSignals, VerdictRequest,
};
pub use features::LogMelFrontend;
pub use form::TranscriptForm;
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

    /// [`TurnModel::predict`] for several utterances, pushing one result per utterance onto
    /// `out` in order. The default asks one at a time; models that batch do it in one call.
    fn predict_batch(&mut self, utterances: &[&[f32]], out: &mut Vec<Result<f32, TurnError>>) {
        for audio in utterances {
            out.push(self.predict(audio));
        }
    }
}
