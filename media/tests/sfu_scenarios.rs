//! The selective forwarding unit in virtual time: fixed audio slots filled by the loudest
//! speakers (no renegotiation as voices come and go), continuous streams across switches,
//! mute, reconnects, policing, in-process listeners, RTCP statistics and bad input.

mod common;

use std::time::Duration;

use common::{Heard, Net, QUIET, TALK};
use dartmouth_media::{CoreEvent, Listen, MediaConfig, PolicingConfig};
use str0m::media::Direction;

/// Asserts that `heard` is one continuous stream: consecutive sequence numbers, timestamps
/// that never go back and advance by at least a frame.
fn assert_continuous(heard: &[&Heard]) {
    for pair in heard.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "sequence gap: {pair:?}");
        let step = pair[1].rtp_time - pair[0].rtp_time;
        assert!(step >= 960, "timestamp step {step}: {pair:?}");
    }
}

#[test]
fn a_one_slot_viewer_hears_whoever_speaks_without_renegotiation() {
    let mut net = Net::new();
    let (_a, a) = net.join("r", 51001, Direction::SendRecv);
    let (_b, b) = net.join("r", 51002, Direction::SendRecv);
    let (_c, c) = net.join("r", 51003, Direction::SendRecv);
    let (v_id, v) = net.join("r", 51004, Direction::RecvOnly);
    net.run(Duration::from_secs(2));
    assert_eq!(
        net.core.slots(v_id).unwrap().len(),
        1,
        "WHEP-style: one slot"
    );

    net.talk_together(&[(a, TALK), (b, QUIET), (c, QUIET)], 50);
    assert!(net.clients[v].heard_from(a as u8).len() >= 45, "V hears A");
    // B takes over: after the switching dwell V hears B on the same line.
    net.talk_together(&[(a, QUIET), (b, TALK), (c, QUIET)], 50);
    let from_b = net.clients[v].heard_from(b as u8);
    assert!(from_b.len() >= 35, "V hears B: {}", from_b.len());
    assert!(net.offers.is_empty(), "no renegotiation");
    let heard = &net.clients[v].heard;
    assert!(heard.iter().all(|h| h.mid == heard[0].mid), "one line");
    assert_continuous(&heard.iter().collect::<Vec<_>>());
    // C talks after a second in which nobody sent anything: the timestamp advances by the pause, not one frame.
    let before = net.clients[v].heard.len();
    net.talk_together(&[(a, QUIET), (b, QUIET)], 50);
    let last_b = net.clients[v].heard.last().unwrap().clone();
    let mark = net.clients[v].heard.len();
    net.run(Duration::from_secs(1));
    net.talk_together(&[(c, TALK)], 30);
    let first_c = net.clients[v].heard[mark].clone();
    assert_eq!(first_c.payload[3], c as u8);
    assert!(net.clients[v].heard.len() > before);
    let pause = first_c.rtp_time - last_b.rtp_time;
    assert!(
        (48_000..52_000).contains(&pause),
        "timestamp advanced by the elapsed time: {pause}"
    );
    assert_eq!(
        first_c.seq,
        last_b.seq + 1,
        "and the sequence stays gapless"
    );
}

#[test]
fn three_slots_carry_the_three_loudest_and_a_fourth_voice_needs_no_renegotiation() {
    let mut net = Net::new();
    net.renegotiable = true;
    let (s_id, s) = net.join("r", 51101, Direction::SendRecv);
    let talkers: Vec<usize> = (0..4)
        .map(|i| net.join("r", 51102 + i, Direction::SendRecv).1)
        .collect();
    net.run(Duration::from_secs(2));
    assert_eq!(net.offers.len(), 5, "one top-up offer per peer, at connect");
    assert_eq!(net.core.slots(s_id).unwrap().len(), 3);
    let [p1, p2, p3, p4] = talkers[..] else {
        unreachable!()
    };
    net.talk_together(&[(p1, TALK), (p2, TALK), (p3, TALK), (p4, QUIET)], 50);
    for p in [p1, p2, p3] {
        assert!(
            net.clients[s].heard_from(p as u8).len() >= 45,
            "S hears {p}"
        );
    }
    assert!(
        net.clients[s].heard_from(p4 as u8).is_empty(),
        "a fourth voice waits"
    );
    let p3_line = net.clients[s].heard_from(p3 as u8)[0].mid;
    // P3 falls silent and P4 speaks: P4 takes P3's line.
    net.talk_together(&[(p1, TALK), (p2, TALK), (p3, QUIET), (p4, TALK)], 50);
    let from_p4 = net.clients[s].heard_from(p4 as u8);
    assert!(from_p4.len() >= 30, "S hears P4: {}", from_p4.len());
    assert!(from_p4.iter().all(|h| h.mid == p3_line), "in P3's old slot");
    assert_eq!(net.offers.len(), 5, "no renegotiation for the new voice");
    let lines: std::collections::HashSet<_> = net.clients[s].heard.iter().map(|h| h.mid).collect();
    assert_eq!(lines.len(), 3);
    for line in lines {
        let stream: Vec<_> = net.clients[s]
            .heard
            .iter()
            .filter(|h| h.mid == line)
            .collect();
        assert_continuous(&stream);
    }
    assert!(
        net.events.iter().any(|e| matches!(
            e,
            CoreEvent::ActiveSpeakers { speakers, .. } if speakers.len() == 3
        )),
        "active speakers are reported"
    );
}

#[test]
fn mute_silences_a_participant_and_unmute_continues_the_stream() {
    let mut net = Net::new();
    let (a_id, a) = net.join("r", 51201, Direction::SendRecv);
    let (_b, b) = net.join("r", 51202, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    net.talk(a, 25);
    let before = net.clients[b].heard.len();
    assert!(before >= 20);
    net.core.set_muted(a_id, true).unwrap();
    net.talk(a, 50);
    assert!(
        net.clients[b].heard.len() <= before + 1,
        "nothing while muted"
    );
    net.core.set_muted(a_id, false).unwrap();
    net.talk(a, 25);
    assert!(net.clients[b].heard.len() >= before + 20, "heard again");
    assert_continuous(&net.clients[b].heard.iter().collect::<Vec<_>>());
}

#[test]
fn a_publisher_that_reconnects_continues_in_the_same_slot() {
    let mut net = Net::new();
    let (a_id, a) = net.join("r", 51301, Direction::SendOnly);
    let (_v, v) = net.join("r", 51302, Direction::RecvOnly);
    net.run(Duration::from_secs(2));
    net.talk(a, 25);
    net.core.remove(a_id);
    net.clients[a].gone = true;
    let (_a2, a2) = net.join("r", 51303, Direction::SendOnly);
    net.run(Duration::from_secs(1));
    net.talk(a2, 25);
    let heard = &net.clients[v].heard;
    assert!(heard.len() >= 45, "{}", heard.len());
    assert!(heard.iter().any(|h| h.payload[3] == a2 as u8));
    assert_continuous(&heard.iter().collect::<Vec<_>>());
}

#[test]
fn a_flooding_publisher_is_policed_and_the_others_are_unaffected() {
    let mut net = Net::with_config(MediaConfig {
        policing: PolicingConfig {
            max_packets_per_sec: 60,
            ..PolicingConfig::default()
        },
        ..MediaConfig::default()
    });
    let (flood_id, flood) = net.join("r", 51401, Direction::SendOnly);
    let (_ok, ok) = net.join("r", 51402, Direction::SendOnly);
    let (_v, v) = net.join_with(
        "r",
        51403,
        &[
            Direction::RecvOnly,
            Direction::RecvOnly,
            Direction::RecvOnly,
        ],
    );
    net.run(Duration::from_secs(2));
    // Ten packets per 20 ms: 2 ms frames, which is what a flooding client claims.
    net.clients[flood].frame_ticks = 96;
    for _ in 0..100 {
        let now = net.now;
        for _ in 0..10 {
            let n = net.clients[flood].sent as u8;
            net.clients[flood].send_frame(now, TALK, &[n, 0xAB, 0xCD, flood as u8]);
            // str0m packetizes one frame per timeout: give it one per frame.
            let input = str0m::Input::Timeout(now);
            net.clients[flood].rtc.handle_input(input).unwrap();
            net.exchange();
        }
        let n = net.clients[ok].sent as u8;
        net.clients[ok].send_frame(now, TALK, &[n, 0xAB, 0xCD, ok as u8]);
        net.run(Duration::from_millis(20));
    }
    let flooded = net.clients[v].heard_from(flood as u8).len();
    let normal = net.clients[v].heard_from(ok as u8).len();
    assert!(normal >= 98, "the normal publisher is unaffected: {normal}");
    assert!(
        flooded <= 160,
        "the flood is cut to the limit: {flooded} of 1000"
    );
    let counters = net.core.counters();
    assert!(counters.policed >= 800, "{counters:?}");
    assert!(net.core.peer_stats(flood_id).unwrap().policed >= 800);
}

#[test]
fn in_process_listeners_hear_one_person_the_active_speaker_or_everyone() {
    let mut net = Net::new();
    let (a_id, a) = net.join("r", 51501, Direction::SendRecv);
    let (b_id, b) = net.join("r", 51502, Direction::SendRecv);
    let everyone = net.core.add_virtual("r", true);
    let active = net.core.add_virtual("r", true);
    let only_b = net.core.add_virtual("r", false);
    let talking_agent = net.core.add_virtual("r", true);
    net.core
        .set_listen(everyone, Some(Listen::Everyone))
        .unwrap();
    net.core
        .set_listen(active, Some(Listen::ActiveSpeaker))
        .unwrap();
    net.core
        .set_listen(only_b, Some(Listen::Participant(b_id)))
        .unwrap();
    net.run(Duration::from_secs(2));
    for n in 0..50u32 {
        let now = net.now;
        net.core
            .write_audio(now, talking_agent, n as u16, n * 960, Some(20), &[9; 40]);
        net.clients[a].send_frame(now, TALK, &[n as u8, 0, 0, a as u8]);
        net.clients[b].send_frame(now, QUIET, &[n as u8, 0, 0, b as u8]);
        net.run(Duration::from_millis(20));
    }
    let heard = |listener, source| {
        net.events
            .iter()
            .filter(|e| {
                matches!(e, CoreEvent::Audio { listener: Some(l), peer, .. }
                    if *l == listener && *peer == source)
            })
            .count()
    };
    assert!(heard(everyone, a_id) >= 45 && heard(everyone, b_id) >= 45);
    assert_eq!(
        heard(everyone, talking_agent),
        0,
        "agents do not hear agents"
    );
    assert!(heard(active, a_id) >= 45, "the active speaker");
    assert!(
        heard(active, b_id) <= 3,
        "silent B at most until A is ranked"
    );
    assert!(heard(only_b, b_id) >= 45);
    assert_eq!(heard(only_b, a_id), 0);
    assert!(heard(only_b, talking_agent) == 0);
    // The people hear the agent too (it is the loudest).
    assert!(net.clients[b].heard.iter().any(|h| h.payload == [9; 40]));
}

#[test]
fn subscribers_report_rtt_jitter_and_loss_in_rtcp() {
    let mut net = Net::new();
    let (a_id, a) = net.join("r", 51601, Direction::SendRecv);
    let (b_id, _b) = net.join("r", 51602, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    net.talk(a, 250);
    let stats = net.core.peer_stats(b_id).expect("stats of B");
    eprintln!("B: {stats:?}");
    assert!(stats.packets_sent >= 240, "{stats:?}");
    assert!(stats.jitter.is_some(), "B reported jitter: {stats:?}");
    assert!(stats.rtt.is_some(), "{stats:?}");
    let a_stats = net.core.peer_stats(a_id).unwrap();
    assert!(a_stats.packets_received >= 240, "{a_stats:?}");
}

#[test]
fn malformed_datagrams_are_counted_and_dropped() {
    let mut net = Net::new();
    let (_a, a) = net.join("r", 51701, Direction::SendRecv);
    let (_b, b) = net.join("r", 51702, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    let server = common::SERVER.parse().unwrap();
    let stranger = "127.0.0.1:51799".parse().unwrap();
    let now = net.now;
    for garbage in [
        &[0xFFu8; 3][..],
        &[0x80, 0x6F, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2][..],
        &[],
    ] {
        assert!(!net.core.handle_receive(now, stranger, server, garbage));
    }
    let counters = net.core.counters();
    assert_eq!(counters.malformed + counters.unclaimed, 3, "{counters:?}");
    net.talk(a, 20);
    assert!(net.clients[b].heard.len() >= 18, "the room goes on");
}

#[test]
fn a_subscriber_that_stops_reading_does_not_slow_the_room() {
    let mut net = Net::new();
    let (_a, a) = net.join("r", 51801, Direction::SendRecv);
    let (_b, b) = net.join("r", 51802, Direction::SendRecv);
    let (_c, c) = net.join("r", 51803, Direction::SendRecv);
    net.run(Duration::from_secs(2));
    net.clients[c].gone = true;
    net.talk(a, 150);
    assert!(
        net.clients[b].heard.len() >= 148,
        "B heard {} of 150",
        net.clients[b].heard.len()
    );
}
