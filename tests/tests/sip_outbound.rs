//! The bridge as a caller: registration with a registrar (digest challenge, refresh before
//! expiry), an outbound call over `POST /api/sip/calls` to a sipp phone that answers (the
//! agent's greeting arrives right after the 200 OK), digits and a blind transfer over the API,
//! and hang-up. Skips (with the reason) when sipp or the models are missing.

use std::time::{Duration, Instant};

use dartmouth_media::PhoneCodec;
use dartmouth_signaling::sip::call::CallNotice;
use dartmouth_signaling::sip::{SipSettings, TrunkSettings};
use dartmouth_tests::TestGateway;
use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::sip::{
    RtpPhone, expect_request, free_udp_port, offer_sdp, respond, run_sipp_uas, scenario,
    sipp_available, start_bridge, transcribe,
};

const PASSWORD_VARIABLE: &str = "DARTMOUTH_TEST_TRUNK_PASSWORD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_registers_dials_out_greets_sends_digits_and_transfers() {
    if !sipp_available() {
        eprintln!("SKIPPED: sipp is not installed (Debian sip-tester)");
        return;
    }
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let gateway = TestGateway::start(agents).await;

    // 1. Registration: a sipp registrar challenges, checks the digest, grants 2 s, and sees the
    //    refresh (challenged again) before the 2 s run out.
    let registrar = free_udp_port();
    // SAFETY: set before the bridge that reads it starts; nothing else reads it concurrently.
    unsafe { std::env::set_var(PASSWORD_VARIABLE, "trunk-pass") };
    let challenge =
        "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"[pid][call_number]\", algorithm=MD5\n";
    let mut steps = Vec::new();
    for round in 0..2 {
        steps.push(expect_request("REGISTER", false, &[]));
        steps.push(respond(401, "Unauthorized", "", challenge));
        steps.push(
            format!(
                "<recv request=\"REGISTER\"><action><verifyauth assign_to=\"authok{round}\" username=\"alice\" \
                 password=\"trunk-pass\"/></action></recv>\n<nop test=\"authok{round}\" next=\"ok{round}\"/>\n\
                 <nop next=\"bad\"/>\n<label id=\"ok{round}\"/>\n"
            ),
        );
        steps.push(respond(200, "OK", "", "Expires: 2\n"));
    }
    steps.push("<nop next=\"end\"/>\n<label id=\"bad\"/>\n".into());
    steps.push(respond(403, "Forbidden", "", ""));
    steps.push("<label id=\"end\"/>\n".into());
    let registrar_xml = scenario(&steps);
    let registrar_run = tokio::spawn(async move {
        run_sipp_uas(&registrar_xml, registrar, Duration::from_secs(15)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut settings = SipSettings::default();
    settings.trunks.insert(
        "carrier".into(),
        TrunkSettings {
            address: format!("127.0.0.1:{registrar}"),
            username: "alice".into(),
            password_env: PASSWORD_VARIABLE.into(),
            register: true,
            register_expires: 2,
            ..TrunkSettings::default()
        },
    );
    let bridge = start_bridge(&gateway, settings, 16_500).await;
    let started = Instant::now();
    let registrar_result = registrar_run.await.unwrap();
    assert!(
        registrar_result.success,
        "registrar: {}",
        registrar_result.output
    );
    let status = bridge.handle().registrations()["carrier"].clone();
    eprintln!("registration: {status:?} after {:?}", started.elapsed());
    assert!(
        status.registered >= 2,
        "registered and refreshed: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the refresh came before the 2 s expiry"
    );

    // 2. Outbound: the API dials a sipp phone that rings, answers, takes a REFER and hangs up.
    let phone_port = free_udp_port();
    let phone = RtpPhone::bind().await;
    let answer = offer_sdp(
        phone.addr,
        &[(0, "PCMU/8000"), (101, "telephone-event/8000")],
        "",
    );
    let phone_xml = scenario(&[
        expect_request("INVITE", false, &["m=audio [0-9]+ RTP/AVP 0 8 101 13"]),
        respond(180, "Ringing", "", ""),
        "<pause milliseconds=\"1500\"/>\n".into(),
        respond(200, "OK", &answer, ""),
        expect_request("ACK", false, &[]),
        expect_request("REFER", false, &["Refer-To: .sip:desk@example.com."]),
        respond(202, "Accepted", "", ""),
        expect_request("BYE", false, &[]),
        respond(200, "OK", "", ""),
    ]);
    let phone_run =
        tokio::spawn(
            async move { run_sipp_uas(&phone_xml, phone_port, Duration::from_secs(40)).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = bridge.handle().subscribe();
    let token = gateway.token("outbound", "backend");
    let http = reqwest::Client::new();
    let created = http
        .post(gateway.url("/api/sip/calls"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "to": format!("sip:callee@127.0.0.1:{phone_port}"), "room": "outbound", "trunk": "carrier" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202, "{:?}", created.text().await);
    let call_id = created.json::<serde_json::Value>().await.unwrap()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A token for another room may not touch the call.
    let stranger = gateway.token("elsewhere", "eve");
    let refused = http
        .post(gateway.url(&format!("/api/sip/calls/{call_id}/dtmf")))
        .bearer_auth(&stranger)
        .json(&serde_json::json!({ "digits": "1" }))
        .send()
        .await
        .unwrap();
    assert!(
        refused.status() == 401 || refused.status() == 404,
        "{}",
        refused.status()
    );

    let listening = tokio::spawn(async move {
        phone
            .converse(PhoneCodec::Pcmu, 0, &[], "", Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_secs(7)).await;
    let digits = http
        .post(gateway.url(&format!("/api/sip/calls/{call_id}/dtmf")))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "digits": "42#" }))
        .send()
        .await
        .unwrap();
    if digits.status() != 204 {
        while let Ok(event) = events.try_recv() {
            eprintln!("event: {event:?}");
        }
        let phone_result = phone_run.await.unwrap();
        panic!(
            "digits: {} ; phone: {}",
            digits.status(),
            phone_result.output
        );
    }
    let heard = listening.await.unwrap();
    assert_eq!(
        heard.digits, "42#",
        "the phone received the digits as RFC 4733 events"
    );
    let (first_packet, first_voice) = (
        heard.first_packet.expect("RTP after the answer"),
        heard.first_voice.expect("a greeting"),
    );
    let greeting_ms = (first_voice - first_packet).as_millis();
    let greeting = transcribe(&heard.pcm, 8_000).await;
    eprintln!(
        "greeting {greeting:?}: first voiced frame {greeting_ms} ms after the first packet (the 200 OK)"
    );
    assert!(!greeting.is_empty(), "the agent greeted");
    let mut progress = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let CallNotice::Progress(p) = event.notice {
            progress.push(p);
        }
    }
    assert_eq!(
        progress,
        vec!["ringing".to_string(), "answered".to_string()]
    );

    let bad_digits = http
        .post(gateway.url(&format!("/api/sip/calls/{call_id}/dtmf")))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "digits": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_digits.status(), 400);
    let transfer = http
        .post(gateway.url(&format!("/api/sip/calls/{call_id}/transfer")))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "to": "sip:desk@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(transfer.status(), 202, "{:?}", transfer.text().await);
    let hangup = http
        .delete(gateway.url(&format!("/api/sip/calls/{call_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(hangup.status(), 204);
    let phone_result = phone_run.await.unwrap();
    assert!(phone_result.success, "phone: {}", phone_result.output);
    assert_eq!(bridge.calls(), 0);
    bridge.stop().await;
    gateway.stop().await;
}
