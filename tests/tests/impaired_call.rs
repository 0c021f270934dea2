//! A voice agent behind an impaired network: the client's media passes through the seeded
//! impairment relay (this kernel has no netem). With 5 % random loss and up to 40 ms of jitter
//! each way, and with 20 % loss in bursts, every question is heard whole and answered audibly.

use std::time::Duration;

use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::impair::ImpairProfile;
use dartmouth_tests::{CallOptions, RtcClient, TestGateway, speak_48k};

/// Asks two questions through `profile` and checks both were heard and answered.
async fn two_questions_through(profile: &str) {
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let (Some(first), Some(second)) = (
        speak_48k("How many wheels does a bicycle have?"),
        speak_48k("What is the largest ocean on Earth?"),
    ) else {
        eprintln!("SKIP: espeak-ng is not installed");
        return;
    };
    let gateway = TestGateway::start(agents).await;
    let call = RtcClient::call(
        gateway.ws_url(),
        gateway.token("impaired", "alice"),
        CallOptions {
            speech: first,
            follow_ups: vec![second],
            think: Duration::from_millis(800),
            limit: Duration::from_secs(90),
            impair: Some(ImpairProfile::named(profile).expect("a known profile")),
            ..CallOptions::default()
        },
    )
    .await
    .expect("the call runs through the relay");
    let heard = call.user_transcripts();
    eprintln!(
        "{profile}: heard {heard:?}; answers {:?}; voice-to-voice {:?} / {:?}",
        call.agent_answers(),
        call.answer_latency(0),
        call.answer_latency(1)
    );
    assert_eq!(heard.len(), 2, "two turns, none lost or split: {heard:?}");
    let all = heard.join(" ").to_lowercase();
    assert!(
        all.contains("wheel") && all.contains("ocean"),
        "both questions heard: {all:?}"
    );
    assert!(
        call.answer_latency(0).is_some(),
        "the first answer is audible"
    );
    assert!(
        call.answer_latency(1).is_some(),
        "the second answer is audible"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_answered_through_five_percent_loss_and_jitter() {
    two_questions_through("loss5-jitter40").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_answered_through_bursty_loss() {
    two_questions_through("bursty20").await;
}
