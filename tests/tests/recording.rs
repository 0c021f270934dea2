//! Recording over the rooms API: a participant's audio (packets as they came) and the whole room
//! (mixed) to Ogg/Opus files whose decoded audio follows what was said.

use std::sync::Arc;
use std::time::Duration;

use dartmouth_media::OpusDecoder;
use dartmouth_media::ogg::read_packets;
use dartmouth_signaling::Grants;
use dartmouth_signaling::agent::NoAgents;
use dartmouth_tests::{CallOptions, RtcClient, TestGateway, rms};
use serde_json::{Value, json};

/// Tone bursts: 600 ms of 440 Hz, 400 ms of silence, five times, after a second of silence.
fn bursts() -> Vec<i16> {
    let mut out = vec![0i16; 48_000];
    for _ in 0..5 {
        out.extend((0..28_800).map(|n| {
            ((f64::from(n) * 440.0 * std::f64::consts::TAU / 48_000.0).sin() * 9000.0) as i16
        }));
        out.extend(std::iter::repeat_n(0, 19_200));
    }
    out
}

fn decode(file: &std::path::Path) -> Vec<i16> {
    let bytes = std::fs::read(file).expect("the recording exists");
    let packets = read_packets(&bytes).expect("a valid Ogg/Opus file");
    let mut decoder = OpusDecoder::new(48_000, 1).unwrap();
    let mut pcm = [0i16; 960];
    let mut out = Vec::new();
    for p in packets {
        if decoder.decode(&p, &mut pcm).is_ok() {
            out.extend_from_slice(&pcm);
        }
    }
    out
}

/// Audible 20 ms frames.
fn loud_frames(samples: &[i16]) -> usize {
    samples.chunks(960).filter(|f| rms(f) > 0.05).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_and_a_room_are_recorded_to_ogg_opus() {
    let gateway = TestGateway::start(Arc::new(NoAgents)).await;
    let dir = std::env::temp_dir().join(format!("dartmouth-rec-{}", std::process::id()));
    gateway.gateway.set_recordings_dir(dir.clone());
    let grants = Grants {
        admin: true,
        ..Grants::default()
    };
    let ops = gateway.keys.issue("rec", "ops", grants, 600).unwrap();
    let said = bursts();
    let alice = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("rec", "alice"),
        CallOptions {
            agent: Some("none".into()),
            speech: said.clone(),
            limit: Duration::from_secs(8),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    let bob = tokio::spawn(RtcClient::call(
        gateway.ws_url(),
        gateway.token("rec", "bob"),
        CallOptions {
            agent: Some("none".into()),
            limit: Duration::from_secs(8),
            hang_up_after_answer: None,
            ..CallOptions::default()
        },
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let http = reqwest::Client::new();
    let start = |body: Value| {
        http.post(gateway.url("/api/rooms/rec/recordings"))
            .bearer_auth(&ops)
            .json(&body)
            .send()
    };
    let room: Value = start(json!({})).await.unwrap().json().await.unwrap();
    let only_alice: Value = start(json!({"participant": "alice"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nobody = start(json!({"participant": "zed"})).await.unwrap();
    assert_eq!(nobody.status(), 404);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut files = Vec::new();
    for started in [&room, &only_alice] {
        let id = started["id"].as_str().expect("an id");
        let stopped = http
            .delete(gateway.url(&format!("/api/rooms/rec/recordings/{id}")))
            .bearer_auth(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(stopped.status(), 200);
        let info: Value = stopped.json().await.unwrap();
        let seconds = info["seconds"].as_f64().unwrap();
        assert!((5.0..7.5).contains(&seconds), "{info}");
        files.push(std::path::PathBuf::from(info["file"].as_str().unwrap()));
    }
    let _ = alice.await;
    let _ = bob.await;
    let expected = loud_frames(&said);
    for file in files {
        let audio = decode(&file);
        let loud = loud_frames(&audio);
        eprintln!(
            "{}: {} s, {loud} loud frames of {expected} said",
            file.display(),
            audio.len() / 48_000
        );
        assert!(
            loud * 10 >= expected * 8 && loud <= expected + 10,
            "{}: {loud} loud frames, {expected} said",
            file.display()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    gateway.stop().await;
}
