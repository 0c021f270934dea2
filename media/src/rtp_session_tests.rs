use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config() -> RtpConfig {
    RtpConfig {
        dtmf_pt: Some(101),
        cn_pt: Some(13),
        ..RtpConfig::pcmu(addr(4000))
    }
}

fn packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, (u8::from(marker) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn event(code: u8, end: bool, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [code, if end { 0x8a } else { 0x0a }, d[0], d[1]]
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn latches_onto_the_first_valid_source_and_ignores_others() {
    let mut s = RtpSession::new(config(), 1);
    let nat = addr(50_000);
    assert!(matches!(
        s.receive(MS, nat, &packet(0, true, 1, 0, 7, &[0xff; 160])),
        Received::Audio { .. }
    ));
    assert_eq!(s.destination(), nat, "answers to where the phone really is");
    let intruder = addr(50_001);
    for i in 0..10u16 {
        let p = packet(0, false, 100 + i, 0, 99, &[0; 160]);
        let got = s.receive(MS * (20 + 20 * u32::from(i)), intruder, &p);
        assert_eq!(got, Received::Ignored(Ignored::UnexpectedSource));
    }
    assert_eq!(s.destination(), nat);
    assert_eq!(s.stats().unexpected_source, 10);
}

#[test]
fn a_new_source_takes_over_only_after_the_old_one_fell_silent() {
    let mut s = RtpSession::new(config(), 1);
    let (old, new) = (addr(50_000), addr(50_002));
    s.receive(MS, old, &packet(0, true, 1, 0, 7, &[0; 160]));
    let t = RELATCH_SILENCE + MS * 10;
    // Two packets are not enough; the third consecutive one of the same SSRC is.
    for i in 0..RELATCH_PACKETS - 1 {
        let p = packet(0, false, i as u16, 0, 8, &[0; 160]);
        let got = s.receive(t + MS * (20 * i), new, &p);
        assert_eq!(got, Received::Ignored(Ignored::UnexpectedSource));
    }
    let p = packet(0, false, 9, 0, 8, &[0; 160]);
    let got = s.receive(t + MS * 100, new, &p);
    assert!(matches!(got, Received::Audio { .. }), "{got:?}");
    assert_eq!(s.destination(), new);
    assert_eq!(s.stats().latches, 2);
}

#[test]
fn garbage_rtcp_and_unknown_payload_types_are_not_audio() {
    let mut s = RtpSession::new(config(), 1);
    let from = addr(50_000);
    assert_eq!(
        s.receive(MS, from, b"hello"),
        Received::Ignored(Ignored::Malformed)
    );
    assert_eq!(
        s.receive(MS, from, &[0x40; 40]),
        Received::Ignored(Ignored::Malformed)
    );
    // Padding longer than the packet.
    let mut padded = packet(0, false, 1, 0, 7, &[1, 2, 200]);
    padded[0] |= 0x20;
    assert_eq!(
        s.receive(MS, from, &padded),
        Received::Ignored(Ignored::Malformed)
    );
    let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(s.receive(MS, from, &rtcp), Received::Ignored(Ignored::Rtcp));
    let video = packet(96, false, 1, 0, 7, &[0; 10]);
    assert_eq!(
        s.receive(MS, from, &video),
        Received::Ignored(Ignored::UnknownPayloadType(96))
    );
    assert_eq!(s.latched(), None, "nothing invalid latches");
}

#[test]
fn one_digit_per_event_with_or_without_marker_and_redundant_ends() {
    let mut s = RtpSession::new(config(), 1);
    let from = addr(50_000);
    let mut digits = Vec::new();
    let mut feed = |s: &mut RtpSession, p: Vec<u8>| {
        if let Received::Dtmf { digit } = s.receive(MS, from, &p) {
            digits.push(digit);
        }
    };
    // "5": marker, three updates, three end packets.
    feed(&mut s, packet(101, true, 1, 1000, 7, &event(5, false, 160)));
    for (i, d) in [320u16, 480, 640].iter().enumerate() {
        feed(
            &mut s,
            packet(101, false, 2 + i as u16, 1000, 7, &event(5, false, *d)),
        );
    }
    for i in 0..3 {
        feed(
            &mut s,
            packet(101, false, 5 + i, 1000, 7, &event(5, true, 800)),
        );
    }
    // "5" again, a new event (new timestamp) whose marker bit was lost.
    feed(
        &mut s,
        packet(101, false, 8, 3000, 7, &event(5, false, 160)),
    );
    feed(&mut s, packet(101, false, 9, 3000, 7, &event(5, true, 320)));
    // "#" that arrives only as end packets.
    feed(
        &mut s,
        packet(101, false, 10, 5000, 7, &event(11, true, 800)),
    );
    feed(
        &mut s,
        packet(101, false, 11, 5000, 7, &event(11, true, 800)),
    );
    assert_eq!(digits, vec!['5', '5', '#']);
}

#[test]
fn digits_go_out_as_rfc4733_events_with_three_end_packets() {
    let mut s = RtpSession::new(config(), 1);
    assert_eq!(s.queue_digits("1x#"), 2, "unknown keys are skipped");
    let mut rx = RtpSession::new(config(), 2);
    let mut out = [0u8; 64];
    let mut heard = Vec::new();
    let mut packets = 0;
    while s.sending_digits() {
        let n = s.write_dtmf(&mut out);
        assert_eq!(n, RTP_HEADER + 4);
        packets += 1;
        if let Received::Dtmf { digit } = rx.receive(MS, addr(4000), &out[..n]) {
            heard.push(digit);
        }
        assert!(packets < 100);
    }
    assert_eq!(heard, vec!['1', '#']);
    assert_eq!(packets, 2 * (DTMF_FRAMES + DTMF_END_PACKETS) as usize);
    let mut no_events = RtpSession::new(RtpConfig::pcmu(addr(4000)), 3);
    assert_eq!(no_events.queue_digits("123"), 0);
}

#[test]
fn silence_sends_comfort_noise_at_its_start_and_periodically_and_keeps_the_clock() {
    let mut s = RtpSession::new(config(), 1);
    let mut out = [0u8; 200];
    let n = s.write_audio(&[0x55; 160], &mut out);
    let first_ts = parse(&out[..n]).unwrap().timestamp;
    let mut cn = 0;
    for _ in 0..CN_REFRESH_FRAMES + 1 {
        if s.write_silence(&mut out) > 0 {
            assert_eq!(parse(&out[..RTP_HEADER + 1]).unwrap().pt, 13);
            cn += 1;
        }
    }
    assert_eq!(cn, 2);
    let n = s.write_audio(&[0x55; 160], &mut out);
    let resumed = parse(&out[..n]).unwrap();
    assert!(
        resumed.marker,
        "a talk spurt after silence carries the marker"
    );
    assert_eq!(
        resumed.timestamp.wrapping_sub(first_ts),
        160 * (CN_REFRESH_FRAMES + 2),
        "the timestamp ran on through the silence"
    );
    let mut rx = RtpSession::new(config(), 2);
    let cn_packet = packet(13, false, 1, 0, 7, &[40]);
    assert_eq!(
        rx.receive(MS, addr(4000), &cn_packet),
        Received::ComfortNoise { level: 40 }
    );
}

#[test]
fn a_renegotiated_address_drops_the_latch() {
    let mut s = RtpSession::new(config(), 1);
    s.receive(MS, addr(50_000), &packet(0, true, 1, 0, 7, &[0; 160]));
    s.update(RtpConfig {
        remote: addr(6000),
        ..config()
    });
    assert_eq!(s.destination(), addr(6000));
    assert!(matches!(
        s.receive(MS * 2, addr(6000), &packet(0, true, 1, 0, 8, &[0; 160])),
        Received::Audio { .. }
    ));
}
