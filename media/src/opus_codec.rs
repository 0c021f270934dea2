//! Opus encode/decode of 20 ms frames over the `opus` crate (bundled libopus).
//!
//! Buffers belong to the caller: one frame of interleaved `i16` PCM in, one packet out (and back),
//! with no allocation per frame. Malformed packets and wrongly sized buffers are errors, never
//! panics.

use opus::{Application, Bitrate, Channels};

/// Frame duration every call works on, in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Largest Opus packet the encoder is asked to produce (RFC 6716 maximum for one frame is 1275).
pub const MAX_PACKET_BYTES: usize = 1275;
/// Longest packet `decode` accepts: 48 frames of 1275 bytes, the most a code-3 packet can carry.
pub const MAX_DECODE_PACKET_BYTES: usize = 48 * 1275;
/// Longest audio one Opus packet can hold, in milliseconds (bounds the decode output used).
const MAX_PACKET_MS: u32 = 120;

/// Errors from the Opus codec wrappers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Sample rate not one Opus supports (8, 12, 16, 24 or 48 kHz).
    #[error("unsupported sample rate {0} Hz")]
    SampleRate(u32),
    /// Channel count other than 1 or 2.
    #[error("unsupported channel count {0}")]
    Channels(usize),
    /// The input PCM is not exactly one 20 ms frame.
    #[error("frame of {got} samples, expected {expected}")]
    FrameSize {
        /// Interleaved samples required.
        expected: usize,
        /// Interleaved samples given.
        got: usize,
    },
    /// The output buffer cannot hold one frame.
    #[error("output buffer of {got} samples, need {needed}")]
    BufferTooSmall {
        /// Interleaved samples required.
        needed: usize,
        /// Interleaved samples given.
        got: usize,
    },
    /// A packet longer than [`MAX_DECODE_PACKET_BYTES`].
    #[error("packet of {0} bytes is too large")]
    PacketTooLarge(usize),
    /// An empty packet was given to `decode`; use `conceal` for a missing packet.
    #[error("empty packet")]
    EmptyPacket,
    /// libopus rejected the call (malformed packet, bad argument, ...).
    #[error("{function}: {description}")]
    Opus {
        /// The libopus function that failed.
        function: &'static str,
        /// libopus' description of the error.
        description: &'static str,
    },
}

impl From<opus::Error> for CodecError {
    fn from(e: opus::Error) -> Self {
        CodecError::Opus {
            function: e.function(),
            description: e.description(),
        }
    }
}

/// Validates the format and returns `(opus channels, interleaved samples per 20 ms frame)`.
fn frame_format(sample_rate: u32, channels: usize) -> Result<(Channels, usize), CodecError> {
    if !matches!(sample_rate, 8_000 | 12_000 | 16_000 | 24_000 | 48_000) {
        return Err(CodecError::SampleRate(sample_rate));
    }
    let ch = match channels {
        1 => Channels::Mono,
        2 => Channels::Stereo,
        n => return Err(CodecError::Channels(n)),
    };
    let per_channel = (sample_rate * FRAME_MS / 1000) as usize;
    Ok((ch, per_channel * channels))
}

/// An Opus encoder for 20 ms VoIP frames.
pub struct OpusEncoder {
    inner: opus::Encoder,
    frame_samples: usize,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("frame_samples", &self.frame_samples)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder at `sample_rate` Hz with 1 or 2 `channels`, tuned for speech (`Voip`).
    pub fn new(sample_rate: u32, channels: usize) -> Result<Self, CodecError> {
        let (ch, frame_samples) = frame_format(sample_rate, channels)?;
        let inner = opus::Encoder::new(sample_rate, ch, Application::Voip)?;
        Ok(Self {
            inner,
            frame_samples,
        })
    }

    /// Interleaved samples in one 20 ms frame (`encode`'s required input length).
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Sets the target bitrate in bits per second (libopus accepts 500..=512000).
    pub fn set_bitrate(&mut self, bits_per_second: i32) -> Result<(), CodecError> {
        Ok(self.inner.set_bitrate(Bitrate::Bits(bits_per_second))?)
    }

    /// The current target bitrate in bits per second, if explicit.
    pub fn bitrate(&mut self) -> Result<Option<i32>, CodecError> {
        Ok(match self.inner.get_bitrate()? {
            Bitrate::Bits(b) => Some(b),
            _ => None,
        })
    }

    /// Enables in-band forward error correction, tuned for `expected_loss_percent` (0..=100).
    pub fn set_fec(&mut self, enabled: bool, expected_loss_percent: u8) -> Result<(), CodecError> {
        self.inner.set_inband_fec(enabled)?;
        self.inner
            .set_packet_loss_perc(i32::from(expected_loss_percent.min(100)))?;
        Ok(())
    }

    /// Enables discontinuous transmission (tiny packets during silence).
    pub fn set_dtx(&mut self, enabled: bool) -> Result<(), CodecError> {
        Ok(self.inner.set_dtx(enabled)?)
    }

    /// Encodes one 20 ms frame of interleaved `pcm` into `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if pcm.len() != self.frame_samples {
            return Err(CodecError::FrameSize {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        let cap = out.len().min(MAX_PACKET_BYTES);
        Ok(self.inner.encode(pcm, &mut out[..cap])?)
    }
}

/// An Opus decoder producing 20 ms frames, with loss concealment and FEC recovery.
pub struct OpusDecoder {
    inner: opus::Decoder,
    frame_samples: usize,
    channels: usize,
    /// Interleaved samples in the longest packet (120 ms); larger output buffers are cut to it.
    max_samples: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("frame_samples", &self.frame_samples)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder producing `sample_rate` Hz with 1 or 2 `channels` (any Opus stream decodes).
    pub fn new(sample_rate: u32, channels: usize) -> Result<Self, CodecError> {
        let (ch, frame_samples) = frame_format(sample_rate, channels)?;
        let inner = opus::Decoder::new(sample_rate, ch)?;
        Ok(Self {
            inner,
            frame_samples,
            channels,
            max_samples: frame_samples * (MAX_PACKET_MS / FRAME_MS) as usize,
        })
    }

    /// Interleaved samples in one 20 ms frame (the output length `conceal` and `decode_fec` fill).
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    fn check_packet(packet: &[u8]) -> Result<(), CodecError> {
        match packet.len() {
            0 => Err(CodecError::EmptyPacket),
            n if n > MAX_DECODE_PACKET_BYTES => Err(CodecError::PacketTooLarge(n)),
            _ => Ok(()),
        }
    }

    fn check_out(&self, out: &[i16]) -> Result<(), CodecError> {
        if out.len() < self.frame_samples {
            return Err(CodecError::BufferTooSmall {
                needed: self.frame_samples,
                got: out.len(),
            });
        }
        Ok(())
    }

    /// Decodes `packet` into `out`; returns samples per channel written. `out` must hold at least
    /// one 20 ms frame; longer packets (up to 120 ms) need a correspondingly larger buffer.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        Self::check_packet(packet)?;
        self.check_out(out)?;
        let n = out.len().min(self.max_samples);
        Ok(self.inner.decode(packet, &mut out[..n], false)?)
    }

    /// Conceals one missing 20 ms frame (packet-loss concealment) into `out[..frame_samples]`;
    /// returns samples per channel written.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        self.check_out(out)?;
        let n = self.frame_samples;
        Ok(self.inner.decode(&[], &mut out[..n], false)?)
    }

    /// Recovers a lost 20 ms frame from the in-band FEC data of the packet that followed it
    /// (`next_packet`), into `out[..frame_samples]`. Without FEC data libopus falls back to
    /// concealment. Decode `next_packet` itself normally afterwards.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        Self::check_packet(next_packet)?;
        self.check_out(out)?;
        let n = self.frame_samples;
        Ok(self.inner.decode(next_packet, &mut out[..n], true)?)
    }

    /// Channels in the decoded output.
    pub fn channels(&self) -> usize {
        self.channels
    }
}

#[cfg(test)]
#[path = "opus_codec_tests.rs"]
mod tests;
