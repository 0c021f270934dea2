use super::*;

const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

const ALL: [PhoneCodec; 4] = PhoneCodec::ALL;

#[test]
fn a_sipp_offer_negotiates_pcmu_with_events() {
    let remote = parse(SIPP_OFFER.as_bytes()).unwrap();
    assert_eq!(remote.addr, "127.0.0.1:6000".parse().unwrap());
    let n = negotiate(&remote, &ALL).unwrap();
    assert_eq!(
        (n.codec, n.audio_pt, n.dtmf_pt, n.cn_pt),
        (PhoneCodec::Pcmu, 0, Some(101), None)
    );
    assert_eq!(n.direction, Direction::SendRecv);
    let answer = answer(
        &n,
        "127.0.0.1:16000".parse().unwrap(),
        1,
        1,
        Direction::SendRecv,
    );
    assert!(
        answer.contains("m=audio 16000 RTP/AVP 0 101\r\n"),
        "{answer}"
    );
    assert!(answer.contains("a=rtpmap:101 telephone-event/8000"));
    // Our answer reads back as what we meant.
    let back = negotiate(&parse(answer.as_bytes()).unwrap(), &ALL).unwrap();
    assert_eq!((back.codec, back.dtmf_pt), (PhoneCodec::Pcmu, Some(101)));
}

#[test]
fn the_offerers_order_wins_within_what_the_trunk_allows() {
    let offer = SIPP_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 9 8 0 101");
    let remote = parse(offer.as_bytes()).unwrap();
    assert_eq!(negotiate(&remote, &ALL).unwrap().codec, PhoneCodec::G722);
    let n = negotiate(&remote, &[PhoneCodec::Pcma]).unwrap();
    assert_eq!((n.codec, n.audio_pt), (PhoneCodec::Pcma, 8));
    assert_eq!(
        negotiate(&remote, &[PhoneCodec::Opus]),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn hold_is_read_from_the_direction_or_a_zero_address() {
    let hold = SIPP_OFFER.to_string() + "a=sendonly\r\n";
    assert_eq!(
        parse(hold.as_bytes()).unwrap().direction,
        Direction::SendOnly
    );
    assert_eq!(Direction::SendOnly.answer(), Direction::RecvOnly);
    let old_style = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
    assert_eq!(
        parse(old_style.as_bytes()).unwrap().direction,
        Direction::Inactive
    );
    let session_level = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
    assert_eq!(
        parse(session_level.as_bytes()).unwrap().direction,
        Direction::Inactive
    );
}

#[test]
fn our_offer_lists_every_allowed_codec_and_an_answer_picks_one() {
    let local = "127.0.0.1:16002".parse().unwrap();
    let ours = offer(&ALL, local, 7, 1);
    let remote = parse(ours.as_bytes()).unwrap();
    let names: Vec<&str> = remote.payloads.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "opus",
            "G722",
            "PCMU",
            "PCMA",
            "telephone-event",
            "telephone-event",
            "CN"
        ]
    );
    let n = negotiate(&remote, &[PhoneCodec::Pcmu]).unwrap();
    assert_eq!((n.dtmf_pt, n.cn_pt), (Some(101), Some(13)));
    let n = negotiate(&remote, &[PhoneCodec::Opus]).unwrap();
    assert_eq!((n.audio_pt, n.dtmf_pt, n.cn_pt), (111, Some(110), None));
}

#[test]
fn bad_bodies_are_refused_not_panicked_on() {
    assert!(matches!(parse(b"garbage"), Err(SdpError::Malformed(_))));
    assert!(matches!(parse(&[0xff, 0xfe]), Err(SdpError::Malformed(_))));
    assert!(matches!(
        parse(&vec![b'a'; MAX_SDP_BYTES + 1]),
        Err(SdpError::Malformed(_))
    ));
    let video = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 96\r\n";
    assert_eq!(parse(video.as_bytes()), Err(SdpError::NoAudio));
    let no_c = "v=0\r\nm=audio 5000 RTP/AVP 0\r\n";
    assert!(matches!(
        parse(no_c.as_bytes()),
        Err(SdpError::Malformed(_))
    ));
    let bad_port = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n";
    assert!(matches!(
        parse(bad_port.as_bytes()),
        Err(SdpError::Malformed(_))
    ));
    let many: String = (0..5000)
        .map(|i| format!("a=rtpmap:{} X/8000\r\n", i % 128))
        .collect();
    let big = format!("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n{many}");
    let _ = parse(big.as_bytes());
}
