//! The platform sidecar killed and restarted mid-call: the real `dartmouth serve` with
//! `--platform-url` pointing at a separate `dartmouth platform`; the sidecar is killed while a
//! caller is talking to the agent, the call goes on and is answered, and after a restart the
//! next caller is answered too (the gateway holds nothing of the sidecar's for a call) and its
//! turn events reach the restarted sidecar: events resume. The gateway's agents are in the
//! sidecar's agent registry.
//! Needs the release binary ($DARTMOUTH_BIN or $CARGO_TARGET_DIR/release/dartmouth) and the
//! models; says SKIPPED otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dartmouth_tests::processes::{Process, api_key, binary, free_port, sidecar, wait_ok};
use dartmouth_tests::{CallOptions, RtcClient, speak_48k};

/// The rooms named by the sidecar's stored events of `topic`, polled until `room` shows up or
/// `limit` passes (publishing is asynchronous).
async fn rooms_with_events(
    client: &reqwest::Client,
    platform_url: &str,
    key: &str,
    topic: &str,
    room: &str,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let page: serde_json::Value = client
            .get(format!("{platform_url}/v1/events?topic={topic}&limit=100"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rooms: Vec<String> = page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["data"]["room"].as_str().map(String::from))
            .collect();
        if rooms.iter().any(|r| r == room) || Instant::now() >= deadline {
            return rooms;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_while_the_sidecar_is_killed_and_restarted() {
    let Some(bin) = binary() else {
        eprintln!(
            "SKIPPED: no release binary (cargo build --release -p dartmouth, or DARTMOUTH_BIN)"
        );
        return;
    };
    let Some(question) = speak_48k("What is the capital of France?") else {
        eprintln!("SKIPPED: espeak-ng is not installed");
        return;
    };
    let home = std::env::temp_dir().join(format!("dartmouth-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let models = dartmouth_models::ModelStore::from_env().dir().to_path_buf();
    let (platform_port, http_port, udp_port) = (free_port(), free_port(), free_port());
    let platform_url = format!("http://127.0.0.1:{platform_port}");
    let mut platform = sidecar(&bin, &home, platform_port);
    assert!(wait_ok(&format!("{platform_url}/healthz"), Duration::from_secs(20)).await);
    let client = reqwest::Client::new();
    let key = api_key(&client, &platform_url).await;
    let _gateway = Process(
        Command::new(&bin)
            .args([
                "serve",
                "--http",
                &format!("127.0.0.1:{http_port}"),
                "--media-udp",
                &format!("127.0.0.1:{udp_port}"),
                "--platform-url",
                &platform_url,
            ])
            .env("DARTMOUTH_HOME", &home)
            .env("DARTMOUTH_MODELS__DIR", &models)
            .env("DARTMOUTH_SERVER__PLATFORM_API_KEY", &key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the gateway"),
    );
    let base = format!("http://127.0.0.1:{http_port}");
    if !wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await {
        eprintln!(
            "SKIPPED: the gateway is not ready (models missing? run `dartmouth models fetch`)"
        );
        return;
    }
    // The gateway's agents are in the sidecar's registry, heartbeating.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (registered, listed) = loop {
        let listed: serde_json::Value = client
            .get(format!(
                "{platform_url}/v1/registry/agents?capability=voice"
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let healthy = listed.as_array().into_iter().flatten().any(|a| {
            a["health"] == "healthy" && a["endpoint"].as_str().is_some_and(|e| e.ends_with("/ws"))
        });
        if healthy || Instant::now() >= deadline {
            break (healthy, listed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        registered,
        "the gateway registered its agents, healthy: {listed}"
    );
    let token = |room: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let body: serde_json::Value = client
                .post(format!("{base}/api/token"))
                .json(&serde_json::json!({"room": room, "identity": "caller"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["token"].as_str().unwrap().to_string()
        }
    };
    let ws = format!("ws://127.0.0.1:{http_port}/ws");
    let options = || CallOptions {
        speech: question.clone(),
        limit: Duration::from_secs(60),
        ..CallOptions::default()
    };
    let call = tokio::spawn(RtcClient::call(ws.clone(), token("one").await, options()));
    let spawned = Instant::now();
    let started = rooms_with_events(
        &client,
        &platform_url,
        &key,
        "call.started",
        "one",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        started.iter().any(|r| r == "one"),
        "the first call's start reached the sidecar: {started:?}"
    );
    // Kill the sidecar while the caller is still speaking.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(spawned.elapsed())).await;
    let _ = platform.0.kill();
    let _ = platform.0.wait();
    let call = call
        .await
        .unwrap()
        .expect("the call runs while the sidecar is gone");
    assert!(
        call.agent_answer().is_some(),
        "the agent answered without the sidecar"
    );
    assert!(call.first_answer_latency().is_some(), "and was heard");

    let _restarted = sidecar(&bin, &home, platform_port);
    assert!(wait_ok(&format!("{platform_url}/healthz"), Duration::from_secs(20)).await);
    let call = RtcClient::call(ws, token("two").await, options())
        .await
        .expect("the next call runs");
    assert!(
        call.first_answer_latency().is_some(),
        "the next caller is answered"
    );
    let turns = rooms_with_events(
        &client,
        &platform_url,
        &key,
        "conversation.turn",
        "two",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        turns.iter().any(|r| r == "two"),
        "after the restart the next call's turns reach the sidecar: {turns:?}"
    );
    let _ = std::fs::remove_dir_all(&home);
}
