//! The codecs of SIP legs behind one face: PCMU, PCMA (G.711, 8 kHz), G.722 (16 kHz) and Opus
//! (48 kHz), each 20 ms per packet, with loss concealment and comfort noise on the decode side.
//! Decoding and encoding work on caller-owned buffers; nothing allocates per frame.

use crate::g711::{alaw_decode_slice, alaw_encode_slice, ulaw_decode_slice, ulaw_encode_slice};
use crate::g722::{G722Decoder, G722Encoder};
use crate::opus_codec::{CodecError, OpusDecoder, OpusEncoder};

/// Most samples of one 20 ms frame (Opus at 48 kHz).
pub const MAX_FRAME_SAMPLES: usize = 960;
/// Frames concealed by repeating (and fading) the last one before G.711/G.722 go silent.
const CONCEALED_FRAMES: u8 = 3;

/// A codec a SIP leg can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneCodec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s.
    G722,
    /// Opus, mono.
    Opus,
}

impl PhoneCodec {
    /// Every codec, in the default order of preference.
    pub const ALL: [PhoneCodec; 4] = [
        PhoneCodec::Opus,
        PhoneCodec::G722,
        PhoneCodec::Pcmu,
        PhoneCodec::Pcma,
    ];

    /// The SDP encoding name (`a=rtpmap`).
    pub fn name(self) -> &'static str {
        match self {
            PhoneCodec::Pcmu => "PCMU",
            PhoneCodec::Pcma => "PCMA",
            PhoneCodec::G722 => "G722",
            PhoneCodec::Opus => "opus",
        }
    }

    /// The codec of an SDP encoding name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The static RTP payload type (RFC 3551), if it has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            PhoneCodec::Pcmu => Some(0),
            PhoneCodec::Pcma => Some(8),
            PhoneCodec::G722 => Some(9),
            PhoneCodec::Opus => None,
        }
    }

    /// The RTP clock rate (8000 for G.722 too, per RFC 3551).
    pub fn clock_rate(self) -> u32 {
        match self {
            PhoneCodec::Opus => 48_000,
            _ => 8_000,
        }
    }

    /// The PCM sample rate the codec works at.
    pub fn sample_rate(self) -> u32 {
        match self {
            PhoneCodec::Pcmu | PhoneCodec::Pcma => 8_000,
            PhoneCodec::G722 => 16_000,
            PhoneCodec::Opus => 48_000,
        }
    }

    /// PCM samples in 20 ms.
    pub fn frame_samples(self) -> usize {
        self.sample_rate() as usize / 50
    }

    /// RTP timestamp ticks in 20 ms.
    pub fn frame_ticks(self) -> u32 {
        self.clock_rate() / 50
    }
}

/// Decodes one leg's audio.
pub struct PhoneDecoder {
    codec: PhoneCodec,
    g722: G722Decoder,
    opus: Option<OpusDecoder>,
    last: [i16; MAX_FRAME_SAMPLES],
    concealed: u8,
    noise_seed: u32,
}

impl PhoneDecoder {
    /// A decoder for `codec`.
    pub fn new(codec: PhoneCodec) -> Result<Self, CodecError> {
        let opus = match codec {
            PhoneCodec::Opus => Some(OpusDecoder::new(48_000, 1)?),
            _ => None,
        };
        Ok(Self {
            codec,
            g722: G722Decoder::new(),
            opus,
            last: [0; MAX_FRAME_SAMPLES],
            concealed: 0,
            noise_seed: 0x2545_f491,
        })
    }

    /// The codec.
    pub fn codec(&self) -> PhoneCodec {
        self.codec
    }

    /// Decodes one packet into `out` (at least a frame long); returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        let frame = self.codec.frame_samples().min(out.len());
        let n = match self.codec {
            PhoneCodec::Pcmu => ulaw_decode_slice(payload, &mut out[..frame]),
            PhoneCodec::Pcma => alaw_decode_slice(payload, &mut out[..frame]),
            PhoneCodec::G722 => self.g722.decode(payload, &mut out[..frame]),
            PhoneCodec::Opus => match self
                .opus
                .as_mut()
                .map(|d| d.decode(payload, &mut out[..frame]))
            {
                Some(Ok(n)) => n,
                _ => 0,
            },
        };
        out[n..frame].fill(0);
        self.last[..frame].copy_from_slice(&out[..frame]);
        self.concealed = 0;
        frame
    }

    /// Fills one frame for a lost packet: Opus's own concealment, else the last frame repeated
    /// at half the level each time, then silence.
    pub fn conceal(&mut self, out: &mut [i16]) -> usize {
        let frame = self.codec.frame_samples().min(out.len());
        if let Some(opus) = self.opus.as_mut()
            && let Ok(n) = opus.conceal(&mut out[..frame])
        {
            return n;
        }
        self.concealed = self.concealed.saturating_add(1);
        if self.concealed > CONCEALED_FRAMES {
            out[..frame].fill(0);
            return frame;
        }
        for (o, l) in out[..frame].iter_mut().zip(self.last.iter_mut()) {
            *l /= 2;
            *o = *l;
        }
        frame
    }

    /// Fills one frame of comfort noise at `level` −dBov (RFC 3389).
    pub fn comfort_noise(&mut self, level: u8, out: &mut [i16]) -> usize {
        let frame = self.codec.frame_samples().min(out.len());
        let amplitude = 32_767.0 * 10f32.powf(-f32::from(level.min(127)) / 20.0) * 1.7;
        for o in &mut out[..frame] {
            // xorshift: cheap white noise, uniform in ±amplitude (RMS ≈ amplitude / 1.7).
            self.noise_seed ^= self.noise_seed << 13;
            self.noise_seed ^= self.noise_seed >> 17;
            self.noise_seed ^= self.noise_seed << 5;
            let unit = (self.noise_seed as f32 / u32::MAX as f32) * 2.0 - 1.0;
            *o = (unit * amplitude) as i16;
        }
        frame
    }
}

/// Encodes one leg's audio.
pub struct PhoneEncoder {
    codec: PhoneCodec,
    g722: G722Encoder,
    opus: Option<OpusEncoder>,
}

impl PhoneEncoder {
    /// An encoder for `codec`.
    pub fn new(codec: PhoneCodec) -> Result<Self, CodecError> {
        let opus = match codec {
            PhoneCodec::Opus => Some(OpusEncoder::new(48_000, 1)?),
            _ => None,
        };
        Ok(Self {
            codec,
            g722: G722Encoder::new(),
            opus,
        })
    }

    /// The codec.
    pub fn codec(&self) -> PhoneCodec {
        self.codec
    }

    /// Encodes one frame of PCM at the codec's rate into `out`; returns the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        match self.codec {
            PhoneCodec::Pcmu => ulaw_encode_slice(pcm, out),
            PhoneCodec::Pcma => alaw_encode_slice(pcm, out),
            PhoneCodec::G722 => self.g722.encode(pcm, out),
            PhoneCodec::Opus => self
                .opus
                .as_mut()
                .and_then(|e| e.encode(pcm, out).ok())
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_a_frame() {
        for codec in PhoneCodec::ALL {
            let n = codec.frame_samples();
            let pcm: Vec<i16> = (0..n)
                .map(|i| {
                    ((i as f32 * 2000.0 / codec.sample_rate() as f32 * std::f32::consts::TAU).sin()
                        * 8000.0) as i16
                })
                .collect();
            let (mut enc, mut dec) = (
                PhoneEncoder::new(codec).unwrap(),
                PhoneDecoder::new(codec).unwrap(),
            );
            let mut bytes = [0u8; 1500];
            let mut out = [0i16; MAX_FRAME_SAMPLES];
            for _ in 0..5 {
                let len = enc.encode(&pcm, &mut bytes);
                assert!(len > 0, "{codec:?}");
                assert_eq!(dec.decode(&bytes[..len], &mut out), n, "{codec:?}");
            }
            let energy: f64 =
                out[..n].iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / n as f64;
            assert!(energy.sqrt() > 2000.0, "{codec:?} decodes audible audio");
            assert_eq!(dec.conceal(&mut out), n);
        }
    }

    #[test]
    fn g711_concealment_fades_to_silence() {
        let mut dec = PhoneDecoder::new(PhoneCodec::Pcmu).unwrap();
        let mut out = [0i16; 160];
        dec.decode(&[0x80; 160], &mut out);
        let loud = out[0].unsigned_abs();
        dec.conceal(&mut out);
        assert!(out[0].unsigned_abs() < loud);
        for _ in 0..CONCEALED_FRAMES {
            dec.conceal(&mut out);
        }
        assert!(out.iter().all(|s| *s == 0));
    }

    #[test]
    fn comfort_noise_follows_its_level() {
        let mut dec = PhoneDecoder::new(PhoneCodec::Pcma).unwrap();
        let mut out = [0i16; 160];
        let rms = |o: &[i16]| {
            (o.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / o.len() as f64).sqrt()
        };
        dec.comfort_noise(30, &mut out);
        let loud = rms(&out);
        dec.comfort_noise(70, &mut out);
        let quiet = rms(&out);
        assert!(loud > 50.0 * quiet, "{loud} vs {quiet}");
        assert!((loud - 32768.0 * 10f64.powf(-1.5)).abs() < 400.0, "{loud}");
    }
}
