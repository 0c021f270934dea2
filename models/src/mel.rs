//! Whisper-style log-mel spectrograms: the Slaney mel filterbank and the 16 kHz feature frontend.
//!
//! [`mel_filters`] computes the triangular filterbank that librosa's `filters.mel` returns with its
//! defaults (Slaney mel scale, Slaney area normalisation, 0 Hz to Nyquist), which is the table
//! Whisper ships as `mel_filters.npz` and whisper.cpp stores in its model files.
//! [`log_mel_spectrogram`] is Whisper's feature extractor (also used by Smart Turn): periodic Hann
//! window of 400 samples, hop 160, centred frames with reflect padding, power spectrum, mel
//! projection, `log10`, dynamic range clamped to 8 (i.e. 80 dB) below the maximum, then
//! `(x + 4) / 4`.
//!
//! ```
//! let filters = dartmouth_models::mel::mel_filters(16_000, 400, 80);
//! assert_eq!(filters.len(), 80 * 201);
//! let features = dartmouth_models::mel::log_mel_spectrogram(&vec![0.0; 16_000], 80);
//! assert_eq!(features.len(), 80 * 100);
//! ```

use std::f64::consts::PI;

/// Whisper's sample rate in Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// Whisper's STFT size (25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Whisper's hop between frames (10 ms at 16 kHz).
pub const HOP_LENGTH: usize = 160;

/// Slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

/// Hertz to mel on the Slaney scale.
pub fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

/// Mel on the Slaney scale to hertz.
pub fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        mel * F_SP
    }
}

/// The mel filterbank, row-major `n_mels × (n_fft / 2 + 1)`: triangles spaced evenly on the Slaney
/// mel scale from 0 Hz to `sample_rate / 2`, each scaled by `2 / (upper edge − lower edge)` in Hz
/// so that every filter has the same area (librosa's `norm="slaney"`).
pub fn mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    let nyquist = f64::from(sample_rate) / 2.0;
    // Centre frequencies of the FFT bins.
    let fft_hz: Vec<f64> = (0..n_freqs)
        .map(|k| k as f64 * f64::from(sample_rate) / n_fft as f64)
        .collect();
    // n_mels + 2 band edges, evenly spaced in mel.
    let (mel_lo, mel_hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let step = (mel_hi - mel_lo) / (n_mels + 1) as f64;
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| {
            if i == n_mels + 1 {
                mel_to_hz(mel_hi)
            } else {
                mel_to_hz(mel_lo + step * i as f64)
            }
        })
        .collect();

    let mut out = vec![0.0f32; n_mels * n_freqs];
    for m in 0..n_mels {
        let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, &f) in fft_hz.iter().enumerate() {
            let rising = (f - left) / (centre - left);
            let falling = (right - f) / (right - centre);
            let w = rising.min(falling).max(0.0);
            out[m * n_freqs + k] = (w * norm) as f32;
        }
    }
    out
}

/// Reflects an index into `0..len` the way numpy's `pad(mode="reflect")` does (edge not repeated).
fn reflect(i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let mut j = i.rem_euclid(period);
    if j >= len as isize {
        j = period - j;
    }
    j as usize
}

/// Whisper's log-mel features of 16 kHz mono audio, row-major `n_mels × (pcm16k.len() / 160)`.
///
/// Frames are centred (reflect padding of 200 samples on both sides) and the final frame is
/// dropped, as Whisper does, so 8 s (128 000 samples) give 800 frames. Pad or trim the audio to the
/// length the model expects before calling (Whisper: 30 s; Smart Turn: 8 s, zeros at the start).
/// Values are `(max(log10(max(mel, 1e-10)), peak − 8) + 4) / 4`, the peak taken over the whole
/// output. Empty or sub-hop input gives an empty vector.
pub fn log_mel_spectrogram(pcm16k: &[f32], n_mels: usize) -> Vec<f32> {
    let n_frames = pcm16k.len() / HOP_LENGTH;
    if n_frames == 0 || n_mels == 0 {
        return Vec::new();
    }
    let n_freqs = N_FFT / 2 + 1;
    let filters = mel_filters(SAMPLE_RATE, N_FFT, n_mels);
    let window: Vec<f64> = (0..N_FFT)
        .map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / N_FFT as f64).cos())
        .collect();
    // One period of the DFT twiddles: e^{-2πi t / N} for t in 0..N.
    let (cos_t, sin_t): (Vec<f64>, Vec<f64>) = (0..N_FFT)
        .map(|t| {
            let a = 2.0 * PI * t as f64 / N_FFT as f64;
            (a.cos(), a.sin())
        })
        .unzip();

    let half = (N_FFT / 2) as isize;
    let mut frame = vec![0.0f64; N_FFT];
    let mut power = vec![0.0f64; n_freqs];
    let mut out = vec![0.0f32; n_mels * n_frames];
    for t in 0..n_frames {
        let start = (t * HOP_LENGTH) as isize - half;
        for (n, x) in frame.iter_mut().enumerate() {
            let idx = reflect(start + n as isize, pcm16k.len());
            *x = f64::from(pcm16k[idx]) * window[n];
        }
        for (k, p) in power.iter_mut().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            let mut phase = 0usize;
            for &x in &frame {
                re += x * cos_t[phase];
                im -= x * sin_t[phase];
                phase += k;
                if phase >= N_FFT {
                    phase -= N_FFT;
                }
            }
            *p = re * re + im * im;
        }
        for m in 0..n_mels {
            let row = &filters[m * n_freqs..(m + 1) * n_freqs];
            let energy: f64 = row
                .iter()
                .zip(&power)
                .map(|(&w, &p)| f64::from(w) * p)
                .sum();
            out[m * n_frames + t] = energy.max(1e-10).log10() as f32;
        }
    }
    let peak = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in &mut out {
        *v = (v.max(peak - 8.0) + 4.0) / 4.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const N_FREQS: usize = 201;

    #[test]
    fn slaney_scale_round_trips_and_is_linear_below_1khz() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(200.0) - 3.0).abs() < 1e-12);
        for hz in [0.0, 123.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9, "{hz}");
        }
    }

    /// Values of Whisper's own `mel_filters.npz` (`mel_80`, librosa 80×201 for 16 kHz).
    #[test]
    fn matches_whispers_filterbank_at_known_points() {
        let f = mel_filters(16_000, 400, 80);
        assert_eq!(f.len(), 80 * N_FREQS);
        let at = |m: usize, k: usize| f[m * N_FREQS + k];
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-7 + 1e-5 * b.abs();
        assert!(close(at(0, 1), 0.024_862_59), "{}", at(0, 1));
        assert!(close(at(10, 10), 0.019_908_22), "{}", at(10, 10));
        assert!(close(at(10, 11), 0.004_954_37), "{}", at(10, 11));
        assert!(close(at(79, 195), 0.002_243_8), "{}", at(79, 195));
        assert!(close(at(79, 199), 0.000_448_76), "{}", at(79, 199));
        assert_eq!(at(79, 200), 0.0);
        // Supports: row 0 covers only bin 1, row 40 bins 42..=44, row 79 bins 186..=199.
        let support = |m: usize| {
            let nz: Vec<usize> = (0..N_FREQS).filter(|&k| at(m, k) > 0.0).collect();
            (nz[0], *nz.last().unwrap())
        };
        assert_eq!(support(0), (1, 1));
        assert_eq!(support(1), (1, 2));
        assert_eq!(support(40), (42, 44));
        assert_eq!(support(79), (186, 199));
    }

    #[test]
    fn filter_row_sums_follow_slaney_normalisation() {
        let f = mel_filters(16_000, 400, 80);
        let row_sum = |m: usize| f[m * N_FREQS..(m + 1) * N_FREQS].iter().sum::<f32>();
        // Below 1 kHz the filters are equally wide (200/3 Hz per mel) and sum to the same value.
        for m in 0..5 {
            assert!(
                (row_sum(m) - 0.024_862_59).abs() < 1e-6,
                "row {m}: {}",
                row_sum(m)
            );
        }
        // Whisper's table: the last three rows sum to 0.02501575, 0.02502262, 0.02492534.
        for (m, want) in [(77, 0.025_015_75), (78, 0.025_022_62), (79, 0.024_925_34)] {
            assert!((row_sum(m) - want).abs() < 1e-6, "row {m}: {}", row_sum(m));
        }
        assert!(f.iter().all(|&w| w >= 0.0));
    }

    #[test]
    fn silence_gives_the_floor_and_the_frame_count_drops_the_last_frame() {
        let feats = log_mel_spectrogram(&vec![0.0; 128_000], 80);
        assert_eq!(feats.len(), 80 * 800);
        // log10(1e-10) = -10, clamped to itself, then (x + 4) / 4.
        assert!(feats.iter().all(|&v| v == -1.5));
        assert!(log_mel_spectrogram(&[0.0; 100], 80).is_empty());
    }

    #[test]
    fn a_tone_lights_the_mel_band_that_contains_it() {
        let tone: Vec<f32> = (0..16_000)
            .map(|n| (2.0 * PI * 1000.0 * n as f64 / 16_000.0).sin() as f32 * 0.5)
            .collect();
        let feats = log_mel_spectrogram(&tone, 80);
        let frames = 100;
        let band_mean =
            |m: usize| feats[m * frames..(m + 1) * frames].iter().sum::<f32>() / frames as f32;
        let loudest = (0..80)
            .max_by(|&a, &b| band_mean(a).total_cmp(&band_mean(b)))
            .unwrap();
        // 1 kHz is FFT bin 25; its filters are rows whose support includes bin 25.
        let f = mel_filters(16_000, 400, 80);
        assert!(f[loudest * N_FREQS + 25] > 0.0, "loudest band {loudest}");
        let peak = feats.iter().copied().fold(f32::MIN, f32::max);
        let floor = feats.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            (peak - floor - 2.0).abs() < 1e-5,
            "range is 8 in log10 = 2 after /4"
        );
    }

    /// Reference values from a numpy implementation of Whisper's frontend (numpy `rfft`, reflect
    /// padding, Whisper's own `mel_filters.npz`) on the same two-tone signal.
    #[test]
    fn matches_a_numpy_reference_of_whispers_frontend() {
        let pcm: Vec<f32> = (0..16_000)
            .map(|n| {
                let t = n as f64 / 16_000.0;
                (0.3 * (2.0 * PI * 440.0 * t).sin() + 0.1 * (2.0 * PI * 3000.0 * t + 0.5).sin() * t)
                    as f32
            })
            .collect();
        let feats = log_mel_spectrogram(&pcm, 80);
        assert_eq!(feats.len(), 80 * 100);
        for (m, t, want) in [
            (0, 0, 0.872_354_116),
            (5, 0, 0.937_308_029),
            (10, 50, 1.237_813_566),
            (40, 99, -0.438_779_052),
            (60, 20, -0.672_720_605),
        ] {
            let got = feats[m * 100 + t];
            assert!(
                (f64::from(got) - want).abs() < 2e-5,
                "mel {m} frame {t}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn reflect_padding_mirrors_without_repeating_the_edge() {
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(-2, 5), 2);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(2, 5), 2);
        assert_eq!(reflect(-3, 1), 0);
    }
}
