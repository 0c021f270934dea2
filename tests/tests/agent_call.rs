//! A voice agent over real WebRTC: a str0m client speaks a question through the gateway (Opus,
//! DTLS-SRTP, loopback UDP) and hears the answer; a client that vanishes mid-turn is cleaned up
//! and the next caller is answered. Skips (with the reason) when models or espeak-ng are missing.

use std::time::Duration;

use dartmouth_signaling::proto::ServerMessage;
use dartmouth_tests::gateway::{EmbeddedTestAgent, transcribe};
use dartmouth_tests::{CallOptions, RtcClient, TestGateway, speak_48k};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_over_webrtc_and_a_vanishing_caller_is_cleaned_up() {
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let Some(question) = speak_48k("What is the capital of France?") else {
        eprintln!("SKIP: espeak-ng is not installed");
        return;
    };
    let gateway = TestGateway::start(agents).await;

    // 1. Ask, hear the answer.
    let token = gateway.token("call-1", "alice");
    let call = RtcClient::call(
        gateway.ws_url(),
        token,
        CallOptions {
            speech: question.clone(),
            limit: Duration::from_secs(60),
            ..CallOptions::default()
        },
    )
    .await
    .expect("the call runs");
    let heard_question = call.user_transcripts().join(" ").to_lowercase();
    assert!(
        heard_question.contains("capital") || heard_question.contains("france"),
        "the agent heard {heard_question:?}"
    );
    let latency = call
        .first_answer_latency()
        .expect("the agent's answer is audible at the client");
    let answer_text = call.agent_answer().expect("a final agent transcript");
    let heard_answer = transcribe(&call.heard).await;
    let voiced_ms = call
        .heard
        .chunks(960)
        .filter(|f| dartmouth_tests::rms(f) > dartmouth_tests::client::SPEECH_RMS)
        .count()
        * 20;
    eprintln!(
        "voiced audio heard: {voiced_ms} ms of {} ms",
        call.heard.len() / 48
    );
    if let Ok(dir) = std::env::var("DARTMOUTH_TEST_AUDIO_DIR") {
        dartmouth_tests::write_wav_48k(&format!("{dir}/answer.wav"), &call.heard);
    }
    eprintln!(
        "question: {heard_question:?}\nanswer: {answer_text:?}\nheard at the client: {heard_answer:?}\n\
         voice-to-voice at the client: {} ms (media connected in {} ms)",
        latency.as_millis(),
        call.connect_time.as_millis()
    );
    assert!(!heard_answer.is_empty(), "the answer audio has words");
    // What the client heard, transcribed, matches what the agent said it said. The bound is loose
    // because espeak-ng's voice through Moonshine alone costs up to ~20 % on short answers.
    let wer = dartmouth_voice::text::word_error_rate(&answer_text, &heard_answer);
    assert!(
        wer <= 0.35,
        "heard {heard_answer:?} for {answer_text:?}: WER {wer:.2}"
    );
    assert!(
        call.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Latency { .. })),
        "the turn's latencies are reported"
    );
    assert!(
        gateway.wait_idle(Duration::from_secs(10)).await,
        "the call is released"
    );

    // 2. A caller vanishes (no leave, sockets dropped) while the agent thinks; a bystander in
    //    another room is unaffected, and everything of the vanished call is released.
    let bystander = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("call-3", "carol"),
        CallOptions {
            agent: Some("none".into()),
            limit: Duration::from_secs(8),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    let vanished = RtcClient::call(
        gateway.ws_url(),
        gateway.token("call-2", "bob"),
        CallOptions {
            speech: question.clone(),
            vanish_after: Some(Duration::from_millis(
                question.len() as u64 * 1000 / 48_000 + 1_000,
            )),
            ..CallOptions::default()
        },
    )
    .await;
    assert!(vanished.is_ok(), "{vanished:?}");
    let bystander = bystander.await.unwrap().expect("the bystander's call runs");
    assert!(
        bystander.connect_time > Duration::ZERO,
        "the bystander connected"
    );
    assert!(
        gateway.wait_idle(Duration::from_secs(20)).await,
        "the vanished caller's session, agent and peer are released"
    );

    // 3. The next caller is answered: nothing was left wedged.
    let call = RtcClient::call(
        gateway.ws_url(),
        gateway.token("call-4", "dave"),
        CallOptions {
            speech: question,
            ..CallOptions::default()
        },
    )
    .await
    .expect("the next call runs");
    assert!(
        call.first_answer_latency().is_some(),
        "the next caller hears an answer"
    );

    // 4. Barge-in: the caller talks over a long answer; the agent stops, reports what was heard,
    //    and answers the new question.
    let story = speak_48k("Tell me a long story about a brave dragon.").unwrap();
    let interjection = speak_48k("Stop. What is two plus two?").unwrap();
    let call = RtcClient::call(
        gateway.ws_url(),
        gateway.token("call-5", "erin"),
        CallOptions {
            speech: story,
            interjection: Some((Duration::from_millis(1200), interjection)),
            limit: Duration::from_secs(90),
            ..CallOptions::default()
        },
    )
    .await
    .expect("the barge-in call runs");
    let heard = call.messages.iter().find_map(|m| match m {
        ServerMessage::Interrupted { heard, .. } => Some(heard.clone()),
        _ => None,
    });
    let transcripts = call.user_transcripts();
    eprintln!("barge-in: heard before the interruption {heard:?}; user turns {transcripts:?}");
    assert!(
        heard.is_some(),
        "the agent reports the interruption: {:?}",
        call.messages
    );
    assert!(
        transcripts
            .iter()
            .any(|t| t.to_lowercase().contains("plus") || t.to_lowercase().contains("two")),
        "the interjection was transcribed: {transcripts:?}"
    );
    let answers = call
        .messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Latency { .. }))
        .count();
    assert!(answers >= 2, "the new question is answered too");

    // 5. Client-side speech: typed question, text-only answer, no agent audio.
    let call = RtcClient::call(
        gateway.ws_url(),
        gateway.token("call-6", "frank"),
        CallOptions {
            typed: Some("What is the capital of Italy?".into()),
            output: dartmouth_signaling::proto::AgentOutput::Text,
            limit: Duration::from_secs(30),
            ..CallOptions::default()
        },
    )
    .await
    .expect("the text call runs");
    let answer = call.agent_answer();
    eprintln!("typed answer: {answer:?}");
    assert!(
        answer.is_some_and(|a| !a.is_empty()),
        "a text answer arrives"
    );
    assert!(
        call.heard
            .chunks(960)
            .all(|f| dartmouth_tests::rms(f) < dartmouth_tests::client::SPEECH_RMS),
        "no speech is sent in text mode"
    );
    gateway.stop().await;
}
