//! WHIP (ingest) and WHEP (egress) per RFC 9725: one HTTP POST carries the complete SDP offer
//! and gets the answer; the session lives at the returned `Location` until `DELETE`.
//!
//! A WHIP publisher gets the room's agent listening to it (`?agent=NAME`, `?agent=none`,
//! `?listen=me|active_speaker|everyone`), whatever its direction: a `sendonly` publisher asks, the
//! room's subscribers (WHEP included) hear the answer. A `sendrecv` publisher also hears the room
//! on that same m-line (an extension RFC 9725 permits: the answer mirrors the offer's direction),
//! which is how a non-browser client talks to an agent with one request. A WHEP subscriber has
//! one audio slot: it hears whoever speaks loudest, agents included.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dartmouth_media::driver::{DriverError, NOTICE_CAPACITY};
use dartmouth_media::{PeerId, PeerNotice};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::agent::{AGENT_MESSAGE_CAPACITY, AgentBridge};
use crate::gateway::{AgentStart, AgentStartError, Gateway, error_response};
use crate::limits::{PeerAddr, Permit};
use crate::proto::{AgentListen, MAX_MESSAGE_BYTES};
use crate::rooms::{Ender, Member, MemberKind};
use crate::token::TokenError;

/// `Retry-After` of a WHIP offer refused because no agent has room now.
const RETRY_AFTER_SECONDS: &str = "5";

/// A WHIP or WHEP session.
pub(crate) struct HttpSession {
    peer: PeerId,
    agent: Option<(AgentBridge, PeerId)>,
    /// Which endpoint and room created it: a `DELETE` must name the same.
    kind: Kind,
    room: String,
    /// The bearer token that created it: only it (or a room admin's token) may delete it.
    owner_token: String,
    _guard: crate::gateway::SessionGuard,
    _permit: Permit,
}

impl HttpSession {
    /// Ends the session: its agent, its room membership and its media.
    pub(crate) async fn end(self, gateway: &Gateway) {
        if let Some((bridge, speaker)) = self.agent {
            gateway.stop_agent(&self.room, bridge, speaker).await;
        }
        gateway.rooms.leave(&self.room, self.peer);
        gateway.media.remove(self.peer).await;
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WhipQuery {
    agent: Option<String>,
    #[serde(default)]
    listen: AgentListen,
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

pub(crate) async fn whip_post(
    state: State<Arc<Gateway>>,
    peer: PeerAddr,
    room: Path<String>,
    query: Query<WhipQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = AgentStart {
        name: query.0.agent,
        listen: query.0.listen,
        ..AgentStart::default()
    };
    create(state, peer, room, start, headers, body, Kind::Whip).await
}

pub(crate) async fn whep_post(
    state: State<Arc<Gateway>>,
    peer: PeerAddr,
    room: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = AgentStart {
        name: Some("none".into()),
        ..AgentStart::default()
    };
    create(state, peer, room, start, headers, body, Kind::Whep).await
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn unauthorized(e: TokenError) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, e.to_string());
    let challenge = match e {
        TokenError::Missing => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    response
}

async fn create(
    State(gateway): State<Arc<Gateway>>,
    PeerAddr(ip): PeerAddr,
    Path(room): Path<String>,
    agent: AgentStart,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let permit = match gateway.limits.admit_http_session(ip) {
        Ok(permit) => permit,
        Err(refusal) => return crate::ws::refused(refusal),
    };
    let token = bearer(&headers);
    let claims = match gateway.keys.verify(token, &room) {
        Ok(claims) => claims,
        Err(e) => return unauthorized(e),
    };
    let grants = claims.grants();
    if (kind == Kind::Whip && !grants.publish) || (kind == Kind::Whep && !grants.subscribe) {
        return error_response(StatusCode::FORBIDDEN, "the token does not grant this");
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an SDP offer with Content-Type: application/sdp",
        );
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the SDP offer exceeds {MAX_MESSAGE_BYTES} bytes"),
        );
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8");
    };
    let Some(guard) = gateway.enter() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is at capacity",
        );
    };
    if let Err(e) = gateway.rooms.admit(&room) {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let (notice_tx, notices) = mpsc::channel(NOTICE_CAPACITY);
    let (peer, answer) = match gateway.media.add_peer(&room, offer, false, notice_tx).await {
        Ok(added) => added,
        Err(DriverError::Peer(e)) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let id = resource_id();
    let member = Member {
        peer,
        identity: claims.sub.clone(),
        kind: match kind {
            Kind::Whip => MemberKind::Whip,
            Kind::Whep => MemberKind::Whep,
        },
        metadata: String::new(),
        muted: false,
        messages: None,
        ender: Ender::Http(id.clone()),
    };
    if let Err(e) = gateway.rooms.enter(&room, member) {
        gateway.media.remove(peer).await;
        return error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    // WHIP clients have no event channel: the agent's messages are dropped after logging.
    let (message_tx, messages) = mpsc::channel(AGENT_MESSAGE_CAPACITY);
    let agent = match gateway.start_agent(&claims, peer, agent, message_tx).await {
        Ok(agent) => agent.map(|(_, bridge, speaker)| (bridge, speaker)),
        Err(e) => {
            gateway.rooms.leave(&room, peer);
            gateway.media.remove(peer).await;
            if let AgentStartError::Unavailable(_) = e {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
                return response;
            }
            return error_response(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let location = format!("/{}/{room}/{id}", kind.path());
    gateway.http_sessions.lock().await.insert(
        id.clone(),
        HttpSession {
            peer,
            agent,
            kind,
            room: room.clone(),
            owner_token: token.to_string(),
            _guard: guard,
            _permit: permit,
        },
    );
    tokio::spawn(watch_session(gateway.clone(), id, notices, messages));
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response()
}

/// Ends an HTTP session when its peer goes away; drains the agent's messages meanwhile.
async fn watch_session(
    gateway: Arc<Gateway>,
    id: String,
    mut notices: mpsc::Receiver<PeerNotice>,
    mut messages: mpsc::Receiver<crate::proto::ServerMessage>,
) {
    let mut shutdown = gateway.shutdown.clone();
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(PeerNotice::Closed(reason)) => {
                    tracing::info!(session = %id, ?reason, "WHIP/WHEP peer closed");
                    break;
                }
                Some(_) => {}
                None => break,
            },
            message = messages.recv() => {
                if let Some(message) = message {
                    tracing::debug!(session = %id, message = %message.to_json(), "agent event");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    let session = gateway.http_sessions.lock().await.remove(&id);
    if let Some(session) = session {
        session.end(&gateway).await;
    }
}

pub(crate) async fn whip_delete(
    state: State<Arc<Gateway>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(state, path, headers, Kind::Whip).await
}

pub(crate) async fn whep_delete(
    state: State<Arc<Gateway>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(state, path, headers, Kind::Whep).await
}

/// Ends a session at its `Location`: only with the token that created it, or a valid token for
/// the same room with the `admin` grant. Anything else is answered as if there were no such
/// session, so ids cannot be probed.
async fn delete(
    State(gateway): State<Arc<Gateway>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    kind: Kind,
) -> Response {
    let token = bearer(&headers);
    if token.is_empty() {
        return unauthorized(TokenError::Missing);
    }
    let admin = gateway
        .keys
        .verify(token, &room)
        .is_ok_and(|claims| claims.grants().admin);
    let mut sessions = gateway.http_sessions.lock().await;
    let allowed = sessions.get(&id).is_some_and(|s| {
        s.kind == kind && s.room == room && (admin || constant_time_eq(&s.owner_token, token))
    });
    let session = if allowed { sessions.remove(&id) } else { None };
    drop(sessions);
    match session {
        Some(session) => {
            session.end(&gateway).await;
            StatusCode::OK.into_response()
        }
        None => error_response(StatusCode::NOT_FOUND, "no such session"),
    }
}

pub(crate) async fn trickle_unsupported() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE")],
        "trickle ICE over HTTP is not supported: send a complete offer",
    )
        .into_response()
}

/// A session id from the operating system's CSPRNG (through `rand`'s ChaCha generator that it
/// seeds): 128 bits, hex.
fn resource_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
