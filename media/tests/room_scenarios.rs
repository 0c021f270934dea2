//! Room and forwarding scenarios in virtual time: real str0m clients (standing in for browsers)
//! talk to the sans-IO core over an in-memory network. No sockets, no clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dartmouth_media::{CloseReason, CoreEvent, CoreOutput, MediaCore, PeerError, PeerId};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: &str = "127.0.0.1:40000";
const STEP: Duration = Duration::from_millis(5);

struct Client {
    addr: SocketAddr,
    rtc: Rtc,
    mid: Mid,
    pending: Option<SdpPendingOffer>,
    received: Vec<Vec<u8>>,
    connected: bool,
    /// A vanished client stops answering.
    gone: bool,
}

impl Client {
    fn new(now: Instant, port: u16, direction: Direction) -> (Self, String) {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let client = Self {
            addr,
            rtc,
            mid,
            pending: Some(pending),
            received: Vec::new(),
            connected: false,
            gone: false,
        };
        (client, offer.to_sdp_string())
    }

    fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    fn send_frame(&mut self, now: Instant, n: u64, payload: &[u8]) {
        let writer = self.rtc.writer(self.mid).unwrap();
        let pt = writer.payload_params().next().unwrap().pt();
        let time = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
        writer.write(pt, now, time, payload.to_vec()).unwrap();
    }
}

struct Net {
    now: Instant,
    core: MediaCore,
    clients: Vec<Client>,
    ids: Vec<PeerId>,
    events: Vec<CoreEvent>,
    renegotiable: bool,
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            core: MediaCore::new(SERVER.parse().unwrap()),
            clients: Vec::new(),
            ids: Vec::new(),
            events: Vec::new(),
            renegotiable: false,
        }
    }

    fn join(&mut self, room: &str, port: u16, direction: Direction) -> (PeerId, usize) {
        let (mut client, offer) = Client::new(self.now, port, direction);
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
    fn run(&mut self, duration: Duration) {
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

    fn exchange(&mut self) {
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
                        Output::Event(Event::MediaData(data)) => {
                            client.received.push(data.data.to_vec())
                        }
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
                        let offer = str0m::change::SdpOffer::from_sdp_string(&offer).unwrap();
                        let answer = self.clients[index]
                            .rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .unwrap();
                        self.core
                            .accept_answer(id, &answer.to_sdp_string())
                            .unwrap();
                        self.events.push(CoreEvent::Renegotiate(id, String::new()));
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

    fn talk(&mut self, client: usize, frames: u64) {
        for n in 0..frames {
            let payload = [n as u8, 0xAB, 0xCD, client as u8];
            let now = self.now;
            self.clients[client].send_frame(now, n, &payload);
            self.run(Duration::from_millis(20));
        }
    }
}

#[test]
fn audio_is_forwarded_to_the_other_participant_of_the_room_only() {
    let mut net = Net::new();
    let (_a, a) = net.join("room-1", 50001, Direction::SendRecv);
    let (_b, b) = net.join("room-1", 50002, Direction::SendRecv);
    let (_c, c) = net.join("room-2", 50003, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.connected), "all peers connect");
    let connected = net
        .events
        .iter()
        .filter(|e| matches!(e, CoreEvent::Connected(_)))
        .count();
    assert_eq!(connected, 3);

    net.talk(a, 50);
    let heard = &net.clients[b].received;
    assert!(heard.len() >= 45, "B heard {} of 50 frames", heard.len());
    assert_eq!(
        heard[5],
        vec![5, 0xAB, 0xCD, a as u8],
        "payload forwarded untouched"
    );
    assert!(
        net.clients[c].received.is_empty(),
        "another room hears nothing"
    );
    assert!(
        net.clients[a].received.is_empty(),
        "nobody hears themselves"
    );
}

#[test]
fn a_tapped_peer_reports_its_audio_and_an_agent_speaks_into_the_room() {
    let mut net = Net::new();
    let (a_id, a) = net.join("r", 50011, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    net.core.set_tap(a_id, true).unwrap();
    let agent = net.core.add_virtual("r");
    net.talk(a, 10);
    let tapped: Vec<_> = net
        .events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::Audio { peer, payload, .. } if *peer == a_id => Some(payload.to_vec()),
            _ => None,
        })
        .collect();
    assert!(tapped.len() >= 9, "{} tapped", tapped.len());
    assert_eq!(tapped[2], vec![2, 0xAB, 0xCD, a as u8]);

    for n in 0..20u32 {
        let now = net.now;
        net.core
            .write_audio(now, agent, n as u16, n * 960, &[0xEE, n as u8]);
        net.run(Duration::from_millis(20));
    }
    let heard = &net.clients[a].received;
    assert!(
        heard.len() >= 18,
        "the person heard {} agent frames",
        heard.len()
    );
    assert_eq!(heard[3], vec![0xEE, 3]);
}

#[test]
fn a_peer_that_never_connects_is_dropped_after_the_timeout() {
    let mut net = Net::new();
    let (ghost, g) = net.join("r", 50021, Direction::SendRecv);
    net.clients[g].gone = true;
    let (_ok, _) = net.join("r", 50022, Direction::SendRecv);
    net.run(dartmouth_media::core::CONNECT_TIMEOUT + Duration::from_secs(1));
    assert!(
        net.events
            .contains(&CoreEvent::Closed(ghost, CloseReason::ConnectTimeout))
    );
    assert_eq!(net.core.peer_count(), 1, "the connected peer stays");
}

#[test]
fn a_client_that_vanishes_is_cleaned_up_and_the_others_keep_talking() {
    let mut net = Net::new();
    let (_a, a) = net.join("r", 50031, Direction::SendRecv);
    let (b_id, b) = net.join("r", 50032, Direction::SendRecv);
    let (_c, c) = net.join("r", 50033, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    net.clients[b].gone = true;
    net.run(Duration::from_secs(60));
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, CoreEvent::Closed(id, _) if *id == b_id)),
        "the vanished peer is reported closed"
    );
    assert_eq!(net.core.peer_count(), 2);
    let before = net.clients[c].received.len();
    net.talk(a, 10);
    assert!(net.clients[c].received.len() >= before + 9);
}

#[test]
fn unusable_offers_are_refused_with_a_reason() {
    let now = Instant::now();
    let mut core = MediaCore::new(SERVER.parse().unwrap());
    assert!(matches!(
        core.add_peer(now, "r", "this is not sdp", false),
        Err(PeerError::MalformedSdp(_))
    ));
    // Video only.
    let mut rtc = Rtc::builder().build(now);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _) = change.apply().unwrap();
    assert_eq!(
        core.add_peer(now, "r", &offer.to_sdp_string(), false),
        Err(PeerError::NoUsableAudio)
    );
    // Audio, but only PCMU.
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_pcmu(true, false)
        .build(now);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, _) = change.apply().unwrap();
    assert!(
        core.add_peer(now, "r", &offer.to_sdp_string(), false)
            .is_err()
    );
    assert_eq!(core.peer_count(), 0, "nothing is kept of refused offers");
}

#[test]
fn a_receive_only_peer_hears_the_room_and_publishes_nothing() {
    let mut net = Net::new();
    let (_a, a) = net.join("r", 50041, Direction::SendRecv);
    let (_viewer, v) = net.join("r", 50042, Direction::RecvOnly);
    let (_whip, w) = net.join("r", 50043, Direction::SendOnly);
    net.run(Duration::from_secs(2));
    net.talk(a, 20);
    assert!(
        net.clients[v].received.len() >= 18,
        "the WHEP-style viewer hears the room"
    );
    assert!(
        net.clients[w].received.is_empty(),
        "a send-only (WHIP) peer receives nothing"
    );
    net.talk(w, 20);
    assert!(
        net.clients[a].received.len() >= 18,
        "the send-only peer is heard by the others"
    );
}

#[test]
fn a_new_voice_gets_its_own_track_through_renegotiation() {
    let mut net = Net::new();
    net.renegotiable = true;
    let (_a, a) = net.join("r", 50051, Direction::SendRecv);
    let (_b, b) = net.join("r", 50052, Direction::SendRecv);
    let (c_id, c) = net.join("r", 50053, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    // A and B talk at once; C offered one audio line, so B's voice needs a second one.
    for n in 0..50u64 {
        let now = net.now;
        net.clients[a].send_frame(now, n, &[n as u8, 1, 1, a as u8]);
        net.clients[b].send_frame(now, n, &[n as u8, 2, 2, b as u8]);
        net.run(Duration::from_millis(20));
    }
    assert!(
        net.events
            .contains(&CoreEvent::Renegotiate(c_id, String::new())),
        "C was sent a new offer"
    );
    let from = |who: usize| {
        net.clients[c]
            .received
            .iter()
            .filter(|p| p[3] == who as u8)
            .count()
    };
    assert!(from(a) >= 45, "C hears A: {}", from(a));
    assert!(from(b) >= 30, "C hears B after renegotiating: {}", from(b));
}
