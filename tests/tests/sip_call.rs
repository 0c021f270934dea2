//! Phone calls into agents through the SIP bridge, with sipp as the phone's signaling and an
//! RTP endpoint that speaks the question and records the answer; the answer is transcribed.
//! Skips (with the reason) when sipp, espeak-ng or the models are missing.

use std::time::Duration;

use dartmouth_media::PhoneCodec;
use dartmouth_signaling::sip::SipSettings;
use dartmouth_tests::TestGateway;
use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::sip::{
    RtpPhone, expect, keep_audio, offer_sdp, pause, request, run_sipp, scenario, sipp_available,
    speak_at, start_bridge, transcribe,
};

/// sipp's call: INVITE with `sdp`, 100/180/200 (the 200's SDP must contain `answer_has`), ACK,
/// `talk_ms` of conversation, BYE, 200.
fn call_scenario(sdp: &str, answer_has: &[&str], talk_ms: u64) -> String {
    scenario(&[
        request("INVITE", 1, "", sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, answer_has),
        request("ACK", 1, "", ""),
        pause(talk_ms),
        request("BYE", 2, "", ""),
        expect(200, false, &[]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_calls_in_pcmu_pcma_and_g722_are_answered_by_the_agent() {
    if !sipp_available() {
        eprintln!("SKIPPED: sipp is not installed (Debian sip-tester)");
        return;
    }
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let gateway = TestGateway::start(agents).await;
    let bridge = start_bridge(&gateway, SipSettings::default(), 16_100).await;
    let target = bridge.local_addr();
    for (codec, pt, map) in [
        (PhoneCodec::Pcmu, 0u8, "PCMU/8000"),
        (PhoneCodec::Pcma, 8, "PCMA/8000"),
        (PhoneCodec::G722, 9, "G722/8000"),
    ] {
        let Some(question) = speak_at("What is the capital of France?", codec.sample_rate()) else {
            eprintln!("SKIPPED: espeak-ng is not installed");
            return;
        };
        let phone = RtpPhone::bind().await;
        let sdp = offer_sdp(phone.addr, &[(pt, map), (101, "telephone-event/8000")], "");
        let answer_line = format!("m=audio [0-9]+ RTP/AVP {pt} 101");
        let xml = call_scenario(&sdp, &[answer_line.as_str()], 16_000);
        let (sipp, heard) = tokio::join!(
            run_sipp(&xml, target, &[], Duration::from_secs(40)),
            phone.converse(codec, pt, &question, "", Duration::from_secs(16)),
        );
        assert!(sipp.success, "{codec:?}: sipp failed:\n{}", sipp.output);
        let rate = codec.sample_rate();
        keep_audio(&format!("sip-{}.wav", codec.name()), &heard.pcm, rate);
        let words = transcribe(&heard.pcm, rate).await;
        eprintln!(
            "{codec:?}: {} packets, first voice at {:?}; heard {words:?}",
            heard.packets, heard.first_voice
        );
        assert!(heard.bridge.is_some(), "{codec:?}: the bridge sent RTP");
        assert!(
            words.split_whitespace().count() >= 2,
            "{codec:?}: the answer has words: {words:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bridge.calls(), 0, "every call was released");
    bridge.stop().await;
    gateway.stop().await;
}
