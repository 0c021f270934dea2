//! Three parties in one room over real WebRTC: two people and an agent listening to everyone.
//! Each person hears the other (the envelope of what arrives correlates with what the other sent)
//! and the agent's spoken answers; the agent's transcripts name who asked what.
//!
//! Alice is always the native str0m client over the WebSocket protocol (three audio slots). Bob is
//! either the same native client, or aiortc (an independent Python WebRTC stack) publishing over
//! WHIP with a `sendrecv` transceiver, which hears the room's loudest speaker on its one slot.
//! Skips (with the reason) when models, espeak-ng or the aiortc venv
//! (`scripts/interop-venv.sh`) are missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dartmouth_signaling::proto::{AgentListen, ServerMessage, Speaker};
use dartmouth_tests::gateway::{EmbeddedTestAgent, transcribe};
use dartmouth_tests::{Call, CallOptions, RtcClient, TestGateway, rms, speak_48k};

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

/// How long bob stays in the room when he is aiortc (alice's call is bounded the same).
const CALL_SECONDS: f64 = 30.0;

/// The interop venv's Python and the aiortc party script, when both exist.
fn aiortc_party() -> Option<(PathBuf, PathBuf)> {
    let home = std::env::var_os("DARTMOUTH_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dartmouth")))?;
    let python = home.join("venv-interop/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/aiortc_party.py");
    (python.is_file() && script.is_file()).then_some((python, script))
}

/// A 16-bit WAV as 48 kHz mono (channels averaged); `None` when it is missing or not 48 kHz.
fn read_48k_mono(path: &Path) -> Option<Vec<i16>> {
    let mut reader = hound::WavReader::open(path).ok()?;
    let spec = reader.spec();
    if spec.sample_rate != 48_000 || spec.bits_per_sample != 16 {
        return None;
    }
    let samples = reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let channels = usize::from(spec.channels.max(1));
    Some(
        samples
            .chunks(channels)
            .map(|frame| {
                (frame.iter().map(|s| i32::from(*s)).sum::<i32>() / channels as i32) as i16
            })
            .collect(),
    )
}

fn alice_options(says: &[i16]) -> CallOptions {
    CallOptions {
        speech: silence_then(3.0, says),
        listen: AgentListen::Everyone,
        limit: Duration::from_secs_f64(CALL_SECONDS),
        hang_up_after_answer: None,
        ..CallOptions::default()
    }
}

/// Bob's question comes after alice's has been answered.
const BOB_SPEAKS_AFTER_SECONDS: f64 = 12.0;

/// The two tests run one after the other: each runs the agent's models in real time, and two at
/// once on a small machine would make the agent late rather than test anything.
static ONE_ROOM_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _turn = ONE_ROOM_AT_A_TIME.lock().await;
    let gateway = TestGateway::start(agents).await;
    let alice = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("trio", "alice"),
        alice_options(&alice_says),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("trio", "bob"),
        CallOptions {
            agent: Some("none".into()),
            speech: silence_then(BOB_SPEAKS_AFTER_SECONDS, &bob_says),
            limit: Duration::from_secs_f64(CALL_SECONDS),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    let alice = alice.await.unwrap().expect("alice's call runs");
    let bob = bob.await.unwrap().expect("bob's call runs");
    check_trio(&alice, &bob.lines, &alice_says, &bob_says).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_and_an_aiortc_peer_hear_each_other_and_the_agent() {
    let Some((python, script)) = aiortc_party() else {
        println!("SKIPPED: no aiortc venv (scripts/interop-venv.sh makes it)");
        return;
    };
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
    let dir = std::env::temp_dir().join(format!("dartmouth-trio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (plays, records) = (dir.join("bob-says.wav"), dir.join("bob-hears.wav"));
    // Speech, then silence to the end of the call: aiortc stops sending when its file ends.
    let mut bob_track = silence_then(BOB_SPEAKS_AFTER_SECONDS, &bob_says);
    bob_track.resize((CALL_SECONDS * 48_000.0) as usize, 0);
    dartmouth_tests::write_wav_48k(plays.to_str().unwrap(), &bob_track);

    let _turn = ONE_ROOM_AT_A_TIME.lock().await;
    let gateway = TestGateway::start(agents).await;
    let alice = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("trio", "alice"),
        alice_options(&alice_says),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = std::process::Command::new(&python);
    bob.arg(&script)
        .args(["--url", &gateway.url("")])
        .args(["--room", "trio", "--agent", "none"])
        .args(["--token", &gateway.token("trio", "bob")])
        .arg("--play")
        .arg(&plays)
        .arg("--record")
        .arg(&records)
        .args(["--seconds", &CALL_SECONDS.to_string()]);
    let bob = tokio::task::spawn_blocking(move || bob.output());
    let alice = alice.await.unwrap().expect("alice's call runs");
    let bob = bob.await.unwrap().expect("the aiortc party starts");
    eprintln!(
        "aiortc party: {}{}",
        String::from_utf8_lossy(&bob.stdout),
        String::from_utf8_lossy(&bob.stderr)
    );
    assert!(bob.status.success(), "the aiortc party's call runs");
    let bob_heard = read_48k_mono(&records).expect("aiortc recorded 48 kHz 16-bit audio");
    check_trio(&alice, &[bob_heard], &alice_says, &bob_says).await;
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each hears the other, the agent's transcripts name who asked, and both hear its answers.
/// `bob_lines` is what bob's receiving slots carried (one line for a WHIP peer).
async fn check_trio(alice: &Call, bob_lines: &[Vec<i16>], alice_says: &[i16], bob_says: &[i16]) {
    // Each person hears the other.
    let heard_by = |lines: &[Vec<i16>], said: &[i16]| {
        let said = envelope(said);
        lines
            .iter()
            .map(|line| best_correlation(&envelope(line), &said))
            .fold(0.0, f64::max)
    };
    let bob_hears_alice = heard_by(bob_lines, alice_says);
    let alice_hears_bob = heard_by(&alice.lines, bob_says);
    eprintln!(
        "lines: alice {}, bob {}; correlation bob←alice {bob_hears_alice:.2}, alice←bob {alice_hears_bob:.2}",
        alice.lines.len(),
        bob_lines.len()
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
    for (who, lines) in [("alice", alice.lines.as_slice()), ("bob", bob_lines)] {
        let mut heard = String::new();
        for line in lines {
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
}
