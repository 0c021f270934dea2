//! # dartmouth-media
//!
//! The sans-IO media core. Rooms hold participants whose audio tracks are forwarded to each other
//! (RTP is rewritten, never transcoded, between humans); WebRTC peers are `str0m` state machines fed
//! `(now, packet)` and polled for transmits, events and timeouts, while a thin driver owns the UDP
//! socket and timers. Opus and G.711 codecs, the jitter buffer with loss concealment and the audio
//! frame type live here. Filled in by the WebRTC gateway work; this is its public face.
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
pub mod jitter;
pub mod opus_codec;

pub use core::{CloseReason, CoreEvent, CoreOutput, MediaCore, PeerError, PeerId};
pub use driver::{MediaDriver, MediaHandle, OutgoingFrame, PeerNotice, TapPacket};
pub use forward::{SeqTsRewriter, SourceId};
pub use g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
pub use jitter::{JitterBuffer, JitterStats, Playout, PlayoutPacket, PushOutcome};
pub use opus_codec::{CodecError, OpusDecoder, OpusEncoder};

#[cfg(test)]
mod alloc_tests;
