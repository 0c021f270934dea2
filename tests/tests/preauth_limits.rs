//! A hostile client at the gateway's doors: idle WebSockets that never join hold no session slot,
//! so they cannot keep a real caller out; one address gets a small budget of them and a short
//! join deadline; WHIP/WHEP sessions end only at the hand of their creator (or a room admin).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dartmouth_signaling::agent::NoAgents;
use dartmouth_signaling::limits::LimitsConfig;
use dartmouth_signaling::proto::{ClientMessage, PROTOCOL_VERSION, ServerMessage};
use dartmouth_signaling::{Grants, gateway::MAX_SESSIONS};
use dartmouth_tests::gateway::{EmbeddedTestAgent, audio_offer};
use dartmouth_tests::{CallOptions, RtcClient, TestGateway, speak_48k};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Idle sockets the attacker opens: more than the gateway has session slots.
const IDLE_SOCKETS: usize = 300;
/// Source addresses they come from (each within its pending budget).
const ATTACKER_ADDRESSES: u8 = 25;

/// A WebSocket to `gateway` from the source address `source`.
async fn ws_from(gateway: &TestGateway, source: Ipv4Addr) -> Result<Ws, tungstenite::Error> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(gateway.http).await?;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    Ok(tokio_tungstenite::client_async(gateway.ws_url(), stream)
        .await?
        .0)
}

/// Opens [`IDLE_SOCKETS`] WebSockets from [`ATTACKER_ADDRESSES`] addresses that never join.
async fn open_idle_sockets(gateway: &TestGateway) -> Vec<Ws> {
    let mut idle = Vec::with_capacity(IDLE_SOCKETS);
    for i in 0..IDLE_SOCKETS {
        let source = Ipv4Addr::new(127, 0, 1, 1 + (i % usize::from(ATTACKER_ADDRESSES)) as u8);
        idle.push(
            ws_from(gateway, source)
                .await
                .expect("an idle socket opens"),
        );
    }
    idle
}

async fn next_message(ws: &mut Ws, limit: Duration) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(limit, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn patient_limits() -> LimitsConfig {
    LimitsConfig {
        join_deadline: Duration::from_secs(120),
        ..LimitsConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_keep_a_real_client_out() {
    const { assert!(IDLE_SOCKETS > MAX_SESSIONS) };
    let gateway =
        TestGateway::start_with_limits(std::sync::Arc::new(NoAgents), patient_limits()).await;
    let idle = open_idle_sockets(&gateway).await;
    assert_eq!(gateway.gateway.limits().pending(), IDLE_SOCKETS);
    assert_eq!(
        gateway.gateway.active_sessions(),
        0,
        "idle sockets hold no slot"
    );

    let mut client = ws_from(&gateway, Ipv4Addr::new(127, 0, 0, 2))
        .await
        .unwrap();
    let join = ClientMessage::Join {
        v: PROTOCOL_VERSION,
        token: gateway.token("lobby", "alice"),
        sdp: audio_offer(),
        agent: None,
        output: Default::default(),
        listen: Default::default(),
        metadata: Default::default(),
    };
    let join = serde_json::to_string(&join).unwrap();
    client.send(Message::Text(join.into())).await.unwrap();
    match next_message(&mut client, Duration::from_secs(10)).await {
        Some(ServerMessage::Joined { room, .. }) => assert_eq!(room, "lobby"),
        other => panic!("the real client was not let in: {other:?}"),
    }
    assert_eq!(gateway.gateway.active_sessions(), 1);
    assert_eq!(gateway.gateway.limits().pending(), IDLE_SOCKETS);
    drop(idle);
    drop(client);
    assert!(gateway.wait_idle(Duration::from_secs(10)).await);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_keep_a_caller_from_the_agent() {
    let Some(agents) = EmbeddedTestAgent::load() else {
        return;
    };
    let Some(question) = speak_48k("What is the capital of France?") else {
        eprintln!("SKIPPED: espeak-ng is not installed");
        return;
    };
    let gateway = TestGateway::start_with_limits(agents, patient_limits()).await;
    let idle = open_idle_sockets(&gateway).await;
    let call = RtcClient::call(
        gateway.ws_url(),
        gateway.token("call", "alice"),
        CallOptions {
            speech: question,
            limit: Duration::from_secs(60),
            ..CallOptions::default()
        },
    )
    .await
    .expect("the caller gets in past 300 idle sockets");
    assert!(
        call.first_answer_latency().is_some(),
        "the agent's answer is audible at the client"
    );
    assert!(call.agent_answer().is_some(), "the agent answered");
    drop(idle);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_a_small_pending_budget_and_a_short_deadline() {
    let limits = LimitsConfig {
        pending_per_ip: 4,
        join_deadline: Duration::from_millis(1500),
        ..LimitsConfig::default()
    };
    let gateway = TestGateway::start_with_limits(std::sync::Arc::new(NoAgents), limits).await;
    let attacker = Ipv4Addr::new(127, 0, 2, 1);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(ws_from(&gateway, attacker).await.unwrap());
    }
    match ws_from(&gateway, attacker).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        Err(e) => panic!("expected 429, got {e}"),
        Ok(_) => panic!("a fifth pending socket from one address was accepted"),
    }
    // Another address is unaffected.
    let _other = ws_from(&gateway, Ipv4Addr::new(127, 0, 2, 2))
        .await
        .unwrap();
    // The deadline closes the idle ones with a reason, and the budget is free again.
    for ws in &mut held {
        match next_message(ws, Duration::from_secs(5)).await {
            Some(ServerMessage::Bye { reason }) => assert!(reason.contains("no join"), "{reason}"),
            other => panic!("expected bye, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ws_from(&gateway, attacker).await.is_ok());
    gateway.stop().await;
}

/// POSTs a WHIP offer; returns the session's location.
async fn whip(client: &reqwest::Client, gateway: &TestGateway, room: &str, token: &str) -> String {
    let response = client
        .post(gateway.url(&format!("/whip/{room}?agent=none")))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(audio_offer())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.headers()["location"].to_str().unwrap().to_string()
}

async fn delete(
    client: &reqwest::Client,
    gateway: &TestGateway,
    path: &str,
    token: Option<&str>,
) -> u16 {
    let request = client.delete(gateway.url(path));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap().status().as_u16()
}

/// A token of `room` with the `admin` grant.
fn admin_token(gateway: &TestGateway, room: &str) -> String {
    let grants = Grants {
        admin: true,
        ..Grants::default()
    };
    gateway.keys.issue(room, "root", grants, 60).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_sessions_end_only_by_their_creator_or_a_room_admin() {
    let gateway = TestGateway::start(std::sync::Arc::new(NoAgents)).await;
    let client = reqwest::Client::new();
    let owner = gateway.token("studio", "alice");
    let location = whip(&client, &gateway, "studio", &owner).await;
    let id = location.rsplit('/').next().unwrap().to_string();
    assert_eq!(id.len(), 32, "128-bit random id: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    assert_eq!(delete(&client, &gateway, &location, None).await, 401);
    let stranger = gateway.token("studio", "mallory");
    assert_eq!(
        delete(&client, &gateway, &location, Some(&stranger)).await,
        404
    );
    // The owner's own token, but the path names another room (or the other endpoint).
    let elsewhere = format!("/whip/other/{id}");
    assert_eq!(
        delete(&client, &gateway, &elsewhere, Some(&owner)).await,
        404
    );
    let foreign_admin = admin_token(&gateway, "other");
    assert_eq!(
        delete(&client, &gateway, &elsewhere, Some(&foreign_admin)).await,
        404
    );
    assert_eq!(
        delete(
            &client,
            &gateway,
            &format!("/whep/studio/{id}"),
            Some(&owner)
        )
        .await,
        404
    );
    assert_eq!(gateway.gateway.active_sessions(), 1, "still running");
    assert_eq!(
        delete(&client, &gateway, &location, Some(&owner)).await,
        200
    );

    let second = whip(&client, &gateway, "studio", &owner).await;
    assert_ne!(second, location);
    let admin = admin_token(&gateway, "studio");
    assert_eq!(delete(&client, &gateway, &second, Some(&admin)).await, 200);
    assert!(gateway.wait_idle(Duration::from_secs(10)).await);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_requests_are_rate_limited_per_address() {
    let limits = LimitsConfig {
        http_sessions_per_minute: 8,
        ..LimitsConfig::default()
    };
    let gateway = TestGateway::start_with_limits(std::sync::Arc::new(NoAgents), limits).await;
    let flood = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1)))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = flood
            .post(gateway.url("/whip/r"))
            .bearer_auth("not-a-token")
            .header("content-type", "application/sdp")
            .body("v=0")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..2], [401, 401], "{statuses:?}");
    assert_eq!(statuses[2..], [429, 429], "{statuses:?}");
    let other = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 2)))
        .build()
        .unwrap();
    let token = gateway.token("r", "bob");
    let location = whip(&other, &gateway, "r", &token).await;
    assert_eq!(delete(&other, &gateway, &location, Some(&token)).await, 200);
    gateway.stop().await;
}
