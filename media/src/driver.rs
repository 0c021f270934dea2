//! The thin I/O driver around [`MediaCore`]: it owns the one UDP socket and the timer, and
//! everyone else talks to it through a cloneable [`MediaHandle`] (bounded command queue). Events
//! come back on channels the caller hands in, never through callbacks.
//!
//! In-process participants (agents, SIP callers) use [`MediaHandle::add_virtual`] /
//! [`MediaHandle::add_agent`], speak with [`MediaHandle::write_audio`] and hear the room with
//! [`MediaHandle::listen`] (or one peer with [`MediaHandle::tap`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::{
    CloseReason, CoreCounters, CoreEvent, CoreOutput, Listen, MediaConfig, MediaCore, PeerError,
    PeerId, PeerStats,
};
use crate::opus_codec::MAX_PACKET_BYTES;

/// Commands queued to the driver.
pub const COMMAND_CAPACITY: usize = 512;
/// Notices queued per peer for its owner.
pub const NOTICE_CAPACITY: usize = 64;
/// Audio packets queued per tapped peer for its listener (one second of 20 ms packets).
pub const TAP_CAPACITY: usize = 50;
/// Room events queued per subscriber of [`MediaHandle::room_events`] (oldest dropped beyond).
pub const ROOM_EVENT_CAPACITY: usize = 256;
/// Largest datagram read.
const RECEIVE_BUFFER: usize = 2048;
/// Most datagrams read in one go before the core is polled.
const RECEIVE_BATCH: usize = 32;
/// How often statistics are published (to [`MediaHandle::peer_stats`] and the metrics).
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Something that happened in a room.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// The speaking participants changed (loudest first).
    ActiveSpeakers {
        /// The room.
        room: Arc<str>,
        /// Who speaks now.
        speakers: Vec<PeerId>,
    },
    /// A peer left (closed, timed out, removed).
    Left {
        /// The peer.
        peer: PeerId,
    },
}

/// What a peer's owner hears about it.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerNotice {
    /// Media flows.
    Connected,
    /// The peer is gone.
    Closed(CloseReason),
    /// A data-channel text message.
    Text(String),
    /// A new SDP offer for the client; answer with [`MediaHandle::accept_answer`].
    Offer(String),
}

/// One received audio packet of a tapped peer or for a listener.
#[derive(Debug, Clone)]
pub struct TapPacket {
    /// Whose audio it is.
    pub source: PeerId,
    /// Its level, RFC 6464 -dBov (0 loudest, 127 silent).
    pub level: u8,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub rtp_time: u32,
    /// Opus payload.
    pub payload: Arc<[u8]>,
}

/// One encoded frame an in-process participant sends, held inline (no allocation per frame).
#[derive(Clone)]
pub struct OutgoingFrame {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub rtp_time: u32,
    /// Its level, RFC 6464 -dBov (see [`crate::level_dbov`]); `None`: guessed from the size.
    pub level: Option<u8>,
    len: usize,
    data: [u8; MAX_PACKET_BYTES],
}

impl OutgoingFrame {
    /// A frame holding `payload` (at most [`MAX_PACKET_BYTES`]; longer is cut).
    pub fn new(seq: u16, rtp_time: u32, payload: &[u8]) -> Self {
        let len = payload.len().min(MAX_PACKET_BYTES);
        let mut data = [0; MAX_PACKET_BYTES];
        data[..len].copy_from_slice(&payload[..len]);
        Self {
            seq,
            rtp_time,
            level: None,
            len,
            data,
        }
    }

    /// The same frame with its audio level (-dBov), which active-speaker selection ranks by.
    pub fn with_level(mut self, dbov: u8) -> Self {
        self.level = Some(dbov);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

// The audio frame travels inline so the per-frame path does not allocate; the queue's blocks are
// reused by tokio, so the larger variant costs memory once, not per frame.
#[allow(clippy::large_enum_variant)]
enum Command {
    AddPeer {
        room: String,
        offer: String,
        renegotiable: bool,
        notices: mpsc::Sender<PeerNotice>,
        reply: oneshot::Sender<Result<(PeerId, String), PeerError>>,
    },
    AddVirtual {
        room: String,
        agent: bool,
        reply: oneshot::Sender<PeerId>,
    },
    Tap {
        peer: PeerId,
        sink: Option<mpsc::Sender<TapPacket>>,
    },
    Listen {
        listener: PeerId,
        listen: Option<(Listen, mpsc::Sender<TapPacket>)>,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    Mute {
        peer: PeerId,
        muted: bool,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    Subscribe {
        peer: PeerId,
        source: PeerId,
        subscribed: bool,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    Candidate {
        peer: PeerId,
        candidate: String,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    SendText {
        peer: PeerId,
        text: String,
    },
    AcceptAnswer {
        peer: PeerId,
        answer: String,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    WriteAudio {
        source: PeerId,
        frame: OutgoingFrame,
    },
    Counters {
        reply: oneshot::Sender<CoreCounters>,
    },
    Remove {
        peer: PeerId,
    },
}

/// Why a request to the driver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The peer was refused.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The driver has stopped.
    #[error("the media driver has stopped")]
    Stopped,
}

/// What the driver publishes every [`PUBLISH_INTERVAL`] for readers that do not wait.
#[derive(Default)]
struct Published {
    stats: HashMap<PeerId, PeerStats>,
    counters: CoreCounters,
}

/// A cloneable handle to the driver.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
    peers: Arc<AtomicUsize>,
    published: Arc<Mutex<Published>>,
    room_events: broadcast::Sender<RoomEvent>,
}

impl MediaHandle {
    /// The advertised media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// WebRTC peers currently held.
    pub fn peer_count(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    /// Adds a peer from its offer; returns its id and the SDP answer. Notices arrive on `notices`;
    /// a `renegotiable` peer may be sent [`PeerNotice::Offer`]s.
    pub async fn add_peer(
        &self,
        room: &str,
        offer: &str,
        renegotiable: bool,
        notices: mpsc::Sender<PeerNotice>,
    ) -> Result<(PeerId, String), DriverError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AddPeer {
            room: room.into(),
            offer: offer.into(),
            renegotiable,
            notices,
            reply,
        })
        .await?;
        Ok(answer.await.map_err(|_| DriverError::Stopped)??)
    }

    /// Adds an in-process participant that is a person (a SIP caller) to `room`.
    pub async fn add_virtual(&self, room: &str) -> Result<PeerId, DriverError> {
        self.add_in_process(room, false).await
    }

    /// Adds an agent to `room`: like [`MediaHandle::add_virtual`], but other agents and
    /// active-speaker listeners do not hear it as a person.
    pub async fn add_agent(&self, room: &str) -> Result<PeerId, DriverError> {
        self.add_in_process(room, true).await
    }

    async fn add_in_process(&self, room: &str, agent: bool) -> Result<PeerId, DriverError> {
        let (reply, id) = oneshot::channel();
        self.send(Command::AddVirtual {
            room: room.into(),
            agent,
            reply,
        })
        .await?;
        id.await.map_err(|_| DriverError::Stopped)
    }

    /// What the in-process participant `listener` hears, delivered to `sink` (bounded; a
    /// listener that falls behind loses packets, the room never waits); `None` stops it.
    pub async fn listen(
        &self,
        listener: PeerId,
        listen: Option<(Listen, mpsc::Sender<TapPacket>)>,
    ) -> Result<(), DriverError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Listen {
            listener,
            listen,
            reply,
        })
        .await?;
        Ok(done.await.map_err(|_| DriverError::Stopped)??)
    }

    /// Server-side mute of a peer or in-process participant: nobody hears it while muted.
    pub async fn set_muted(&self, peer: PeerId, muted: bool) -> Result<(), DriverError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Mute { peer, muted, reply }).await?;
        Ok(done.await.map_err(|_| DriverError::Stopped)??)
    }

    /// Whether subscriber `peer` hears `source` (all sources by default).
    pub async fn set_subscribed(
        &self,
        peer: PeerId,
        source: PeerId,
        subscribed: bool,
    ) -> Result<(), DriverError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Subscribe {
            peer,
            source,
            subscribed,
            reply,
        })
        .await?;
        Ok(done.await.map_err(|_| DriverError::Stopped)??)
    }

    /// What `peer` last reported in RTCP (round-trip time, the jitter and loss of the audio we
    /// send it) and what we measured of its audio; refreshed every second. `None` for unknown
    /// peers and in-process participants.
    pub fn peer_stats(&self, peer: PeerId) -> Option<PeerStats> {
        let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published.stats.get(&peer).cloned()
    }

    /// The core's counters (forwarded, policed, malformed …), refreshed every second.
    pub fn counters(&self) -> CoreCounters {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counters
    }

    /// The core's counters right now (a round trip to the driver).
    pub async fn counters_now(&self) -> Result<CoreCounters, DriverError> {
        let (reply, counters) = oneshot::channel();
        self.send(Command::Counters { reply }).await?;
        counters.await.map_err(|_| DriverError::Stopped)
    }

    /// Room events (active speakers, departures) from now on.
    pub fn room_events(&self) -> broadcast::Receiver<RoomEvent> {
        self.room_events.subscribe()
    }

    /// Sends `peer`'s audio packets to `sink` (or stops, with `None`).
    pub async fn tap(
        &self,
        peer: PeerId,
        sink: Option<mpsc::Sender<TapPacket>>,
    ) -> Result<(), DriverError> {
        self.send(Command::Tap { peer, sink }).await
    }

    /// A trickled remote ICE candidate.
    pub async fn add_candidate(&self, peer: PeerId, candidate: &str) -> Result<(), DriverError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Candidate {
            peer,
            candidate: candidate.into(),
            reply,
        })
        .await?;
        Ok(done.await.map_err(|_| DriverError::Stopped)??)
    }

    /// The client's answer to a [`PeerNotice::Offer`].
    pub async fn accept_answer(&self, peer: PeerId, answer: &str) -> Result<(), DriverError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::AcceptAnswer {
            peer,
            answer: answer.into(),
            reply,
        })
        .await?;
        Ok(done.await.map_err(|_| DriverError::Stopped)??)
    }

    /// A text message on the peer's data channel (dropped if none is open).
    pub async fn send_text(&self, peer: PeerId, text: String) -> Result<(), DriverError> {
        self.send(Command::SendText { peer, text }).await
    }

    /// One frame of an in-process participant's audio; never waits (dropped if the driver's queue
    /// is full, as late audio is worse than lost audio).
    pub fn write_audio(&self, source: PeerId, frame: OutgoingFrame) -> bool {
        self.commands
            .try_send(Command::WriteAudio { source, frame })
            .is_ok()
    }

    /// Removes a peer or in-process participant.
    pub async fn remove(&self, peer: PeerId) {
        let _ = self.send(Command::Remove { peer }).await;
    }

    async fn send(&self, command: Command) -> Result<(), DriverError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| DriverError::Stopped)
    }
}

/// The driver: run it as a task; it stops when every handle is dropped.
pub struct MediaDriver {
    socket: UdpSocket,
    core: MediaCore,
    commands: mpsc::Receiver<Command>,
    notices: HashMap<PeerId, mpsc::Sender<PeerNotice>>,
    taps: HashMap<PeerId, mpsc::Sender<TapPacket>>,
    listeners: HashMap<PeerId, mpsc::Sender<TapPacket>>,
    peers: Arc<AtomicUsize>,
    published: Arc<Mutex<Published>>,
    room_events: broadcast::Sender<RoomEvent>,
    next_publish: Instant,
}

/// Binds the media socket on `bind`; `public_ip` (if set) is the address advertised to peers.
pub async fn bind(
    bind: SocketAddr,
    public_ip: Option<std::net::IpAddr>,
) -> std::io::Result<(MediaHandle, MediaDriver)> {
    bind_with(bind, public_ip, MediaConfig::default()).await
}

/// [`bind`] with core settings (slots per subscriber, policing, speaker selection).
pub async fn bind_with(
    bind: SocketAddr,
    public_ip: Option<std::net::IpAddr>,
    config: MediaConfig,
) -> std::io::Result<(MediaHandle, MediaDriver)> {
    let socket = UdpSocket::bind(bind).await?;
    let bound = socket.local_addr()?;
    let advertised = SocketAddr::new(public_ip.unwrap_or(bound.ip()), bound.port());
    if advertised.ip().is_unspecified() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("media socket bound to {bound}: set a public IP to advertise to peers"),
        ));
    }
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let peers = Arc::new(AtomicUsize::new(0));
    let published = Arc::new(Mutex::new(Published::default()));
    let (room_events, _) = broadcast::channel(ROOM_EVENT_CAPACITY);
    let handle = MediaHandle {
        commands: tx,
        local: advertised,
        peers: peers.clone(),
        published: published.clone(),
        room_events: room_events.clone(),
    };
    let driver = MediaDriver {
        socket,
        core: MediaCore::with_config(advertised, config),
        commands: rx,
        notices: HashMap::new(),
        taps: HashMap::new(),
        listeners: HashMap::new(),
        peers,
        published,
        room_events,
        next_publish: Instant::now(),
    };
    Ok((handle, driver))
}

impl MediaDriver {
    /// Runs until every [`MediaHandle`] is dropped.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        let local = self.core.local_addr();
        loop {
            let wake = self.drain(Instant::now()).await;
            // Checked here, not only by the sleep below: while datagrams keep arriving the
            // receive branch is always ready, and a due timer must not wait on the runtime's
            // timer driver for its turn.
            let now = Instant::now();
            if now >= wake {
                self.core.handle_timeout(now);
                continue;
            }
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        self.core.handle_receive(Instant::now(), from, local, &buf[..n]);
                        self.receive_waiting(&mut buf, local);
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    self.handle_command(command);
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.core.handle_timeout(Instant::now());
                }
            }
        }
        tracing::info!("media driver stopped");
    }

    /// Hands the core the datagrams already waiting (at most [`RECEIVE_BATCH`]) without waiting
    /// for more, so one round of polling serves them all: a subscriber that several publishers'
    /// packets reach at once is polled once for them, not once each.
    fn receive_waiting(&mut self, buf: &mut [u8], local: SocketAddr) {
        for _ in 1..RECEIVE_BATCH {
            match self.socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    self.core
                        .handle_receive(Instant::now(), from, local, &buf[..n]);
                }
                Err(_) => return,
            }
        }
    }

    /// Sends and dispatches everything the core has; returns when it next wants waking.
    async fn drain(&mut self, now: Instant) -> Instant {
        loop {
            match self.core.poll_output(now) {
                CoreOutput::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                CoreOutput::Event(event) => self.dispatch(event),
                CoreOutput::Timeout(at) => {
                    self.peers.store(self.core.peer_count(), Ordering::Relaxed);
                    // Published on the first wake past the interval (wakes come at least every
                    // 100 ms): a wake of its own would be one more off the timer grid.
                    if now >= self.next_publish {
                        self.next_publish = now + PUBLISH_INTERVAL;
                        self.publish();
                    }
                    return at;
                }
            }
        }
    }

    /// Statistics for readers that do not wait ([`MediaHandle::peer_stats`]) and for `/metrics`.
    fn publish(&mut self) {
        let counters = self.core.counters();
        {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.counters = counters;
            published.stats.clear();
            for (peer, _, stats) in self.core.all_peer_stats() {
                published.stats.insert(peer, stats.clone());
            }
        }
        crate::metrics::publish(&counters, self.core.all_peer_stats());
    }

    fn dispatch(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Connected(peer) => self.notify(peer, PeerNotice::Connected),
            CoreEvent::Closed(peer, reason) => {
                self.notify(peer, PeerNotice::Closed(reason));
                self.notices.remove(&peer);
                self.taps.remove(&peer);
                let _ = self.room_events.send(RoomEvent::Left { peer });
            }
            CoreEvent::Text(peer, text) => self.notify(peer, PeerNotice::Text(text)),
            CoreEvent::Renegotiate(peer, offer) => self.notify(peer, PeerNotice::Offer(offer)),
            CoreEvent::ActiveSpeakers { room, speakers } => {
                let _ = self
                    .room_events
                    .send(RoomEvent::ActiveSpeakers { room, speakers });
            }
            CoreEvent::Audio {
                peer,
                listener,
                seq,
                rtp_time,
                level,
                payload,
            } => {
                let sink = match listener {
                    Some(listener) => self.listeners.get(&listener),
                    None => self.taps.get(&peer),
                };
                if let Some(sink) = sink {
                    // Bounded: a listener that falls behind loses this packet, the room goes on.
                    let _ = sink.try_send(TapPacket {
                        source: peer,
                        level,
                        seq,
                        rtp_time,
                        payload,
                    });
                }
            }
        }
    }

    fn notify(&self, peer: PeerId, notice: PeerNotice) {
        if let Some(tx) = self.notices.get(&peer) {
            let _ = tx.try_send(notice);
        }
    }

    fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::AddPeer {
                room,
                offer,
                renegotiable,
                notices,
                reply,
            } => {
                let result = self.core.add_peer(now, &room, &offer, renegotiable);
                if let Ok((id, _)) = &result {
                    self.notices.insert(*id, notices);
                }
                let _ = reply.send(result);
            }
            Command::AddVirtual { room, agent, reply } => {
                let _ = reply.send(self.core.add_virtual(&room, agent));
            }
            Command::Listen {
                listener,
                listen,
                reply,
            } => {
                let mode = listen.as_ref().map(|(mode, _)| *mode);
                let result = self.core.set_listen(listener, mode);
                match listen {
                    Some((_, sink)) if result.is_ok() => {
                        self.listeners.insert(listener, sink);
                    }
                    _ => {
                        self.listeners.remove(&listener);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Mute { peer, muted, reply } => {
                let _ = reply.send(self.core.set_muted(peer, muted));
            }
            Command::Subscribe {
                peer,
                source,
                subscribed,
                reply,
            } => {
                let _ = reply.send(self.core.set_subscribed(peer, source, subscribed));
            }
            Command::Tap { peer, sink } => {
                let tapped = sink.is_some();
                match sink {
                    Some(sink) => self.taps.insert(peer, sink),
                    None => self.taps.remove(&peer),
                };
                let _ = self.core.set_tap(peer, tapped);
            }
            Command::Candidate {
                peer,
                candidate,
                reply,
            } => {
                let _ = reply.send(self.core.add_remote_candidate(peer, &candidate));
            }
            Command::AcceptAnswer {
                peer,
                answer,
                reply,
            } => {
                let _ = reply.send(self.core.accept_answer(peer, &answer));
            }
            Command::SendText { peer, text } => {
                let _ = self.core.send_text(peer, &text);
            }
            Command::WriteAudio { source, frame } => {
                self.core.write_audio(
                    now,
                    source,
                    frame.seq,
                    frame.rtp_time,
                    frame.level,
                    frame.payload(),
                );
            }
            Command::Counters { reply } => {
                let _ = reply.send(self.core.counters());
            }
            Command::Remove { peer } => {
                // The owner asked: it hears nothing more about this peer.
                self.notices.remove(&peer);
                self.taps.remove(&peer);
                self.listeners.remove(&peer);
                self.core.remove(peer);
            }
        }
    }
}
