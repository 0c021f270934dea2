//! The virtual-time harness of the room tests: real str0m clients (standing in for browsers) talk
//! to the sans-IO core over an in-memory network. No sockets, no clock.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dartmouth_media::{CoreEvent, CoreOutput, MediaConfig, MediaCore, PeerId};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const SERVER: &str = "127.0.0.1:40000";
pub const STEP: Duration = Duration::from_millis(5);
/// The level a talking test client reports (-dBov).
pub const TALK: i8 = -30;
/// The level of silence.
pub const QUIET: i8 = -127;

/// One packet a client received.
#[derive(Debug, Clone)]
pub struct Heard {
    pub mid: Mid,
    pub seq: u64,
    pub rtp_time: u64,
    pub payload: Vec<u8>,
}

pub struct Client {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub mid: Mid,
    pub pending: Option<SdpPendingOffer>,
    pub heard: Vec<Heard>,
    pub connected: bool,
    /// A vanished client stops answering.
    pub gone: bool,
    /// Frames sent so far (the next frame's index).
    pub sent: u64,
    /// RTP ticks per frame sent (960: 20 ms).
    pub frame_ticks: u64,
}

impl Client {
    pub fn new(now: Instant, port: u16, directions: &[Direction]) -> (Self, String) {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mids: Vec<Mid> = directions
            .iter()
            .map(|d| change.add_media(MediaKind::Audio, *d, None, None, None))
            .collect();
        let (offer, pending) = change.apply().unwrap();
        let client = Self {
            addr,
            rtc,
            mid: mids[0],
            pending: Some(pending),
            heard: Vec::new(),
            connected: false,
            gone: false,
            sent: 0,
            frame_ticks: 960,
        };
        (client, offer.to_sdp_string())
    }

    pub fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Sends frame number `self.sent` at `level` (-dBov).
    pub fn send_frame(&mut self, now: Instant, level: i8, payload: &[u8]) {
        let writer = self.rtc.writer(self.mid).unwrap();
        let pt = writer.payload_params().next().unwrap().pt();
        let time = MediaTime::new(self.sent * self.frame_ticks, Frequency::FORTY_EIGHT_KHZ);
        writer
            .audio_level(level, level > QUIET)
            .write(pt, now, time, payload.to_vec())
            .unwrap();
        self.sent += 1;
    }

    /// Packets heard whose payload's last byte names `who`.
    pub fn heard_from(&self, who: u8) -> Vec<&Heard> {
        self.heard
            .iter()
            .filter(|h| h.payload.last() == Some(&who))
            .collect()
    }
}

pub struct Net {
    pub now: Instant,
    pub core: MediaCore,
    pub clients: Vec<Client>,
    pub ids: Vec<PeerId>,
    pub events: Vec<CoreEvent>,
    pub renegotiable: bool,
    /// Offers the core sent (to whom).
    pub offers: Vec<PeerId>,
}

impl Net {
    pub fn new() -> Self {
        Self::with_config(MediaConfig::default())
    }

    pub fn with_config(config: MediaConfig) -> Self {
        let now = Instant::now();
        Self {
            now,
            core: MediaCore::with_config(SERVER.parse().unwrap(), config),
            clients: Vec::new(),
            ids: Vec::new(),
            events: Vec::new(),
            renegotiable: false,
            offers: Vec::new(),
        }
    }

    pub fn join(&mut self, room: &str, port: u16, direction: Direction) -> (PeerId, usize) {
        self.join_with(room, port, &[direction])
    }

    pub fn join_with(&mut self, room: &str, port: u16, lines: &[Direction]) -> (PeerId, usize) {
        let (mut client, offer) = Client::new(self.now, port, lines);
        let (id, answer) = self
            .core
            .add_peer(self.now, room, &offer, self.renegotiable)
            .unwrap();
        client.accept(&answer);
        self.clients.push(client);
        self.ids.push(id);
        (id, self.clients.len() - 1)
    }

    /// Runs the network for `duration` of virtual time.
    pub fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.exchange();
            self.now += STEP;
            self.core.handle_timeout(self.now);
            for client in self.clients.iter_mut().filter(|c| !c.gone) {
                client.rtc.handle_input(Input::Timeout(self.now)).unwrap();
            }
        }
    }

    pub fn exchange(&mut self) {
        let server: SocketAddr = SERVER.parse().unwrap();
        for _ in 0..10_000 {
            let mut moved = false;
            for client in self.clients.iter_mut().filter(|c| !c.gone) {
                loop {
                    match client.rtc.poll_output().unwrap() {
                        Output::Transmit(t) => {
                            self.core
                                .handle_receive(self.now, t.source, server, &t.contents);
                            moved = true;
                        }
                        Output::Event(Event::Connected) => client.connected = true,
                        Output::Event(Event::MediaData(data)) => client.heard.push(Heard {
                            mid: data.mid,
                            seq: **data.seq_range.start(),
                            rtp_time: data.time.numer(),
                            payload: data.data.to_vec(),
                        }),
                        Output::Event(_) => {}
                        Output::Timeout(_) => break,
                    }
                }
            }
            loop {
                match self.core.poll_output(self.now) {
                    CoreOutput::Transmit(t) => {
                        moved = true;
                        if let Some(client) = self
                            .clients
                            .iter_mut()
                            .find(|c| c.addr == t.destination && !c.gone)
                        {
                            let receive =
                                Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
                                    .unwrap();
                            client
                                .rtc
                                .handle_input(Input::Receive(self.now, receive))
                                .unwrap();
                        }
                    }
                    CoreOutput::Event(CoreEvent::Renegotiate(id, offer)) => {
                        // The client applies the gateway's new offer and answers, as a browser would.
                        moved = true;
                        let index = self.ids.iter().position(|p| *p == id).unwrap();
                        let offer = SdpOffer::from_sdp_string(&offer).unwrap();
                        let answer = self.clients[index]
                            .rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .unwrap();
                        self.core
                            .accept_answer(id, &answer.to_sdp_string())
                            .unwrap();
                        self.offers.push(id);
                    }
                    CoreOutput::Event(e) => {
                        moved = true;
                        self.events.push(e);
                    }
                    CoreOutput::Timeout(_) => break,
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not settle");
    }

    /// Each `(client, level)` sends one frame per 20 ms for `frames` frames; the payload is
    /// `[frame, 0xAB, 0xCD, client]`.
    pub fn talk_together(&mut self, talkers: &[(usize, i8)], frames: u64) {
        for _ in 0..frames {
            let now = self.now;
            for (client, level) in talkers {
                let n = self.clients[*client].sent;
                let payload = [n as u8, 0xAB, 0xCD, *client as u8];
                self.clients[*client].send_frame(now, *level, &payload);
            }
            self.run(Duration::from_millis(20));
        }
    }

    pub fn talk(&mut self, client: usize, frames: u64) {
        self.talk_together(&[(client, TALK)], frames);
    }
}
