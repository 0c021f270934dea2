//! G.711 µ-law (PCMU) and A-law (PCMA) companding, table-free.
//!
//! Each function maps one 16-bit linear sample to one 8-bit code or back; the slice helpers work
//! on caller-owned buffers and never allocate.

/// Bias added to the magnitude before µ-law segment search.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent before the bias is added.
const ULAW_CLIP: i32 = 32_635;

/// Encodes one linear sample as a µ-law byte.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample);
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0x00
    };
    v = v.min(ULAW_CLIP) + ULAW_BIAS;
    // Highest set bit is between bit 7 and bit 14; the segment is its distance from bit 7.
    let top_bit = 31 - (v as u32).leading_zeros() as i32;
    let exponent = (top_bit - 7).clamp(0, 7);
    let mantissa = (v >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one µ-law byte to a linear sample.
pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one linear sample as an A-law byte.
pub fn alaw_encode(sample: i16) -> u8 {
    let (mask, magnitude) = if sample >= 0 {
        (0xD5u8, i32::from(sample))
    } else {
        (0x55u8, -i32::from(sample) - 1)
    };
    // A-law works on 13-bit magnitudes (12 bits plus sign).
    let m = magnitude >> 3;
    let segment = match m {
        0..=0x1F => 0,
        _ => (31 - (m as u32).leading_zeros() as i32) - 4,
    };
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let step_shift = if segment < 2 { 1 } else { segment };
    let code = (segment << 4) | ((m >> step_shift) & 0x0F);
    (code as u8) ^ mask
}

/// Decodes one A-law byte to a linear sample.
pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    let segment = i32::from((a & 0x70) >> 4);
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (segment - 1),
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

/// Encodes `pcm` into `out` as µ-law; returns the number of bytes written (the shorter length).
pub fn ulaw_encode_slice(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(pcm) {
        *o = ulaw_encode(s);
    }
    n
}

/// Decodes µ-law `codes` into `out`; returns the number of samples written (the shorter length).
pub fn ulaw_decode_slice(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(codes) {
        *o = ulaw_decode(c);
    }
    n
}

/// Encodes `pcm` into `out` as A-law; returns the number of bytes written (the shorter length).
pub fn alaw_encode_slice(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(pcm) {
        *o = alaw_encode(s);
    }
    n
}

/// Decodes A-law `codes` into `out`; returns the number of samples written (the shorter length).
pub fn alaw_decode_slice(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(codes) {
        *o = alaw_decode(c);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32_124);
        assert_eq!(ulaw_decode(0x00), -32_124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32_256);
        assert_eq!(alaw_decode(0x2A), -32_256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            // 0x7F is µ-law's "negative zero", which re-encodes as positive zero (0xFF).
            if code != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(code)), code, "µ-law {code:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    #[test]
    fn decoding_is_monotonic() {
        // Positive µ-law codes run 0xFF (smallest) down to 0x80; A-law codes toggle even bits.
        let ulaw: Vec<i16> = (0x80..=0xFFu8).rev().map(ulaw_decode).collect();
        assert!(ulaw.windows(2).all(|w| w[0] < w[1]));
        let alaw: Vec<i16> = (0x80..=0xFFu8).map(|c| alaw_decode(c ^ 0x55)).collect();
        assert!(alaw.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn quantisation_error_is_bounded() {
        // Each segment doubles its step; the error stays under ~1/16 of the magnitude plus the
        // finest step, except µ-law clips above 32635 (32767 decodes to 32124).
        for s in i16::MIN..=i16::MAX {
            let x = i32::from(s);
            let bound = x.abs() / 16 + 16;
            let eu = (i32::from(ulaw_decode(ulaw_encode(s))) - x).abs();
            let ea = (i32::from(alaw_decode(alaw_encode(s))) - x).abs();
            assert!(eu <= bound.max(700), "µ-law error {eu} at {s}");
            assert!(ea <= bound, "A-law error {ea} at {s}");
            if x.abs() < ULAW_CLIP {
                assert!(eu <= bound, "µ-law error {eu} at {s}");
            }
        }
    }

    #[test]
    fn slices_use_shorter_length() {
        let pcm = [0i16, 1000, -1000, 30_000];
        let mut codes = [0u8; 3];
        assert_eq!(ulaw_encode_slice(&pcm, &mut codes), 3);
        let mut back = [0i16; 8];
        assert_eq!(ulaw_decode_slice(&codes, &mut back), 3);
        assert_eq!(back[0], 0);
        assert!((i32::from(back[1]) - 1000).abs() < 64);
        assert_eq!(alaw_encode_slice(&pcm, &mut codes), 3);
        assert_eq!(alaw_decode_slice(&codes, &mut back), 3);
        assert!((i32::from(back[2]) + 1000).abs() < 64);
    }
}
