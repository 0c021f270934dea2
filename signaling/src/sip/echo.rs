//! Echo cancellation on SIP legs: phones and PBXs return part of the agent's own voice, which
//! the agent must not take for the caller barging in.
//!
//! The canceller keeps the last second of what the agent sent (the reference). While the agent
//! is talking it finds the echo path's delay by cross-correlating the caller's audio with the
//! reference (on a 4× decimated copy, every few frames), then removes the echo: the reference
//! at that delay, scaled by the least-squares gain of each frame, is subtracted from the
//! caller's audio. What remains is what the caller said over the agent (double talk passes),
//! plus the codec's quantisation noise of the echo, far below speech level.
//!
//! Two things keep it sturdy when the echo path moves, as it does whenever a jitter buffer or a
//! phone's playout slips by a packet (a CPU burst on either side is enough):
//! - **Per-frame tracking**: every frame also tries the delays one to [`TRACK_FRAMES`] frames
//!   either side of the current one and moves to a clearly better one at once, instead of
//!   waiting for the next full search;
//! - **A residual gate**: the canceller learns how loud the echo path returns the agent (the
//!   echo return loss, from frames where the echo alone explains the caller's audio). A frame
//!   whose residual is not well above the echo the reference could produce there is echo,
//!   cancelled or not, and is silenced. Until a search confirms the delay in each talk spurt,
//!   "there" is anywhere in the search range. A caller talking over the
//!   agent at a normal level stands far above it and passes.
//!
//! Everything is fixed-size: nothing allocates per frame.

use dartmouth_voice::agent::AgentState;

/// Reference history kept, in samples at the highest rate used (1 s at 16 kHz).
const HISTORY: usize = 16_000;
/// Decimation factor of the delay search.
const DECIMATION: usize = 4;
/// Longest echo delay searched, in milliseconds.
const MAX_DELAY_MS: usize = 600;
/// Caller audio correlated in the delay search, in milliseconds.
const WINDOW_MS: usize = 160;
/// Frames between delay searches while the agent talks.
const SEARCH_EVERY: u32 = 5;
/// Normalised correlation above which a delay is trusted.
const LOCK_CORRELATION: f32 = 0.5;
/// Reference energy (mean square, i16 scale) above which the agent counts as talking.
const TALKING_ENERGY: f32 = 1.0e4;
/// Whole-frame delay shifts tried each frame either side of the current delay.
pub const TRACK_FRAMES: usize = 3;
/// A shifted delay replaces the current one when it leaves at most this share of its residual.
const TRACK_SWITCH: f32 = 0.5;
/// Echo power gain assumed before the first measurement (−3 dB: a loud speakerphone).
const INITIAL_ECHO_GAIN: f32 = 0.5;
/// Lowest echo power gain the estimate falls to (−30 dB).
const MIN_ECHO_GAIN: f32 = 0.001;
/// Per-frame decay of the echo power gain estimate while the agent talks (halves in ~7 s).
const ECHO_GAIN_DECAY: f32 = 0.999;
/// Share of a frame's energy the aligned reference must explain for the frame to measure the echo
/// gain (squared correlation): double talk does not.
const MEASURE_CORRELATION: f32 = 0.7;
/// Frames of the agent talking (one second) over which an unmeasured echo gain is bounded.
const BOUND_WINDOW_FRAMES: u32 = 50;
/// How far above the loudest possible echo a residual must stand to count as the caller (3 dB).
const GATE_MARGIN: f32 = 2.0;

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
    /// Whether a search has confirmed `delay` since the agent last fell silent.
    confirmed: bool,
    frames_since_search: u32,
    /// Frames since the reference last carried speech.
    quiet_frames: u32,
    decimated_ref: Box<[f32]>,
    decimated_mic: Box<[f32]>,
    /// Estimated echo power gain (echo energy over reference energy; see the module docs).
    echo_gain: f32,
    /// Whether `echo_gain` has been measured on this call yet.
    echo_gain_measured: bool,
    /// Highest raw caller-to-reference energy ratio in the current bounding window.
    window_peak: f32,
    /// Frames with the agent talking in the current bounding window.
    window_frames: u32,
    /// Whether a frame of the current bounding window measured the echo gain.
    window_measured: bool,
    /// Frames in which echo was removed (for tests and metrics).
    pub cancelled_frames: u64,
    /// Frames silenced by the residual gate (for tests and metrics).
    pub gated_frames: u64,
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
            confirmed: false,
            frames_since_search: 0,
            quiet_frames: u32::MAX,
            decimated_ref: vec![0.0; span].into_boxed_slice(),
            decimated_mic: vec![0.0; WINDOW_MS * rate / 1000 / DECIMATION + 1].into_boxed_slice(),
            echo_gain: INITIAL_ECHO_GAIN,
            echo_gain_measured: false,
            window_peak: 0.0,
            window_frames: 0,
            window_measured: false,
            cancelled_frames: 0,
            gated_frames: 0,
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
            // is then cancelled from its first frame. The gate trusts it again once a search
            // confirms it.
            self.confirmed = false;
            return;
        }
        self.frames_since_search += 1;
        if self.delay.is_none() || self.frames_since_search >= SEARCH_EVERY {
            self.frames_since_search = 0;
            if let Some(found) = self.search_delay() {
                // The search's window may straddle a slip that tracking has already followed:
                // keep whichever delay explains this frame better.
                let keep = self.delay.is_some_and(|current| {
                    current != found
                        && explained(self.fit(current, caller)) > explained(self.fit(found, caller))
                });
                if !keep {
                    self.delay = Some(found);
                }
                self.confirmed = true;
            }
        }
        let raw = energy(caller);
        if let Some(delay) = self.delay {
            let delay = self.track(delay, caller);
            self.delay = Some(delay);
            self.cancel(delay, caller);
        }
        let source = self.echo_source_energy(caller.len());
        self.bound_echo_gain(raw, source, caller.len());
        if energy(caller) < GATE_MARGIN * self.echo_gain * source {
            caller.fill(0);
            self.gated_frames += 1;
        }
    }

    /// The longest delay a reference sample can be read at for a frame of `n` samples.
    fn max_delay(n: usize) -> usize {
        HISTORY - n
    }

    /// Least-squares fit of the reference at `delay` to the caller's frame: (x·y, y·y).
    fn fit(&self, delay: usize, caller: &[i16]) -> (f32, f32) {
        let n = caller.len();
        let (mut xy, mut yy) = (0f32, 0f32);
        for (i, x) in caller.iter().enumerate() {
            let y = f32::from(Self::at(
                &self.reference,
                self.reference_head,
                delay + n - 1 - i,
            ));
            xy += f32::from(*x) * y;
            yy += y * y;
        }
        (xy, yy)
    }

    /// The delay to cancel this frame at: the current one, or a whole number of frames away from
    /// it when that explains clearly more of the frame (the echo path slipped by packets).
    fn track(&self, delay: usize, caller: &[i16]) -> usize {
        let n = caller.len();
        let total = energy(caller);
        let current = explained(self.fit(delay, caller));
        let mut best = (delay, current);
        for k in 1..=TRACK_FRAMES {
            for candidate in [delay.checked_sub(k * n), Some(delay + k * n)]
                .into_iter()
                .flatten()
            {
                if candidate > Self::max_delay(n) {
                    continue;
                }
                let score = explained(self.fit(candidate, caller));
                if score > best.1 {
                    best = (candidate, score);
                }
            }
        }
        let (residual_now, residual_best) = (total - current, total - best.1);
        if best.0 != delay && residual_best < TRACK_SWITCH * residual_now {
            best.0
        } else {
            delay
        }
    }

    /// Subtracts the reference at `delay`, scaled by the frame's least-squares gain, and learns
    /// the echo gain from frames the reference explains.
    fn cancel(&mut self, delay: usize, caller: &mut [i16]) {
        let n = caller.len();
        let (xy, yy) = self.fit(delay, caller);
        if yy < 1.0 || xy <= 0.0 {
            return;
        }
        let gain = (xy / yy).clamp(0.0, 2.0);
        let xx = energy(caller);
        // An "echo" louder than the agent is the caller saying something alike: not a measure.
        if xx >= 1.0 && gain <= 1.0 && xy * xy / (xx * yy) >= MEASURE_CORRELATION {
            let measured = gain * gain;
            self.echo_gain = if self.echo_gain_measured {
                (self.echo_gain * ECHO_GAIN_DECAY).max(measured)
            } else {
                measured
            }
            .max(MIN_ECHO_GAIN);
            self.echo_gain_measured = true;
            self.window_measured = true;
        }
        for (i, x) in caller.iter_mut().enumerate() {
            let y = f32::from(Self::at(
                &self.reference,
                self.reference_head,
                delay + n - 1 - i,
            ));
            let residual = f32::from(*x) - gain * y;
            *x = residual.clamp(-32_768.0, 32_767.0) as i16;
        }
        self.cancelled_frames += 1;
    }

    /// The energy of the reference the caller's frame could hold as echo. Once a search has
    /// confirmed the delay in the agent's current talk spurt, that is the reference aligned at
    /// the (tracked) delay. Before that it is the loudest frame anywhere in the search range, in
    /// half-frame steps: after a pause the echo path may have moved by more than tracking
    /// follows (a jitter buffer grows under load), and the first words of the next answer must
    /// not get through.
    fn echo_source_energy(&self, n: usize) -> f32 {
        let frame_at = |delay: usize| -> f32 {
            (delay..delay + n)
                .map(|back| f32::from(Self::at(&self.reference, self.reference_head, back)).powi(2))
                .sum()
        };
        if let (Some(delay), true) = (self.delay, self.confirmed) {
            return frame_at(delay);
        }
        let to = (MAX_DELAY_MS * self.rate / 1000).min(Self::max_delay(n));
        let step = (n / 2).max(1);
        (0..=to).step_by(step).map(frame_at).fold(0.0, f32::max)
    }

    /// Lowers an echo gain that a second of the agent talking has not borne out: when no frame
    /// of it measured the gain, the echo can be no louder than the loudest raw caller frame was
    /// relative to its reference (a headset returns nothing, and its caller must not have to
    /// shout over an assumed speakerphone).
    fn bound_echo_gain(&mut self, raw: f32, source: f32, n: usize) {
        if source < TALKING_ENERGY * n as f32 {
            return;
        }
        self.window_peak = self.window_peak.max(raw / source);
        self.window_frames += 1;
        if self.window_frames < BOUND_WINDOW_FRAMES {
            return;
        }
        if !self.window_measured {
            self.echo_gain = self
                .echo_gain
                .min(2.0 * self.window_peak)
                .max(MIN_ECHO_GAIN);
        }
        self.window_peak = 0.0;
        self.window_frames = 0;
        self.window_measured = false;
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

/// The energy a least-squares fit (x·y, y·y) of the reference explains in a frame.
fn explained((xy, yy): (f32, f32)) -> f32 {
    if xy > 0.0 && yy >= 1.0 {
        xy * xy / yy
    } else {
        0.0
    }
}

/// Sum of squares of a frame.
fn energy(samples: &[i16]) -> f32 {
    samples.iter().map(|s| f32::from(*s).powi(2)).sum()
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

    /// A second, unrelated voice: noise-excited, with its own syllable rhythm (the tone-based
    /// [`voice`]s correlate with each other far more than two people do).
    fn other_voice(n: usize, rate: f32, seed: u32) -> Vec<i16> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut low = 0f32;
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let white = (state as f32 / u32::MAX as f32) * 2.0 - 1.0;
                low = 0.8 * low + 0.2 * white;
                let t = i as f32 / rate;
                let envelope = (0.5 + 0.5 * (t * 5.3 * std::f32::consts::TAU).sin()).powi(2);
                (envelope * low * 30_000.0).clamp(-32_000.0, 32_000.0) as i16
            })
            .collect()
    }

    /// Runs `agent` through a phone that returns it at −10 dB after `delay_ms`, plus `near`.
    fn run(agent: &[i16], near: &[i16], delay_ms: usize) -> (Vec<i16>, Vec<i16>) {
        run_path(agent, near, 0.316, |_| delay_ms).0
    }

    /// Runs `agent` through an echo path of amplitude `gain` whose delay in frame `f` is
    /// `delay_ms(f)`, plus `near`; also returns the canceller.
    fn run_path(
        agent: &[i16],
        near: &[i16],
        gain: f32,
        delay_ms: impl Fn(usize) -> usize,
    ) -> ((Vec<i16>, Vec<i16>), EchoGate) {
        let rate = 8_000;
        let mut gate = EchoGate::new(rate as u32);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (f, frame) in agent.chunks(160).enumerate() {
            let delay = delay_ms(f) * rate / 1000;
            let mut caller: Vec<i16> = (0..160)
                .map(|i| {
                    let t = f * 160 + i;
                    let echo = if t >= delay {
                        f32::from(agent[t - delay]) * gain
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
        ((before, after), gate)
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
        near.extend(other_voice(8_000 * 2, 8_000.0, 3).iter().map(|s| s / 2));
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

    /// The loudest 20 ms frame of `x` after `from`, as a mean square.
    fn loudest_frame(x: &[i16], from: usize) -> f32 {
        x[from..].chunks(160).map(mean_square).fold(0.0, f32::max)
    }

    #[test]
    fn an_echo_path_that_slips_by_packets_is_still_removed() {
        // A jitter buffer or a phone's playout slipping by one or two packets at a time.
        let agent = voice(8_000 * 6, 8_000.0, 0.4);
        let slips = [80, 100, 140, 120, 60, 80, 100, 60];
        let ((before, after), gate) =
            run_path(&agent, &[], 0.316, |f| slips[(f / 35) % slips.len()]);
        let echo = loudest_frame(&before, 8_000);
        let left = loudest_frame(&after, 8_000);
        assert!(
            left < 0.001 * echo,
            "no 20 ms frame keeps echo near speech level: loudest left {left:.0} of {echo:.0}"
        );
        assert!(gate.cancelled_frames > 200, "{}", gate.cancelled_frames);
    }

    #[test]
    fn a_headset_caller_is_not_gated_once_no_echo_shows() {
        // No echo path at all; after the agent's first second the caller talks over it 6 dB
        // below the agent's level and must get through whole.
        let agent = voice(8_000 * 5, 8_000.0, 0.0);
        let mut near = vec![0i16; 8_000 * 2];
        near.extend(other_voice(8_000 * 3, 8_000.0, 7).iter().map(|s| s / 2));
        let ((_, after), _) = run_path(&agent, &near, 0.0, |_| 80);
        let kept = energy(&after[8_000 * 2..]);
        let said = energy(&near[8_000 * 2..]);
        assert!(kept > 0.9 * said, "double talk kept: {kept} of {said}");
    }

    #[test]
    fn a_quiet_echo_path_lets_a_soft_caller_through() {
        // −20 dB echo; the caller talks 10 dB below the agent.
        let agent = voice(8_000 * 5, 8_000.0, 0.0);
        let mut near = vec![0i16; 8_000 * 2];
        near.extend(
            other_voice(8_000 * 3, 8_000.0, 11)
                .iter()
                .map(|s| (f32::from(*s) * 0.316) as i16),
        );
        let ((_, after), gate) = run_path(&agent, &near, 0.1, |_| 80);
        let kept = energy(&after[8_000 * 2 + 800..]);
        let said = energy(&near[8_000 * 2 + 800..]);
        assert!(kept > 0.5 * said, "soft double talk kept: {kept} of {said}");
        assert!(
            gate.echo_gain < 0.05,
            "echo gain learnt: {}",
            gate.echo_gain
        );
    }

    #[test]
    fn the_next_answer_after_a_pause_does_not_leak_when_the_path_moved() {
        // An answer, a pause, and the next answer over an echo path that has grown by 180 ms
        // meanwhile (a jitter buffer that grew under load): far past per-frame tracking.
        let mut agent = voice(8_000 * 2, 8_000.0, 0.0);
        agent.extend(std::iter::repeat_n(0, 8_000 * 2));
        // Short words with gaps: the reference at the old delay is silent when their echo comes.
        for word in 0..4 {
            agent.extend(voice(1_440, 8_000.0, 0.9 + word as f32));
            agent.extend(std::iter::repeat_n(0, 3_360));
        }
        let ((before, after), _) = run_path(&agent, &[], 0.316, |f| if f < 150 { 80 } else { 260 });
        let echo = loudest_frame(&before, 8_000 * 4);
        let left = loudest_frame(&after, 8_000 * 4);
        assert!(
            left < 0.001 * echo,
            "the next answer's echo is gated from its first words: {left:.0} of {echo:.0}"
        );
    }
}
