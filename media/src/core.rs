//! The sans-IO media core: every WebRTC peer of every room, multiplexed on one UDP socket.
//!
//! [`MediaCore`] is fed datagrams and time ([`MediaCore::handle_receive`],
//! [`MediaCore::handle_timeout`]) and polled for [`CoreOutput`]s: datagrams to send, events, and
//! the next time it wants to be woken. It never reads a clock or touches a socket, so tests drive
//! it in virtual time with in-memory peers (`core_tests.rs`).
//!
//! Forwarding: each peer's audio is forwarded, untouched Opus, to the other peers of its room.
//! A peer receives on its *slots*: the audio m-lines it can receive on (the sendrecv line of a
//! browser, plus any extra recvonly lines it offered). A source (another participant, or an
//! in-process agent writing through [`MediaCore::write_audio`]) takes a free slot the first time
//! it sends and keeps it until it leaves; timestamps are rewritten so each slot's stream stays
//! continuous when its source changes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::forward::SeqTsRewriter;
use sdp::{audio_lines, sdp_error_summary};

mod sdp;

/// A peer (or an in-process participant) of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

/// A peer that has not finished ICE and DTLS within this long is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Most events queued between polls; older audio events are dropped beyond it.
pub const EVENT_CAPACITY: usize = 1024;
/// Largest data-channel text message accepted from a peer, in bytes.
pub const MAX_CHANNEL_MESSAGE: usize = 16 * 1024;
/// Opus RTP clock rate.
const OPUS_RATE: u32 = 48_000;
/// RTP timestamp step of one 20 ms Opus frame.
const OPUS_FRAME_TICKS: u32 = 960;
/// Timeout reported when no peer needs waking sooner.
const IDLE_WAKE: Duration = Duration::from_millis(100);

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
    /// An audio packet of a tapped peer (see [`MediaCore::set_tap`]).
    Audio {
        /// Whose audio.
        peer: PeerId,
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp (48 kHz).
        rtp_time: u32,
        /// The Opus payload.
        payload: Arc<[u8]>,
    },
    /// A text message arrived on the peer's data channel.
    Text(PeerId, String),
    /// The peer needs a new SDP offer applied (another participant's audio needs an m-line it
    /// did not offer); deliver it and feed the answer to [`MediaCore::accept_answer`].
    Renegotiate(PeerId, String),
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

/// Where a peer can receive audio.
#[derive(Debug)]
struct Slot {
    mid: Mid,
    pt: Pt,
    source: Option<PeerId>,
    rewriter: SeqTsRewriter,
}

#[derive(Debug)]
struct Peer {
    id: PeerId,
    room: Arc<str>,
    rtc: Rtc,
    deadline: Option<Instant>,
    connected: bool,
    publish_mid: Option<Mid>,
    slots: Vec<Slot>,
    channel: Option<ChannelId>,
    tap: bool,
    wake: Instant,
    /// Whether the peer's signaling can carry a new offer (WebSocket yes, WHIP/WHEP no).
    renegotiable: bool,
    /// An offer sent and not yet answered: the new m-line and the source it is for.
    pending: Option<(SdpPendingOffer, Mid, PeerId)>,
}

/// A member of a room that is not a WebRTC peer (an in-process agent).
#[derive(Debug)]
struct Virtual {
    room: Arc<str>,
}

/// All peers of all rooms.
pub struct MediaCore {
    local: SocketAddr,
    peers: Vec<Peer>,
    virtuals: HashMap<PeerId, Virtual>,
    events: VecDeque<CoreEvent>,
    next_id: u64,
    cursor: usize,
    quiet: usize,
    dropped_events: u64,
}

impl MediaCore {
    /// A core whose peers reach it at `local` (the advertised host candidate: public IP and the
    /// shared UDP port).
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            peers: Vec::new(),
            virtuals: HashMap::new(),
            events: VecDeque::with_capacity(64),
            next_id: 1,
            cursor: 0,
            quiet: 0,
            dropped_events: 0,
        }
    }

    /// The advertised address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Peers (WebRTC) currently held.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Events dropped because the owner did not poll in time.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Adds a WebRTC peer to `room` from its SDP offer and returns the SDP answer.
    /// `renegotiable`: its signaling can carry later offers (see [`CoreEvent::Renegotiate`]).
    pub fn add_peer(
        &mut self,
        now: Instant,
        room: &str,
        offer_sdp: &str,
        renegotiable: bool,
    ) -> Result<(PeerId, String), PeerError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| PeerError::MalformedSdp(sdp_error_summary(&e.to_string())))?;
        if !offer_sdp.lines().any(|l| l.starts_with("m=audio")) {
            return Err(PeerError::NoUsableAudio);
        }
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        let candidate = Candidate::host(self.local, "udp")
            .map_err(|e| PeerError::Rejected(format!("local candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer: SdpAnswer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::Rejected(e.to_string()))?;
        let answer_sdp = answer.to_sdp_string();
        let (publish_mid, slots) = audio_lines(&mut rtc, &answer_sdp);
        if publish_mid.is_none() && slots.is_empty() {
            return Err(PeerError::NoUsableAudio);
        }
        let id = self.allocate_id();
        self.peers.push(Peer {
            id,
            room: Arc::from(room),
            rtc,
            deadline: Some(now + CONNECT_TIMEOUT),
            connected: false,
            publish_mid,
            slots,
            channel: None,
            tap: false,
            wake: now,
            renegotiable,
            pending: None,
        });
        self.quiet = 0;
        Ok((id, answer_sdp))
    }

    /// Adds an in-process participant (an agent) to `room`; it sends with
    /// [`MediaCore::write_audio`] and hears peers through [`MediaCore::set_tap`].
    pub fn add_virtual(&mut self, room: &str) -> PeerId {
        let id = self.allocate_id();
        self.virtuals.insert(
            id,
            Virtual {
                room: Arc::from(room),
            },
        );
        id
    }

    /// Whether `peer`'s audio is reported as [`CoreEvent::Audio`] (for an agent listening to it).
    pub fn set_tap(&mut self, peer: PeerId, tap: bool) -> Result<(), PeerError> {
        self.peer_mut(peer)?.tap = tap;
        Ok(())
    }

    /// Adds a trickled remote candidate (`candidate:` attribute value); empty ends trickling.
    pub fn add_remote_candidate(&mut self, peer: PeerId, candidate: &str) -> Result<(), PeerError> {
        let peer = self.peer_mut(peer)?;
        let text = candidate.trim().trim_start_matches("a=");
        if text.is_empty() {
            return Ok(());
        }
        let parsed =
            Candidate::from_sdp_string(text).map_err(|e| PeerError::BadCandidate(e.to_string()))?;
        peer.rtc.add_remote_candidate(parsed);
        self.quiet = 0;
        Ok(())
    }

    /// Removes a peer or an in-process participant, releasing its slots in other peers.
    pub fn remove(&mut self, id: PeerId) {
        if self.virtuals.remove(&id).is_some() {
            self.release_source(id);
            return;
        }
        if let Some(index) = self.peers.iter().position(|p| p.id == id) {
            let mut peer = self.peers.swap_remove(index);
            peer.rtc.disconnect();
            self.release_source(id);
            self.push_event(CoreEvent::Closed(id, CloseReason::Removed));
        }
    }

    /// Applies the peer's answer to the last [`CoreEvent::Renegotiate`] offer.
    pub fn accept_answer(&mut self, peer: PeerId, answer_sdp: &str) -> Result<(), PeerError> {
        let peer = self.peer_mut(peer)?;
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| PeerError::MalformedSdp(sdp_error_summary(&e.to_string())))?;
        let (pending, mid, source) = peer
            .pending
            .take()
            .ok_or_else(|| PeerError::Rejected("no offer is pending".into()))?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| PeerError::Rejected(e.to_string()))?;
        if let Some(pt) = sdp::opus_pt(&mut peer.rtc, mid) {
            let mut rewriter = SeqTsRewriter::new();
            rewriter.switch_source(source.0, OPUS_FRAME_TICKS);
            let taken = peer.slots.iter().any(|s| s.source == Some(source));
            peer.slots.push(Slot {
                mid,
                pt,
                source: (!taken).then_some(source),
                rewriter,
            });
        }
        self.quiet = 0;
        Ok(())
    }

    /// Sends a text message on the peer's data channel.
    pub fn send_text(&mut self, peer: PeerId, text: &str) -> Result<(), PeerError> {
        let peer = self.peer_mut(peer)?;
        let id = peer.channel.ok_or(PeerError::NoChannel)?;
        let mut channel = peer.rtc.channel(id).ok_or(PeerError::NoChannel)?;
        match channel.write(false, text.as_bytes()) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(PeerError::ChannelFull),
        }
    }

    /// Audio from an in-process participant (one Opus frame of 20 ms, RTP time at 48 kHz) to
    /// every peer of its room that has a slot for it. Peers without a free slot do not hear it.
    pub fn write_audio(
        &mut self,
        now: Instant,
        source: PeerId,
        seq: u16,
        rtp_time: u32,
        payload: &[u8],
    ) {
        let Some(room) = self.virtuals.get(&source).map(|v| Arc::clone(&v.room)) else {
            return;
        };
        let data: Arc<[u8]> = Arc::from(payload);
        self.forward(now, &room, source, seq, rtp_time, &data);
    }

    /// Feeds a datagram received on the shared socket. Returns `false` if no peer claims it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, datagram) else {
            return false;
        };
        let input = Input::Receive(now, receive);
        let Some(index) = self.peers.iter().position(|p| p.rtc.accepts(&input)) else {
            return false;
        };
        let peer = &mut self.peers[index];
        if let Err(e) = peer.rtc.handle_input(input) {
            let id = peer.id;
            self.close(index, CloseReason::Failed(e.to_string()));
            tracing::debug!(%id, error = %e, "peer input failed");
        }
        self.quiet = 0;
        true
    }

    /// Advances time: timers of every peer that is due, connect deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.peers.len() {
            let peer = &mut self.peers[index];
            if peer.deadline.is_some_and(|d| now >= d) {
                self.close(index, CloseReason::ConnectTimeout);
                continue;
            }
            if now >= peer.wake {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    self.close(index, CloseReason::Failed(e.to_string()));
                    continue;
                }
                self.quiet = 0;
            }
            index += 1;
        }
    }

    /// The next output. Call until it returns [`CoreOutput::Timeout`].
    pub fn poll_output(&mut self, now: Instant) -> CoreOutput {
        loop {
            if let Some(event) = self.events.pop_front() {
                return CoreOutput::Event(event);
            }
            if self.peers.is_empty() || self.quiet >= self.peers.len() {
                return CoreOutput::Timeout(self.next_wake(now));
            }
            if self.cursor >= self.peers.len() {
                self.cursor = 0;
            }
            let index = self.cursor;
            let peer = &mut self.peers[index];
            if !peer.rtc.is_alive() {
                self.close(index, CloseReason::Disconnected);
                continue;
            }
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(transmit)) => {
                    self.quiet = 0;
                    return CoreOutput::Transmit(transmit);
                }
                Ok(Output::Timeout(at)) => {
                    peer.wake = at;
                    self.quiet += 1;
                    self.cursor += 1;
                }
                Ok(Output::Event(event)) => {
                    self.quiet = 0;
                    self.handle_event(now, index, event);
                }
                Err(e) => self.close(index, CloseReason::Failed(e.to_string())),
            }
        }
    }

    fn handle_event(&mut self, now: Instant, index: usize, event: Event) {
        let peer = &mut self.peers[index];
        match event {
            Event::Connected => {
                peer.connected = true;
                peer.deadline = None;
                let id = peer.id;
                self.push_event(CoreEvent::Connected(id));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close(index, CloseReason::Disconnected);
            }
            Event::ChannelOpen(id, _label) => peer.channel = Some(id),
            Event::ChannelClose(id) if peer.channel == Some(id) => peer.channel = None,
            Event::ChannelData(data) => {
                if data.binary || data.data.len() > MAX_CHANNEL_MESSAGE {
                    return;
                }
                if let Ok(text) = String::from_utf8(data.data) {
                    let id = peer.id;
                    self.push_event(CoreEvent::Text(id, text));
                }
            }
            Event::MediaData(data) => {
                if Some(data.mid) != peer.publish_mid {
                    return;
                }
                let (id, tap, room) = (peer.id, peer.tap, Arc::clone(&peer.room));
                let seq = **data.seq_range.start() as u16;
                let rtp_time = data.time.numer() as u32;
                if tap {
                    self.push_event(CoreEvent::Audio {
                        peer: id,
                        seq,
                        rtp_time,
                        payload: data.data.clone(),
                    });
                }
                self.forward(now, &room, id, seq, rtp_time, &data.data);
            }
            _ => {}
        }
    }

    /// Writes one source's packet into a slot of every other peer of the room.
    fn forward(
        &mut self,
        now: Instant,
        room: &str,
        source: PeerId,
        seq: u16,
        rtp_time: u32,
        data: &Arc<[u8]>,
    ) {
        let mut offers = Vec::new();
        for peer in self
            .peers
            .iter_mut()
            .filter(|p| p.id != source && &*p.room == room && p.connected)
        {
            let slot_index = match peer.slots.iter().position(|s| s.source == Some(source)) {
                Some(i) => i,
                None => match peer.slots.iter().position(|s| s.source.is_none()) {
                    Some(i) => {
                        let slot = &mut peer.slots[i];
                        slot.source = Some(source);
                        slot.rewriter.switch_source(source.0, OPUS_FRAME_TICKS);
                        i
                    }
                    None => {
                        // No m-line for this source: offer one if the peer can take offers.
                        if peer.renegotiable && peer.pending.is_none() {
                            let mut change = peer.rtc.sdp_api();
                            let mid = change.add_media(
                                MediaKind::Audio,
                                Direction::SendOnly,
                                Some(source.to_string()),
                                None,
                                None,
                            );
                            if let Some((offer, pending)) = change.apply() {
                                peer.pending = Some((pending, mid, source));
                                offers.push(CoreEvent::Renegotiate(peer.id, offer.to_sdp_string()));
                            }
                        }
                        continue;
                    }
                },
            };
            let slot = &mut peer.slots[slot_index];
            let Some((_, ts)) = slot.rewriter.rewrite(source.0, seq, rtp_time) else {
                continue;
            };
            let (mid, pt) = (slot.mid, slot.pt);
            if let Some(writer) = peer.rtc.writer(mid) {
                let time = MediaTime::new(u64::from(ts), Frequency::FORTY_EIGHT_KHZ);
                if writer.write(pt, now, time, data.clone()).is_ok() {
                    self.quiet = 0;
                }
            }
        }
        for offer in offers {
            self.push_event(offer);
        }
    }

    fn release_source(&mut self, source: PeerId) {
        for peer in &mut self.peers {
            for slot in peer.slots.iter_mut().filter(|s| s.source == Some(source)) {
                slot.source = None;
            }
        }
    }

    fn close(&mut self, index: usize, reason: CloseReason) {
        let mut peer = self.peers.swap_remove(index);
        peer.rtc.disconnect();
        let id = peer.id;
        self.release_source(id);
        self.push_event(CoreEvent::Closed(id, reason));
        self.quiet = 0;
    }

    fn push_event(&mut self, event: CoreEvent) {
        if self.events.len() >= EVENT_CAPACITY {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| matches!(e, CoreEvent::Audio { .. }))
            {
                self.events.remove(i);
            }
            self.dropped_events += 1;
        }
        self.events.push_back(event);
    }

    fn next_wake(&self, now: Instant) -> Instant {
        self.peers
            .iter()
            .flat_map(|p| [Some(p.wake), p.deadline])
            .flatten()
            .min()
            .unwrap_or(now + IDLE_WAKE)
            .min(now + IDLE_WAKE)
            .max(now)
    }

    fn peer_mut(&mut self, id: PeerId) -> Result<&mut Peer, PeerError> {
        self.peers
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(PeerError::UnknownPeer(id))
    }

    fn allocate_id(&mut self) -> PeerId {
        let id = PeerId(self.next_id);
        self.next_id += 1;
        id
    }
}

/// Opus clock rate, for callers building RTP times.
pub const fn opus_clock_rate() -> u32 {
    OPUS_RATE
}
