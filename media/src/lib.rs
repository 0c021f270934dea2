//! # dartmouth-media
//!
//! The sans-IO media core. Rooms hold participants whose audio tracks are forwarded to each other
//! (RTP is rewritten, never transcoded, between humans); WebRTC peers are `str0m` state machines fed
//! `(now, packet)` and polled for transmits, events and timeouts, while a thin driver owns the UDP
//! socket and timers. Opus and G.711 codecs, the jitter buffer with loss concealment and the audio
//! frame type live here. Rooms are a selective forwarding unit: every subscriber has a fixed set of
//! audio slots that the room's loudest speakers are switched into (no renegotiation).
//!
//! ```
//! use dartmouth_media::{ulaw_decode, ulaw_encode, SeqTsRewriter};
//!
//! assert_eq!(ulaw_decode(ulaw_encode(0)), 0);
//! let mut fwd = SeqTsRewriter::new();
//! fwd.switch_source(1, 960);
//! assert_eq!(fwd.rewrite(1, 7, 1000), Some((7, 1000)));
//! ```

pub mod core;
pub mod driver;
pub mod forward;
pub mod g711;
pub mod g722;
pub mod jitter;
pub mod metrics;
pub mod ogg;
pub mod opus_codec;
pub mod phone_codec;
pub mod police;
pub mod rtp_session;
pub mod speakers;

pub use core::{
    CloseReason, CoreCounters, CoreEvent, CoreOutput, Listen, MediaConfig, MediaCore, PeerError,
    PeerId, PeerStats,
};
pub use driver::{MediaDriver, MediaHandle, OutgoingFrame, PeerNotice, RoomEvent, TapPacket};
pub use forward::{SeqExtender, SeqTsRewriter, SourceId};
pub use g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
pub use jitter::{JitterBuffer, JitterStats, Playout, PlayoutPacket, PushOutcome};
pub use opus_codec::{CodecError, OpusDecoder, OpusEncoder};
pub use phone_codec::{PhoneCodec, PhoneDecoder, PhoneEncoder};
pub use police::PolicingConfig;
pub use rtp_session::{RtpConfig, RtpSession};
pub use speakers::{SpeakerConfig, level_dbov};

#[cfg(test)]
mod alloc_tests;
