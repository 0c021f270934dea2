//! The core's public vocabulary: settings, errors, events, outputs and counters.

use std::sync::Arc;
use std::time::Instant;

use str0m::net::Transmit;

use super::PeerId;
#[allow(unused_imports)] // doc links
use super::{CONNECT_TIMEOUT, MAX_SLOTS};
use crate::police::PolicingConfig;
use crate::speakers::SpeakerConfig;

/// Settings of the media core.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Audio slots per subscriber (the top-N speakers it hears at once); WebSocket peers that
    /// offer fewer lines are offered the rest once, after they connect. 1 ..= [`MAX_SLOTS`].
    pub max_slots: usize,
    /// Publisher policing.
    pub policing: PolicingConfig,
    /// Active-speaker selection.
    pub speakers: SpeakerConfig,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_slots: 3,
            policing: PolicingConfig::default(),
            speakers: SpeakerConfig::default(),
        }
    }
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The SDP offer did not parse.
    #[error("malformed SDP offer: {0}")]
    MalformedSdp(String),
    /// The offer has no audio the core can use.
    #[error("the offer has no audio m-line with a supported codec (Opus)")]
    NoUsableAudio,
    /// The offer could not be accepted.
    #[error("cannot accept the offer: {0}")]
    Rejected(String),
    /// No such peer.
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// The peer has no data channel open.
    #[error("no data channel is open")]
    NoChannel,
    /// The peer's data channel is full.
    #[error("the data channel is congested")]
    ChannelFull,
    /// A candidate did not parse.
    #[error("malformed ICE candidate: {0}")]
    BadCandidate(String),
}

/// Why a peer left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// ICE/DTLS did not complete within [`CONNECT_TIMEOUT`].
    ConnectTimeout,
    /// ICE lost the peer (it vanished).
    Disconnected,
    /// The owner removed it.
    Removed,
    /// A protocol error.
    Failed(String),
}

/// What the core reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreEvent {
    /// ICE and DTLS completed: media flows.
    Connected(PeerId),
    /// The peer is gone and its state released.
    Closed(PeerId, CloseReason),
    /// An audio packet of `peer`, for its tap (`listener: None`, see [`MediaCore::set_tap`]) or
    /// for an in-process listener (see [`MediaCore::set_listen`]).
    Audio {
        /// Whose audio.
        peer: PeerId,
        /// The in-process participant it is for, or `None` for `peer`'s tap.
        listener: Option<PeerId>,
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp (48 kHz).
        rtp_time: u32,
        /// Its level, RFC 6464 -dBov (0 loudest, 127 silent).
        level: u8,
        /// The Opus payload.
        payload: Arc<[u8]>,
    },
    /// A text message arrived on the peer's data channel.
    Text(PeerId, String),
    /// The peer needs a new SDP offer applied (the rest of its audio slots); deliver it and feed
    /// the answer to [`MediaCore::accept_answer`].
    Renegotiate(PeerId, String),
    /// The speaking participants of a room changed (loudest first).
    ActiveSpeakers {
        /// The room.
        room: Arc<str>,
        /// Who speaks now.
        speakers: Vec<PeerId>,
    },
}

/// What a poll yields.
#[derive(Debug)]
pub enum CoreOutput {
    /// Send this datagram.
    Transmit(Transmit),
    /// Something happened.
    Event(CoreEvent),
    /// Nothing to do until this instant (or until input arrives).
    Timeout(Instant),
}

/// Counters of the whole core (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Audio packets received from publishers (before policing).
    pub received: u64,
    /// RTP packets written to subscribers.
    pub forwarded: u64,
    /// Packets dropped by publisher policing.
    pub policed: u64,
    /// Datagrams that were not STUN, DTLS, RTP or RTCP, and RTP packets with an unusable payload
    /// (wrong payload type, empty or oversized).
    pub malformed: u64,
    /// Datagrams no peer claimed.
    pub unclaimed: u64,
    /// Events dropped because the owner did not poll in time.
    pub dropped_events: u64,
    /// Times the core was advanced by a timer ([`super::MediaCore::handle_timeout`]).
    pub timer_wakes: u64,
    /// Peers polled for output: the core polls only peers with new input, so this grows with
    /// activity, not with the number of idle peers.
    pub peer_polls: u64,
}
