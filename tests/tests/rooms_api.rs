//! The rooms REST API and room events over WebSocket: create with options, list, participants,
//! mute, kick, limits, close, the empty-room timeout, and who may do what.

use std::sync::Arc;
use std::time::Duration;

use dartmouth_signaling::Grants;
use dartmouth_signaling::agent::NoAgents;
use dartmouth_signaling::proto::{ErrorCode, ServerMessage};
use dartmouth_tests::TestGateway;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::Rtc;
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn offer() -> String {
    let mut rtc = Rtc::builder().build(std::time::Instant::now());
    rtc.add_local_candidate(
        str0m::Candidate::host("127.0.0.1:50998".parse().unwrap(), "udp").unwrap(),
    );
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    change.apply().unwrap().0.to_sdp_string()
}

async fn next(ws: &mut Ws) -> ServerMessage {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Joins `room` as `identity`; returns the socket and the join's reply.
async fn join(gateway: &TestGateway, room: &str, identity: &str) -> (Ws, ServerMessage) {
    let mut ws = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .unwrap()
        .0;
    let join = json!({
        "type": "join", "v": 1, "token": gateway.token(room, identity), "sdp": offer(),
        "metadata": format!("{{\"name\":\"{identity}\"}}"),
    });
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let reply = next(&mut ws).await;
    (ws, reply)
}

fn admin(gateway: &TestGateway, room: &str) -> String {
    let grants = Grants {
        admin: true,
        ..Grants::default()
    };
    gateway.keys.issue(room, "ops", grants, 600).unwrap()
}

#[tokio::test]
async fn rooms_are_managed_over_rest_and_participants_hear_about_it() {
    let gateway = TestGateway::start(Arc::new(NoAgents)).await;
    let http = reqwest::Client::new();
    let ops = admin(&gateway, "*");

    // Who may: no token, a participant's token, another room's admin.
    let list = gateway.url("/api/rooms");
    assert_eq!(http.get(&list).send().await.unwrap().status(), 401);
    let user = gateway.token("club", "alice");
    let forbidden = http.get(&list).bearer_auth(&user).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let other = admin(&gateway, "elsewhere");
    let forbidden = http
        .get(gateway.url("/api/rooms/club"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    // Create with options; bad requests are refused with reasons.
    let created = http
        .post(&list)
        .bearer_auth(&ops)
        .json(&json!({"name": "club", "max_participants": 2, "metadata": "book club"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let again = http
        .post(&list)
        .bearer_auth(&ops)
        .json(&json!({"name": "club"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    for bad in [
        json!({"name": "no spaces please"}),
        json!({"name": "x", "colour": 1}),
    ] {
        let refused = http
            .post(&list)
            .bearer_auth(&ops)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
    }

    // Two participants fit, the third is refused; each hears of the others.
    let (mut alice, joined) = join(&gateway, "club", "alice").await;
    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
    let (mut bob, joined) = join(&gateway, "club", "bob").await;
    assert!(matches!(joined, ServerMessage::Joined { .. }));
    assert!(matches!(
        next(&mut bob).await,
        ServerMessage::ParticipantJoined { identity, metadata: Some(m) }
            if identity == "alice" && m.contains("alice")
    ));
    assert!(matches!(
        next(&mut alice).await,
        ServerMessage::ParticipantJoined { identity, .. } if identity == "bob"
    ));
    let (carol, refused) = join(&gateway, "club", "carol").await;
    drop(carol);
    assert!(
        matches!(
            refused,
            ServerMessage::Error {
                code: ErrorCode::RoomFull,
                ..
            }
        ),
        "{refused:?}"
    );

    let rooms: Value = http
        .get(&list)
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "club");
    assert_eq!(rooms["rooms"][0]["participants"], 2);
    let room_admin = admin(&gateway, "club");
    let people: Value = http
        .get(gateway.url("/api/rooms/club/participants"))
        .bearer_auth(&room_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = people["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // Metadata, mute and kick reach the room.
    alice
        .send(Message::Text(
            json!({"type": "metadata", "metadata": "away"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next(&mut bob).await,
        ServerMessage::ParticipantMetadata {
            identity: "alice".into(),
            metadata: "away".into()
        }
    );
    let muted = http
        .post(gateway.url("/api/rooms/club/participants/alice/mute"))
        .bearer_auth(&room_admin)
        .json(&json!({"muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(muted.status(), 200);
    assert_eq!(
        next(&mut bob).await,
        ServerMessage::ParticipantMuted {
            identity: "alice".into(),
            muted: true
        }
    );
    let nobody = http
        .delete(gateway.url("/api/rooms/club/participants/zed"))
        .bearer_auth(&room_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(nobody.status(), 404);
    let kicked = http
        .delete(gateway.url("/api/rooms/club/participants/alice"))
        .bearer_auth(&room_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(kicked.status(), 204);
    loop {
        match next(&mut alice).await {
            ServerMessage::Bye { reason } => {
                assert!(reason.contains("removed"), "{reason}");
                break;
            }
            _ => continue,
        }
    }
    assert!(matches!(
        next(&mut bob).await,
        ServerMessage::ParticipantLeft { identity } if identity == "alice"
    ));

    // Closing the room ends everyone's session.
    let closed = http
        .delete(gateway.url("/api/rooms/club"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 204);
    assert!(
        matches!(next(&mut bob).await, ServerMessage::Bye { reason } if reason.contains("closed"))
    );
    let idle = gateway.wait_idle(Duration::from_secs(5)).await;
    assert!(
        idle,
        "all released: {} sessions, {} peers",
        gateway.gateway.active_sessions(),
        gateway.gateway.media().peer_count()
    );

    // An empty room created over the API goes after its timeout.
    let created = http
        .post(&list)
        .bearer_auth(&ops)
        .json(&json!({"name": "brief", "empty_timeout_secs": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let gone = http
        .get(gateway.url("/api/rooms/brief"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    gateway.stop().await;
}
