//! G.722 wideband audio at 64 kbit/s (ITU-T G.722 mode 1), written from the recommendation's
//! block descriptions: a 24-tap quadrature mirror filter splits 16 kHz audio into two 8 kHz
//! sub-bands, coded by ADPCM with 6 bits (lower band) and 2 bits (higher band) per sample, each
//! with an adaptive quantiser scale and a two-pole, six-zero adaptive predictor. One byte per
//! pair of input samples: 20 ms is 320 samples in, 160 bytes out (the RTP clock stays 8000, as
//! RFC 3551 specifies for historical reasons). State is fixed-size; nothing allocates.
//!
//! ```
//! use dartmouth_media::g722::{G722Encoder, G722Decoder};
//!
//! let tone: Vec<i16> = (0..320).map(|i| ((i as f32 * 0.2).sin() * 8000.0) as i16).collect();
//! let (mut enc, mut dec) = (G722Encoder::new(), G722Decoder::new());
//! let mut bytes = [0u8; 160];
//! assert_eq!(enc.encode(&tone, &mut bytes), 160);
//! let mut pcm = [0i16; 320];
//! assert_eq!(dec.decode(&bytes, &mut pcm), 320);
//! ```

/// Quadrature mirror filter coefficients (the even taps; the odd taps are these reversed).
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];
/// Lower-band quantiser decision levels (scaled by the step `det`).
const Q6: [i32; 31] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0,
];
/// Lower-band codes of negative differences, by decision interval.
const ILN: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
/// Lower-band codes of positive differences, by decision interval.
const ILP: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// Lower-band 6-bit inverse quantiser (decoder output levels).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Lower-band 4-bit inverse quantiser (feeds the predictor on both sides).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// Lower-band 4-bit code → magnitude class for the scale adaptation.
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Lower-band log-scale factor increments by magnitude class.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// 2^(i/32) in Q11: the scale factor's mantissa.
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Higher-band 2-bit inverse quantiser.
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// Higher-band codes by magnitude (1 small, 2 large), negative and positive.
const IHN: [u8; 3] = [0, 1, 0];
const IHP: [u8; 3] = [0, 3, 2];
/// Higher-band code → magnitude class, and its log-scale increments.
const RH2: [usize; 4] = [2, 1, 2, 1];
const WH: [i32; 3] = [0, -214, 798];
/// Largest log-scale factors of the two bands.
const NB_MAX_LOW: i32 = 18_432;
const NB_MAX_HIGH: i32 = 22_528;

fn sat(v: i32) -> i32 {
    v.clamp(-32_768, 32_767)
}

/// One sub-band's adaptive quantiser scale and predictor.
#[derive(Debug, Clone, Copy)]
struct Band {
    /// Signal estimate (the prediction).
    s: i32,
    sp: i32,
    sz: i32,
    /// Reconstructed signal history.
    r: [i32; 3],
    /// Pole coefficients.
    a: [i32; 3],
    /// Partial reconstructed signal history.
    p: [i32; 3],
    /// Quantised difference history.
    d: [i32; 7],
    /// Zero coefficients.
    b: [i32; 7],
    /// Log scale factor.
    nb: i32,
    /// Quantiser step.
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Self {
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            a: [0; 3],
            p: [0; 3],
            d: [0; 7],
            b: [0; 7],
            nb: 0,
            det,
        }
    }

    /// Scale adaptation (LOGSCL/SCALEL, LOGSCH/SCALEH): `increment` from the code's class,
    /// `max` the band's ceiling, `shift_base` 8 (lower) or 10 (higher).
    fn adapt_scale(&mut self, increment: i32, max: i32, shift_base: i32) {
        self.nb = (((self.nb * 127) >> 7) + increment).clamp(0, max);
        let mantissa = ILB[((self.nb >> 6) & 31) as usize];
        let shift = shift_base - (self.nb >> 11);
        let scaled = if shift < 0 {
            mantissa << -shift
        } else {
            mantissa >> shift
        };
        self.det = scaled << 2;
    }

    /// Predictor update and the next prediction (block 4: RECONS, PARREC, UPPOL2, UPPOL1,
    /// UPZERO, DELAYA, FILTEP, FILTEZ, PREDIC), from the quantised difference `dx`.
    fn predict(&mut self, dx: i32) {
        let r = sat(self.s + dx);
        let p = sat(self.sz + dx);
        let sign = |v: i32| v >> 15;
        // UPPOL2
        let (sg0, sg1, sg2) = (sign(p), sign(self.p[1]), sign(self.p[2]));
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32_767);
        let mut a2 = (wd2 >> 7) + if sg0 == sg2 { 128 } else { -128 };
        a2 += (self.a[2] * 32_512) >> 15;
        let a2 = a2.clamp(-12_288, 12_288);
        // UPPOL1
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let wd2 = (self.a[1] * 32_640) >> 15;
        let limit = sat(15_360 - a2);
        let a1 = sat(wd1 + wd2).clamp(-limit, limit);
        // UPZERO (d[1..] hold the previous differences)
        self.d[0] = dx;
        let step = if dx == 0 { 0 } else { 128 };
        let sgd = sign(dx);
        let mut b = [0i32; 7];
        for (i, coefficient) in b.iter_mut().enumerate().skip(1) {
            let wd2 = if sign(self.d[i]) == sgd { step } else { -step };
            *coefficient = sat(wd2 + ((self.b[i] * 32_640) >> 15));
        }
        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
        }
        self.b = b;
        self.r = [r, r, self.r[1]];
        self.p = [p, p, self.p[1]];
        self.a = [0, a1, a2];
        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);
        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);
        // PREDIC
        self.s = sat(self.sp + self.sz);
    }
}

/// G.722 encoder (16 kHz PCM → 64 kbit/s).
#[derive(Debug, Clone)]
pub struct G722Encoder {
    x: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self {
            x: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Encodes pairs of 16 kHz samples into `out` (one byte per pair); returns the bytes
    /// written (an odd last sample is dropped).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut n = 0;
        for (pair, byte) in pcm.chunks_exact(2).zip(out.iter_mut()) {
            *byte = self.encode_pair(i32::from(pair[0]), i32::from(pair[1]));
            n += 1;
        }
        n
    }

    fn encode_pair(&mut self, first: i32, second: i32) -> u8 {
        // Transmit QMF: split into the two sub-bands, one sample of each per input pair.
        self.x.copy_within(2.., 0);
        self.x[22] = first;
        self.x[23] = second;
        let (mut odd, mut even) = (0i32, 0i32);
        for i in 0..12 {
            odd += self.x[2 * i] * QMF[i];
            even += self.x[2 * i + 1] * QMF[11 - i];
        }
        let xlow = (even + odd) >> 14;
        let xhigh = (even - odd) >> 14;

        // Lower band: SUBTRA, QUANTL, INVQAL, LOGSCL, SCALEL, block 4.
        let el = sat(xlow - self.low.s);
        let magnitude = if el >= 0 { el } else { -(el + 1) };
        let mut interval = 1;
        while interval < 30 && magnitude >= (Q6[interval] * self.low.det) >> 12 {
            interval += 1;
        }
        let ilow = if el < 0 { ILN[interval] } else { ILP[interval] };
        let ril = usize::from(ilow >> 2);
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], NB_MAX_LOW, 8);
        self.low.predict(dlow);

        // Higher band: SUBTRA, QUANTH, INVQAH, LOGSCH, SCALEH, block 4.
        let eh = sat(xhigh - self.high.s);
        let magnitude = if eh >= 0 { eh } else { -(eh + 1) };
        let large = magnitude >= (564 * self.high.det) >> 12;
        let class = if large { 2 } else { 1 };
        let ihigh = if eh < 0 { IHN[class] } else { IHP[class] };
        let dhigh = (self.high.det * QM2[usize::from(ihigh)]) >> 15;
        self.high
            .adapt_scale(WH[RH2[usize::from(ihigh)]], NB_MAX_HIGH, 10);
        self.high.predict(dhigh);

        (ihigh << 6) | ilow
    }
}

/// G.722 decoder (64 kbit/s → 16 kHz PCM).
#[derive(Debug, Clone)]
pub struct G722Decoder {
    x: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self {
            x: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes bytes into 16 kHz samples (two per byte); returns the samples written.
    pub fn decode(&mut self, bytes: &[u8], out: &mut [i16]) -> usize {
        let mut n = 0;
        for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
            let (a, b) = self.decode_byte(*byte);
            pair[0] = a;
            pair[1] = b;
            n += 2;
        }
        n
    }

    fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let ilow = usize::from(code & 0x3f);
        let ihigh = usize::from(code >> 6);
        // Lower band: INVQBL, RECONS, INVQAL, LOGSCL, SCALEL, block 4.
        let ril = ilow >> 2;
        let rlow = (self.low.s + ((self.low.det * QM6[ilow]) >> 15)).clamp(-16_384, 16_383);
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], NB_MAX_LOW, 8);
        self.low.predict(dlow);
        // Higher band: INVQAH, RECONS, LOGSCH, SCALEH, block 4.
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16_384, 16_383);
        self.high.adapt_scale(WH[RH2[ihigh]], NB_MAX_HIGH, 10);
        self.high.predict(dhigh);
        // Receive QMF: two output samples from the two sub-band samples.
        self.x.copy_within(2.., 0);
        self.x[22] = rlow + rhigh;
        self.x[23] = rlow - rhigh;
        let (mut first, mut second) = (0i32, 0i32);
        for i in 0..12 {
            second += self.x[2 * i] * QMF[i];
            first += self.x[2 * i + 1] * QMF[11 - i];
        }
        (sat(first >> 11) as i16, sat(second >> 11) as i16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|s| f64::from(*s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(decoded)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum();
        10.0 * (signal / noise.max(1.0)).log10()
    }

    /// The codec delays by the two QMFs' group delay (22 samples); compare aligned.
    fn round_trip(input: &[i16]) -> Vec<i16> {
        let (mut enc, mut dec) = (G722Encoder::new(), G722Decoder::new());
        let mut bytes = vec![0u8; input.len() / 2];
        enc.encode(input, &mut bytes);
        let mut out = vec![0i16; input.len()];
        dec.decode(&bytes, &mut out);
        out
    }

    #[test]
    fn the_scale_table_is_two_to_the_i_over_32() {
        for (i, v) in ILB.iter().enumerate() {
            let exact = 2048.0 * 2f64.powf(i as f64 / 32.0);
            assert!((f64::from(*v) - exact).abs() <= 1.0, "{i}: {v} vs {exact}");
        }
    }

    #[test]
    fn tones_in_both_sub_bands_survive_the_round_trip() {
        for freq in [300.0, 1000.0, 3000.0, 5500.0] {
            let input: Vec<i16> = (0..16_000)
                .map(|i| {
                    let t = f64::from(i) / 16_000.0;
                    (10_000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
                })
                .collect();
            let out = round_trip(&input);
            const DELAY: usize = 22;
            let snr = snr_db(&input[1000..15_000], &out[1000 + DELAY..15_000 + DELAY]);
            assert!(snr > 20.0, "{freq} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn silence_stays_quiet_and_extremes_do_not_overflow() {
        let out = round_trip(&[0; 3200]);
        assert!(
            out.iter().all(|s| s.abs() < 64),
            "silence decodes near zero"
        );
        let square: Vec<i16> = (0..3200)
            .map(|i| {
                if (i / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let _ = round_trip(&square);
        let mut dec = G722Decoder::new();
        let garbage: Vec<u8> = (0..=255).cycle().take(4000).collect();
        let mut out = vec![0i16; 8000];
        assert_eq!(dec.decode(&garbage, &mut out), 8000);
    }
}
