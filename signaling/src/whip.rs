//! WHIP (ingest) and WHEP (egress) per RFC 9725: one HTTP POST carries the complete SDP offer
//! and gets the answer; the session lives at the returned `Location` until `DELETE`.
//!
//! A WHIP client that offers its audio as `sendrecv` also hears the room's agent on that same
//! m-line (an extension RFC 9725 permits: the answer simply mirrors the offer's direction), which
//! is how a non-browser client talks to an agent with one request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dartmouth_media::driver::{DriverError, NOTICE_CAPACITY};
use dartmouth_media::{MediaHandle, PeerId, PeerNotice};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::agent::{AGENT_MESSAGE_CAPACITY, AgentBridge};
use crate::gateway::{Gateway, error_response};
use crate::proto::{AgentOutput, MAX_MESSAGE_BYTES};
use crate::token::TokenError;

/// A WHIP or WHEP session.
pub(crate) struct HttpSession {
    peer: PeerId,
    agent: Option<(AgentBridge, PeerId)>,
    _guard: crate::gateway::SessionGuard,
}

impl HttpSession {
    /// Ends the session and releases its media.
    pub(crate) async fn end(self, media: &MediaHandle) {
        if let Some((bridge, speaker)) = self.agent {
            bridge.stop().await;
            media.remove(speaker).await;
        }
        media.remove(self.peer).await;
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WhipQuery {
    agent: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
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
    room: Path<String>,
    query: Query<WhipQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, room, query.0.agent, headers, body, Kind::Whip).await
}

pub(crate) async fn whep_post(
    state: State<Arc<Gateway>>,
    room: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, room, Some("none".into()), headers, body, Kind::Whep).await
}

async fn create(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    agent: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let claims = match gateway.keys.verify(token, &room) {
        Ok(claims) => claims,
        Err(e) => {
            let mut response = error_response(StatusCode::UNAUTHORIZED, e.to_string());
            let challenge = match e {
                TokenError::Missing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            return response;
        }
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
    let (notice_tx, notices) = mpsc::channel(NOTICE_CAPACITY);
    let (peer, answer) = match gateway.media.add_peer(&room, offer, false, notice_tx).await {
        Ok(added) => added,
        Err(DriverError::Peer(e)) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    // WHIP clients have no event channel: the agent's messages are dropped after logging.
    let (message_tx, messages) = mpsc::channel(AGENT_MESSAGE_CAPACITY);
    let agent = match gateway
        .start_agent(&room, peer, agent, grants, AgentOutput::Audio, message_tx)
        .await
    {
        Ok(agent) => agent.map(|(_, bridge, speaker)| (bridge, speaker)),
        Err(e) => {
            gateway.media.remove(peer).await;
            return error_response(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let id = format!("{:016x}", rand_id());
    let location = format!("/{}/{room}/{id}", kind.path());
    gateway.http_sessions.lock().await.insert(
        id.clone(),
        HttpSession {
            peer,
            agent,
            _guard: guard,
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
        session.end(&gateway.media).await;
    }
}

pub(crate) async fn session_delete(
    State(gateway): State<Arc<Gateway>>,
    Path((_room, id)): Path<(String, String)>,
) -> Response {
    let session = gateway.http_sessions.lock().await.remove(&id);
    match session {
        Some(session) => {
            session.end(&gateway.media).await;
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

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
