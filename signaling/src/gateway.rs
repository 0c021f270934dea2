//! The gateway's signaling routes: `/ws`, `/api/token`, `/api/agents`, `/whip/{room}`,
//! `/whep/{room}`, and the shared state behind them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use dartmouth_media::{MediaHandle, PeerId};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};

use crate::agent::{AgentBridge, SharedAgentFactory};
use crate::proto::{AgentOutput, ServerMessage};
use crate::token::{Grants, TokenError, TokenKeys};
use crate::{whip, ws};

/// Most concurrent sessions (WebSocket + WHIP + WHEP) one gateway accepts.
pub const MAX_SESSIONS: usize = 256;
/// Default token lifetime of `/api/token`, in seconds.
const DEFAULT_TTL_SECS: u64 = 3600;

/// Everything the signaling routes share.
pub struct Gateway {
    pub(crate) media: MediaHandle,
    pub(crate) keys: TokenKeys,
    pub(crate) agents: SharedAgentFactory,
    pub(crate) dev_tokens: bool,
    pub(crate) sessions: AtomicUsize,
    pub(crate) http_sessions: Mutex<HashMap<String, whip::HttpSession>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// WebSocket members per room: their peer, identity and message queue (for room events).
    members: std::sync::Mutex<HashMap<String, Vec<Member>>>,
}

/// A WebSocket participant as the room sees it.
struct Member {
    peer: PeerId,
    identity: String,
    messages: mpsc::Sender<ServerMessage>,
}

impl Gateway {
    /// Builds the shared state. `dev_tokens` enables `POST /api/token`; `shutdown` flips to
    /// `true` when the process is stopping (sessions then say goodbye and end).
    pub fn new(
        media: MediaHandle,
        keys: TokenKeys,
        agents: SharedAgentFactory,
        dev_tokens: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            media,
            keys,
            agents,
            dev_tokens,
            sessions: AtomicUsize::new(0),
            http_sessions: Mutex::new(HashMap::new()),
            shutdown,
            members: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Sessions currently running.
    pub fn active_sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The media handle.
    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    /// Waits (bounded) until every session has ended, after shutdown was signalled.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.active_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sessions: Vec<_> = self.http_sessions.lock().await.drain().collect();
        for (_, session) in sessions {
            session.end(&self.media).await;
        }
    }

    /// Records a participant in `room`, tells the others, and returns who was already there.
    pub(crate) fn enter_room(
        &self,
        room: &str,
        peer: PeerId,
        identity: &str,
        messages: mpsc::Sender<ServerMessage>,
    ) -> Vec<String> {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let present = members.entry(room.to_string()).or_default();
        let others: Vec<String> = present.iter().map(|m| m.identity.clone()).collect();
        for member in present.iter() {
            let _ = member.messages.try_send(ServerMessage::ParticipantJoined {
                identity: identity.to_string(),
            });
        }
        present.push(Member {
            peer,
            identity: identity.to_string(),
            messages,
        });
        others
    }

    /// Removes a participant from `room` and tells the others.
    pub(crate) fn leave_room(&self, room: &str, peer: PeerId) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let Some(present) = members.get_mut(room) else {
            return;
        };
        let Some(index) = present.iter().position(|m| m.peer == peer) else {
            return;
        };
        let left = present.swap_remove(index);
        for member in present.iter() {
            let _ = member.messages.try_send(ServerMessage::ParticipantLeft {
                identity: left.identity.clone(),
            });
        }
        if present.is_empty() {
            members.remove(room);
        }
    }

    /// Takes a session slot, or `None` at capacity.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<SessionGuard> {
        let previous = self.sessions.fetch_add(1, Ordering::SeqCst);
        if previous >= MAX_SESSIONS {
            self.sessions.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(SessionGuard(self.clone()))
    }

    /// Starts the named (or default) agent listening to `person` in `room`, if any.
    pub(crate) async fn start_agent(
        self: &Arc<Self>,
        room: &str,
        person: PeerId,
        name: Option<String>,
        grants: Grants,
        output: AgentOutput,
        messages: mpsc::Sender<ServerMessage>,
    ) -> Result<Option<(String, AgentBridge, PeerId)>, AgentStartError> {
        let Some(name) = name.or_else(|| self.agents.default_agent(room)) else {
            return Ok(None);
        };
        if name == "none" {
            return Ok(None);
        }
        if !grants.agent {
            return Err(AgentStartError::NotGranted);
        }
        if !self.agents.agents().iter().any(|a| a.name == name) {
            return Err(AgentStartError::Unknown(name));
        }
        let factory = self.agents.clone();
        let agent_name = name.clone();
        let session = tokio::task::spawn_blocking(move || factory.start(&agent_name, output))
            .await
            .map_err(|e| AgentStartError::Failed(e.to_string()))?
            .map_err(AgentStartError::Failed)?;
        let speaker = self
            .media
            .add_virtual(room)
            .await
            .map_err(|e| AgentStartError::Failed(e.to_string()))?;
        let (tap_tx, tap_rx) = mpsc::channel(dartmouth_media::driver::TAP_CAPACITY);
        self.media
            .tap(person, Some(tap_tx))
            .await
            .map_err(|e| AgentStartError::Failed(e.to_string()))?;
        let bridge = AgentBridge::start(self.media.clone(), speaker, session, tap_rx, messages);
        Ok(Some((name, bridge, speaker)))
    }
}

/// Why an agent did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentStartError {
    #[error("the token does not grant bringing an agent")]
    NotGranted,
    #[error("no agent named {0:?} is configured")]
    Unknown(String),
    #[error("the agent failed to start: {0}")]
    Failed(String),
}

/// Holds one session slot; released on drop.
pub(crate) struct SessionGuard(Arc<Gateway>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The signaling routes.
pub fn routes(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/token", post(issue_token))
        .route("/api/agents", get(list_agents))
        .route("/whip/{room}", post(whip::whip_post))
        .route(
            "/whip/{room}/{id}",
            delete(whip::session_delete).patch(whip::trickle_unsupported),
        )
        .route("/whep/{room}", post(whip::whep_post))
        .route(
            "/whep/{room}/{id}",
            delete(whip::session_delete).patch(whip::trickle_unsupported),
        )
        .with_state(gateway)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    grants: Option<Grants>,
}

/// A plain error response with a JSON body `{error}`.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn issue_token(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !gateway.dev_tokens {
        return error_response(
            StatusCode::NOT_FOUND,
            "development tokens are disabled; mint room tokens from your backend or the platform",
        );
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    match gateway.keys.issue(
        &request.room,
        &request.identity,
        request.grants.unwrap_or_default(),
        ttl,
    ) {
        Ok(token) => Json(json!({
            "token": token,
            "room": request.room,
            "identity": request.identity,
            "expires_in": ttl,
        }))
        .into_response(),
        Err(TokenError::Issue(reason)) => error_response(StatusCode::BAD_REQUEST, reason),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_agents(State(gateway): State<Arc<Gateway>>) -> Response {
    Json(json!({
        "default": gateway.agents.default_agent(""),
        "agents": gateway.agents.agents(),
    }))
    .into_response()
}
