//! Echo-safe barge-in on a phone call: the phone plays the agent's own voice back into the call
//! at −10 dB after 80 ms (a speakerphone, a hybrid). Over five questions and answers the agent
//! never takes its echo for the caller interrupting; a real question over the agent still
//! interrupts it. Skips (with the reason) when sipp, espeak-ng or the models are missing.

use std::time::{Duration, Instant};

use dartmouth_media::PhoneCodec;
use dartmouth_signaling::sip::SipSettings;
use dartmouth_signaling::sip::call::CallNotice;
use dartmouth_tests::TestGateway;
use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::sip::{
    RtpPhone, expect, offer_sdp, pause, request, run_sipp, scenario, sipp_available, speak_at,
    start_bridge,
};

/// How long after a clip ends its speech may still be being judged (end of turn, transcript).
const CALLER_MARGIN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_ignores_its_echo_but_hears_a_real_barge_in() {
    if !sipp_available() {
        eprintln!("SKIPPED: sipp is not installed (Debian sip-tester)");
        return;
    }
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let questions = [
        "What is the capital of France?",
        "What color is the sky?",
        "How many legs does a dog have?",
        "What is two plus two?",
        "Name a fruit that is yellow.",
    ];
    let mut script = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let Some(speech) = speak_at(q, 8_000) else {
            eprintln!("SKIPPED: espeak-ng is not installed");
            return;
        };
        script.push((Duration::from_secs(1 + 10 * i as u64), speech));
    }
    let barge_question = Duration::from_secs(52);
    let barge_in = barge_question + Duration::from_millis(5_500);
    script.push((
        barge_question,
        speak_at(
            "Tell me a long story about a brave knight and a dragon.",
            8_000,
        )
        .unwrap(),
    ));
    script.push((
        barge_in,
        speak_at("Stop please. What time is it in Paris?", 8_000).unwrap(),
    ));
    let total = barge_in + Duration::from_secs(6);
    // When the caller speaks (phone time): each clip's start and end.
    let windows: Vec<(Duration, Duration)> = script
        .iter()
        .map(|(at, clip)| {
            (
                *at,
                *at + Duration::from_secs_f64(clip.len() as f64 / 8_000.0),
            )
        })
        .collect();

    let gateway = TestGateway::start(agents).await;
    let bridge = start_bridge(&gateway, SipSettings::default(), 16_600).await;
    let mut events = bridge.handle().subscribe();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        // Until the events stop (the bridge's sender outlives the call).
        loop {
            match tokio::time::timeout(Duration::from_secs(15), events.recv()).await {
                Ok(Ok(event)) => seen.push((Instant::now(), event.notice)),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                _ => break,
            }
        }
        seen
    });
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(phone.addr, &[(0, "PCMU/8000")], "");
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &[]),
        request("ACK", 1, "", ""),
        pause(total.as_millis() as u64 + 500),
        request("BYE", 2, "", ""),
        expect(200, false, &[]),
    ]);
    let started = Instant::now();
    let (sipp, _heard) = tokio::join!(
        run_sipp(
            &xml,
            bridge.local_addr(),
            &[],
            total + Duration::from_secs(20)
        ),
        phone.talk_with_echo(
            PhoneCodec::Pcmu,
            0,
            &script,
            Some((0.316, Duration::from_millis(80))),
            total
        ),
    );
    assert!(sipp.success, "{}", sipp.output);
    bridge.stop().await;
    gateway.stop().await;
    let seen = collector.await.unwrap();
    let barge_at = started + barge_in;
    let before: Vec<&CallNotice> = seen
        .iter()
        .filter(|(t, _)| *t < barge_at)
        .map(|(_, n)| n)
        .collect();
    let answers = before
        .iter()
        .filter(|n| matches!(n, CallNotice::AgentSaid(a) if !a.is_empty()))
        .count();
    // Stopping while the caller speaks is a barge-in (an answer can still be playing when the
    // next question comes); stopping while they are silent can only be the agent's own echo.
    let caller_speaking = |at: Instant| {
        let at = at.duration_since(started);
        windows
            .iter()
            .any(|(from, to)| (*from..*to + CALLER_MARGIN).contains(&at))
    };
    let self_interruptions: Vec<&CallNotice> = seen
        .iter()
        .filter(|(t, n)| {
            *t < barge_at && matches!(n, CallNotice::Interrupted(_)) && !caller_speaking(*t)
        })
        .map(|(_, n)| n)
        .collect();
    let barged = seen
        .iter()
        .any(|(t, n)| *t >= barge_at && matches!(n, CallNotice::Interrupted(_)));
    for (t, n) in &seen {
        eprintln!("{:>6} ms {n:?}", t.duration_since(started).as_millis());
    }
    assert!(answers >= 5, "five answers before the barge-in ({answers})");
    assert!(
        self_interruptions.is_empty(),
        "the agent interrupted itself: {self_interruptions:?}"
    );
    assert!(barged, "a real question over the agent interrupted it");
}
