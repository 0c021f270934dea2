//! WHIP `sendonly` + WHEP `recvonly` in one room with an agent, over real WebRTC: the WHIP side
//! asks a spoken question, the agent (listening to the publisher) answers into the room, and the
//! WHEP side, on its one audio slot, records the question and then the agent's answer.
//! Skips (with the reason) when models or espeak-ng are missing.

use std::time::Duration;

use dartmouth_tests::client::{HttpRole, voiced};
use dartmouth_tests::gateway::{EmbeddedTestAgent, transcribe};
use dartmouth_tests::{CallOptions, RtcClient, TestGateway, speak_48k};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_hears_the_agent_answer_a_sendonly_whip_publisher() {
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let Some(question) = speak_48k("What is the capital of France?") else {
        println!("SKIPPED: espeak-ng is not installed");
        return;
    };
    let gateway = TestGateway::start(agents).await;
    // The question, then at least a second of answer, then quiet.
    let enough = voiced(&question) + Duration::from_millis(1000);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let viewer = tokio::spawn(RtcClient::http(
        gateway.url("/whep/studio"),
        gateway.token("studio", "viewer"),
        HttpRole::Subscribe,
        CallOptions {
            stop_after_voiced: Some(enough),
            limit: Duration::from_secs(60),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publisher = tokio::spawn(RtcClient::http(
        gateway.url("/whip/studio"),
        gateway.token("studio", "host"),
        HttpRole::Publish,
        CallOptions {
            speech: question,
            limit: Duration::from_secs(60),
            hang_up_after_answer: None,
            stop: Some(stopped),
            ..CallOptions::default()
        },
    ));
    let viewer = viewer.await.unwrap().expect("the WHEP viewer runs");
    let _ = stop.send(true);
    let publisher = publisher.await.unwrap().expect("the WHIP publisher runs");
    assert!(
        publisher.heard.is_empty(),
        "a sendonly publisher receives nothing"
    );
    let heard = transcribe(&viewer.heard).await.to_lowercase();
    eprintln!("WHEP heard {} s: {heard:?}", viewer.heard.len() / 48_000);
    assert_eq!(viewer.lines.len(), 1, "one audio slot");
    assert!(
        heard.contains("capital") || heard.contains("france"),
        "the viewer heard the question: {heard:?}"
    );
    let words = heard.split_whitespace().count();
    assert!(
        words >= 8,
        "the viewer heard an answer after the question's 6 words: {heard:?}"
    );
    assert!(gateway.wait_idle(Duration::from_secs(10)).await, "released");
    gateway.stop().await;
}
