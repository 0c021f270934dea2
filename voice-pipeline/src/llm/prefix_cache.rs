//! Attention-cache snapshots of prompt prefixes, so a prompt that starts like an earlier one (the
//! same system prompt, or the same conversation plus a new message) skips re-reading that part.
//!
//! Prefill is most of the embedded model's time to first token on this CPU (a 36-token prompt:
//! ~575 ms of prefill against ~24 ms per generated token), and most of a prompt is its system
//! message. A snapshot is a clone of the model: the weights are shared, and the attention cache
//! is a list of immutable tensors, so snapshots cost only the cache they hold.

use std::collections::VecDeque;

use candle_transformers::models::quantized_llama::ModelWeights;

/// Snapshots kept (least recently used dropped first).
pub const PREFIX_CACHE_ENTRIES: usize = 4;
/// Longest prefix snapshotted, in tokens. SmolLM2-135M keeps 46 KB of attention cache per token
/// (30 layers × 3 KV heads × 64 × K and V × f32), so the snapshots hold at most ~94 MB.
pub const PREFIX_CACHE_MAX_TOKENS: usize = 512;

/// Model states after reading given token prefixes.
#[derive(Default)]
pub(super) struct PrefixCache {
    entries: VecDeque<(Vec<u32>, ModelWeights)>,
}

impl PrefixCache {
    /// The state after the longest cached proper prefix of `ids` and its length (at least one
    /// token of `ids` is left to read, whose logits start generation).
    pub(super) fn lookup(&mut self, ids: &[u32]) -> Option<(usize, ModelWeights)> {
        let index = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (prefix, _))| prefix.len() < ids.len() && ids.starts_with(prefix))
            .max_by_key(|(_, (prefix, _))| prefix.len())
            .map(|(i, _)| i)?;
        let entry = self.entries.remove(index)?;
        let found = (entry.0.len(), entry.1.clone());
        self.entries.push_back(entry);
        Some(found)
    }

    /// Remembers the state after reading `ids` (replacing an entry for the same prefix).
    pub(super) fn insert(&mut self, ids: &[u32], model: &ModelWeights) {
        if ids.is_empty() || ids.len() > PREFIX_CACHE_MAX_TOKENS {
            return;
        }
        self.entries.retain(|(prefix, _)| prefix != ids);
        if self.entries.len() == PREFIX_CACHE_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back((ids.to_vec(), model.clone()));
    }

    /// Forgets the snapshots of proper prefixes of `ids` longer than `min_len` tokens: a longer
    /// read-ahead of the same message supersedes them.
    pub(super) fn drop_shorter(&mut self, ids: &[u32], min_len: usize) {
        self.entries.retain(|(prefix, _)| {
            prefix.len() <= min_len || prefix.len() >= ids.len() || !ids.starts_with(prefix)
        });
    }

    /// Whether a snapshot of exactly `ids` is kept.
    pub(super) fn contains(&self, ids: &[u32]) -> bool {
        self.entries.iter().any(|(prefix, _)| prefix == ids)
    }
}
