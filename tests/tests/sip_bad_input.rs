//! Bad input to the SIP bridge while a call runs: garbage, truncated headers, a wrong
//! Content-Length, 64 KB messages (UDP and TCP), an offer with no common codec (488), requests
//! for unknown dialogs (481), retransmitted INVITEs (one call), digest failures (401, 403) and
//! RTP from a stranger. Each is answered per RFC 3261 or dropped; the call keeps talking.

use std::net::SocketAddr;
use std::time::Duration;

use dartmouth_media::PhoneCodec;
use dartmouth_signaling::agent::NoAgents;
use dartmouth_signaling::sip::{DialRule, SipSettings};
use dartmouth_tests::TestGateway;
use dartmouth_tests::sip::{
    RtpPhone, expect, offer_sdp, pause, request, run_sipp, scenario, sipp_available, speak_at,
    start_bridge,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn echo_everything() -> SipSettings {
    SipSettings {
        dial_plan: vec![DialRule {
            agent: "echo".into(),
            ..DialRule::default()
        }],
        ..SipSettings::default()
    }
}

fn invite(branch: &str, call_id: &str, sdp: &str, extra: &str) -> String {
    format!(
        "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n\
         From: <sip:raw@127.0.0.1>;tag=raw{branch}\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:raw@127.0.0.1:9>\r\nMax-Forwards: 70\r\n{extra}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Sends `message` and collects the status codes of what comes back within `wait`.
async fn exchange(socket: &UdpSocket, to: SocketAddr, message: &[u8], wait: Duration) -> Vec<u16> {
    let _ = socket.send_to(message, to).await;
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(code) = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
        {
            codes.push(code);
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_or_dropped_and_the_call_goes_on() {
    if !sipp_available() {
        eprintln!("SKIPPED: sipp is not installed (Debian sip-tester)");
        return;
    }
    let Some(speech) = speak_at("One two three four five six seven eight nine ten.", 8_000) else {
        eprintln!("SKIPPED: espeak-ng is not installed");
        return;
    };
    let gateway = TestGateway::start(std::sync::Arc::new(NoAgents)).await;
    let bridge = start_bridge(&gateway, echo_everything(), 16_300).await;
    let target = bridge.local_addr();

    // A call that must not notice any of this: the phone's speech comes back as its echo.
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(
        phone.addr,
        &[(0, "PCMU/8000"), (101, "telephone-event/8000")],
        "",
    );
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &[]),
        request("ACK", 1, "", ""),
        pause(9_000),
        request("BYE", 2, "", ""),
        expect(200, false, &[]),
    ]);
    let mut long_speech = speech.clone();
    long_speech.extend_from_slice(&speech);
    let call = tokio::spawn(async move {
        tokio::join!(
            run_sipp(&xml, target, &[], Duration::from_secs(30)),
            phone.converse(
                PhoneCodec::Pcmu,
                0,
                &long_speech,
                "",
                Duration::from_secs(9)
            ),
        )
    });
    tokio::time::sleep(Duration::from_millis(800)).await;

    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wait = Duration::from_millis(400);
    let offer = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

    // Garbage and broken messages: dropped without an answer (nothing parses to answer to).
    assert!(
        exchange(&raw, target, b"\x00\xff garbage \x13\x37", wait)
            .await
            .is_empty()
    );
    let truncated = "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKt\r\nFrom: <sip:x@";
    assert!(
        exchange(&raw, target, truncated.as_bytes(), wait)
            .await
            .is_empty()
    );
    // A Content-Length longer than the datagram (RFC 3261 §18.3: discard or 400).
    let short_body = invite("cl", "cl@raw", offer, "").replace(
        &format!("Content-Length: {}", offer.len()),
        "Content-Length: 5000",
    );
    let codes = exchange(&raw, target, short_body.as_bytes(), wait).await;
    assert!(
        codes.iter().all(|c| *c == 400),
        "wrong Content-Length: {codes:?}"
    );
    // 64 KB of headers over UDP.
    let huge = invite(
        "big",
        "big@raw",
        offer,
        &format!("X-Pad: {}\r\n", "a".repeat(63 * 1024)),
    );
    let codes = exchange(&raw, target, huge.as_bytes(), wait).await;
    assert!(codes.iter().all(|c| *c >= 400), "64 KB over UDP: {codes:?}");
    // … and over TCP: the connection is closed or the message refused, the listener lives on.
    if let Ok(mut tcp) = TcpStream::connect(target).await {
        let _ = tcp
            .write_all(huge.replace("SIP/2.0/UDP", "SIP/2.0/TCP").as_bytes())
            .await;
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(wait, tcp.read(&mut buf)).await;
    }

    // No common codec: 488.
    let g729 = offer.replace("RTP/AVP 0", "RTP/AVP 18");
    let codes = exchange(
        &raw,
        target,
        invite("488", "488@raw", &g729, "").as_bytes(),
        wait,
    )
    .await;
    assert!(codes.contains(&488), "no common codec: {codes:?}");
    // A BYE for a dialog that does not exist: 481.
    let bye = "BYE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbye;rport\r\n\
               From: <sip:raw@127.0.0.1>;tag=a\r\nTo: <sip:100@127.0.0.1>;tag=b\r\nCall-ID: nobody@raw\r\n\
               CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let codes = exchange(&raw, target, bye.as_bytes(), wait).await;
    assert_eq!(codes, vec![481], "unknown dialog");
    // A retransmitted INVITE is one call (the transaction layer absorbs the copy).
    let before = bridge.calls();
    let first = invite("rtx", "rtx@raw", offer, "");
    let _ = raw.send_to(first.as_bytes(), target).await;
    let codes = exchange(&raw, target, first.as_bytes(), Duration::from_millis(800)).await;
    assert!(
        codes.contains(&200),
        "the retransmitted INVITE was answered: {codes:?}"
    );
    assert_eq!(bridge.calls(), before + 1, "one call for two copies");

    // RTP from a stranger at the call's port: ignored (the call latched onto the phone).
    // (The stranger guesses the port range's ports; none of its packets may reach the call.)
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut noise = vec![0x80u8, 0, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    noise.extend_from_slice(&[0x00; 160]); // full-scale µ-law
    for port in (16_300..16_320).step_by(2) {
        for _ in 0..10 {
            let _ = stranger.send_to(&noise, ("127.0.0.1", port)).await;
        }
    }

    let (sipp, heard) = call.await.unwrap();
    assert!(sipp.success, "the call went on: {}", sipp.output);
    let loud = heard
        .pcm
        .chunks(160)
        .filter(|f| dartmouth_tests::rms(f) > 0.5)
        .count();
    assert_eq!(
        loud, 0,
        "the stranger's full-scale noise never reached the phone"
    );
    assert!(heard.first_voice.is_some(), "the phone heard its echo");

    // Digest: a bridge that allows no source without credentials.
    let variable = "DARTMOUTH_TEST_SIP_PASSWORD";
    // SAFETY: set once, before the bridge that reads it starts; no other thread reads it.
    unsafe { std::env::set_var(variable, "s3cret") };
    let mut strict = echo_everything();
    strict.allow = vec![];
    strict.users.insert("pbx".into(), variable.into());
    let gated = start_bridge(&gateway, strict, 16_400).await;
    // A fresh socket: the old one still gets the unacknowledged 200s of the retransmission test.
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let codes = exchange(
        &raw,
        gated.local_addr(),
        invite("auth", "auth@raw", offer, "").as_bytes(),
        wait,
    )
    .await;
    assert_eq!(codes, vec![401], "no credentials: challenged");
    let wrong = "Authorization: Digest username=\"pbx\", realm=\"dartmouth\", nonce=\"0.0\", \
                 uri=\"sip:100@127.0.0.1\", response=\"00000000000000000000000000000000\"\r\n";
    let codes = exchange(
        &raw,
        gated.local_addr(),
        invite("auth2", "auth2@raw", offer, wrong).as_bytes(),
        wait,
    )
    .await;
    assert!(
        codes == vec![401] || codes == vec![403],
        "a forged nonce: {codes:?}"
    );
    // sipp answers the challenge with the right password: the call goes through.
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(phone.addr, &[(0, "PCMU/8000")], "");
    let auth_xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        "<recv response=\"401\" auth=\"true\"/>\n".into(),
        "<send><![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n".into(),
        request("INVITE", 2, "[authentication username=pbx password=s3cret]\n", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &[]),
        request("ACK", 2, "", ""),
        request("BYE", 3, "", ""),
        expect(200, false, &[]),
    ]);
    let sipp = run_sipp(&auth_xml, gated.local_addr(), &[], Duration::from_secs(20)).await;
    assert!(sipp.success, "digest: {}", sipp.output);
    let bad_xml = auth_xml.replace("password=s3cret", "password=guess");
    let bad_xml = bad_xml
        .split("<recv response=\"100\"")
        .next()
        .unwrap()
        .to_string()
        + "<recv response=\"403\"/>\n</scenario>\n";
    let sipp = run_sipp(&bad_xml, gated.local_addr(), &[], Duration::from_secs(20)).await;
    assert!(sipp.success, "wrong password → 403: {}", sipp.output);

    gated.stop().await;
    bridge.stop().await;
    gateway.stop().await;
}
