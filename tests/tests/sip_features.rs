//! What phones do besides talking, with sipp as the phone's signaling: DTMF (RFC 4733 in RTP
//! and SIP INFO) reaching the agent, CANCEL before the answer, hold and resume by re-INVITE,
//! and an INVITE without an SDP offer. Skips (with the reason) when sipp or the models are
//! missing.

use std::time::Duration;

use dartmouth_media::PhoneCodec;
use dartmouth_signaling::sip::call::CallNotice;
use dartmouth_signaling::sip::{DialRule, SipSettings};
use dartmouth_tests::TestGateway;
use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::sip::{
    RtpPhone, expect, offer_sdp, pause, request, run_sipp, scenario, sipp_available, speak_at,
    start_bridge,
};

const PCMU: [(u8, &str); 2] = [(0, "PCMU/8000"), (101, "telephone-event/8000")];

/// Echo calls (`echo…` numbers) for the signaling tests, the agent for everything else.
fn settings() -> SipSettings {
    SipSettings {
        ring_ms: 300,
        dial_plan: vec![
            DialRule {
                to: "echo*".into(),
                agent: "echo".into(),
                ..DialRule::default()
            },
            DialRule::default(),
        ],
        ..SipSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_hold_resume_cancel_and_offerless_calls() {
    if !sipp_available() {
        eprintln!("SKIPPED: sipp is not installed (Debian sip-tester)");
        return;
    }
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let gateway = TestGateway::start(agents).await;
    let bridge = start_bridge(&gateway, settings(), 16_200).await;
    let target = bridge.local_addr();
    let mut events = bridge.handle().subscribe();

    // 1. DTMF: "5" as an RFC 4733 event from the phone, "7" by SIP INFO; the agent is told.
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(phone.addr, &PCMU, "");
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &[]),
        request("ACK", 1, "", ""),
        pause(1_500),
        request("INFO", 2, "", "Signal=7\nDuration=160\n"),
        expect(200, false, &[]),
        pause(5_000),
        request("BYE", 3, "", ""),
        expect(200, false, &[]),
    ]);
    let (sipp, _heard) = tokio::join!(
        run_sipp(&xml, target, &[], Duration::from_secs(30)),
        phone.converse(PhoneCodec::Pcmu, 0, &[0; 8000], "5", Duration::from_secs(7)),
    );
    assert!(sipp.success, "DTMF call: {}", sipp.output);
    let (mut digits, mut told) = (String::new(), String::new());
    while let Ok(event) = events.try_recv() {
        match event.notice {
            CallNotice::Digits(d) => digits.push_str(&d),
            CallNotice::CallerSaid(text) => told.push_str(&text),
            _ => {}
        }
    }
    assert!(
        digits.contains('5') && digits.contains('7'),
        "digits {digits:?}"
    );
    assert!(told.contains("pressed 5"), "the agent was told: {told:?}");

    // 2. CANCEL while it rings: 487 for the INVITE, nothing left behind.
    let sdp = offer_sdp(phone.addr, &PCMU, "");
    let cancel = "<send><![CDATA[\nCANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n\
                  [last_From:]\n[last_To:]\n[last_Call-ID:]\nCSeq: 1 CANCEL\nMax-Forwards: 70\n\
                  Content-Length: 0\n\n]]></send>\n";
    let ack_487 = "<send><![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n\
                   [last_From:]\n[last_To:]\n[last_Call-ID:]\nCSeq: 1 ACK\nMax-Forwards: 70\n\
                   Content-Length: 0\n\n]]></send>\n";
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        cancel.to_string(),
        expect(200, false, &[]),
        expect(487, false, &[]),
        ack_487.to_string(),
        pause(500),
    ]);
    let sipp = run_sipp(
        &xml,
        target,
        &["-s", "echo-cancel"],
        Duration::from_secs(20),
    )
    .await;
    assert!(sipp.success, "CANCEL: {}", sipp.output);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bridge.calls(), 0, "a cancelled call holds nothing");

    // 3. Hold (sendonly → we answer recvonly and go quiet) and resume (sendrecv).
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(phone.addr, &PCMU, "");
    let hold = offer_sdp(phone.addr, &PCMU, "sendonly");
    let resume = offer_sdp(phone.addr, &PCMU, "sendrecv");
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &["a=sendrecv"]),
        request("ACK", 1, "", ""),
        pause(1_500),
        request("INVITE", 2, "", &hold),
        expect(100, true, &[]),
        expect(200, false, &["a=recvonly"]),
        request("ACK", 2, "", ""),
        pause(2_500),
        request("INVITE", 3, "", &resume),
        expect(100, true, &[]),
        expect(200, false, &["a=sendrecv"]),
        request("ACK", 3, "", ""),
        pause(1_500),
        request("BYE", 4, "", ""),
        expect(200, false, &[]),
    ]);
    let (sipp, heard) = tokio::join!(
        run_sipp(&xml, target, &["-s", "echo-hold"], Duration::from_secs(30)),
        phone.converse(PhoneCodec::Pcmu, 0, &[], "", Duration::from_secs(7)),
    );
    assert!(sipp.success, "hold/resume: {}", sipp.output);
    let (gap, resumed_at) = heard.longest_gap();
    let after = heard.arrivals.iter().filter(|t| **t > resumed_at).count();
    eprintln!("hold: silent for {gap:?}, {after} packets after resuming");
    assert!(
        gap >= Duration::from_millis(1_800),
        "no RTP while on hold (longest gap {gap:?})"
    );
    assert!(after >= 20, "RTP resumed ({after} packets)");

    // 4. No offer in the INVITE: our offer in the 200, the phone's answer in the ACK, and the
    //    echo of what the phone says comes back.
    let phone = RtpPhone::bind().await;
    let answer = offer_sdp(phone.addr, &PCMU, "");
    let xml = scenario(&[
        request("INVITE", 1, "", ""),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &["m=audio [0-9]+ RTP/AVP", "PCMU/8000"]),
        request("ACK", 1, "", &answer),
        pause(4_000),
        request("BYE", 2, "", ""),
        expect(200, false, &[]),
    ]);
    let Some(speech) = speak_at("Hello there, can you hear me?", 8_000) else {
        eprintln!("SKIPPED: espeak-ng is not installed");
        return;
    };
    let (sipp, heard) = tokio::join!(
        run_sipp(
            &xml,
            target,
            &["-s", "echo-offerless"],
            Duration::from_secs(20)
        ),
        phone.converse(PhoneCodec::Pcmu, 0, &speech, "", Duration::from_secs(4)),
    );
    assert!(sipp.success, "offerless: {}", sipp.output);
    assert!(
        heard.first_voice.is_some(),
        "the echo of the phone's speech came back ({} packets)",
        heard.packets
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bridge.calls(), 0);
    bridge.stop().await;
    gateway.stop().await;
}
