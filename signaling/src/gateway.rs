//! The gateway's signaling routes: `/ws`, `/api/token`, `/api/agents`, `/api/rooms…`,
//! `/whip/{room}`, `/whep/{room}`, and the shared state behind them.

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
use dartmouth_media::{Listen, MediaHandle, PeerId, RoomEvent};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};

use crate::agent::{AgentBridge, AgentRefusal, AgentRequest, SharedAgentFactory};
use crate::limits::{Limits, LimitsConfig};
use crate::proto::{AgentListen, AgentOutput, ServerMessage};
use crate::rooms::{Ender, Member, MemberKind, RoomRegistry};
use crate::token::{Grants, RoomClaims, TokenError, TokenKeys};
use crate::{rooms_api, whip, ws};

/// Most concurrent sessions (WebSocket + WHIP + WHEP) one gateway accepts.
pub const MAX_SESSIONS: usize = 256;
/// Default token lifetime of `/api/token`, in seconds.
const DEFAULT_TTL_SECS: u64 = 3600;

/// Where the gateway reports participants entering and leaving rooms (the platform's event
/// system in the binary). Called with the room lock held: queue, never block.
pub trait RoomEvents: Send + Sync + 'static {
    /// `identity` entered `room`.
    fn joined(&self, room: &str, identity: &str);
    /// `identity` left `room`.
    fn left(&self, room: &str, identity: &str);
}

/// Everything the signaling routes share.
pub struct Gateway {
    pub(crate) media: MediaHandle,
    pub(crate) keys: TokenKeys,
    pub(crate) agents: SharedAgentFactory,
    pub(crate) dev_tokens: bool,
    pub(crate) sessions: AtomicUsize,
    pub(crate) http_sessions: Mutex<HashMap<String, whip::HttpSession>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Who is in which room.
    pub(crate) rooms: Arc<RoomRegistry>,
    /// Recordings running, by id.
    pub(crate) recordings: Mutex<HashMap<String, crate::recording::Recording>>,
    /// Where recordings are written.
    recordings_dir: std::sync::Mutex<std::path::PathBuf>,
    /// Where finished recordings go instead of staying in `recordings_dir` (set once).
    recording_store: std::sync::OnceLock<Arc<dyn crate::recording::RecordingStore>>,
    /// Per-address limits, apart from the session cap (see [`crate::limits`]).
    pub(crate) limits: Arc<Limits>,
    /// The SIP bridge, when it runs (for `/api/sip/…`).
    pub(crate) sip: std::sync::Mutex<Option<crate::sip::SipHandle>>,
}

impl Gateway {
    /// Builds the shared state and starts its room-keeping task (active-speaker events, room
    /// time limits, empty-room timeouts; it ends at shutdown). `dev_tokens` enables
    /// `POST /api/token`; `shutdown` flips to `true` when the process is stopping (sessions then
    /// say goodbye and end). Call inside a Tokio runtime.
    pub fn new(
        media: MediaHandle,
        keys: TokenKeys,
        agents: SharedAgentFactory,
        dev_tokens: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Self::with_limits(
            media,
            keys,
            agents,
            dev_tokens,
            shutdown,
            LimitsConfig::default(),
        )
    }

    /// [`Gateway::new`] with per-address limits other than the defaults.
    pub fn with_limits(
        media: MediaHandle,
        keys: TokenKeys,
        agents: SharedAgentFactory,
        dev_tokens: bool,
        shutdown: watch::Receiver<bool>,
        limits: LimitsConfig,
    ) -> Arc<Self> {
        let gateway = Arc::new(Self {
            media,
            keys,
            agents,
            dev_tokens,
            sessions: AtomicUsize::new(0),
            http_sessions: Mutex::new(HashMap::new()),
            shutdown,
            rooms: Arc::new(RoomRegistry::default()),
            recordings: Mutex::new(HashMap::new()),
            recording_store: std::sync::OnceLock::new(),
            recordings_dir: std::sync::Mutex::new(
                std::env::temp_dir().join("dartmouth-recordings"),
            ),
            limits: Limits::new(limits),
            sip: std::sync::Mutex::new(None),
        });
        tokio::spawn(keep_rooms(Arc::downgrade(&gateway)));
        gateway
    }

    /// The room registry.
    pub fn rooms(&self) -> &RoomRegistry {
        &self.rooms
    }

    /// Where recordings go (default: a `dartmouth-recordings` directory under the temp dir).
    pub fn set_recordings_dir(&self, dir: std::path::PathBuf) {
        *self
            .recordings_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = dir;
    }

    pub(crate) fn recordings_dir(&self) -> std::path::PathBuf {
        self.recordings_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends a participant's session from outside (kick, room closed), telling it `reason`.
    pub(crate) async fn end_member(self: &Arc<Self>, member: &Member, reason: &str) {
        match &member.ender {
            Ender::Messages => {
                if let Some(tx) = &member.messages {
                    let _ = tx
                        .send(ServerMessage::Bye {
                            reason: reason.to_string(),
                        })
                        .await;
                }
            }
            Ender::Http(id) => {
                let session = self.http_sessions.lock().await.remove(id);
                if let Some(session) = session {
                    session.end(self).await;
                }
            }
            Ender::WithOwner => {}
        }
    }

    /// The per-address limits and their counts.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Hands finished recordings to `store` from now on (once; later calls are ignored).
    pub fn set_recording_store(&self, store: Arc<dyn crate::recording::RecordingStore>) {
        let _ = self.recording_store.set(store);
    }

    pub(crate) fn recording_store(&self) -> Option<&dyn crate::recording::RecordingStore> {
        self.recording_store.get().map(|s| s.as_ref())
    }

    /// Reports room events to `sink` from now on (once; later calls are ignored).
    pub fn set_room_events(&self, sink: Arc<dyn RoomEvents>) {
        self.rooms.set_events(sink);
    }

    /// Connects the running SIP bridge to the HTTP API (`/api/sip/…`).
    pub fn set_sip(&self, sip: Option<crate::sip::SipHandle>) {
        *self.sip.lock().unwrap_or_else(|p| p.into_inner()) = sip;
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
            session.end(self).await;
        }
        let recordings: Vec<_> = self.recordings.lock().await.drain().collect();
        for (_, recording) in recordings {
            let _ = recording.stop(&self.media).await;
        }
    }

    /// Whether `room` has participants.
    pub(crate) fn room_has_members(&self, room: &str) -> bool {
        self.rooms.is_occupied(room)
    }

    /// Sends `message` to every participant of `room` with a message queue (never waits: a
    /// full queue misses the event).
    pub(crate) fn room_event(&self, room: &str, message: ServerMessage) {
        self.rooms.tell_room(room, &message);
    }

    /// Tells `room` that a participant without a WebRTC peer (a SIP caller) left.
    pub(crate) fn leave_room_identity(&self, room: &str, identity: &str) {
        self.room_event(
            room,
            ServerMessage::ParticipantLeft {
                identity: identity.to_string(),
            },
        );
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

    /// Starts the named (or default) agent listening to `person` (or, per `listen`, to the
    /// room's active speaker or everyone), who joined with `claims`, in their room, if any.
    pub(crate) async fn start_agent(
        self: &Arc<Self>,
        claims: &RoomClaims,
        person: PeerId,
        start: AgentStart,
        messages: mpsc::Sender<ServerMessage>,
    ) -> Result<Option<(String, AgentBridge, PeerId)>, AgentStartError> {
        let room = claims.room.as_str();
        let Some(name) = start.name.or_else(|| self.agents.default_agent(room)) else {
            return Ok(None);
        };
        if name == "none" {
            return Ok(None);
        }
        if !claims.grants().agent {
            return Err(AgentStartError::NotGranted);
        }
        if !self.agents.agents().iter().any(|a| a.name == name) {
            return Err(AgentStartError::Unknown(name));
        }
        self.rooms
            .admit(room)
            .map_err(|e| AgentStartError::Failed(e.to_string()))?;
        let factory = self.agents.clone();
        let request = AgentRequest {
            agent: name.clone(),
            room: room.to_string(),
            identity: claims.sub.clone(),
            output: start.output,
            output_rate: 48_000,
            echo_path: false,
            phone: None,
        };
        let session = tokio::task::spawn_blocking(move || factory.start(&request))
            .await
            .map_err(|e| AgentStartError::Failed(e.to_string()))?
            .map_err(|refusal| match refusal {
                AgentRefusal::Unavailable(why) => AgentStartError::Unavailable(why),
                AgentRefusal::Failed(why) => AgentStartError::Failed(why),
            })?;
        let speaker = self
            .media
            .add_agent(room)
            .await
            .map_err(|e| AgentStartError::Failed(e.to_string()))?;
        let (tap_tx, tap_rx) = mpsc::channel(dartmouth_media::driver::TAP_CAPACITY);
        let mode = match start.listen {
            AgentListen::Me => Listen::Participant(person),
            AgentListen::ActiveSpeaker => Listen::ActiveSpeaker,
            AgentListen::Everyone => Listen::Everyone,
        };
        let listening = self.media.listen(speaker, Some((mode, tap_tx))).await;
        let member = Member {
            peer: speaker,
            identity: format!("agent:{name}"),
            kind: MemberKind::Agent,
            metadata: String::new(),
            muted: false,
            messages: None,
            ender: Ender::WithOwner,
        };
        if let Err(e) = listening
            .map_err(|e| e.to_string())
            .and_then(|()| self.rooms.enter(room, member).map_err(|e| e.to_string()))
        {
            self.media.remove(speaker).await;
            return Err(AgentStartError::Failed(e));
        }
        let seat = self.rooms.seat(room);
        let bridge = AgentBridge::start(
            self.media.clone(),
            speaker,
            person,
            session,
            tap_rx,
            messages,
            seat,
        );
        Ok(Some((name, bridge, speaker)))
    }

    /// Stops an agent started by [`Gateway::start_agent`] and takes it out of its room.
    pub(crate) async fn stop_agent(&self, room: &str, bridge: AgentBridge, speaker: PeerId) {
        bridge.stop().await;
        self.rooms.leave(room, speaker);
        self.media.remove(speaker).await;
    }
}

/// What agent a session asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentStart {
    /// Its name (`None`: the room's default; `"none"`: no agent).
    pub(crate) name: Option<String>,
    /// Spoken or text answers.
    pub(crate) output: AgentOutput,
    /// Whom it listens to.
    pub(crate) listen: AgentListen,
}

/// How often the room-keeping task looks at room time limits and empty rooms.
const ROOM_KEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// The gateway's room-keeping task: active-speaker events to the rooms' participants, rooms
/// closed at their time limit, empty rooms removed after their timeout. Ends when the gateway
/// is dropped or shuts down.
async fn keep_rooms(gateway: std::sync::Weak<Gateway>) {
    let (mut events, mut shutdown) = match gateway.upgrade() {
        Some(g) => (g.media.room_events(), g.shutdown.clone()),
        None => return,
    };
    let mut tick = tokio::time::interval(ROOM_KEEPING_INTERVAL);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(RoomEvent::ActiveSpeakers { room, speakers }) => {
                    let Some(g) = gateway.upgrade() else { return };
                    let speakers = g.rooms.identities(&room, &speakers);
                    g.rooms.broadcast(&room, &ServerMessage::ActiveSpeakers { speakers });
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let Some(g) = gateway.upgrade() else { return };
                for (room, members) in g.rooms.expire(std::time::Instant::now()) {
                    tracing::info!(%room, "room reached its time limit");
                    for member in members {
                        g.end_member(&member, "the room's time limit was reached").await;
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
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
    #[error("no agent available: {0}")]
    Unavailable(String),
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
        .merge(rooms_api::routes())
        .route("/whip/{room}", post(whip::whip_post))
        .route(
            "/whip/{room}/{id}",
            delete(whip::whip_delete).patch(whip::trickle_unsupported),
        )
        .route("/whep/{room}", post(whip::whep_post))
        .route(
            "/whep/{room}/{id}",
            delete(whip::whep_delete).patch(whip::trickle_unsupported),
        )
        .merge(crate::sip::api::routes())
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
