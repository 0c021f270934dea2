//! Three parties in one room over real WebRTC: two people (native str0m clients over the
//! WebSocket protocol, each with three audio slots) and an agent listening to everyone. Each
//! person hears the other (the envelope of what arrives correlates with what the other sent) and
//! the agent's spoken answers; the agent's transcripts name who asked what.
//! Skips (with the reason) when models or espeak-ng are missing.

use std::time::Duration;

use dartmouth_signaling::proto::{AgentListen, ServerMessage, Speaker};
use dartmouth_tests::gateway::{EmbeddedTestAgent, transcribe};
use dartmouth_tests::{CallOptions, RtcClient, TestGateway, rms, speak_48k};

/// RMS per 20 ms frame.
fn envelope(samples: &[i16]) -> Vec<f64> {
    samples.chunks(960).map(rms).collect()
}

/// The best normalised correlation of `needle`'s envelope inside `haystack`'s, over every lag.
fn best_correlation(haystack: &[f64], needle: &[f64]) -> f64 {
    let n = needle.len();
    if haystack.len() < n || n == 0 {
        return 0.0;
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let nm = mean(needle);
    let nd: Vec<f64> = needle.iter().map(|v| v - nm).collect();
    let nn = nd.iter().map(|v| v * v).sum::<f64>().sqrt();
    (0..=haystack.len() - n)
        .map(|lag| {
            let w = &haystack[lag..lag + n];
            let wm = mean(w);
            let (mut dot, mut ww) = (0.0, 0.0);
            for (a, b) in w.iter().zip(&nd) {
                dot += (a - wm) * b;
                ww += (a - wm) * (a - wm);
            }
            if ww == 0.0 || nn == 0.0 {
                0.0
            } else {
                dot / (ww.sqrt() * nn)
            }
        })
        .fold(0.0, f64::max)
}

fn silence_then(seconds: f64, speech: &[i16]) -> Vec<i16> {
    let mut out = vec![0i16; (seconds * 48_000.0) as usize];
    out.extend_from_slice(speech);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_and_an_agent_hear_each_other_and_transcripts_name_the_speaker() {
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let (Some(alice_says), Some(bob_says)) = (
        speak_48k("What is the capital of France?"),
        speak_48k("How many legs does a spider have?"),
    ) else {
        println!("SKIPPED: espeak-ng is not installed");
        return;
    };
    let gateway = TestGateway::start(agents).await;
    let alice = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("trio", "alice"),
        CallOptions {
            speech: silence_then(3.0, &alice_says),
            listen: AgentListen::Everyone,
            limit: Duration::from_secs(30),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("trio", "bob"),
        CallOptions {
            agent: Some("none".into()),
            speech: silence_then(12.0, &bob_says),
            limit: Duration::from_secs(30),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    let alice = alice.await.unwrap().expect("alice's call runs");
    let bob = bob.await.unwrap().expect("bob's call runs");

    // Each person hears the other.
    let heard_by = |call: &dartmouth_tests::Call, said: &[i16]| {
        let said = envelope(said);
        call.lines
            .iter()
            .map(|line| best_correlation(&envelope(line), &said))
            .fold(0.0, f64::max)
    };
    let bob_hears_alice = heard_by(&bob, &alice_says);
    let alice_hears_bob = heard_by(&alice, &bob_says);
    eprintln!(
        "lines: alice {}, bob {}; correlation bob←alice {bob_hears_alice:.2}, alice←bob {alice_hears_bob:.2}",
        alice.lines.len(),
        bob.lines.len()
    );
    assert!(
        bob_hears_alice > 0.8,
        "bob hears alice: {bob_hears_alice:.2}"
    );
    assert!(
        alice_hears_bob > 0.8,
        "alice hears bob: {alice_hears_bob:.2}"
    );

    // The agent's transcripts name who asked.
    let asked: Vec<(String, Option<String>)> = alice
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Transcript {
                speaker: Speaker::User,
                text,
                is_final: true,
                participant,
                ..
            } => Some((text.to_lowercase(), participant.clone())),
            _ => None,
        })
        .collect();
    eprintln!("transcripts: {asked:?}");
    let by = |word: &str| {
        asked
            .iter()
            .find(|(t, _)| t.contains(word))
            .and_then(|(_, p)| p.clone())
    };
    assert_eq!(
        by("france").or_else(|| by("capital")).as_deref(),
        Some("alice")
    );
    // Bob's question, whatever the recogniser made of it through the mix ("how many lands none
    // us either have" once), is his and only his.
    let bobs: Vec<&String> = asked
        .iter()
        .filter(|(_, p)| p.as_deref() == Some("bob"))
        .map(|(t, _)| t)
        .collect();
    assert!(
        !bobs.is_empty(),
        "a question is attributed to bob: {asked:?}"
    );
    assert!(
        bobs.iter().all(|t| !t.contains("france")),
        "alice's question is not bob's: {asked:?}"
    );
    if let Some(named) = by("spider").or_else(|| by("legs")) {
        assert_eq!(named, "bob");
    }

    // Both hear the agent's spoken answers.
    let answers: Vec<String> = alice
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Transcript {
                speaker: Speaker::Agent,
                text,
                is_final: true,
                ..
            } => Some(text.to_lowercase()),
            _ => None,
        })
        .collect();
    assert!(!answers.is_empty(), "the agent answered");
    for (who, call) in [("alice", &alice), ("bob", &bob)] {
        let mut heard = String::new();
        for line in &call.lines {
            heard.push_str(&transcribe(line).await.to_lowercase());
            heard.push(' ');
        }
        let answer_words: Vec<&str> = answers
            .iter()
            .flat_map(|a| a.split_whitespace())
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
            .filter(|w| w.len() > 3)
            .collect();
        let found = answer_words.iter().filter(|w| heard.contains(**w)).count();
        eprintln!(
            "{who} heard: {heard:?}; answer words found {found}/{}",
            answer_words.len()
        );
        assert!(
            found * 2 >= answer_words.len(),
            "{who} hears the agent's answers {answers:?}: {heard:?}"
        );
    }
    gateway.stop().await;
}
