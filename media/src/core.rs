//! The sans-IO media core: every WebRTC peer of every room, multiplexed on one UDP socket.
//!
//! [`MediaCore`] is fed datagrams and time ([`MediaCore::handle_receive`],
//! [`MediaCore::handle_timeout`]) and polled for [`CoreOutput`]s: datagrams to send, events, and
//! the next time it wants to be woken. It never reads a clock or touches a socket, so tests drive
//! it in virtual time with in-memory peers (`tests/room_scenarios.rs`).
//!
//! Forwarding is a selective forwarding unit at the RTP level (str0m in RTP mode: packets are
//! forwarded as they arrive, never depacketized, decoded or re-encoded). Every subscriber receives
//! on a fixed set of *slots* (audio m-lines, at most [`MediaConfig::max_slots`]; a WHEP peer has
//! one). The room ranks its sources by loudness with hysteresis ([`crate::speakers`]) and each
//! subscriber's slots carry the first sources of that ranking other than itself, so voices coming
//! and going switch sources inside the slots and never need a renegotiation. Each slot rewrites
//! sequence numbers and timestamps ([`crate::forward`]) so its stream stays continuous.
//! In-process participants (agents, SIP callers) write audio with [`MediaCore::write_audio`] and
//! hear the room through [`MediaCore::set_listen`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::speakers::SILENT_DBOV;
use peer::{Peer, Slot};
use room::{Room, Virtual};
use sdp::{audio_lines, sdp_error_summary};

pub use peer::PeerStats;
pub use room::Listen;
pub use types::{CloseReason, CoreCounters, CoreEvent, CoreOutput, MediaConfig, PeerError};

mod peer;
mod room;
mod route;
mod sdp;
mod types;

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
/// Most audio slots a subscriber can have.
pub const MAX_SLOTS: usize = 8;
/// Largest RTP payload forwarded (an Opus packet is at most 1275 bytes).
const MAX_PAYLOAD: usize = 1275;
/// Opus RTP clock rate.
const OPUS_RATE: u32 = 48_000;
/// Timeout reported when no peer needs waking sooner.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// How often rooms re-rank their speakers.
const SPEAKER_TICK: Duration = Duration::from_millis(40);
/// Timers are served on this grid: a wake is rounded up to the next multiple of it, so the
/// timers of many peers (RTCP, NACK, ICE keep-alives, each on its own phase) fire together in one
/// wake instead of one wake each. Packets are never held for it: input is handled at once.
const TIMER_GRID: Duration = Duration::from_millis(10);
/// How often str0m reports RTCP-derived statistics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// All peers of all rooms.
pub struct MediaCore {
    local: SocketAddr,
    config: MediaConfig,
    peers: Vec<Peer>,
    /// Position of each peer in `peers`.
    index: HashMap<PeerId, usize>,
    /// The peer last seen sending from an address (demultiplexing without asking every peer).
    by_addr: HashMap<SocketAddr, PeerId>,
    virtuals: HashMap<PeerId, Virtual>,
    rooms: HashMap<Arc<str>, Room>,
    events: VecDeque<CoreEvent>,
    next_id: u64,
    /// Peers with input since they last reported a timeout, in the order they must be polled;
    /// each at most once ([`Peer::ready`]), so polling costs the peers that changed, not all.
    ready: VecDeque<PeerId>,
    next_speaker_tick: Option<Instant>,
    /// Where the timer grid ([`TIMER_GRID`]) starts: the first time the core was told.
    grid_origin: Option<Instant>,
    counters: CoreCounters,
}

impl MediaCore {
    /// A core whose peers reach it at `local` (the advertised host candidate: public IP and the
    /// shared UDP port), with default settings.
    pub fn new(local: SocketAddr) -> Self {
        Self::with_config(local, MediaConfig::default())
    }

    /// A core with `config`.
    pub fn with_config(local: SocketAddr, mut config: MediaConfig) -> Self {
        config.max_slots = config.max_slots.clamp(1, MAX_SLOTS);
        Self {
            local,
            config,
            peers: Vec::new(),
            index: HashMap::new(),
            by_addr: HashMap::new(),
            virtuals: HashMap::new(),
            rooms: HashMap::new(),
            events: VecDeque::with_capacity(64),
            next_id: 1,
            ready: VecDeque::with_capacity(64),
            next_speaker_tick: None,
            grid_origin: None,
            counters: CoreCounters::default(),
        }
    }

    /// The advertised address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The settings.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Peers (WebRTC) currently held.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Events dropped because the owner did not poll in time.
    pub fn dropped_events(&self) -> u64 {
        self.counters.dropped_events
    }

    /// The core's counters.
    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// What `peer` reports in RTCP and what we measured of its audio.
    pub fn peer_stats(&self, peer: PeerId) -> Option<PeerStats> {
        self.index.get(&peer).map(|i| self.peers[*i].stats.clone())
    }

    /// Every WebRTC peer with its room and statistics.
    pub fn all_peer_stats(&self) -> impl Iterator<Item = (PeerId, &Arc<str>, &PeerStats)> {
        self.peers.iter().map(|p| (p.id, &p.room, &p.stats))
    }

    /// The audio slots `peer` receives on, and the source in each.
    pub fn slots(&self, peer: PeerId) -> Option<Vec<Option<PeerId>>> {
        self.index
            .get(&peer)
            .map(|i| self.peers[*i].slots.iter().map(|s| s.source).collect())
    }

    /// The room's sources in rank order (loudest by hysteresis first).
    pub fn ranking(&self, room: &str) -> Vec<PeerId> {
        self.rooms
            .get(room)
            .map(|r| r.speakers.ranking().to_vec())
            .unwrap_or_default()
    }

    /// Adds a WebRTC peer to `room` from its SDP offer and returns the SDP answer.
    /// `renegotiable`: its signaling can carry a later offer (see [`CoreEvent::Renegotiate`]).
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
            .set_rtp_mode(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(now);
        let candidate = Candidate::host(self.local, "udp")
            .map_err(|e| PeerError::Rejected(format!("local candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer: SdpAnswer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::Rejected(e.to_string()))?;
        let answer_sdp = answer.to_sdp_string();
        let (publish, mut slots) = audio_lines(&mut rtc, &answer_sdp);
        if publish.is_none() && slots.is_empty() {
            return Err(PeerError::NoUsableAudio);
        }
        slots.truncate(self.config.max_slots);
        let id = self.allocate_id();
        let room: Arc<str> = Arc::from(room);
        self.index.insert(id, self.peers.len());
        self.peers.push(Peer {
            id,
            room: room.clone(),
            rtc,
            deadline: Some(now + CONNECT_TIMEOUT),
            connected: false,
            publish_mid: publish.map(|(mid, _)| mid),
            publish_pt: publish.map(|(_, pt)| pt),
            publish_ssrc: None,
            slots,
            channel: None,
            tap: false,
            wake: now,
            renegotiable,
            pending: None,
            muted: false,
            unsubscribed: Default::default(),
            policer: Default::default(),
            stats: PeerStats::default(),
            ready: false,
            timer_served: None,
        });
        self.join_room(&room, id);
        self.mark_ready(self.peers.len() - 1);
        Ok((id, answer_sdp))
    }

    /// Adds an in-process participant (an agent or a SIP caller) to `room`; it sends with
    /// [`MediaCore::write_audio`] and hears the room through [`MediaCore::set_listen`] (or one
    /// peer through [`MediaCore::set_tap`]). `agent`: other agents and active-speaker listeners
    /// do not hear it as a person.
    pub fn add_virtual(&mut self, room: &str, agent: bool) -> PeerId {
        let id = self.allocate_id();
        let room: Arc<str> = Arc::from(room);
        self.virtuals.insert(
            id,
            Virtual {
                room: room.clone(),
                agent,
                listen: None,
                muted: false,
            },
        );
        self.join_room(&room, id);
        id
    }

    /// Whether `peer`'s audio is reported as [`CoreEvent::Audio`] with no listener.
    pub fn set_tap(&mut self, peer: PeerId, tap: bool) -> Result<(), PeerError> {
        self.peer_mut(peer)?.tap = tap;
        Ok(())
    }

    /// What the in-process participant `listener` hears (`None`: nothing). Its audio arrives as
    /// [`CoreEvent::Audio`] events with `listener: Some(listener)`.
    pub fn set_listen(
        &mut self,
        listener: PeerId,
        listen: Option<Listen>,
    ) -> Result<(), PeerError> {
        let v = self
            .virtuals
            .get_mut(&listener)
            .ok_or(PeerError::UnknownPeer(listener))?;
        v.listen = listen;
        Ok(())
    }

    /// Server-side mute: while muted, `peer`'s audio reaches no subscriber and no listener.
    pub fn set_muted(&mut self, peer: PeerId, muted: bool) -> Result<(), PeerError> {
        let room = if let Some(v) = self.virtuals.get_mut(&peer) {
            v.muted = muted;
            v.room.clone()
        } else {
            let p = self.peer_mut(peer)?;
            p.muted = muted;
            p.room.clone()
        };
        if muted && let Some(r) = self.rooms.get_mut(&room) {
            r.speakers.remove(peer);
            self.reassign(&room);
        }
        // At unmute the source re-enters the ranking with its next packet, re-anchored.
        Ok(())
    }

    /// Whether subscriber `peer` hears `source` (every source by default).
    pub fn set_subscribed(
        &mut self,
        peer: PeerId,
        source: PeerId,
        subscribed: bool,
    ) -> Result<(), PeerError> {
        let p = self.peer_mut(peer)?;
        if subscribed {
            p.unsubscribed.remove(&source);
        } else {
            p.unsubscribed.insert(source);
        }
        let room = p.room.clone();
        self.reassign(&room);
        Ok(())
    }

    /// Adds a trickled remote candidate (`candidate:` attribute value); empty ends trickling.
    pub fn add_remote_candidate(&mut self, peer: PeerId, candidate: &str) -> Result<(), PeerError> {
        let index = self.peer_index(peer)?;
        let text = candidate.trim().trim_start_matches("a=");
        if text.is_empty() {
            return Ok(());
        }
        let parsed =
            Candidate::from_sdp_string(text).map_err(|e| PeerError::BadCandidate(e.to_string()))?;
        self.peers[index].rtc.add_remote_candidate(parsed);
        self.mark_ready(index);
        Ok(())
    }

    /// Removes a peer or an in-process participant, releasing its slots in other peers.
    pub fn remove(&mut self, id: PeerId) {
        if let Some(v) = self.virtuals.remove(&id) {
            self.leave_room(&v.room, id);
            return;
        }
        if let Some(&index) = self.index.get(&id) {
            self.close(index, CloseReason::Removed);
        }
    }

    /// Applies the peer's answer to the last [`CoreEvent::Renegotiate`] offer.
    pub fn accept_answer(&mut self, peer: PeerId, answer_sdp: &str) -> Result<(), PeerError> {
        let index = self.peer_index(peer)?;
        let p = &mut self.peers[index];
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| PeerError::MalformedSdp(sdp_error_summary(&e.to_string())))?;
        let (pending, mids) = p
            .pending
            .take()
            .ok_or_else(|| PeerError::Rejected("no offer is pending".into()))?;
        p.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| PeerError::Rejected(e.to_string()))?;
        for mid in mids {
            if let Some(pt) = sdp::opus_pt(&mut p.rtc, mid) {
                p.slots.push(Slot::new(mid, pt));
            }
        }
        let room = p.room.clone();
        self.reassign(&room);
        self.mark_ready(index);
        Ok(())
    }

    /// Sends a text message on the peer's data channel.
    pub fn send_text(&mut self, peer: PeerId, text: &str) -> Result<(), PeerError> {
        let index = self.peer_index(peer)?;
        let peer = &mut self.peers[index];
        let id: ChannelId = peer.channel.ok_or(PeerError::NoChannel)?;
        let mut channel = peer.rtc.channel(id).ok_or(PeerError::NoChannel)?;
        let written = channel.write(false, text.as_bytes());
        self.mark_ready(index);
        match written {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(PeerError::ChannelFull),
        }
    }

    /// Audio from an in-process participant: one Opus frame (RTP time at 48 kHz), with its level
    /// (-dBov; `None`: estimated from the packet size), forwarded like any participant's.
    pub fn write_audio(
        &mut self,
        now: Instant,
        source: PeerId,
        seq: u16,
        rtp_time: u32,
        level: Option<u8>,
        payload: &[u8],
    ) {
        let Some(v) = self.virtuals.get(&source) else {
            return;
        };
        if v.muted || payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return;
        }
        let room = Arc::clone(&v.room);
        let data: Arc<[u8]> = Arc::from(payload);
        let level = level.unwrap_or_else(|| level_from_size(payload.len()));
        self.route(now, &room, source, seq, rtp_time, level, &data);
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
            self.counters.malformed += 1;
            return false;
        };
        let input = Input::Receive(now, receive);
        let cached = self
            .by_addr
            .get(&source)
            .and_then(|id| self.index.get(id).copied())
            .filter(|i| self.peers[*i].rtc.accepts(&input));
        let index = match cached {
            Some(i) => i,
            None => match self.peers.iter().position(|p| p.rtc.accepts(&input)) {
                Some(i) => {
                    self.by_addr.insert(source, self.peers[i].id);
                    i
                }
                None => {
                    self.counters.unclaimed += 1;
                    return false;
                }
            },
        };
        let peer = &mut self.peers[index];
        if let Err(e) = peer.rtc.handle_input(input) {
            let id = peer.id;
            tracing::debug!(%id, error = %e, "peer input failed");
            self.close(index, CloseReason::Failed(e.to_string()));
        } else {
            self.mark_ready(index);
        }
        true
    }

    /// Advances time: timers of every peer that is due, connect deadlines, speaker ranking.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.counters.timer_wakes += 1;
        let mut index = 0;
        while index < self.peers.len() {
            let peer = &mut self.peers[index];
            if peer.deadline.is_some_and(|d| now >= d) {
                self.close(index, CloseReason::ConnectTimeout);
                continue;
            }
            if now >= peer.wake {
                peer.timer_served = Some(now);
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    self.close(index, CloseReason::Failed(e.to_string()));
                    continue;
                }
                self.mark_ready(index);
            }
            index += 1;
        }
        if self.next_speaker_tick.is_none_or(|t| now >= t) {
            self.next_speaker_tick = Some(now + SPEAKER_TICK);
            self.rank_speakers(now);
        }
    }

    /// The next output. Call until it returns [`CoreOutput::Timeout`].
    pub fn poll_output(&mut self, now: Instant) -> CoreOutput {
        loop {
            if let Some(event) = self.events.pop_front() {
                return CoreOutput::Event(event);
            }
            // The peer at the front stays there until it reports a timeout: it is polled empty.
            let Some(&id) = self.ready.front() else {
                return CoreOutput::Timeout(self.next_wake(now));
            };
            let Some(&index) = self.index.get(&id) else {
                // Closed since it was marked.
                self.ready.pop_front();
                continue;
            };
            let peer = &mut self.peers[index];
            if !peer.rtc.is_alive() {
                self.ready.pop_front();
                self.close(index, CloseReason::Disconnected);
                continue;
            }
            self.counters.peer_polls += 1;
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(transmit)) => return CoreOutput::Transmit(transmit),
                Ok(Output::Timeout(at)) if at <= now && peer.timer_served != Some(now) => {
                    // Work waiting for the clock, not for the grid: str0m releases the packets
                    // forwarded into it (its pacer) on a timeout input. Served at once for this
                    // peer alone, once per `now`, and the peer is polled again.
                    peer.timer_served = Some(now);
                    if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                        self.ready.pop_front();
                        self.close(index, CloseReason::Failed(e.to_string()));
                    }
                }
                Ok(Output::Timeout(at)) => {
                    peer.wake = at;
                    peer.ready = false;
                    self.ready.pop_front();
                }
                Ok(Output::Event(event)) => self.handle_event(now, index, event),
                Err(e) => {
                    self.ready.pop_front();
                    self.close(index, CloseReason::Failed(e.to_string()));
                }
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
                self.offer_missing_slots(index);
                let room = self.peers[index].room.clone();
                self.reassign(&room);
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
            Event::RtpPacket(packet) => self.on_rtp(now, index, packet),
            Event::MediaEgressStats(stats) => peer.egress_stats(&stats),
            Event::MediaIngressStats(stats) => peer.ingress_stats(&stats),
            Event::PeerStats(stats) if peer.stats.rtt.is_none() => {
                peer.stats.rtt = stats.rtt.or_else(|| {
                    stats
                        .selected_candidate_pair
                        .and_then(|p| p.current_round_trip_time)
                });
            }
            _ => {}
        }
    }

    fn join_room(&mut self, room: &Arc<str>, id: PeerId) {
        let speakers = self.config.speakers.clone();
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| Room::new(speakers))
            .members
            .push(id);
    }

    fn leave_room(&mut self, room: &str, id: PeerId) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.members.retain(|m| *m != id);
        if r.members.is_empty() {
            self.rooms.remove(room);
            return;
        }
        if r.speakers.remove(id) {
            self.reassign(room);
        }
        for peer in &mut self.peers {
            peer.unsubscribed.remove(&id);
        }
    }

    fn close(&mut self, index: usize, reason: CloseReason) {
        let mut peer = self.peers.swap_remove(index);
        self.index.remove(&peer.id);
        if let Some(moved) = self.peers.get(index) {
            self.index.insert(moved.id, index);
        }
        self.by_addr.retain(|_, id| *id != peer.id);
        peer.rtc.disconnect();
        let id = peer.id;
        self.leave_room(&peer.room, id);
        self.push_event(CoreEvent::Closed(id, reason));
    }

    /// Queues the peer at `index` to be polled (once, however often it is marked).
    fn mark_ready(&mut self, index: usize) {
        mark_ready(&mut self.peers[index], &mut self.ready);
    }

    fn push_event(&mut self, event: CoreEvent) {
        push_event(&mut self.events, &mut self.counters, event);
    }

    fn next_wake(&mut self, now: Instant) -> Instant {
        let speaker_tick = (!self.rooms.is_empty())
            .then_some(self.next_speaker_tick)
            .flatten();
        let soonest = self
            .peers
            .iter()
            .flat_map(|p| [Some(p.wake), p.deadline])
            .chain([speaker_tick])
            .flatten()
            .min()
            .unwrap_or(now + IDLE_WAKE)
            .min(now + IDLE_WAKE);
        // A timer already due (a peer polled for input between grid points reports the timer it
        // has not been given yet) waits for the next grid point like every other: waking at once
        // for it would put a wake off the grid for nearly every packet.
        let origin = *self.grid_origin.get_or_insert(now);
        on_grid(origin, soonest.max(now + Duration::from_nanos(1)))
    }

    fn peer_mut(&mut self, id: PeerId) -> Result<&mut Peer, PeerError> {
        let index = self.peer_index(id)?;
        Ok(&mut self.peers[index])
    }

    fn peer_index(&self, id: PeerId) -> Result<usize, PeerError> {
        self.index
            .get(&id)
            .copied()
            .ok_or(PeerError::UnknownPeer(id))
    }

    fn allocate_id(&mut self) -> PeerId {
        let id = PeerId(self.next_id);
        self.next_id += 1;
        id
    }
}

/// The first point of the [`TIMER_GRID`] from `origin` at or after `at`.
fn on_grid(origin: Instant, at: Instant) -> Instant {
    let grid = TIMER_GRID.as_nanos();
    let steps = at
        .saturating_duration_since(origin)
        .as_nanos()
        .div_ceil(grid);
    origin + Duration::from_nanos(u64::try_from(steps * grid).unwrap_or(u64::MAX))
}

/// Queues `peer` to be polled unless it already is.
fn mark_ready(peer: &mut Peer, ready: &mut VecDeque<PeerId>) {
    if !peer.ready {
        peer.ready = true;
        ready.push_back(peer.id);
    }
}

/// Queues an event; beyond [`EVENT_CAPACITY`] the oldest audio event makes room (counted).
fn push_event(events: &mut VecDeque<CoreEvent>, counters: &mut CoreCounters, event: CoreEvent) {
    if events.len() >= EVENT_CAPACITY {
        if let Some(i) = events
            .iter()
            .position(|e| matches!(e, CoreEvent::Audio { .. }))
        {
            events.remove(i);
        }
        counters.dropped_events += 1;
    }
    events.push_back(event);
}

/// A level for audio that carries none: Opus silence and DTX packets are a few bytes, speech is
/// tens to hundreds.
fn level_from_size(bytes: usize) -> u8 {
    if bytes < 20 { SILENT_DBOV } else { 30 }
}

/// Opus clock rate, for callers building RTP times.
pub const fn opus_clock_rate() -> u32 {
    OPUS_RATE
}
