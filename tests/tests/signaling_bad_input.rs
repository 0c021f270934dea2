//! Bad input at the gateway's doors: malformed and oversized WebSocket messages, bad tokens, bad
//! SDP over WebSocket and WHIP. Each gets a clear error, nothing is left behind, and a session
//! running next to them is unaffected.

use std::sync::Arc;
use std::time::Duration;

use dartmouth_signaling::agent::NoAgents;
use dartmouth_signaling::proto::{ErrorCode, ServerMessage};
use dartmouth_tests::TestGateway;
use futures_util::{SinkExt, StreamExt};
use str0m::Rtc;
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn offer(kind: MediaKind, pcmu_only: bool) -> String {
    let builder = Rtc::builder();
    let builder = if pcmu_only {
        builder.clear_codecs().enable_pcmu(true, false)
    } else {
        builder
    };
    let mut rtc = builder.build(std::time::Instant::now());
    rtc.add_local_candidate(
        str0m::Candidate::host("127.0.0.1:50999".parse().unwrap(), "udp").unwrap(),
    );
    let mut change = rtc.sdp_api();
    change.add_media(kind, Direction::SendRecv, None, None, None);
    change.apply().unwrap().0.to_sdp_string()
}

async fn connect(gateway: &TestGateway) -> Ws {
    tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .unwrap()
        .0
}

async fn exchange(ws: &mut Ws, text: String) -> ServerMessage {
    ws.send(Message::Text(text.into())).await.unwrap();
    next_message(ws, Duration::from_secs(10)).await
}

/// The next message that is not a room membership event.
async fn next_message(ws: &mut Ws, limit: Duration) -> ServerMessage {
    loop {
        let message = next_any(ws, limit).await;
        if !matches!(
            message,
            ServerMessage::ParticipantJoined { .. } | ServerMessage::ParticipantLeft { .. }
        ) {
            return message;
        }
    }
}

async fn next_any(ws: &mut Ws, limit: Duration) -> ServerMessage {
    loop {
        let message = tokio::time::timeout(limit, ws.next())
            .await
            .expect("a reply in time")
            .expect("the connection stays open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

fn code(message: &ServerMessage) -> (ErrorCode, String) {
    match message {
        ServerMessage::Error { code, message } => (*code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn join(token: &str, sdp: &str) -> String {
    serde_json::json!({"type": "join", "v": 1, "token": token, "sdp": sdp, "agent": "none"})
        .to_string()
}

#[tokio::test]
async fn malformed_messages_bad_tokens_and_bad_sdp_get_clear_errors_over_websocket() {
    let gateway = TestGateway::start(Arc::new(NoAgents)).await;
    // A healthy session, joined, next to all the bad input.
    let mut healthy = connect(&gateway).await;
    let joined = exchange(
        &mut healthy,
        join(&gateway.token("r", "ok"), &offer(MediaKind::Audio, false)),
    )
    .await;
    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");

    let mut ws = connect(&gateway).await;
    let (c, m) = code(&exchange(&mut ws, "not json".into()).await);
    assert_eq!(c, ErrorCode::BadMessage, "{m}");
    let (c, _) = code(&exchange(&mut ws, r#"{"type":"dance"}"#.into()).await);
    assert_eq!(c, ErrorCode::BadMessage);
    let (c, m) = code(
        &exchange(
            &mut ws,
            format!(r#"{{"type":"text","text":"{}"}}"#, "x".repeat(100_000)),
        )
        .await,
    );
    assert_eq!(c, ErrorCode::TooLarge, "{m}");
    let (c, m) = code(&exchange(&mut ws, r#"{"type":"text","text":"hello"}"#.into()).await);
    assert_eq!(c, ErrorCode::BadState, "typed text before joining: {m}");

    let sdp = offer(MediaKind::Audio, false);
    let (c, m) = code(&exchange(&mut ws, join("forged.token.here", &sdp)).await);
    assert_eq!(c, ErrorCode::Unauthorized, "{m}");
    let other_keys = dartmouth_signaling::TokenKeys::new(b"somebody else's secret, long enough!!");
    let forged = other_keys
        .issue("r", "mallory", Default::default(), 60)
        .unwrap();
    let (c, m) = code(&exchange(&mut ws, join(&forged, &sdp)).await);
    assert_eq!(c, ErrorCode::Unauthorized);
    assert!(m.contains("invalid"), "{m}");
    let version = serde_json::json!({"type":"join","v":99,"token":"t","sdp":sdp}).to_string();
    let (c, _) = code(&exchange(&mut ws, version).await);
    assert_eq!(c, ErrorCode::UnsupportedVersion);

    let token = gateway.token("r", "bob");
    let (c, m) = code(&exchange(&mut ws, join(&token, "v=0 garbage")).await);
    assert_eq!(c, ErrorCode::BadSdp, "{m}");
    let (c, m) = code(&exchange(&mut ws, join(&token, &offer(MediaKind::Video, false))).await);
    assert_eq!(c, ErrorCode::BadSdp);
    assert!(m.contains("Opus"), "{m}");
    let (c, m) = code(&exchange(&mut ws, join(&token, &offer(MediaKind::Audio, true))).await);
    assert_eq!(c, ErrorCode::BadSdp, "PCMU only: {m}");
    let unknown = serde_json::json!({"type":"join","v":1,"token":token,"sdp":sdp,"agent":"nobody"})
        .to_string();
    let (c, m) = code(&exchange(&mut ws, unknown).await);
    assert_eq!(c, ErrorCode::UnknownAgent, "{m}");
    // After all that, the same connection can still join, and only once.
    let joined = exchange(&mut ws, join(&token, &sdp)).await;
    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
    let (c, _) = code(&exchange(&mut ws, join(&token, &sdp)).await);
    assert_eq!(c, ErrorCode::BadState);

    // The healthy session still answers.
    assert_eq!(
        exchange(&mut healthy, r#"{"type":"ping"}"#.into()).await,
        ServerMessage::Pong
    );
    // Neither client ever does ICE: both are timed out and cleaned up (bounded wait).
    let bye = next_message(
        &mut ws,
        dartmouth_media::core::CONNECT_TIMEOUT + Duration::from_secs(5),
    )
    .await;
    match bye {
        ServerMessage::Bye { reason } => assert!(reason.contains("did not connect"), "{reason}"),
        other => panic!("expected bye, got {other:?}"),
    }
    assert!(
        gateway.wait_idle(Duration::from_secs(20)).await,
        "sessions and peers are released"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn whip_refuses_bad_tokens_bad_content_and_bad_sdp_with_reasons() {
    let gateway = TestGateway::start(Arc::new(NoAgents)).await;
    let client = reqwest::Client::new();
    let url = gateway.url("/whip/r");
    let post = |token: Option<String>, content_type: &'static str, body: String| {
        let mut request = client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let sdp = offer(MediaKind::Audio, false);
    let response = post(None, "application/sdp", sdp.clone()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = post(Some("bad".into()), "application/sdp", sdp.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let wrong_room = gateway.token("elsewhere", "a");
    let response = post(Some(wrong_room), "application/sdp", sdp.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("elsewhere"));
    let token = gateway.token("r", "a");
    let response = post(Some(token.clone()), "application/json", sdp.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = post(
        Some(token.clone()),
        "application/sdp",
        "v=0 nonsense".into(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let reason = response.text().await.unwrap();
    assert!(reason.contains("SDP"), "{reason}");
    assert!(
        !reason.contains("PointerOffset"),
        "no parser internals: {reason}"
    );
    let response = post(Some(token.clone()), "application/sdp", "x".repeat(200_000))
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = post(Some(token.clone()), "application/sdp", sdp)
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(response.text().await.unwrap().starts_with("v=0"));
    // Only the token that created it ends it (see preauth_limits.rs for the refusals).
    let delete = || client.delete(gateway.url(&location)).bearer_auth(&token);
    assert_eq!(delete().send().await.unwrap().status(), 200);
    assert_eq!(delete().send().await.unwrap().status(), 404);
    assert!(gateway.wait_idle(Duration::from_secs(5)).await);
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_to_every_session_and_releases_it() {
    let gateway = TestGateway::start(Arc::new(NoAgents)).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = connect(&gateway).await;
        let joined = exchange(
            &mut ws,
            join(
                &gateway.token("r", &format!("p{i}")),
                &offer(MediaKind::Audio, false),
            ),
        )
        .await;
        assert!(matches!(joined, ServerMessage::Joined { .. }));
        clients.push(ws);
    }
    assert_eq!(gateway.gateway.active_sessions(), 3);
    // Room events: the first participant heard the others arrive, and hears one leave.
    for identity in ["p1", "p2"] {
        let joined = next_any(&mut clients[0], Duration::from_secs(5)).await;
        assert_eq!(
            joined,
            ServerMessage::ParticipantJoined {
                identity: identity.into(),
                metadata: None,
            }
        );
    }
    let mut last = clients.pop().unwrap();
    last.send(Message::Text(r#"{"type":"leave"}"#.into()))
        .await
        .unwrap();
    let left = next_any(&mut clients[0], Duration::from_secs(5)).await;
    assert_eq!(
        left,
        ServerMessage::ParticipantLeft {
            identity: "p2".into()
        }
    );
    assert!(matches!(
        next_message(&mut last, Duration::from_secs(5)).await,
        ServerMessage::Bye { .. }
    ));
    let state = gateway.gateway.clone();
    gateway.stop().await;
    for ws in &mut clients {
        match next_message(ws, Duration::from_secs(5)).await {
            ServerMessage::Bye { reason } => assert!(reason.contains("shutting down"), "{reason}"),
            other => panic!("expected bye, got {other:?}"),
        }
    }
    assert_eq!(state.active_sessions(), 0, "every session ended");
    drop(last);
}
