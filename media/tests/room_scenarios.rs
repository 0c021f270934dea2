//! Room and forwarding scenarios in virtual time: real str0m clients (standing in for browsers)
//! talk to the sans-IO core over an in-memory network. No sockets, no clock. The SFU's slots,
//! speaker switching, policing and listeners are in `sfu_scenarios.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{Net, SERVER};
use dartmouth_media::{CloseReason, CoreEvent, CoreOutput, MediaCore, PeerError};
use str0m::media::{Direction, MediaKind};
use str0m::{Input, Rtc};

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
    let heard = &net.clients[b].heard;
    assert!(heard.len() >= 45, "B heard {} of 50 frames", heard.len());
    assert_eq!(
        heard[5].payload,
        vec![5, 0xAB, 0xCD, a as u8],
        "payload forwarded untouched"
    );
    assert!(
        net.clients[c].heard.is_empty(),
        "another room hears nothing"
    );
    assert!(net.clients[a].heard.is_empty(), "nobody hears themselves");
}

#[test]
fn a_tapped_peer_reports_its_audio_and_an_agent_speaks_into_the_room() {
    let mut net = Net::new();
    let (a_id, a) = net.join("r", 50011, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    net.core.set_tap(a_id, true).unwrap();
    let agent = net.core.add_virtual("r", true);
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
            .write_audio(now, agent, n as u16, n * 960, Some(30), &[0xEE, n as u8]);
        net.run(Duration::from_millis(20));
    }
    let heard = &net.clients[a].heard;
    assert!(
        heard.len() >= 18,
        "the person heard {} agent frames",
        heard.len()
    );
    assert_eq!(heard[3].payload, vec![0xEE, 3]);
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
    let before = net.clients[c].heard.len();
    net.talk(a, 10);
    assert!(net.clients[c].heard.len() >= before + 9);
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
        net.clients[v].heard.len() >= 18,
        "the WHEP-style viewer hears the room"
    );
    assert!(
        net.clients[w].heard.is_empty(),
        "a send-only (WHIP) peer receives nothing"
    );
    net.talk(w, 20);
    assert!(
        net.clients[a].heard.len() >= 18,
        "the send-only peer is heard by the others"
    );
}

#[test]
fn a_packet_costs_the_peers_of_its_room_not_every_peer_of_the_core() {
    let mut net = Net::new();
    let mut talkers = Vec::new();
    for room in 0..10u16 {
        let name = format!("room-{room}");
        let (_, a) = net.join(&name, 50100 + 2 * room, Direction::SendRecv);
        net.join(&name, 50101 + 2 * room, Direction::SendRecv);
        talkers.push(a);
    }
    net.run(Duration::from_secs(2));
    assert!(
        net.clients.iter().all(|c| c.connected),
        "all 20 peers connect"
    );
    net.talk(talkers[0], 5);

    let before = net.core.counters();
    let now = net.now;
    let talker = &mut net.clients[talkers[0]];
    talker.send_frame(now, 30, &[9, 0xAB, 0xCD, 0]);
    // Only the talker's clock moves (its packetizer sends on a timeout); the core's timers do
    // not fire, so what it polls is what the packet caused.
    net.now += Duration::from_millis(1);
    talker.rtc.handle_input(Input::Timeout(net.now)).unwrap();
    net.exchange();
    let after = net.core.counters();
    assert_eq!(
        after.forwarded - before.forwarded,
        1,
        "forwarded to the one listener"
    );
    let polls = after.peer_polls - before.peer_polls;
    // The publisher (its packet) and the listener (the forwarded copy), each polled until idle;
    // the other 18 peers of the other rooms have nothing to do and are not polled.
    assert!(
        polls <= 6,
        "one packet polled {polls} peers for a room of 2 in a core of 20"
    );
}

#[test]
fn packets_between_grid_points_add_no_wakes_off_the_grid() {
    // As the driver runs the core: packets arrive at their own times (every 23 ms, so at every
    // phase of the grid) and are handled at once; the wake the core asks for after them must
    // still be a future grid point, even when a peer's timer fell due since the last one.
    let mut net = Net::new();
    for port in 50300..50304 {
        net.join("phases", port, Direction::SendRecv);
    }
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.connected));
    let start = net.now;
    let mut next_packet = net.now + Duration::from_millis(7);
    let mut wakes = Vec::new();
    let mut forwarded_at_once = 0;
    while net.now < start + Duration::from_secs(2) {
        let wake = match net.core.poll_output(net.now) {
            CoreOutput::Timeout(at) => at,
            other => panic!("the network was drained, yet the core had {other:?}"),
        };
        assert!(
            wake > net.now,
            "a wake at once, {:?} after start",
            net.now - start
        );
        let sending = next_packet < wake;
        if sending {
            net.now = next_packet;
            next_packet += Duration::from_millis(23);
            let n = net.clients[0].sent;
            net.clients[0].send_frame(net.now, common::TALK, &[n as u8, 0xAB, 0xCD, 0]);
        } else {
            net.now = wake;
            wakes.push(wake);
            net.core.handle_timeout(net.now);
        }
        for client in &mut net.clients {
            client.rtc.handle_input(Input::Timeout(net.now)).unwrap();
        }
        let before = net.clients[1].heard_from(0).len();
        net.exchange();
        if sending && net.clients[1].heard_from(0).len() > before {
            forwarded_at_once += 1;
        }
    }
    let first = wakes[0];
    for wake in &wakes {
        let offset = wake.duration_since(first);
        assert_eq!(
            offset.as_nanos() % 10_000_000,
            0,
            "a wake {offset:?} after the first is off the grid"
        );
    }
    assert!(wakes.len() <= 201, "{} wakes in 2 s", wakes.len());
    // A packet is forwarded when it arrives, not at the next grid point.
    assert!(
        forwarded_at_once >= 80,
        "{forwarded_at_once} of 87 packets forwarded at once"
    );
}

#[test]
fn the_timers_of_idle_peers_are_served_together_on_a_10_ms_grid() {
    let mut net = Net::new();
    for port in 50200..50206 {
        net.join("grid", port, Direction::SendRecv);
    }
    net.run(Duration::from_secs(2));
    let mut wakes = Vec::new();
    for _ in 0..100 {
        let at = loop {
            if let CoreOutput::Timeout(at) = net.core.poll_output(net.now) {
                break at;
            }
        };
        if at > net.now {
            wakes.push(at);
        }
        net.now = at.max(net.now + Duration::from_millis(1));
        net.core.handle_timeout(net.now);
    }
    assert!(wakes.len() >= 20, "{} timed wakes", wakes.len());
    let first = wakes[0];
    for wake in &wakes {
        let offset = wake.duration_since(first);
        assert_eq!(
            offset.as_nanos() % 10_000_000,
            0,
            "a wake {offset:?} after the first is off the grid"
        );
    }
}
