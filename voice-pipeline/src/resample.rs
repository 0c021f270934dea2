//! Streaming sample-rate conversion between client rates and model rates (rubato).
//!
//! [`StreamResampler`] converts mono `f32` audio between any two of
//! [`SUPPORTED_RATES`](crate::frame::SUPPORTED_RATES), fed in slices of any size. It wraps rubato's
//! synchronous FFT resampler ([`rubato::Fft`], `FixedSync::Both`, Blackman-Harris² window): the
//! ratio is fixed, so an exact rational resampler is both cheaper and cleaner than an asynchronous
//! sinc one. Input is gathered into fixed blocks of at least [`TARGET_BLOCK_MS`] (rubato needs a
//! whole multiple of `from / gcd(from, to)` samples): 10 ms for most pairs, 13.3 ms for
//! 22.05 kHz against 24 or 48 kHz, 20 ms for 22.05 kHz against 8, 16 or 32 kHz. Output comes out
//! a block at a time, as soon as a block of input is complete.
//!
//! **Delay.** The filter delays the signal by half a block ([`StreamResampler::delay`]: 5 ms,
//! 6.7 ms or 10 ms). The resampler drops those first `delay()` output samples itself, so
//! output sample `k` lines up with input time `k / to_hz`; the delay shows up only as latency
//! (after `n` input samples, at most `n * to / from - delay()` samples have come out) until
//! [`StreamResampler::flush`] drains the tail, giving `round(n * to / from)` samples in total.
//! When the true delay is fractional (odd blocks such as 441 samples) the residual misalignment
//! is under half an output sample.
//!
//! ```
//! use dartmouth_voice::resample::StreamResampler;
//!
//! let mut rs = StreamResampler::new(48_000, 16_000, 960)?;
//! let mut out = Vec::with_capacity(rs.max_output_len());
//! for _ in 0..50 {
//!     out.clear();
//!     rs.process(&[0.0; 960], &mut out)?; // one 20 ms frame in, up to 320 samples out
//! }
//! out.clear();
//! rs.flush(&mut out)?;
//! # Ok::<(), dartmouth_voice::resample::ResampleError>(())
//! ```

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

use crate::frame::SUPPORTED_RATES;

/// Block length the resampler aims for, in milliseconds of audio (rounded up to what the rate
/// pair allows). Half of it is the filter delay.
pub const TARGET_BLOCK_MS: u32 = 10;

/// Why a resampler could not be built or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// A rate outside [`SUPPORTED_RATES`].
    #[error(
        "unsupported sample rate {rate} Hz (supported: {})",
        rate_list(supported)
    )]
    UnsupportedRate {
        /// The rate asked for.
        rate: u32,
        /// The rates that are accepted.
        supported: &'static [u32],
    },
    /// `process` got more samples than the `max_block` given at construction.
    #[error("block of {len} samples exceeds max_block {max_block}")]
    BlockTooLarge {
        /// Samples given.
        len: usize,
        /// The limit set in [`StreamResampler::new`].
        max_block: usize,
    },
    /// rubato refused the configuration.
    #[error("cannot build resampler: {0}")]
    Construction(#[from] rubato::ResamplerConstructionError),
    /// rubato failed while processing.
    #[error("resampling failed: {0}")]
    Rubato(#[from] rubato::ResampleError),
}

fn rate_list(rates: &[u32]) -> String {
    let names: Vec<String> = rates.iter().map(u32::to_string).collect();
    names.join(", ")
}

fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if SUPPORTED_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(ResampleError::UnsupportedRate {
            rate,
            supported: &SUPPORTED_RATES,
        })
    }
}

/// Rounds `a * b / c` to the nearest integer, in exact integer arithmetic.
fn mul_div_round(a: u64, b: u64, c: u64) -> u64 {
    (2 * a * b + c) / (2 * c)
}

/// The rubato side of a converting resampler (absent when the rates are equal).
struct Engine {
    fft: Fft<f32>,
    /// Input samples per rubato call.
    chunk_in: usize,
    /// Output samples per rubato call.
    chunk_out: usize,
    /// Input not yet processed; never reaches `chunk_in` samples between calls.
    pending: Vec<f32>,
    /// One chunk of rubato output.
    scratch: Vec<f32>,
    /// Filter delay in output samples (rounded).
    delay: usize,
    /// Startup output samples still to drop.
    skip: usize,
    /// Input samples since the last reset.
    fed: u64,
    /// Output samples handed out since the last reset.
    emitted: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("chunk_in", &self.chunk_in)
            .field("chunk_out", &self.chunk_out)
            .field("pending", &self.pending.len())
            .field("delay", &self.delay)
            .field("skip", &self.skip)
            .field("fed", &self.fed)
            .field("emitted", &self.emitted)
            .finish()
    }
}

impl Engine {
    fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        let target_in = (from_hz * TARGET_BLOCK_MS / 1000) as usize;
        let fft = Fft::<f32>::new_custom(
            from_hz as usize,
            to_hz as usize,
            target_in,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )?;
        let chunk_in = fft.input_frames_next();
        let chunk_out = fft.output_frames_next();
        // rubato centres its sinc on input sample `fft_size_in / 2`; that many input samples,
        // expressed at the output rate, is the group delay (it may be fractional).
        let half_block = (fft.fft_size_in() / 2) as u64;
        let delay = mul_div_round(half_block, to_hz.into(), from_hz.into()) as usize;
        Ok(Engine {
            fft,
            chunk_in,
            chunk_out,
            pending: Vec::with_capacity(chunk_in),
            scratch: vec![0.0; chunk_out],
            delay,
            skip: delay,
            fed: 0,
            emitted: 0,
        })
    }

    /// Runs one chunk: `input[..chunk_in]`, or its first `partial` samples zero-padded.
    /// Appends at most `limit` of the non-startup output samples to `out`.
    fn run(
        &mut self,
        input: &[f32],
        partial: Option<usize>,
        out: &mut Vec<f32>,
        limit: usize,
    ) -> Result<(), ResampleError> {
        let frames = partial.unwrap_or(self.chunk_in);
        let buf_in = InterleavedSlice::new(input, 1, frames).expect("input covers the chunk");
        let mut buf_out =
            InterleavedSlice::new_mut(&mut self.scratch, 1, self.chunk_out).expect("sized");
        let indexing = Indexing {
            partial_len: partial,
            ..Indexing::default()
        };
        self.fft
            .process_into_buffer(&buf_in, &mut buf_out, Some(&indexing))?;
        let dropped = self.skip.min(self.chunk_out);
        self.skip -= dropped;
        let keep = &self.scratch[dropped..];
        let keep = &keep[..keep.len().min(limit)];
        out.extend_from_slice(keep);
        self.emitted += keep.len() as u64;
        Ok(())
    }

    fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        self.fed += input.len() as u64;
        // Top up a partly filled block first.
        if !self.pending.is_empty() {
            let take = (self.chunk_in - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < self.chunk_in {
                return Ok(());
            }
            let pending = std::mem::take(&mut self.pending);
            let result = self.run(&pending, None, out, usize::MAX);
            self.pending = pending;
            self.pending.clear();
            result?;
        }
        // Whole blocks straight from the caller's slice, the remainder kept for next time.
        while input.len() >= self.chunk_in {
            self.run(input, None, out, usize::MAX)?;
            input = &input[self.chunk_in..];
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Most samples `flush` appends: the startup delay plus one block.
    fn max_flush_len(&self) -> usize {
        self.delay + self.chunk_out
    }

    fn flush(&mut self, out: &mut Vec<f32>, to_hz: u32, from_hz: u32) -> Result<(), ResampleError> {
        let total = mul_div_round(self.fed, to_hz.into(), from_hz.into());
        let mut owed = total.saturating_sub(self.emitted) as usize;
        let mut pending = std::mem::take(&mut self.pending);
        let mut partial = pending.len();
        pending.resize(self.chunk_in, 0.0);
        let mut result = Ok(());
        while owed > 0 {
            let before = out.len();
            result = self.run(&pending, Some(partial), out, owed);
            if result.is_err() {
                break;
            }
            owed -= out.len() - before;
            partial = 0;
        }
        self.pending = pending;
        self.reset();
        result
    }

    fn reset(&mut self) {
        self.fft.reset();
        self.pending.clear();
        self.skip = self.delay;
        self.fed = 0;
        self.emitted = 0;
    }
}

/// Mono `f32` sample-rate converter for a continuous stream fed in slices of any size.
///
/// Built for the hot path: every buffer is sized in [`StreamResampler::new`], and `process` only
/// appends to the caller's reusable `Vec` (reserving [`StreamResampler::max_output_len`] once).
/// Equal rates pass samples through untouched, with no delay.
#[derive(Debug)]
pub struct StreamResampler {
    from_hz: u32,
    to_hz: u32,
    max_block: usize,
    engine: Option<Engine>,
}

impl StreamResampler {
    /// Mono f32 resampler from `from_hz` to `to_hz`; `max_block` = the largest input slice
    /// `process` will get. Both rates must be in [`SUPPORTED_RATES`].
    pub fn new(from_hz: u32, to_hz: u32, max_block: usize) -> Result<Self, ResampleError> {
        check_rate(from_hz)?;
        check_rate(to_hz)?;
        let engine = if from_hz == to_hz {
            None
        } else {
            Some(Engine::new(from_hz, to_hz)?)
        };
        Ok(StreamResampler {
            from_hz,
            to_hz,
            max_block,
            engine,
        })
    }

    /// Consumes all of `input` and appends every output sample it can produce to `out` (the
    /// caller's reusable Vec). No allocation in steady state: internal buffers are sized at
    /// construction and `out` only grows up to its high-water mark.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        if input.len() > self.max_block {
            return Err(ResampleError::BlockTooLarge {
                len: input.len(),
                max_block: self.max_block,
            });
        }
        out.reserve(self.max_output_len());
        match &mut self.engine {
            None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Some(engine) => engine.process(input, out),
        }
    }

    /// Pushes the remaining buffered input through (zero-padded) and appends the tail to `out`,
    /// so that the stream's total output is `round(input_len * to / from)` samples with the
    /// filter delay trimmed. Ends the stream: the resampler is reset, ready for the next one.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        out.reserve(self.max_output_len());
        match &mut self.engine {
            None => Ok(()),
            Some(engine) => engine.flush(out, self.to_hz, self.from_hz),
        }
    }

    /// Output delay in output samples: the filter's group delay, rounded. The resampler drops
    /// that many startup samples, so it is latency, not an offset in the output.
    pub fn delay(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.delay)
    }

    /// Forgets buffered input and filter state (e.g. on barge-in).
    pub fn reset(&mut self) {
        if let Some(engine) = &mut self.engine {
            engine.reset();
        }
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Input samples per internal block (the granularity output comes out in); 1 when passing
    /// through.
    pub fn block_len(&self) -> usize {
        self.engine.as_ref().map_or(1, |e| e.chunk_in)
    }

    /// Most samples one `process` (of at most `max_block` samples) or `flush` call appends;
    /// size the caller's `out` with it to avoid any growth.
    pub fn max_output_len(&self) -> usize {
        match &self.engine {
            None => self.max_block,
            Some(e) => {
                // Up to `chunk_in - 1` samples wait in the buffer, so a full slice completes
                // floor((chunk_in - 1 + max_block) / chunk_in) blocks.
                let blocks = self.max_block.div_ceil(e.chunk_in);
                (blocks * e.chunk_out).max(e.max_flush_len())
            }
        }
    }
}

/// Convenience: whole-buffer conversion (allocates; for files and tests). Returns
/// `round(input.len() * to_hz / from_hz)` samples aligned with the input.
pub fn resample_all(input: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, ResampleError> {
    let mut rs = StreamResampler::new(from_hz, to_hz, input.len())?;
    let mut out =
        Vec::with_capacity(rs.max_output_len() + input.len() * to_hz as usize / from_hz as usize);
    rs.process(input, &mut out)?;
    rs.flush(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw (untrimmed) rubato output for a unit impulse at input sample `at`.
    fn raw_impulse(from: u32, to: u32, at: usize, len: usize) -> Vec<f32> {
        let mut e = Engine::new(from, to).unwrap();
        e.skip = 0;
        let mut input = vec![0.0; len];
        input[at] = 1.0;
        let mut out = Vec::new();
        e.process(&input, &mut out).unwrap();
        out
    }

    /// Peak position with parabolic interpolation.
    fn peak(x: &[f32]) -> f64 {
        let (i, _) = x
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        let (a, b, c) = (x[i - 1] as f64, x[i] as f64, x[i + 1] as f64);
        i as f64 + 0.5 * (a - c) / (a - 2.0 * b + c)
    }

    #[test]
    fn reported_delay_matches_impulse_peak_for_every_pair() {
        for &from in &SUPPORTED_RATES {
            for &to in SUPPORTED_RATES.iter().filter(|&&to| to != from) {
                let rs = StreamResampler::new(from, to, 1).unwrap();
                let raw = raw_impulse(from, to, 0, from as usize / 10);
                let measured = peak(&raw);
                let delay = rs.delay() as f64;
                println!("{from:>5} -> {to:>5}: delay {delay:>3}, impulse peak {measured:7.2}");
                assert!(
                    (measured - delay).abs() <= 1.0,
                    "{from}->{to}: delay {delay}, impulse peak at {measured:.2}"
                );
                // Never more than 10 ms (plus rounding).
                assert!(
                    delay <= to as f64 / 100.0 + 1.0,
                    "{from}->{to}: delay {delay}"
                );
            }
        }
    }

    #[test]
    fn resampler_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<StreamResampler>();
    }

    #[test]
    fn blocks_are_about_ten_ms() {
        let ms = |from: u32, to: u32| {
            let rs = StreamResampler::new(from, to, 1).unwrap();
            rs.block_len() as f64 * 1000.0 / from as f64
        };
        assert_eq!(ms(48_000, 16_000), 10.0);
        assert_eq!(ms(8_000, 16_000), 10.0);
        assert_eq!(ms(44_100, 48_000), 10.0);
        assert_eq!(ms(22_050, 16_000), 20.0);
        assert!((ms(22_050, 48_000) - 40.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn unsupported_rate_lists_the_supported_ones() {
        let err = StreamResampler::new(11_025, 16_000, 160).unwrap_err();
        assert!(matches!(
            err,
            ResampleError::UnsupportedRate { rate: 11_025, .. }
        ));
        assert_eq!(
            err.to_string(),
            "unsupported sample rate 11025 Hz (supported: 8000, 16000, 22050, 24000, 32000, 44100, 48000)"
        );
        assert!(StreamResampler::new(16_000, 0, 160).is_err());
    }

    #[test]
    fn oversized_block_is_rejected_and_state_untouched() {
        let mut rs = StreamResampler::new(16_000, 8_000, 320).unwrap();
        let mut out = Vec::new();
        let err = rs.process(&[0.0; 321], &mut out).unwrap_err();
        assert!(matches!(
            err,
            ResampleError::BlockTooLarge {
                len: 321,
                max_block: 320
            }
        ));
        assert!(out.is_empty());
        rs.process(&[0.0; 320], &mut out).unwrap();
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut rs = StreamResampler::new(16_000, 16_000, 4).unwrap();
        let mut out = Vec::new();
        rs.process(&[0.25, -1.0, 3.0], &mut out).unwrap();
        rs.flush(&mut out).unwrap();
        assert_eq!(out, [0.25, -1.0, 3.0]);
        assert_eq!(rs.delay(), 0);
    }

    #[test]
    fn reset_forgets_input() {
        let input: Vec<f32> = (0..700).map(|i| (i as f32 * 0.05).sin()).collect();
        let mut fresh = Vec::new();
        StreamResampler::new(48_000, 16_000, 700)
            .unwrap()
            .process(&input, &mut fresh)
            .unwrap();
        let mut rs = StreamResampler::new(48_000, 16_000, 700).unwrap();
        let mut out = Vec::new();
        rs.process(&[1.0; 700], &mut out).unwrap();
        rs.reset();
        out.clear();
        rs.process(&input, &mut out).unwrap();
        assert_eq!(out, fresh);
    }

    #[test]
    fn flush_without_input_is_empty() {
        let mut rs = StreamResampler::new(8_000, 48_000, 160).unwrap();
        let mut out = Vec::new();
        rs.flush(&mut out).unwrap();
        rs.process(&[], &mut out).unwrap();
        assert!(out.is_empty());
        assert!(resample_all(&[], 22_050, 48_000).unwrap().is_empty());
    }
}
