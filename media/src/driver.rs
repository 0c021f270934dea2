//! The thin I/O driver around [`MediaCore`]: it owns the one UDP socket and the timer, and
//! everyone else talks to it through a cloneable [`MediaHandle`] (bounded command queue). Events
//! come back on channels the caller hands in, never through callbacks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::core::{CloseReason, CoreEvent, CoreOutput, MediaCore, PeerError, PeerId};
use crate::opus_codec::MAX_PACKET_BYTES;

/// Commands queued to the driver.
pub const COMMAND_CAPACITY: usize = 512;
/// Notices queued per peer for its owner.
pub const NOTICE_CAPACITY: usize = 64;
/// Audio packets queued per tapped peer for its listener (one second of 20 ms packets).
pub const TAP_CAPACITY: usize = 50;
/// Largest datagram read.
const RECEIVE_BUFFER: usize = 2048;

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

/// One received audio packet of a tapped peer.
#[derive(Debug, Clone)]
pub struct TapPacket {
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
            len,
            data,
        }
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
        reply: oneshot::Sender<PeerId>,
    },
    Tap {
        peer: PeerId,
        sink: Option<mpsc::Sender<TapPacket>>,
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

/// A cloneable handle to the driver.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
    peers: Arc<AtomicUsize>,
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

    /// Adds an in-process participant (agent) to `room`.
    pub async fn add_virtual(&self, room: &str) -> Result<PeerId, DriverError> {
        let (reply, id) = oneshot::channel();
        self.send(Command::AddVirtual {
            room: room.into(),
            reply,
        })
        .await?;
        id.await.map_err(|_| DriverError::Stopped)
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
    peers: Arc<AtomicUsize>,
}

/// Binds the media socket on `bind`; `public_ip` (if set) is the address advertised to peers.
pub async fn bind(
    bind: SocketAddr,
    public_ip: Option<std::net::IpAddr>,
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
    let handle = MediaHandle {
        commands: tx,
        local: advertised,
        peers: peers.clone(),
    };
    let driver = MediaDriver {
        socket,
        core: MediaCore::new(advertised),
        commands: rx,
        notices: HashMap::new(),
        taps: HashMap::new(),
        peers,
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
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        self.core.handle_receive(Instant::now(), from, local, &buf[..n]);
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    self.handle_command(command);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            self.core.handle_timeout(Instant::now());
        }
        tracing::info!("media driver stopped");
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
                    return at;
                }
            }
        }
    }

    fn dispatch(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Connected(peer) => self.notify(peer, PeerNotice::Connected),
            CoreEvent::Closed(peer, reason) => {
                self.notify(peer, PeerNotice::Closed(reason));
                self.notices.remove(&peer);
                self.taps.remove(&peer);
            }
            CoreEvent::Text(peer, text) => self.notify(peer, PeerNotice::Text(text)),
            CoreEvent::Renegotiate(peer, offer) => self.notify(peer, PeerNotice::Offer(offer)),
            CoreEvent::Audio {
                peer,
                seq,
                rtp_time,
                payload,
            } => {
                if let Some(tap) = self.taps.get(&peer) {
                    let _ = tap.try_send(TapPacket {
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
            Command::AddVirtual { room, reply } => {
                let _ = reply.send(self.core.add_virtual(&room));
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
                self.core
                    .write_audio(now, source, frame.seq, frame.rtp_time, frame.payload());
            }
            Command::Remove { peer } => {
                // The owner asked: it hears nothing more about this peer.
                self.notices.remove(&peer);
                self.taps.remove(&peer);
                self.core.remove(peer);
            }
        }
    }
}
