//! Sampling and context options of the embedded model.

use candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

use super::embedded::{LlmError, MIN_CONTEXT};

/// How the embedded model samples and how much context it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmOptions {
    /// Sampling temperature; 0 picks the most likely token (greedy, deterministic).
    pub temperature: f64,
    /// Nucleus sampling threshold when sampling with a temperature; `None` samples from all.
    pub top_p: Option<f64>,
    /// Seed of the sampler; every `generate` call restarts from it.
    pub seed: u64,
    /// Penalty on tokens the answer already used (1.0 turns it off).
    pub repeat_penalty: f32,
    /// How many of the latest generated tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// Prompt plus answer, in tokens (at most 4096, candle's rotary table).
    pub context_limit: usize,
}

impl Default for LlmOptions {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: None,
            seed: 299_792_458,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            context_limit: 2048,
        }
    }
}

impl LlmOptions {
    pub(super) fn validate(&self) -> Result<(), LlmError> {
        let bad = |what: String| Err(LlmError::InvalidOption(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p {p} must be in (0, 1]"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty {} must be > 0",
                self.repeat_penalty
            ));
        }
        if !(MIN_CONTEXT..=MAX_SEQ_LEN).contains(&self.context_limit) {
            return bad(format!(
                "context_limit {} must be in {MIN_CONTEXT}..={MAX_SEQ_LEN}",
                self.context_limit
            ));
        }
        Ok(())
    }
}
