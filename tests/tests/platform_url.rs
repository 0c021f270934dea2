//! `dartmouth serve --platform-url URL` against a separately started `dartmouth platform`, both
//! the real binary as processes sharing a room-token secret:
//! - room tokens the platform mints admit a client to a room on the gateway (WHIP), and the
//!   gateway refuses a forged token, a token for another room and an expired platform token,
//!   each with a reason;
//! - the room events of that session (`room.participant_joined` / `_left`) arrive on the
//!   platform's event API;
//! - a spoken question to the gateway's agent is grounded by the platform: a fact uploaded to
//!   the agent's knowledge base on the platform is in the prompt the language model (the
//!   OpenAI-compatible mock, which records it) receives, and the turn's `conversation.turn`
//!   event arrives on the platform.
//!
//! Needs the release binary ($DARTMOUTH_BIN or $CARGO_TARGET_DIR/release/dartmouth); the spoken
//! part also needs the models and espeak-ng. Says SKIPPED for what cannot run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dartmouth_signaling::token::{Grants, TokenKeys};
use dartmouth_tests::gateway::audio_offer;
use dartmouth_tests::mock_openai::{MockOpenAi, MockReplies, MockTurn};
use dartmouth_tests::processes::{
    Process, admin_token, api_key, binary, free_port, sidecar_with, wait_ok,
};
use dartmouth_tests::{CallOptions, RtcClient, speak_48k};
use serde_json::{Value, json};

/// The secret both processes sign and verify room tokens with.
const ROOM_SECRET: &str = "platform-url-test-room-secret-0123456789";
/// Lifetime of the platform's room tokens: short, so one expires during the test.
const ROOM_TOKEN_TTL_SECS: u64 = 3;
/// The gateway's clock leeway on expiry (signaling's `LEEWAY_SECS`) plus a margin.
const EXPIRED_AFTER: Duration = Duration::from_secs(ROOM_TOKEN_TTL_SECS + 5 + 2);
/// A room without an agent, for the token checks.
const QUIET_ROOM: &str = "tokens";
/// The fact only the platform's knowledge base holds.
const FACT: &str = "The lighthouse door on Gull Island is painted bright orange.";

/// A room token minted by the platform for the admin.
async fn platform_token(
    client: &reqwest::Client,
    platform_url: &str,
    admin: &str,
    room: &str,
) -> String {
    let response = client
        .post(format!("{platform_url}/v1/room-tokens"))
        .bearer_auth(admin)
        .json(&json!({"room": room}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "minting a room token");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().expect("a room token").to_string()
}

/// Stored events of `topic` on the platform, polled until one has `data[field] == value` or
/// `limit` passes.
async fn events_until(
    client: &reqwest::Client,
    platform_url: &str,
    key: &str,
    topic: &str,
    (field, value): (&str, &str),
    limit: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let page: Value = client
            .get(format!("{platform_url}/v1/events?topic={topic}&limit=1000"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["data"][field] == value) || Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Offers a WHIP session to `room` with `token`: (status, body).
async fn whip(
    client: &reqwest::Client,
    base: &str,
    room: &str,
    token: &str,
) -> (u16, String, Option<String>) {
    let response = client
        .post(format!("{base}/whip/{room}"))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(audio_offer())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (status, response.text().await.unwrap_or_default(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_uses_a_separately_started_platform_for_tokens_knowledge_and_events() {
    let Some(bin) = binary() else {
        eprintln!(
            "SKIPPED: no release binary (cargo build --release -p dartmouth, or DARTMOUTH_BIN)"
        );
        return;
    };
    let home = std::env::temp_dir().join(format!("dartmouth-platform-url-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let models = dartmouth_models::ModelStore::from_env().dir().to_path_buf();
    let (platform_port, http_port, udp_port) = (free_port(), free_port(), free_port());
    let platform_url = format!("http://127.0.0.1:{platform_port}");
    let _platform = sidecar_with(
        &bin,
        &home,
        platform_port,
        &format!(
            "room_token_secret = \"{ROOM_SECRET}\"\nroom_token_ttl_secs = {ROOM_TOKEN_TTL_SECS}\n"
        ),
    );
    assert!(
        wait_ok(&format!("{platform_url}/healthz"), Duration::from_secs(20)).await,
        "the platform starts"
    );
    let client = reqwest::Client::new();
    let key = api_key(&client, &platform_url).await;
    let admin = admin_token(&client, &platform_url).await;
    // Minted now, used after it has expired.
    let expiring = platform_token(&client, &platform_url, &admin, QUIET_ROOM).await;
    let expiring_minted = Instant::now();

    // The agent's knowledge lives on the platform only.
    let upload = client
        .post(format!(
            "{platform_url}/v1/agents/assistant/knowledge/island/documents?name=gull-island.md"
        ))
        .bearer_auth(&admin)
        .header("content-type", "text/markdown")
        .body(format!(
            "# Gull Island\n\nThe ferry to Gull Island leaves twice a day.\n\n{FACT}\n\n\
             The island shop sells rope, tea and postcards.\n"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201, "{}", upload.text().await.unwrap());

    // The language model is the mock: it records every prompt.
    let replies = MockReplies {
        stt_delay: Duration::ZERO,
        llm_delay: Duration::from_millis(10),
        tts_delay: Duration::ZERO,
        transcript: String::new(),
        answer: "It is painted bright orange.".into(),
        speech: Vec::new(),
    };
    let mock = MockOpenAi::start_scripted(replies, vec![MockTurn::Answer])
        .await
        .expect("the mock starts");
    let gateway_config = home.join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "[server]\ntoken_secret = \"{ROOM_SECRET}\"\ndefault_agent = \"assistant\"\n\
             room_agents = {{ {QUIET_ROOM} = \"none\" }}\n\
             [agents.assistant]\nllm_url = \"{}/v1\"\nllm_model = \"mock-model\"\n\
             voice = \"espeak\"\npreemptive_answer = false\n",
            mock.url()
        ),
    )
    .unwrap();
    let _gateway = Process(
        Command::new(&bin)
            .arg("--config")
            .arg(&gateway_config)
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
    assert!(
        wait_ok(&format!("{base}/healthz"), Duration::from_secs(60)).await,
        "the gateway starts"
    );

    // 1. A platform token admits a client to the room; the session's room events reach the
    //    platform.
    let token = platform_token(&client, &platform_url, &admin, QUIET_ROOM).await;
    let (status, answer, location) = whip(&client, &base, QUIET_ROOM, &token).await;
    assert_eq!(status, 201, "a platform room token admits: {answer}");
    assert!(answer.starts_with("v=0"), "{answer}");
    let joined = events_until(
        &client,
        &platform_url,
        &key,
        "room.participant_joined",
        ("room", QUIET_ROOM),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        joined
            .iter()
            .any(|e| e["data"]["room"] == QUIET_ROOM && e["source"] != "platform"),
        "the gateway's join reached the platform's event API: {joined:?}"
    );
    let location = location.expect("the WHIP session's location");
    let ended = client
        .delete(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    let left = events_until(
        &client,
        &platform_url,
        &key,
        "room.participant_left",
        ("room", QUIET_ROOM),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        left.iter().any(|e| e["data"]["room"] == QUIET_ROOM),
        "the leave reached the platform: {left:?}"
    );

    // 2. Tokens the gateway must refuse, each with its reason.
    let forged = TokenKeys::new(b"another secret, not the platform's one")
        .issue(QUIET_ROOM, "mallory", Grants::default(), 60)
        .unwrap();
    let (status, reason, _) = whip(&client, &base, QUIET_ROOM, &forged).await;
    assert_eq!(status, 401, "a forged token is refused: {reason}");
    assert!(reason.contains("invalid"), "{reason}");
    let (status, reason, _) = whip(&client, &base, "elsewhere", &token).await;
    assert_eq!(status, 401, "a token for another room is refused: {reason}");
    assert!(reason.contains(QUIET_ROOM), "{reason}");
    tokio::time::sleep(EXPIRED_AFTER.saturating_sub(expiring_minted.elapsed())).await;
    let (status, reason, _) = whip(&client, &base, QUIET_ROOM, &expiring).await;
    assert_eq!(
        status, 401,
        "an expired platform token is refused: {reason}"
    );
    assert!(reason.contains("expired"), "{reason}");

    // 3. A spoken question: the agent retrieves from the platform and grounds its prompt.
    if !wait_ok(&format!("{base}/readyz"), Duration::from_secs(30)).await {
        eprintln!(
            "SKIPPED: the grounded voice turn (models missing? run `dartmouth models fetch`)"
        );
        let _ = std::fs::remove_dir_all(&home);
        return;
    }
    let Some(question) = speak_48k("What colour is the lighthouse door on Gull Island?") else {
        eprintln!("SKIPPED: the grounded voice turn (espeak-ng is not installed)");
        let _ = std::fs::remove_dir_all(&home);
        return;
    };
    let room = "grounded";
    let token = platform_token(&client, &platform_url, &admin, room).await;
    let call = RtcClient::call(
        format!("ws://127.0.0.1:{http_port}/ws"),
        token,
        CallOptions {
            speech: question,
            limit: Duration::from_secs(60),
            hang_up_after_answer: Some(Duration::from_millis(500)),
            ..CallOptions::default()
        },
    )
    .await
    .expect("the call runs");
    let prompts = mock.chat_requests();
    let grounded = prompts.iter().any(|request| {
        request["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| {
                m["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("bright orange"))
            })
    });
    assert!(
        grounded,
        "the prompt carries the passage retrieved from the platform (heard {:?}): {prompts:?}",
        call.user_transcripts()
    );
    assert!(call.agent_answer().is_some(), "the agent answered");
    let turns = events_until(
        &client,
        &platform_url,
        &key,
        "conversation.turn",
        ("room", room),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        turns.iter().any(|e| e["data"]["room"] == room),
        "the turn event reached the platform: {turns:?}"
    );
    let _ = std::fs::remove_dir_all(&home);
}
