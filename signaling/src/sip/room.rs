//! The SIP caller's seat in a room: the one place the SIP bridge uses the media core's
//! in-process participant API (`add_virtual`, `write_audio`, `remove`), so that a change of that
//! API is a change of this file.
//!
//! The caller's decoded audio (8 or 16 kHz) is brought to 48 kHz, encoded to Opus once, and
//! written into the room like any participant's track: G.711/G.722 ↔ Opus happens here, at the
//! edge, and nowhere else.

use dartmouth_media::driver::DriverError;
use dartmouth_media::opus_codec::MAX_PACKET_BYTES;
use dartmouth_media::{MediaHandle, OpusEncoder, OutgoingFrame, PeerId};

/// Opus rate of room tracks.
const ROOM_RATE: u32 = 48_000;
/// Samples of one 20 ms room frame.
const ROOM_FRAME: usize = 960;

/// A SIP caller seated in a room as an in-process participant.
pub struct RoomSeat {
    media: MediaHandle,
    id: PeerId,
    encoder: OpusEncoder,
    upsampled: [i16; ROOM_FRAME],
    packet: [u8; MAX_PACKET_BYTES],
    seq: u16,
    rtp_time: u32,
}

impl RoomSeat {
    /// Seats a caller in `room`.
    pub async fn join(media: &MediaHandle, room: &str) -> Result<Self, DriverError> {
        let encoder = OpusEncoder::new(ROOM_RATE, 1).map_err(|_| DriverError::Stopped)?;
        let id = media.add_virtual(room).await?;
        Ok(Self {
            media: media.clone(),
            id,
            encoder,
            upsampled: [0; ROOM_FRAME],
            packet: [0; MAX_PACKET_BYTES],
            seq: 0,
            rtp_time: 0,
        })
    }

    /// The caller's participant id in the media core.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// One 20 ms frame of the caller's audio at `rate` (8, 16 or 48 kHz) into the room.
    pub fn publish(&mut self, pcm: &[i16], rate: u32) {
        let factor = (ROOM_RATE / rate.max(1)) as usize;
        if factor == 0 || pcm.len() * factor != ROOM_FRAME {
            return;
        }
        // Linear interpolation between neighbouring samples (telephone audio has nothing above
        // 4 or 8 kHz for the interpolation images to hide).
        for (i, pair) in pcm
            .windows(2)
            .chain(std::iter::once(&[pcm[pcm.len() - 1]; 2][..]))
            .enumerate()
        {
            let (a, b) = (i32::from(pair[0]), i32::from(pair[1]));
            for k in 0..factor {
                self.upsampled[i * factor + k] = (a + (b - a) * k as i32 / factor as i32) as i16;
            }
        }
        if let Ok(n) = self.encoder.encode(&self.upsampled, &mut self.packet) {
            self.seq = self.seq.wrapping_add(1);
            self.media.write_audio(
                self.id,
                OutgoingFrame::new(self.seq, self.rtp_time, &self.packet[..n]),
            );
        }
        self.rtp_time = self.rtp_time.wrapping_add(ROOM_FRAME as u32);
    }

    /// Leaves the room.
    pub async fn leave(self) {
        self.media.remove(self.id).await;
    }
}
