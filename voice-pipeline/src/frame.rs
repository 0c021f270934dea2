//! Frames: the audio frame every stage passes on, and the system frames that bypass data queues.
//!
//! An [`AudioFrame`] holds its samples inline (no heap), so moving frames through bounded queues
//! never allocates. Media time is a [`Duration`] since the session's start: stages take it as an
//! input instead of reading a clock, so tests run in virtual time.

use std::time::Duration;

/// Most samples one frame holds: 20 ms of 48 kHz stereo.
pub const MAX_FRAME_SAMPLES: usize = 1_920;
/// Duration of the frames the media side exchanges.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Sample rates clients may send or receive.
pub const SUPPORTED_RATES: [u32; 7] = [8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// Identifies one user turn and the agent's answer to it; interrupts name the turn they end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TurnId(pub u64);

impl TurnId {
    /// The turn after this one.
    pub fn next(self) -> TurnId {
        TurnId(self.0 + 1)
    }
}

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The sample rate is not one of [`SUPPORTED_RATES`].
    #[error(
        "unsupported sample rate {0} Hz (supported: 8000, 16000, 22050, 24000, 32000, 44100, 48000)"
    )]
    UnsupportedRate(u32),
    /// Only mono and stereo are accepted.
    #[error("unsupported channel count {0} (1 or 2)")]
    UnsupportedChannels(u8),
    /// More samples than a frame holds.
    #[error("{0} samples exceed a frame's {MAX_FRAME_SAMPLES}")]
    TooLong(usize),
    /// Stereo data must hold whole sample pairs.
    #[error("{samples} samples do not divide into {channels} channels")]
    Ragged {
        /// Samples given.
        samples: usize,
        /// Channels declared.
        channels: u8,
    },
}

/// A short piece of PCM audio (16-bit, interleaved) with its media timestamp.
#[derive(Clone, Copy)]
pub struct AudioFrame {
    samples: [i16; MAX_FRAME_SAMPLES],
    len: u16,
    sample_rate: u32,
    channels: u8,
    /// Media time of the first sample, since the session's start.
    pub timestamp: Duration,
}

impl std::fmt::Debug for AudioFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioFrame")
            .field("len", &self.len)
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

impl PartialEq for AudioFrame {
    fn eq(&self, other: &Self) -> bool {
        self.samples() == other.samples()
            && self.sample_rate == other.sample_rate
            && self.channels == other.channels
            && self.timestamp == other.timestamp
    }
}

impl AudioFrame {
    /// A frame of `samples` (interleaved when stereo), validated.
    pub fn new(
        samples: &[i16],
        sample_rate: u32,
        channels: u8,
        timestamp: Duration,
    ) -> Result<Self, FrameError> {
        if !SUPPORTED_RATES.contains(&sample_rate) {
            return Err(FrameError::UnsupportedRate(sample_rate));
        }
        if !(1..=2).contains(&channels) {
            return Err(FrameError::UnsupportedChannels(channels));
        }
        if samples.len() > MAX_FRAME_SAMPLES {
            return Err(FrameError::TooLong(samples.len()));
        }
        if !samples.len().is_multiple_of(usize::from(channels)) {
            return Err(FrameError::Ragged {
                samples: samples.len(),
                channels,
            });
        }
        let mut frame = AudioFrame {
            samples: [0; MAX_FRAME_SAMPLES],
            len: samples.len() as u16,
            sample_rate,
            channels,
            timestamp,
        };
        frame.samples[..samples.len()].copy_from_slice(samples);
        Ok(frame)
    }

    /// The interleaved samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples[..usize::from(self.len)]
    }

    /// Sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// 1 (mono) or 2 (stereo).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Samples per channel.
    pub fn samples_per_channel(&self) -> usize {
        usize::from(self.len) / usize::from(self.channels)
    }

    /// How long the frame plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples_per_channel() as f64 / f64::from(self.sample_rate))
    }

    /// Appends the frame as mono f32 in [-1, 1] to `out` (stereo is averaged).
    pub fn extend_mono_f32(&self, out: &mut Vec<f32>) {
        match self.channels {
            1 => out.extend(self.samples().iter().map(|&s| i16_to_f32(s))),
            _ => out.extend(
                self.samples()
                    .chunks_exact(2)
                    .map(|pair| (i16_to_f32(pair[0]) + i16_to_f32(pair[1])) * 0.5),
            ),
        }
    }
}

/// Control frames. They travel beside audio, never behind it: an interrupt reaches every stage
/// at once however much audio is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemFrame {
    /// The session starts.
    Start,
    /// The session ends; stages flush nothing further.
    Stop,
    /// Work for `turn` (and older) is void: the person spoke over the agent.
    Interrupt {
        /// The turn being interrupted.
        turn: TurnId,
    },
}

/// Anything that flows through the pipeline.
// Audio is carried inline on purpose: boxing it would allocate once per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Audio.
    Audio(AudioFrame),
    /// Control.
    System(SystemFrame),
}

/// 16-bit sample to [-1, 1).
#[inline]
pub fn i16_to_f32(sample: i16) -> f32 {
    f32::from(sample) / 32_768.0
}

/// [-1, 1] sample to 16-bit, clamping (clipped input stays clipped rather than wrapping).
#[inline]
pub fn f32_to_i16(sample: f32) -> i16 {
    (sample * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let ts = Duration::ZERO;
        assert_eq!(
            AudioFrame::new(&[0; 10], 11_025, 1, ts).unwrap_err(),
            FrameError::UnsupportedRate(11_025)
        );
        assert_eq!(
            AudioFrame::new(&[0; 10], 16_000, 3, ts).unwrap_err(),
            FrameError::UnsupportedChannels(3)
        );
        assert_eq!(
            AudioFrame::new(&[0; 3], 16_000, 2, ts).unwrap_err(),
            FrameError::Ragged {
                samples: 3,
                channels: 2
            }
        );
        assert!(matches!(
            AudioFrame::new(&[0; 5000], 48_000, 1, ts),
            Err(FrameError::TooLong(5000))
        ));
    }

    #[test]
    fn stereo_is_averaged_to_mono_and_duration_follows_the_rate() {
        let frame =
            AudioFrame::new(&[16_384, 0, -16_384, -16_384], 48_000, 2, Duration::ZERO).unwrap();
        let mut mono = Vec::new();
        frame.extend_mono_f32(&mut mono);
        assert_eq!(mono, vec![0.25, -0.5]);
        let twenty_ms = AudioFrame::new(&[0; 320], 16_000, 1, Duration::ZERO).unwrap();
        assert_eq!(twenty_ms.duration(), FRAME_DURATION);
    }

    #[test]
    fn conversion_clamps_instead_of_wrapping() {
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(-2.0), i16::MIN);
        assert_eq!(f32_to_i16(i16_to_f32(1234)), 1234);
    }
}
