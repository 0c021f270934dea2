//! Streaming resampler behaviour: quality on every rate pair, output length, slicing independence,
//! delay and alignment, anti-aliasing, and the no-allocation rule on the hot path.
//!
//! Run with `cargo test --release -p dartmouth-voice --test resample -- --nocapture` to see the
//! SNR table and the CPU time per minute of audio.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use dartmouth_voice::frame::SUPPORTED_RATES;
use dartmouth_voice::resample::{ResampleError, StreamResampler, resample_all};

/// Counts heap allocations made by the current thread (tests run on parallel threads).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn sine(freq: f64, rate: u32, len: usize, amp: f64) -> Vec<f32> {
    (0..len)
        .map(|n| (amp * (TAU * freq * n as f64 / rate as f64).sin()) as f32)
        .collect()
}

/// Samples per 20 ms frame at `rate`.
fn frame_len(rate: u32) -> usize {
    rate as usize / 50
}

/// `round(n * to / from)`.
fn scaled(n: usize, from: u32, to: u32) -> usize {
    ((n as f64) * to as f64 / from as f64).round() as usize
}

/// Least-squares fit of `amp * sin(w n + phase)` at a known frequency over `y[lo..hi]`.
struct Fit {
    amp: f64,
    /// Shift of the signal in samples relative to `sin(w n)` (positive = late).
    lag: f64,
    /// Fitted sine power over residual power, in dB.
    snr_db: f64,
}

fn fit_sine(y: &[f32], freq: f64, rate: u32, lo: usize, hi: usize) -> Fit {
    let w = TAU * freq / rate as f64;
    let (mut scc, mut sss, mut scs, mut syc, mut sys) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (n, &v) in y.iter().enumerate().take(hi).skip(lo) {
        let (s, c) = (w * n as f64).sin_cos();
        let v = v as f64;
        scc += c * c;
        sss += s * s;
        scs += c * s;
        syc += v * c;
        sys += v * s;
    }
    let det = scc * sss - scs * scs;
    let a = (syc * sss - sys * scs) / det; // cosine weight
    let b = (sys * scc - syc * scs) / det; // sine weight
    let (mut sig, mut res) = (0.0, 0.0);
    for (n, &v) in y.iter().enumerate().take(hi).skip(lo) {
        let (s, c) = (w * n as f64).sin_cos();
        let model = a * c + b * s;
        sig += model * model;
        res += (v as f64 - model).powi(2);
    }
    Fit {
        amp: a.hypot(b),
        lag: -a.atan2(b) / w,
        snr_db: 10.0 * (sig / res.max(1e-300)).log10(),
    }
}

fn pairs() -> impl Iterator<Item = (u32, u32)> {
    SUPPORTED_RATES
        .iter()
        .flat_map(|&a| SUPPORTED_RATES.iter().map(move |&b| (a, b)))
}

/// Feeds `input` in slices whose sizes cycle through `sizes`, then flushes.
fn stream(from: u32, to: u32, input: &[f32], sizes: &[usize], max_block: usize) -> Vec<f32> {
    let mut rs = StreamResampler::new(from, to, max_block).unwrap();
    let mut out = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(size.min(rest.len()));
        rs.process(head, &mut out).unwrap();
        rest = tail;
    }
    rs.flush(&mut out).unwrap();
    out
}

/// Round trip A→B→A of a half-scale 440 Hz sine, for all 49 ordered pairs. The error is
/// measured against the best-fitting 440 Hz sine (so fractional delay and the tiny passband gain
/// error are compensated), 50 ms from either end (filter start-up and tail transients).
///
/// Bound: 120 dB. What is left once the phase is fitted is f32 rounding in the FFTs (a 24-bit
/// mantissa; measured 131-137 dB after two conversions) plus any ripple, imaging or aliasing the
/// filter lets through. 120 dB keeps a margin for other CPUs' FFT code paths while still
/// failing on any real filter defect, and it is 24 dB below the 96 dB that the i16 frames carry.
/// Each leg trims a rounded delay (< 0.5 of its output samples), so the round trip may be up to
/// `0.5 * (1 + a / b)` samples early or late.
#[test]
fn every_pair_round_trips_a_440_hz_sine() {
    println!("round trip 440 Hz, SNR dB / lag samples / gain error dB");
    let mut worst = f64::INFINITY;
    for (a, b) in pairs() {
        let x = sine(440.0, a, a as usize, 0.5);
        let y = resample_all(&x, a, b).unwrap();
        let z = resample_all(&y, b, a).unwrap();
        assert!(z.len().abs_diff(x.len()) <= 1, "{a}->{b}->{a}: {}", z.len());
        let margin = a as usize / 20;
        let fit = fit_sine(&z, 440.0, a, margin, z.len() - margin);
        let gain_db = 20.0 * (fit.amp / 0.5).log10();
        println!(
            "{a:>5} -> {b:>5} -> {a:>5}: {:6.1} dB  lag {:+.3}  gain {:+.5} dB",
            fit.snr_db, fit.lag, gain_db
        );
        worst = worst.min(fit.snr_db);
        assert!(
            fit.snr_db >= 120.0,
            "{a}->{b}->{a}: SNR {:.1} dB",
            fit.snr_db
        );
        assert!(gain_db.abs() < 0.001, "{a}->{b}->{a}: gain {gain_db} dB");
        let lag_bound = 0.5 * (1.0 + a as f64 / b as f64) + 1e-3;
        assert!(fit.lag.abs() <= lag_bound, "{a}->{b}->{a}: lag {}", fit.lag);
    }
    println!("worst round-trip SNR: {worst:.1} dB");
}

/// One conversion, checked against the ideal sine at the output rate: after `flush` trimmed the
/// delay the phase lines up to within the sub-sample residual (< 0.5 output samples).
#[test]
fn sine_phase_lines_up_after_flush() {
    for (from, to) in pairs() {
        let x = sine(440.0, from, from as usize / 2, 0.5);
        let y = resample_all(&x, from, to).unwrap();
        let margin = to as usize / 20;
        let fit = fit_sine(&y, 440.0, to, margin, y.len() - margin);
        println!(
            "{from:>5} -> {to:>5}: {:6.1} dB  lag {:+.3}",
            fit.snr_db, fit.lag
        );
        assert!(fit.lag.abs() <= 0.501, "{from}->{to}: lag {:.3}", fit.lag);
        assert!(
            fit.snr_db >= 120.0,
            "{from}->{to}: SNR {:.1} dB",
            fit.snr_db
        );
    }
}

#[test]
fn output_length_is_input_times_ratio() {
    for (from, to) in pairs() {
        for n in [0, 1, 7, 160, 441, 12_345] {
            let x = vec![0.1; n];
            assert_eq!(
                resample_all(&x, from, to).unwrap().len(),
                scaled(n, from, to)
            );
        }
        // Before the flush, the output lags by the delay and at most one block.
        let mut rs = StreamResampler::new(from, to, 10_000).unwrap();
        let mut out = Vec::new();
        rs.process(&[0.1; 10_000], &mut out).unwrap();
        let ideal = scaled(10_000, from, to) as i64 - rs.delay() as i64;
        let block_out = scaled(rs.block_len(), from, to) as i64;
        let got = out.len() as i64;
        assert!(
            got <= ideal && got > ideal - block_out - 1,
            "{from}->{to}: {got} vs {ideal}"
        );
        rs.flush(&mut out).unwrap();
        assert_eq!(out.len(), scaled(10_000, from, to), "{from}->{to}");
    }
}

#[test]
fn slicing_does_not_change_the_output() {
    const MAX: usize = 1_021;
    let primes = [2, 3, 5, 7, 11, 13, 97, 331, MAX];
    for (from, to) in pairs() {
        let x = sine(440.0, from, from as usize * 3 / 10, 0.5);
        let whole = resample_all(&x, from, to).unwrap();
        assert_eq!(stream(from, to, &x, &[1], MAX), whole, "{from}->{to} by 1");
        assert_eq!(
            stream(from, to, &x, &primes, MAX),
            whole,
            "{from}->{to} primes"
        );
        assert_eq!(
            stream(from, to, &x, &[MAX], MAX),
            whole,
            "{from}->{to} max_block"
        );
        let frame = frame_len(from);
        assert_eq!(
            stream(from, to, &x, &[frame], frame),
            whole,
            "{from}->{to} 20 ms"
        );
    }
}

#[test]
fn empty_input_is_fine() {
    let mut rs = StreamResampler::new(48_000, 16_000, 960).unwrap();
    let x = sine(440.0, 48_000, 960, 0.5);
    let mut a = Vec::new();
    rs.process(&[], &mut a).unwrap();
    assert!(a.is_empty());
    rs.process(&x[..500], &mut a).unwrap();
    rs.process(&[], &mut a).unwrap();
    rs.process(&x[500..], &mut a).unwrap();
    rs.flush(&mut a).unwrap();
    assert_eq!(a, resample_all(&x, 48_000, 16_000).unwrap());
    assert!(resample_all(&[], 8_000, 44_100).unwrap().is_empty());
}

/// A unit impulse and a unit step at an input sample that is not block-aligned come out at the
/// same instant at the output rate: the trimmed delay equals the filter's real one.
#[test]
fn impulse_and_step_come_out_on_time() {
    for (from, to) in pairs().filter(|(a, b)| a != b) {
        let at = from as usize / 10 + 3;
        let when = at as f64 * to as f64 / from as f64;
        let mut x = vec![0.0; from as usize / 4];
        x[at] = 1.0;
        let y = stream(from, to, &x, &[frame_len(from)], frame_len(from));
        let i = (0..y.len()).max_by(|&p, &q| y[p].total_cmp(&y[q])).unwrap();
        let (l, c, r) = (y[i - 1] as f64, y[i] as f64, y[i + 1] as f64);
        let peak = i as f64 + 0.5 * (l - r) / (l - 2.0 * c + r);
        assert!(
            (peak - when).abs() <= 1.0,
            "{from}->{to}: impulse at {peak:.2}, want {when:.2}"
        );

        let step: Vec<f32> = (0..x.len())
            .map(|n| if n >= at { 1.0 } else { 0.0 })
            .collect();
        let y = stream(from, to, &step, &[frame_len(from)], frame_len(from));
        let k = y.iter().position(|&v| v >= 0.5).unwrap();
        // Interpolated half-way crossing; an ideal band-limited step crosses 0.5 half a sample
        // before the input's first 1.0.
        let cross = k as f64 - 1.0 + (0.5 - y[k - 1] as f64) / (y[k] - y[k - 1]) as f64;
        let want = (at as f64 - 0.5) * to as f64 / from as f64;
        assert!(
            (cross - want).abs() <= 1.0,
            "{from}->{to}: step at {cross:.2}, want {want:.2}"
        );
    }
}

fn zero_crossings(y: &[f32]) -> usize {
    y.windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count()
}

fn rms(y: &[f32]) -> f64 {
    (y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

#[test]
fn one_khz_keeps_its_frequency_at_48k_to_16k() {
    let x = sine(1_000.0, 48_000, 48_000 * 2, 0.5);
    let y = resample_all(&x, 48_000, 16_000).unwrap();
    // 1.5 s in the middle: 3000 periods, 6000 crossings.
    let mid = &y[4_000..28_000];
    let freq = zero_crossings(mid) as f64 / 2.0 / 1.5;
    assert!((freq - 1_000.0).abs() <= 1.0, "measured {freq} Hz");
    let gain = 20.0 * (rms(mid) / rms(&x[12_000..84_000])).log10();
    assert!(gain.abs() < 0.01, "1 kHz gain {gain} dB");
}

/// 10 kHz is above the 8 kHz Nyquist of 16 kHz output; it would alias to 6 kHz. The filter's
/// cut-off is about 7.3 kHz and the Blackman-Harris² stop band is deeper than f32 rounding
/// (measured about -146 dB): demand 100 dB, so no alias can reach the i16 frames' 96 dB range.
#[test]
fn ten_khz_is_removed_at_48k_to_16k() {
    let x = sine(10_000.0, 48_000, 48_000, 0.5);
    let y = resample_all(&x, 48_000, 16_000).unwrap();
    let mid = &y[1_600..14_400];
    let attenuation = 20.0 * (rms(mid) / rms(&x)).log10();
    println!("10 kHz at 48k->16k: {attenuation:.1} dB");
    assert!(
        attenuation <= -100.0,
        "10 kHz only attenuated {attenuation:.1} dB"
    );
    // For the record: 7 kHz, inside the 16 kHz band but past the cut-off.
    let x = sine(7_000.0, 48_000, 48_000, 0.5);
    let y = resample_all(&x, 48_000, 16_000).unwrap();
    let seven = 20.0 * (rms(&y[1_600..14_400]) / rms(&x)).log10();
    println!("7 kHz at 48k->16k: {seven:.1} dB");
}

/// After warm-up, `process` on same-size blocks (and `flush`, and `reset`) neither allocates nor
/// grows the caller's buffer past its first high-water mark.
#[test]
fn steady_state_does_not_allocate() {
    let cases = [
        (48_000, 16_000, 960),
        (8_000, 16_000, 160),
        (16_000, 8_000, 320),
        (44_100, 16_000, 882),
        (22_050, 48_000, 441),
        (22_050, 48_000, 4_096),
        (24_000, 48_000, 3_000),
        (16_000, 16_000, 320),
    ];
    // The counter sees this thread's allocations.
    let probe = allocations();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert_eq!(allocations(), probe + 1);
    for (from, to, block) in cases {
        let input = sine(440.0, from, block, 0.5);
        let mut rs = StreamResampler::new(from, to, block).unwrap();
        let mut out = Vec::new();
        rs.process(&input, &mut out).unwrap();
        let high_water = out.capacity();
        assert!(high_water >= rs.max_output_len());
        let before = allocations();
        for round in 0..300 {
            out.clear();
            rs.process(&input, &mut out).unwrap();
            assert_eq!(out.capacity(), high_water, "{from}->{to} round {round}");
            if round % 100 == 99 {
                out.clear();
                rs.flush(&mut out).unwrap();
                rs.reset();
            }
        }
        let made = allocations() - before;
        assert_eq!(made, 0, "{from}->{to} x{block}: {made} allocations");
        assert_eq!(out.capacity(), high_water);
    }
}

#[test]
fn errors_name_the_problem() {
    let err = StreamResampler::new(44_100, 11_025, 100).unwrap_err();
    assert!(matches!(
        err,
        ResampleError::UnsupportedRate { rate: 11_025, .. }
    ));
    assert!(
        err.to_string()
            .contains("8000, 16000, 22050, 24000, 32000, 44100, 48000")
    );
    let mut rs = StreamResampler::new(16_000, 48_000, 320).unwrap();
    let err = rs.process(&[0.0; 640], &mut Vec::new()).unwrap_err();
    assert!(matches!(
        err,
        ResampleError::BlockTooLarge {
            len: 640,
            max_block: 320
        }
    ));
    assert_eq!((rs.from_hz(), rs.to_hz()), (16_000, 48_000));
}

#[test]
fn equal_rates_are_untouched() {
    for rate in SUPPORTED_RATES {
        let x = sine(440.0, rate, 1_234, 0.5);
        assert_eq!(resample_all(&x, rate, rate).unwrap(), x);
        assert_eq!(StreamResampler::new(rate, rate, 1).unwrap().delay(), 0);
    }
}

/// CPU time this thread has used (Linux scheduler statistics), falling back to zero.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Resamples 60 s of audio in 20 ms frames and prints the cost; fails only if it is not at
/// least 20 times faster than real time.
#[test]
fn cpu_time_per_minute_of_audio() {
    for (from, to) in [(48_000, 16_000), (22_050, 48_000)] {
        let frame = frame_len(from);
        let input = sine(440.0, from, from as usize * 60, 0.5);
        let mut rs = StreamResampler::new(from, to, frame).unwrap();
        let mut out = Vec::with_capacity(rs.max_output_len());
        let (cpu0, wall0) = (thread_cpu(), Instant::now());
        let mut produced = 0;
        for chunk in input.chunks(frame) {
            out.clear();
            rs.process(chunk, &mut out).unwrap();
            produced += out.len();
        }
        let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
        println!("60 s {from}->{to} in 20 ms frames: cpu {cpu:?}, wall {wall:?}, {produced} out");
        assert!(wall < Duration::from_secs(3), "{from}->{to} took {wall:?}");
    }
}
