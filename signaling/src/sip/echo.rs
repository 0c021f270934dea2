//! Echo cancellation on SIP legs: phones and PBXs return part of the agent's own voice, which
//! the agent must not take for the caller barging in.
//!
//! The canceller keeps the last second of what the agent sent (the reference). While the agent
//! is talking it finds the echo path's delay by cross-correlating the caller's audio with the
//! reference (on a 4× decimated copy, every few frames), then removes the echo: the reference
//! at that delay, scaled by the least-squares gain of each frame, is subtracted from the
//! caller's audio. What remains is what the caller said over the agent (double talk passes),
//! plus the codec's quantisation noise of the echo, far below speech level.
//! Everything is fixed-size: nothing allocates per frame.

use dartmouth_voice::agent::AgentState;

/// Reference history kept, in samples at the highest rate used (1 s at 16 kHz).
const HISTORY: usize = 16_000;
/// Decimation factor of the delay search.
const DECIMATION: usize = 4;
/// Longest echo delay searched, in milliseconds.
const MAX_DELAY_MS: usize = 400;
/// Caller audio correlated in the delay search, in milliseconds.
const WINDOW_MS: usize = 160;
/// Frames between delay searches while the agent talks.
const SEARCH_EVERY: u32 = 5;
/// Normalised correlation above which a delay is trusted.
const LOCK_CORRELATION: f32 = 0.5;
/// Reference energy (mean square, i16 scale) above which the agent counts as talking.
const TALKING_ENERGY: f32 = 1.0e4;

/// Removes the agent's echo from the caller's audio; see the module docs.
pub struct EchoGate {
    rate: usize,
    reference: Box<[i16; HISTORY]>,
    /// Caller audio history (for the delay search), same ring positions as `reference`.
    caller: Box<[i16; HISTORY]>,
    /// Next write position of the caller ring.
    head: usize,
    /// Next write position of the reference ring.
    reference_head: usize,
    /// Samples written so far (saturating at HISTORY).
    filled: usize,
    /// The echo path's delay, in samples, once found.
    delay: Option<usize>,
    frames_since_search: u32,
    /// Frames since the reference last carried speech.
    quiet_frames: u32,
    decimated_ref: Box<[f32]>,
    decimated_mic: Box<[f32]>,
    /// Frames in which echo was removed (for tests and metrics).
    pub cancelled_frames: u64,
}

impl EchoGate {
    /// A canceller for audio at `rate` (8 or 16 kHz; other rates pass through).
    pub fn new(rate: u32) -> Self {
        let rate = rate as usize;
        let span = (MAX_DELAY_MS + WINDOW_MS) * rate / 1000 / DECIMATION + 1;
        Self {
            rate,
            reference: Box::new([0; HISTORY]),
            caller: Box::new([0; HISTORY]),
            head: 0,
            reference_head: 0,
            filled: 0,
            delay: None,
            frames_since_search: 0,
            quiet_frames: u32::MAX,
            decimated_ref: vec![0.0; span].into_boxed_slice(),
            decimated_mic: vec![0.0; WINDOW_MS * rate / 1000 / DECIMATION + 1].into_boxed_slice(),
            cancelled_frames: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.rate == 8_000 || self.rate == 16_000
    }

    /// The sample `back` samples before the newest one written (0 = newest).
    fn at(ring: &[i16; HISTORY], head: usize, back: usize) -> i16 {
        ring[(head + HISTORY - 1 - back % HISTORY) % HISTORY]
    }

    /// The agent's frame, as sent to the caller (call once per tick, before [`EchoGate::suppress`]
    /// of the next tick's caller audio).
    pub fn reference(&mut self, agent: &[i16]) {
        let energy = mean_square(agent);
        self.quiet_frames = if energy > TALKING_ENERGY {
            0
        } else {
            self.quiet_frames.saturating_add(1)
        };
        self.push_reference(agent.iter().copied());
    }

    /// A tick in which the agent sent nothing.
    pub fn reference_silence(&mut self, samples: usize) {
        self.quiet_frames = self.quiet_frames.saturating_add(1);
        self.push_reference(std::iter::repeat_n(0, samples));
    }

    fn push_reference(&mut self, samples: impl Iterator<Item = i16>) {
        let mut position = self.reference_head;
        for s in samples {
            self.reference[position] = s;
            position = (position + 1) % HISTORY;
        }
        self.reference_head = position;
    }

    /// The caller's frame, before the agent hears it: the echo is removed in place.
    pub fn suppress(&mut self, caller: &mut [i16]) {
        if !self.enabled() {
            return;
        }
        for s in caller.iter() {
            self.caller[self.head] = *s;
            self.head = (self.head + 1) % HISTORY;
        }
        self.filled = (self.filled + caller.len()).min(HISTORY);
        // Echo only while (or shortly after) the agent talks.
        let echo_tail = (MAX_DELAY_MS / 20 + 5) as u32;
        if self.quiet_frames > echo_tail {
            // Keep the delay found: the echo path of a call rarely changes, and the next answer
            // is then cancelled from its first frame.
            return;
        }
        self.frames_since_search += 1;
        if self.delay.is_none() || self.frames_since_search >= SEARCH_EVERY {
            self.frames_since_search = 0;
            if let Some(delay) = self.search_delay() {
                self.delay = Some(delay);
            }
        }
        let Some(delay) = self.delay else { return };
        // The reference sample aligned with caller sample i of this frame.
        let n = caller.len();
        let aligned = |i: usize| {
            f32::from(Self::at(
                &self.reference,
                self.reference_head,
                delay + n - 1 - i,
            ))
        };
        let (mut xy, mut yy) = (0f32, 0f32);
        for (i, x) in caller.iter().enumerate() {
            let y = aligned(i);
            xy += f32::from(*x) * y;
            yy += y * y;
        }
        if yy < 1.0 {
            return;
        }
        let gain = (xy / yy).clamp(0.0, 2.0);
        if gain <= 0.0 {
            return;
        }
        for (i, x) in caller.iter_mut().enumerate() {
            let residual = f32::from(*x) - gain * aligned(i);
            *x = residual.clamp(-32_768.0, 32_767.0) as i16;
        }
        self.cancelled_frames += 1;
    }

    /// The echo delay (in samples) whose reference best matches the recent caller audio, if the
    /// match is convincing.
    fn search_delay(&mut self) -> Option<usize> {
        let window = self.decimated_mic.len() - 1;
        let lags = self.decimated_ref.len() - window;
        if self.filled < (window + lags) * DECIMATION {
            return None;
        }
        // Caller window: the newest WINDOW_MS, decimated (mean of each DECIMATION block).
        for k in 0..window {
            let mut sum = 0f32;
            for j in 0..DECIMATION {
                sum += f32::from(Self::at(
                    &self.caller,
                    self.head,
                    (window - 1 - k) * DECIMATION + j,
                ));
            }
            self.decimated_mic[k] = sum / DECIMATION as f32;
        }
        // Reference: the newest (window + lags) blocks, aligned with the caller ring.
        let span = window + lags;
        for k in 0..span {
            let mut sum = 0f32;
            for j in 0..DECIMATION {
                sum += f32::from(Self::at(
                    &self.reference,
                    self.reference_head,
                    (span - 1 - k) * DECIMATION + j,
                ));
            }
            self.decimated_ref[k] = sum / DECIMATION as f32;
        }
        let mic = &self.decimated_mic[..window];
        let mic_energy: f32 = mic.iter().map(|v| v * v).sum();
        if mic_energy < 1.0 {
            return None;
        }
        let mut best = (0usize, 0f32);
        // Lag L: caller block k matches reference block k + (lags - 1 - L) (L blocks older).
        for lag in 0..lags {
            let start = lags - 1 - lag;
            let reference = &self.decimated_ref[start..start + window];
            let (mut dot, mut energy) = (0f32, 0f32);
            for (m, r) in mic.iter().zip(reference) {
                dot += m * r;
                energy += r * r;
            }
            if energy < 1.0 {
                continue;
            }
            let correlation = dot / (mic_energy * energy).sqrt();
            if correlation > best.1 {
                best = (lag, correlation);
            }
        }
        if best.1 < LOCK_CORRELATION {
            return None;
        }
        Some(self.refine(best.0 * DECIMATION))
    }

    /// The full-rate delay near `coarse` (within two decimation blocks) that correlates best
    /// over the newest 40 ms.
    fn refine(&self, coarse: usize) -> usize {
        let span = self.rate / 25;
        let reach = 2 * DECIMATION;
        let mut best = (coarse, f32::MIN);
        for delay in coarse.saturating_sub(reach)..=coarse + reach {
            let (mut dot, mut energy) = (0f32, 0f32);
            for back in 0..span {
                let x = f32::from(Self::at(&self.caller, self.head, back));
                // Caller sample `back` from its newest is aligned with reference sample
                // `delay + back` from its newest (as in `suppress`).
                let y = f32::from(Self::at(&self.reference, self.reference_head, delay + back));
                dot += x * y;
                energy += y * y;
            }
            let score = dot / energy.max(1.0).sqrt();
            if score > best.1 {
                best = (delay, score);
            }
        }
        best.0
    }

    /// The agent's state (an interrupted or listening agent sends no more reference).
    pub fn agent_state(&mut self, _state: AgentState) {}
}

fn mean_square(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|s| f32::from(*s).powi(2)).sum::<f32>() / samples.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like test signal: a chirpy tone with a syllable envelope.
    fn voice(n: usize, rate: f32, seed: f32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate;
                let envelope = (0.5 + 0.5 * (t * 4.0 * std::f32::consts::TAU + seed).sin()).powi(2);
                let tone = (t * (180.0 + 60.0 * (t * 3.0 + seed).sin()) * std::f32::consts::TAU)
                    .sin()
                    + 0.5 * (t * 720.0 * std::f32::consts::TAU + seed).sin();
                (envelope * tone * 9000.0) as i16
            })
            .collect()
    }

    fn energy(x: &[i16]) -> f32 {
        mean_square(x)
    }

    /// Runs `agent` through a phone that returns it at −10 dB after `delay_ms`, plus `near`.
    fn run(agent: &[i16], near: &[i16], delay_ms: usize) -> (Vec<i16>, Vec<i16>) {
        let rate = 8_000;
        let mut gate = EchoGate::new(rate as u32);
        let delay = delay_ms * rate / 1000;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (f, frame) in agent.chunks(160).enumerate() {
            let mut caller: Vec<i16> = (0..160)
                .map(|i| {
                    let t = f * 160 + i;
                    let echo = if t >= delay {
                        f32::from(agent[t - delay]) * 0.316
                    } else {
                        0.0
                    };
                    (echo + f32::from(near.get(t).copied().unwrap_or(0))) as i16
                })
                .collect();
            before.extend_from_slice(&caller);
            gate.suppress(&mut caller);
            after.extend_from_slice(&caller);
            gate.reference(frame);
        }
        (before, after)
    }

    #[test]
    fn the_echo_of_the_agent_is_removed() {
        let agent = voice(8_000 * 4, 8_000.0, 0.0);
        let (before, after) = run(&agent, &[], 80);
        // Judge the last three seconds (the first frames find the delay).
        let (b, a) = (energy(&before[8_000..]), energy(&after[8_000..]));
        let erle_db = 10.0 * (b / a.max(1.0)).log10();
        assert!(
            erle_db > 20.0,
            "echo return loss enhancement {erle_db:.1} dB"
        );
    }

    #[test]
    fn a_caller_talking_over_the_agent_still_gets_through() {
        let agent = voice(8_000 * 4, 8_000.0, 0.0);
        let mut near = vec![0i16; 8_000 * 2];
        near.extend(voice(8_000 * 2, 8_000.0, 1.7).iter().map(|s| s / 2));
        let (_, after) = run(&agent, &near, 80);
        let talk = energy(&after[8_000 * 2 + 800..]);
        let echo_only = energy(&after[8_000..8_000 * 2]);
        let near_energy = energy(&near[8_000 * 2 + 800..]);
        assert!(
            talk > 0.5 * near_energy,
            "double talk kept: {talk} vs {near_energy}"
        );
        assert!(
            talk > 20.0 * echo_only,
            "and stands far above the residual echo"
        );
    }
}
