//! Jitter buffer scenarios in virtual time.

use super::*;

/// Compact view of one `pop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    P(u16),
    L(u16),
    E,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn payload(seq: u16) -> [u8; 3] {
    let b = seq.to_be_bytes();
    [b[0], b[1], 0xAB]
}

fn pop(jb: &mut JitterBuffer, now: Duration) -> Out {
    match jb.pop(now) {
        Playout::Packet(p) => {
            assert_eq!(p.payload, payload(p.seq), "payload belongs to its packet");
            assert_eq!(p.timestamp, u32::from(p.seq).wrapping_mul(960));
            Out::P(p.seq)
        }
        Playout::Lost { seq } => Out::L(seq),
        Playout::Empty => Out::E,
    }
}

/// Runs `arrivals` (`(arrival ms, seq)`) through a buffer, popping every 20 ms at t = 10, 30, …
/// until `end_ms`; returns every pop and the buffer.
fn run(arrivals: &[(u64, u16)], end_ms: u64) -> (Vec<Out>, JitterBuffer) {
    let mut jb = JitterBuffer::new(48_000);
    let mut sorted = arrivals.to_vec();
    sorted.sort_by_key(|a| a.0);
    let mut next = 0;
    let mut outs = Vec::new();
    let mut t = 10;
    while t <= end_ms {
        while next < sorted.len() && sorted[next].0 <= t {
            let (at, seq) = sorted[next];
            jb.push(ms(at), seq, u32::from(seq).wrapping_mul(960), &payload(seq));
            next += 1;
        }
        outs.push(pop(&mut jb, ms(t)));
        t += 20;
    }
    (outs, jb)
}

fn played(outs: &[Out]) -> Vec<Out> {
    outs.iter().copied().filter(|o| *o != Out::E).collect()
}

#[test]
fn in_order_plays_everything_after_initial_delay() {
    let arrivals: Vec<(u64, u16)> = (0..20u16).map(|i| (u64::from(i) * 20, i)).collect();
    let (outs, jb) = run(&arrivals, 600);
    // Arrivals at 0, 20, 40: the first pop at or after 40 ms (t = 50) plays.
    assert_eq!(&outs[..3], &[Out::E, Out::E, Out::P(0)]);
    assert_eq!(played(&outs), (0..20).map(Out::P).collect::<Vec<_>>());
    let s = jb.stats();
    assert_eq!((s.received, s.lost, s.late, s.duplicate), (20, 0, 0, 0));
    assert!(
        s.target_delay < ms(21),
        "no jitter: target at the floor: {:?}",
        s.target_delay
    );
}

#[test]
fn reordered_packets_play_in_order() {
    let mut arrivals: Vec<(u64, u16)> = (0..20u16).map(|i| (u64::from(i) * 20, i)).collect();
    // 5 and 6 swap; 11 arrives 15 ms after 12.
    arrivals[5].0 = 121;
    arrivals[6].0 = 119;
    arrivals[11].0 = 255;
    let (outs, jb) = run(&arrivals, 600);
    assert_eq!(played(&outs), (0..20).map(Out::P).collect::<Vec<_>>());
    assert_eq!(jb.stats().lost, 0);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut jb = JitterBuffer::new(48_000);
    assert_eq!(jb.push(ms(0), 7, 7 * 960, &payload(7)), PushOutcome::Stored);
    assert_eq!(
        jb.push(ms(1), 7, 7 * 960, &payload(7)),
        PushOutcome::Duplicate
    );
    let mut arrivals: Vec<(u64, u16)> = (0..10u16).map(|i| (u64::from(i) * 20, i)).collect();
    arrivals.push((45, 2));
    arrivals.push((46, 2));
    let (outs, jb) = run(&arrivals, 300);
    assert_eq!(played(&outs), (0..10).map(Out::P).collect::<Vec<_>>());
    assert_eq!(jb.stats().duplicate, 2);
    assert_eq!(jb.stats().received, 10);
}

#[test]
fn lost_packet_is_reported_at_its_slot() {
    let arrivals: Vec<(u64, u16)> = (0..12u16)
        .filter(|&i| i != 4 && i != 8)
        .map(|i| (u64::from(i) * 20, i))
        .collect();
    let (outs, jb) = run(&arrivals, 400);
    let expected: Vec<Out> = (0..12)
        .map(|i| {
            if i == 4 || i == 8 {
                Out::L(i)
            } else {
                Out::P(i)
            }
        })
        .collect();
    assert_eq!(played(&outs), expected);
    assert_eq!(jb.stats().lost, 2);
}

#[test]
fn late_burst_is_dropped_and_counted() {
    // Packets 5..=8 are held up in the network and arrive together long after their slots.
    let arrivals: Vec<(u64, u16)> = (0..16u16)
        .map(|i| {
            let at = if (5..=8).contains(&i) {
                260
            } else {
                u64::from(i) * 20
            };
            (at, i)
        })
        .collect();
    let (outs, jb) = run(&arrivals, 500);
    let p = played(&outs);
    for i in 5..=8 {
        assert!(p.contains(&Out::L(i)), "{i} reported lost: {p:?}");
        assert!(!p.contains(&Out::P(i)), "{i} never played: {p:?}");
    }
    let s = jb.stats();
    assert_eq!((s.late, s.lost), (4, 4));
    assert!(p.ends_with(&[Out::P(15)]));
}

#[test]
fn sequence_wraps_at_65535() {
    let arrivals: Vec<(u64, u16)> = (0..10u16)
        .map(|i| (u64::from(i) * 20, 65_530u16.wrapping_add(i)))
        .collect();
    let mut swapped = arrivals.clone();
    // 65535 and 0 arrive swapped.
    swapped[5].0 = 101;
    swapped[6].0 = 99;
    let (outs, jb) = run(&swapped, 400);
    let expected: Vec<Out> = (0..10u16)
        .map(|i| Out::P(65_530u16.wrapping_add(i)))
        .collect();
    assert_eq!(played(&outs), expected);
    assert_eq!(jb.stats().lost, 0);
    // A packet from before the wrap arriving after playout moved on is late.
    let mut jb = jb;
    assert_eq!(jb.push(ms(400), 65_531, 0, &[1]), PushOutcome::Late);
}

#[test]
fn oversize_payload_is_rejected() {
    let mut jb = JitterBuffer::new(48_000);
    assert_eq!(
        jb.push(ms(0), 1, 0, &[0; SLOT_BYTES + 1]),
        PushOutcome::TooLarge
    );
    assert_eq!(jb.stats().received, 0);
}

#[test]
fn far_jump_keeps_capacity_bound() {
    let mut jb = JitterBuffer::new(48_000);
    for i in 0..3u16 {
        jb.push(ms(u64::from(i) * 20), i, u32::from(i) * 960, &payload(i));
    }
    // A jump far beyond the ring pushes the oldest frames out instead of growing.
    let far = (CAPACITY as u16) + 10;
    assert_eq!(
        jb.push(ms(60), far, u32::from(far) * 960, &payload(far)),
        PushOutcome::Stored
    );
    assert_eq!(jb.stats().discarded, 3);
    assert!(jb.stats().current_delay <= FRAME * CAPACITY as u32);
}

/// Deterministic pseudo-random jitter in `0..max_ms`.
fn lcg_jitter(state: &mut u32, max_ms: u64) -> u64 {
    *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    u64::from(*state >> 16) % max_ms
}

#[test]
fn delay_grows_under_jitter_and_shrinks_back() {
    let mut jb = JitterBuffer::new(48_000);
    let mut state = 42u32;
    // 0–4 s: up to 80 ms of network jitter; 4–14 s: none.
    let total: u16 = 700;
    let arrivals: Vec<(u64, u16)> = (0..total)
        .map(|i| {
            let base = u64::from(i) * 20;
            let extra = if base < 4_000 {
                lcg_jitter(&mut state, 80)
            } else {
                0
            };
            (base + extra, i)
        })
        .collect();
    let mut sorted = arrivals;
    sorted.sort_by_key(|a| a.0);
    let mut next = 0;
    let mut t = 10;
    let mut peak = (Duration::ZERO, Duration::ZERO);
    let mut lost_in_jitter = 0;
    let mut lost_after = 0;
    while t < 14_000 {
        while next < sorted.len() && sorted[next].0 <= t {
            let (at, seq) = sorted[next];
            jb.push(ms(at), seq, u32::from(seq) * 960, &payload(seq));
            next += 1;
        }
        let out = pop(&mut jb, ms(t));
        if let Out::L(_) = out {
            if t < 4_000 {
                lost_in_jitter += 1;
            } else if t >= 5_000 {
                lost_after += 1;
            }
        }
        let s = jb.stats();
        if t < 4_100 {
            peak.0 = peak.0.max(s.target_delay);
            peak.1 = peak.1.max(s.current_delay);
        }
        t += 20;
    }
    let s = jb.stats();
    eprintln!(
        "jitter scenario: peak target {:?}, peak current {:?}; final jitter {:?}, target {:?}, \
         current {:?}; lost during jitter {lost_in_jitter}, after {lost_after}; {s:?}",
        peak.0, peak.1, s.jitter, s.target_delay, s.current_delay
    );
    assert!(peak.0 >= ms(80), "target grew: {:?}", peak.0);
    assert!(peak.1 >= ms(80), "buffered delay grew: {:?}", peak.1);
    assert!(
        s.target_delay <= ms(30),
        "target shrank back: {:?}",
        s.target_delay
    );
    assert!(
        s.current_delay <= ms(40),
        "delay shrank back: {:?}",
        s.current_delay
    );
    assert_eq!(lost_after, 0);
    assert!(s.target_delay >= MIN_DELAY && peak.0 <= MAX_DELAY);
}
