//! SmolLM2-135M-Instruct from GGUF on candle's quantized llama, streaming tokens.
//!
//! Loading reads the GGUF the `models` crate provisions, builds the tokenizer from its metadata
//! (with SmolLM2's real pre-tokenizer: individual digits, then byte-level BPE without a prefix
//! space) and re-quantises the Q4_1 weights to Q8_0: candle's Q4_1 kernels are slow and garble
//! this model's output, Q8_0 is both faster and faithful. Generation formats the conversation
//! with the ChatML template, streams text pieces (whole UTF-8 characters only) to a callback and
//! stops at `<|im_end|>`, at the token limit, or when the callback breaks (barge-in).
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use dartmouth_models::ModelStore;
//! use dartmouth_voice::llm::{ChatMessage, EmbeddedLlm, LlmOptions};
//!
//! let mut llm = EmbeddedLlm::load(&ModelStore::from_env(), LlmOptions::default())?;
//! let messages = [ChatMessage::system("Answer in one sentence."), ChatMessage::user("Hi!")];
//! let stats = llm.generate(&messages, 64, &mut |piece| {
//!     print!("{piece}");
//!     ControlFlow::Continue(())
//! })?;
//! println!("\n{} tokens in {:?}", stats.generated_tokens, stats.total);
//! # Ok::<(), dartmouth_voice::llm::LlmError>(())
//! ```
//!
//! Threads: candle's CPU kernels run on one process-wide pool sized by `CANDLE_NUM_THREADS`
//! (else `RAYON_NUM_THREADS`, else the physical cores), fixed when the first model runs, so it is
//! not a per-model option; see [`set_cpu_threads`]. The pool's workers busy-wait for each other
//! at every matrix product: when the cores are also busy with other work, several threads are
//! much slower than one (measured on 2 shared cores: 2 threads ≈ 2 tokens/s, 1 thread ≈ 25).

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use dartmouth_models::{Asset, ModelStore};
use tokenizers::Tokenizer;

pub use super::chat::{ChatMessage, Role};
use super::chat::{IM_END, IM_START, with_default_system};
use super::gguf::{build_tokenizer, requantise};
pub use super::options::LlmOptions;
use super::prefix_cache::PrefixCache;
use super::stream::{TokenBytes, Utf8Stream};

/// What can go wrong while loading or running the embedded LLM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The model file is not provisioned.
    #[error(transparent)]
    Model(#[from] dartmouth_models::Error),
    /// The model file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a GGUF llama model this loader understands.
    #[error("GGUF model {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be built or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An option is out of range.
    #[error("invalid LLM option: {0}")]
    InvalidOption(String),
    /// `generate` was called without messages.
    #[error("the conversation has no messages")]
    EmptyConversation,
    /// The model failed while running.
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    /// The caller asked to stop (checked between prefill chunks and decoding steps).
    #[error("generation cancelled")]
    Cancelled,
}

/// Sizes candle's process-wide CPU thread pool (the `CANDLE_NUM_THREADS` variable) for every
/// model loaded afterwards. It has no effect once a model has run.
///
/// # Safety
///
/// The same as [`std::env::set_var`]: call it at the start of `main`, before any other thread
/// exists.
pub unsafe fn set_cpu_threads(threads: usize) {
    // SAFETY: the caller guarantees no other thread reads or writes the environment.
    unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads.max(1).to_string()) };
}

/// Tokens at the end of a growing message that [`EmbeddedLlm::read_ahead`] leaves unread.
pub const READ_AHEAD_SLACK: usize = 2;
/// Prompt tokens read in one model call before cancellation is checked again (~0.3 s of
/// prefill on the target machine; larger chunks are barely faster).
pub const PREFILL_CHUNK: usize = 24;

/// The smallest context that holds a system prompt, a question and an answer.
pub(super) const MIN_CONTEXT: usize = 64;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model closed its turn (`<|im_end|>` or end of text).
    EndOfTurn,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// Prompt plus answer reached `context_limit`.
    ContextFull,
    /// The callback returned `ControlFlow::Break`.
    Cancelled,
}

/// Measurements of one `generate` call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStats {
    /// Tokens of the prompt the model read (after fitting it into the context).
    pub prompt_tokens: usize,
    /// Tokens the model produced, the end-of-turn token excluded.
    pub generated_tokens: usize,
    /// Older messages left out to fit the context.
    pub dropped_messages: usize,
    /// From the call to the first sampled token (`None` when `max_tokens` is 0).
    pub time_to_first_token: Option<Duration>,
    /// The whole call.
    pub total: Duration,
    /// Why generation ended.
    pub stop: StopReason,
}

impl GenerationStats {
    /// Decoding speed after the first token, in tokens per second (0 without a second token).
    pub fn tokens_per_second(&self) -> f64 {
        let Some(first) = self.time_to_first_token else {
            return 0.0;
        };
        let decode = self.total.saturating_sub(first).as_secs_f64();
        if self.generated_tokens < 2 || decode <= 0.0 {
            return 0.0;
        }
        (self.generated_tokens - 1) as f64 / decode
    }
}

/// An answer being decoded, with its own attention cache: [`EmbeddedLlm::step`] goes on with
/// it, however many other prompts the model read in between.
pub struct Generation {
    /// The model state (weights shared, this answer's attention cache).
    model: ModelWeights,
    sampler: LogitsProcessor,
    text: Utf8Stream,
    generated: Vec<u32>,
    /// Logits for the next token (`None` once over, or for a zero-token answer).
    logits: Option<Tensor>,
    /// Position of the next token.
    pos: usize,
    max_tokens: usize,
    start: Instant,
    stats: GenerationStats,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("pos", &self.pos)
            .field("generated", &self.generated.len())
            .finish_non_exhaustive()
    }
}

/// A prompt fitted into the context window.
struct Prompt {
    ids: Vec<u32>,
    dropped_messages: usize,
    /// Tokens of the pinned first (system) message at the start of `ids`.
    pinned_len: usize,
}

/// Which end of a message survives when it alone is too long.
#[derive(Clone, Copy)]
enum Keep {
    Head,
    Tail,
}

/// SmolLM2-135M-Instruct on the CPU, re-quantised to Q8_0.
///
/// One instance holds one conversation's worth of attention cache and is driven from one thread
/// (the pipeline's model thread); it is `Send`.
pub struct EmbeddedLlm {
    model: ModelWeights,
    tokenizer: Tokenizer,
    plain: Tokenizer,
    bytes: TokenBytes,
    stop_ids: Vec<u32>,
    im_start: u32,
    im_end: u32,
    newline: Vec<u32>,
    options: LlmOptions,
    device: Device,
    prefixes: PrefixCache,
}

impl std::fmt::Debug for EmbeddedLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLlm")
            .field("options", &self.options)
            .field("stop_ids", &self.stop_ids)
            .finish_non_exhaustive()
    }
}

impl EmbeddedLlm {
    /// Loads SmolLM2 from the model store (`dartmouth models fetch` provisions it).
    pub fn load(store: &ModelStore, options: LlmOptions) -> Result<Self, LlmError> {
        let path = store.require(Asset::SmolLm2)?;
        Self::load_file(&path, options)
    }

    /// Loads a llama-architecture chat model (ChatML, byte-level BPE) from a GGUF file.
    pub fn load_file(path: &Path, options: LlmOptions) -> Result<Self, LlmError> {
        options.validate()?;
        let started = Instant::now();
        let io = |source| LlmError::Io {
            path: path.to_owned(),
            source,
        };
        let format = |e: candle_core::Error| LlmError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let device = Device::Cpu;
        let mut file = BufReader::new(File::open(path).map_err(io)?);
        let content = gguf_file::Content::read(&mut file).map_err(format)?;
        let (tokenizer, bytes) = build_tokenizer(&content)?;

        let requantised = requantise(&content, &mut file, &device).map_err(format)?;
        drop(file);
        let mut reader = Cursor::new(requantised);
        let content = gguf_file::Content::read(&mut reader).map_err(format)?;
        let model = ModelWeights::from_gguf(content, &mut reader, &device).map_err(format)?;

        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| LlmError::Tokenizer(format!("the vocabulary has no {token}")))
        };
        let im_start = id(IM_START)?;
        let im_end = id(IM_END)?;
        let mut stop_ids = vec![im_end];
        stop_ids.extend(tokenizer.token_to_id("<|endoftext|>"));
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);
        let mut llm = Self {
            model,
            tokenizer,
            plain,
            bytes,
            stop_ids,
            im_start,
            im_end,
            newline: Vec::new(),
            options,
            device,
            prefixes: PrefixCache::default(),
        };
        llm.newline = llm.encode_plain("\n")?;
        tracing::info!(
            path = %path.display(),
            elapsed = ?started.elapsed(),
            "embedded LLM loaded (weights re-quantised to Q8_0)"
        );
        Ok(llm)
    }

    /// The options in use.
    pub fn options(&self) -> &LlmOptions {
        &self.options
    }

    /// Changes sampling and context options for the next `generate` calls.
    pub fn set_options(&mut self, options: LlmOptions) -> Result<(), LlmError> {
        options.validate()?;
        self.options = options;
        Ok(())
    }

    /// Forgets the prompt snapshots (see [`super::prefix_cache`]): the next prompt is read whole.
    pub fn clear_prefix_cache(&mut self) {
        self.prefixes = PrefixCache::default();
    }

    /// The tokenizer (special tokens such as `<|im_start|>` are recognised in text).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The token ids the model reads for `messages` when asked for up to `max_tokens`: the
    /// ChatML rendering (see [`super::chat::render_chatml`]), fitted into the context.
    ///
    /// Fitting: the prompt may use `context_limit` minus room for the answer
    /// (`max_tokens`, at most half the context). When the conversation is longer, the first
    /// message (the system prompt, or the template's default one) is kept, and then the most
    /// recent messages, whole, as many as fit; older ones are dropped. A system prompt longer
    /// than half the budget keeps only its beginning, and a latest message that does not fit
    /// on its own keeps only its end. Message text is tokenised as plain text, so a user
    /// typing `<|im_end|>` cannot forge a turn.
    pub fn prompt_tokens(
        &self,
        messages: &[ChatMessage],
        max_tokens: usize,
    ) -> Result<Vec<u32>, LlmError> {
        Ok(self.fit_prompt(messages, max_tokens)?.ids)
    }

    fn fit_prompt(&self, messages: &[ChatMessage], max_tokens: usize) -> Result<Prompt, LlmError> {
        let messages = with_default_system(messages);
        let Some((first, rest)) = messages.split_first() else {
            return Err(LlmError::EmptyConversation);
        };
        let mut tail = vec![self.im_start];
        tail.extend(self.encode_plain("assistant\n")?);

        let limit = self.options.context_limit;
        let reserve = max_tokens.clamp(1, limit / 2);
        let budget = limit.saturating_sub(reserve + tail.len());

        let (pinned, rest): (Option<&ChatMessage>, &[ChatMessage]) = if first.role == Role::System {
            (Some(first), rest)
        } else {
            (None, &messages[..])
        };
        let mut head = match pinned {
            Some(m) => self.message_tokens(m)?,
            None => Vec::new(),
        };
        let bodies = rest
            .iter()
            .map(|m| self.message_tokens(m))
            .collect::<Result<Vec<_>, _>>()?;
        let total = head.len() + bodies.iter().map(Vec::len).sum::<usize>();
        let mut kept = bodies.len();
        let mut last_cut = None;
        if total > budget {
            if let Some(m) = pinned
                && head.len() > budget / 2
            {
                head = self.truncated_message(m, budget / 2, Keep::Head)?;
            }
            let room = budget.saturating_sub(head.len());
            kept = newest_that_fit(bodies.iter().map(Vec::len), room);
            if kept == 0
                && let Some(m) = rest.last()
            {
                last_cut = Some(self.truncated_message(m, room, Keep::Tail)?);
                kept = 1;
            }
        }
        let pinned_len = head.len();
        let mut ids = head;
        match last_cut {
            Some(cut) => ids.extend(cut),
            None => bodies[bodies.len() - kept..]
                .iter()
                .for_each(|b| ids.extend(b)),
        }
        ids.extend(tail);
        Ok(Prompt {
            ids,
            dropped_messages: bodies.len() - kept,
            pinned_len,
        })
    }

    /// `<|im_start|>{role}\n{content}<|im_end|>\n` as ids.
    fn message_tokens(&self, m: &ChatMessage) -> Result<Vec<u32>, LlmError> {
        let mut ids = vec![self.im_start];
        ids.extend(self.encode_plain(&format!("{}\n{}", m.role, m.content))?);
        ids.push(self.im_end);
        ids.extend(&self.newline);
        Ok(ids)
    }

    /// A message cut to at most `max_len` ids, keeping one end of its content.
    fn truncated_message(
        &self,
        m: &ChatMessage,
        max_len: usize,
        keep: Keep,
    ) -> Result<Vec<u32>, LlmError> {
        let mut ids = vec![self.im_start];
        ids.extend(self.encode_plain(&format!("{}\n", m.role))?);
        let content = self.encode_plain(&m.content)?;
        let room = max_len.saturating_sub(ids.len() + 1 + self.newline.len());
        let n = content.len().min(room);
        match keep {
            Keep::Head => ids.extend(&content[..n]),
            Keep::Tail => ids.extend(&content[content.len() - n..]),
        }
        ids.push(self.im_end);
        ids.extend(&self.newline);
        Ok(ids)
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let encoding = self
            .plain
            .encode_fast(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Answers the conversation as the assistant, calling `on_token` with each new piece of
    /// text (whole UTF-8 characters) as it decodes.
    ///
    /// Stops at the end of the assistant's turn, after `max_tokens` tokens, when the context is
    /// full, or as soon as `on_token` returns `ControlFlow::Break` (no further token is
    /// computed). The prompt is read from the longest snapshot of an earlier prompt's start
    /// (see [`super::prefix_cache`]): the same answer as reading it all, up to float rounding.
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, LlmError> {
        self.generate_cancellable(messages, max_tokens, &|| false, on_token)
    }

    /// Like [`Self::generate`], stopping as soon as `cancelled` says so: it is asked between
    /// prefill chunks of [`PREFILL_CHUNK`] tokens and before every decoding step, so a cancelled
    /// answer frees the model within one step. Stopped before its first token, it returns
    /// [`LlmError::Cancelled`]; later, the stats with [`StopReason::Cancelled`].
    pub fn generate_cancellable(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
        cancelled: &dyn Fn() -> bool,
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, LlmError> {
        let mut generation = self.begin(messages, max_tokens, cancelled)?;
        loop {
            if let Some(stats) = self.step(&mut generation, usize::MAX, cancelled, on_token)? {
                return Ok(stats);
            }
        }
    }

    /// Reads the prompt for `messages` (from the longest cached snapshot of its start) and
    /// returns the answer ready to be decoded with [`Self::step`]. The answer carries its own
    /// attention cache, so the model may serve other conversations between steps.
    pub fn begin(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation, LlmError> {
        let start = Instant::now();
        let prompt = self.fit_prompt(messages, max_tokens)?;
        if prompt.dropped_messages > 0 {
            tracing::debug!(
                dropped = prompt.dropped_messages,
                "conversation trimmed to fit the LLM context"
            );
        }
        let stats = GenerationStats {
            prompt_tokens: prompt.ids.len(),
            generated_tokens: 0,
            dropped_messages: prompt.dropped_messages,
            time_to_first_token: None,
            total: Duration::ZERO,
            stop: StopReason::MaxTokens,
        };
        let sampler = LogitsProcessor::from_sampling(self.options.seed, self.sampling());
        let logits = if max_tokens == 0 {
            None
        } else {
            Some(self.prefill(&prompt, cancelled)?)
        };
        Ok(Generation {
            model: self.model.clone(),
            sampler,
            text: Utf8Stream::default(),
            generated: Vec::new(),
            logits,
            pos: prompt.ids.len(),
            max_tokens,
            start,
            stats,
        })
    }

    /// Decodes up to `max_steps` more tokens of `generation`, calling `on_token` with each new
    /// piece of text. Returns the stats once the answer is over (end of turn, `max_tokens`,
    /// full context, `on_token` breaking or `cancelled`), else `None`: call again to go on.
    pub fn step(
        &mut self,
        generation: &mut Generation,
        max_steps: usize,
        cancelled: &dyn Fn() -> bool,
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Option<GenerationStats>, LlmError> {
        let Some(mut logits) = generation.logits.take() else {
            generation.stats.total = generation.start.elapsed();
            return Ok(Some(generation.stats.clone()));
        };
        std::mem::swap(&mut self.model, &mut generation.model);
        let outcome = self.decode(generation, &mut logits, max_steps, cancelled, on_token);
        std::mem::swap(&mut self.model, &mut generation.model);
        let stop = outcome?;
        let Some(stop) = stop else {
            generation.logits = Some(logits);
            return Ok(None);
        };
        generation.stats.stop = stop;
        if stop != StopReason::Cancelled {
            let rest = generation.text.finish();
            if !rest.is_empty() {
                // Generation is over either way; a Break here changes nothing.
                let _ = on_token(&rest);
            }
        }
        generation.stats.generated_tokens = generation.generated.len();
        generation.stats.total = generation.start.elapsed();
        Ok(Some(generation.stats.clone()))
    }

    /// The decoding loop of [`Self::step`], with `generation`'s cache in the model.
    fn decode(
        &mut self,
        generation: &mut Generation,
        logits: &mut Tensor,
        max_steps: usize,
        cancelled: &dyn Fn() -> bool,
        on_token: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Option<StopReason>, LlmError> {
        for _ in 0..max_steps {
            if cancelled() {
                return Ok(Some(StopReason::Cancelled));
            }
            let next = self.sample(&mut generation.sampler, logits, &generation.generated)?;
            generation
                .stats
                .time_to_first_token
                .get_or_insert_with(|| generation.start.elapsed());
            if self.stop_ids.contains(&next) {
                return Ok(Some(StopReason::EndOfTurn));
            }
            generation.generated.push(next);
            let piece = generation.text.push(self.bytes.bytes(next));
            if !piece.is_empty() && on_token(&piece).is_break() {
                return Ok(Some(StopReason::Cancelled));
            }
            if generation.generated.len() >= generation.max_tokens {
                return Ok(Some(StopReason::MaxTokens));
            }
            if generation.pos >= self.options.context_limit {
                return Ok(Some(StopReason::ContextFull));
            }
            *logits = self.forward(&[next], generation.pos)?;
            generation.pos += 1;
        }
        Ok(None)
    }

    /// Reads the start of a prompt that is likely to come into the prompt cache: `messages`
    /// whose last message is still growing (a user's interim transcript). Its last
    /// [`READ_AHEAD_SLACK`] tokens (the word being spoken may still change) and the template's
    /// closing tokens are left out, so the real prompt starts with what is read. Returns the
    /// number of tokens now cached (0 when there was nothing new to read).
    pub fn read_ahead(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
    ) -> Result<usize, LlmError> {
        self.read_ahead_cancellable(messages, max_tokens, &|| false)
    }

    /// Like [`Self::read_ahead`], stopping between prefill chunks when `cancelled` says so.
    pub fn read_ahead_cancellable(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<usize, LlmError> {
        let mut prompt = self.fit_prompt(messages, max_tokens.max(1))?;
        // `<|im_end|>\n<|im_start|>assistant\n` after the last message, as `fit_prompt` adds it.
        let closing = 2 + self.newline.len() + self.encode_plain("assistant\n")?.len();
        let keep = prompt.ids.len().saturating_sub(closing + READ_AHEAD_SLACK);
        if keep <= prompt.pinned_len || self.prefixes.contains(&prompt.ids[..keep]) {
            return Ok(0);
        }
        prompt.ids.truncate(keep);
        self.prefill(&prompt, cancelled)?;
        self.prefixes.drop_shorter(&prompt.ids, prompt.pinned_len);
        Ok(keep)
    }

    /// Reads the prompt, starting from the longest cached snapshot of its beginning; snapshots
    /// the system message and the whole prompt for later calls. Returns the last logits.
    fn prefill(
        &mut self,
        prompt: &Prompt,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Tensor, LlmError> {
        let ids = &prompt.ids;
        let mut pos = match self.prefixes.lookup(ids) {
            Some((len, model)) => {
                self.model = model;
                len
            }
            None => 0,
        };
        let pinned = prompt.pinned_len;
        if pos < pinned && pinned < ids.len() && !self.prefixes.contains(&ids[..pinned]) {
            self.forward_chunked(&ids[pos..pinned], pos, cancelled)?;
            self.prefixes.insert(&ids[..pinned], &self.model);
            pos = pinned;
        }
        let logits = self.forward_chunked(&ids[pos..], pos, cancelled)?;
        self.prefixes.insert(ids, &self.model);
        Ok(logits)
    }

    /// [`Self::forward`] over `ids` in chunks of [`PREFILL_CHUNK`], asking `cancelled` before
    /// each. A cancelled prefill leaves the model's cache part-filled, which is harmless: the
    /// next prompt starts from a snapshot or from position 0.
    fn forward_chunked(
        &mut self,
        ids: &[u32],
        pos: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Tensor, LlmError> {
        let mut logits = None;
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            if cancelled() {
                return Err(LlmError::Cancelled);
            }
            logits = Some(self.forward(chunk, pos + i * PREFILL_CHUNK)?);
        }
        logits.ok_or(LlmError::EmptyConversation)
    }

    /// Runs the model on `ids` at position `pos` inside candle's CPU thread pool (its workers
    /// stay warm across the many small parallel sections of one step); returns the logits of
    /// the last position.
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Tensor, LlmError> {
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let model = &mut self.model;
        let logits = self.device.with_context(|| model.forward(&input, pos))?;
        Ok(logits.squeeze(0)?)
    }

    fn sampling(&self) -> Sampling {
        let temperature = self.options.temperature;
        match self.options.top_p {
            _ if temperature <= 0.0 => Sampling::ArgMax,
            Some(p) => Sampling::TopP { p, temperature },
            None => Sampling::All { temperature },
        }
    }

    fn sample(
        &self,
        sampler: &mut LogitsProcessor,
        logits: &Tensor,
        generated: &[u32],
    ) -> Result<u32, LlmError> {
        let penalty = self.options.repeat_penalty;
        let next = if penalty == 1.0 || generated.is_empty() {
            sampler.sample(logits)?
        } else {
            let from = generated.len().saturating_sub(self.options.repeat_last_n);
            let logits = candle_transformers::utils::apply_repeat_penalty(
                logits,
                penalty,
                &generated[from..],
            )?;
            sampler.sample(&logits)?
        };
        Ok(next)
    }
}

/// How many of the most recent items fit in `room`, taking whole items newest first.
fn newest_that_fit(lengths: impl DoubleEndedIterator<Item = usize>, room: usize) -> usize {
    let mut used = 0;
    let mut n = 0;
    for len in lengths.rev() {
        if used + len > room {
            break;
        }
        used += len;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

    #[test]
    fn newest_messages_fill_the_room() {
        assert_eq!(newest_that_fit([5, 5, 5].into_iter(), 12), 2);
        assert_eq!(newest_that_fit([5, 5, 5].into_iter(), 15), 3);
        assert_eq!(newest_that_fit([5, 5, 20].into_iter(), 12), 0);
        assert_eq!(newest_that_fit([].into_iter(), 12), 0);
    }

    #[test]
    fn options_are_checked() {
        assert!(LlmOptions::default().validate().is_ok());
        let bad = LlmOptions {
            context_limit: MAX_SEQ_LEN + 1,
            ..LlmOptions::default()
        };
        assert!(matches!(bad.validate(), Err(LlmError::InvalidOption(_))));
        let bad = LlmOptions {
            temperature: -1.0,
            ..LlmOptions::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn speed_counts_tokens_after_the_first() {
        let stats = GenerationStats {
            prompt_tokens: 10,
            generated_tokens: 11,
            dropped_messages: 0,
            time_to_first_token: Some(Duration::from_millis(500)),
            total: Duration::from_millis(1500),
            stop: StopReason::EndOfTurn,
        };
        assert!((stats.tokens_per_second() - 10.0).abs() < 1e-9);
    }
}
