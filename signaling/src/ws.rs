//! WebSocket signaling: one connection is one participant's session (see [`crate::proto`]).

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::Response;
use dartmouth_media::driver::DriverError;
use dartmouth_media::driver::NOTICE_CAPACITY;
use dartmouth_media::{CloseReason, PeerId, PeerNotice};
use tokio::sync::mpsc;

use crate::agent::{AGENT_MESSAGE_CAPACITY, AgentBridge};
use crate::gateway::{AgentStart, AgentStartError, Gateway, SessionGuard, error_response};
use crate::limits::{PeerAddr, Permit, Refusal};
use crate::proto::{
    ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, MAX_METADATA_BYTES, MAX_TEXT_CHARS,
    PROTOCOL_VERSION, ServerMessage,
};
use crate::rooms::{Ender, Member, MemberKind};

/// Largest frame the WebSocket layer reads (bigger ones close the connection); messages above
/// [`MAX_MESSAGE_BYTES`] but below this get an error and the connection stays open.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Upgrades to a WebSocket when the client's address is within its limits. The connection holds
/// no session slot until a join's token verifies ([`crate::limits`]).
pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    PeerAddr(ip): PeerAddr,
    State(gateway): State<Arc<Gateway>>,
) -> Response {
    let permit = match gateway.limits.admit_connection(ip) {
        Ok(permit) => permit,
        Err(refusal) => return refused(refusal),
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            Session::new(gateway, socket, permit).run().await;
        })
}

/// The HTTP answer to a refused client: 429 (with `Retry-After` when known), or 503 when the
/// gateway as a whole is full.
pub(crate) fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::PendingTotal => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut response = error_response(status, refusal.to_string());
    if let Some(secs) = refusal.retry_after()
        && let Ok(value) = header::HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

struct Joined {
    room: String,
    peer: PeerId,
    agent: Option<(AgentBridge, PeerId)>,
    /// The session slot, taken once the token verified.
    _slot: SessionGuard,
}

struct Session {
    gateway: Arc<Gateway>,
    socket: WebSocket,
    joined: Option<Joined>,
    /// This connection's place in its address's counts: pending until joined.
    permit: Permit,
}

enum Flow {
    Continue,
    End(String),
}

impl Session {
    fn new(gateway: Arc<Gateway>, socket: WebSocket, permit: Permit) -> Self {
        Self {
            gateway,
            socket,
            joined: None,
            permit,
        }
    }

    async fn run(mut self) {
        let (notice_tx, mut notices) = mpsc::channel(NOTICE_CAPACITY);
        let (message_tx, mut messages) = mpsc::channel(AGENT_MESSAGE_CAPACITY);
        let mut shutdown = self.gateway.shutdown.clone();
        let join_timeout = self.gateway.limits.config().join_deadline;
        let join_deadline = tokio::time::sleep(join_timeout);
        tokio::pin!(join_deadline);
        let reason = loop {
            let flow = tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        self.on_text(text.as_str(), &notice_tx, &message_tx).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.send(ServerMessage::error(ErrorCode::BadMessage, "binary frames are not part of the protocol; send JSON text")).await;
                        Flow::Continue
                    }
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Ok(_)) => Flow::Continue,
                    Some(Err(e)) => break Some(format!("connection error: {e}")),
                },
                notice = notices.recv() => match notice {
                    Some(notice) => self.on_notice(notice).await,
                    None => Flow::Continue,
                },
                message = messages.recv() => match message {
                    // Ended from outside: kicked, or the room closed.
                    Some(ServerMessage::Bye { reason }) => Flow::End(reason),
                    Some(message) => {
                        self.forward_agent_message(message).await;
                        Flow::Continue
                    }
                    None => Flow::Continue,
                },
                _ = &mut join_deadline, if self.joined.is_none() => {
                    Flow::End(format!("no join within {:.1} s", join_timeout.as_secs_f64()))
                }
                _ = shutdown.changed() => Flow::End("the gateway is shutting down".into()),
            };
            if let Flow::End(reason) = flow {
                break Some(reason);
            }
        };
        if let Some(reason) = reason {
            self.send(ServerMessage::Bye { reason }).await;
            let _ = self.socket.send(Message::Close(None)).await;
        }
        self.leave().await;
    }

    async fn on_text(
        &mut self,
        text: &str,
        notices: &mpsc::Sender<PeerNotice>,
        messages: &mpsc::Sender<ServerMessage>,
    ) -> Flow {
        let message = match ClientMessage::decode(text) {
            Ok(message) => message,
            Err(e) => {
                self.send(e.to_server_message()).await;
                return Flow::Continue;
            }
        };
        match message {
            ClientMessage::Join {
                v,
                token,
                sdp,
                agent,
                output,
                listen,
                metadata,
            } => {
                if self.joined.is_some() {
                    self.send(ServerMessage::error(ErrorCode::BadState, "already joined"))
                        .await;
                    return Flow::Continue;
                }
                if v != PROTOCOL_VERSION {
                    self.send(ServerMessage::error(
                        ErrorCode::UnsupportedVersion,
                        format!("protocol version {v} is not supported; this gateway speaks {PROTOCOL_VERSION}"),
                    ))
                    .await;
                    return Flow::Continue;
                }
                let start = AgentStart {
                    name: agent,
                    output,
                    listen,
                };
                self.join(&token, &sdp, start, metadata, notices, messages)
                    .await
            }
            ClientMessage::Candidate { candidate } => {
                let Some(joined) = &self.joined else {
                    return self.not_joined().await;
                };
                if let Err(e) = self
                    .gateway
                    .media
                    .add_candidate(joined.peer, &candidate)
                    .await
                {
                    self.send(ServerMessage::error(ErrorCode::BadSdp, e.to_string()))
                        .await;
                }
                Flow::Continue
            }
            ClientMessage::Text { text } => {
                self.on_typed(text).await;
                Flow::Continue
            }
            ClientMessage::Mute { muted } => {
                let Some(joined) = &self.joined else {
                    return self.not_joined().await;
                };
                if let Some((bridge, _)) = &joined.agent {
                    bridge
                        .muted
                        .store(muted, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = self.gateway.media.set_muted(joined.peer, muted).await;
                self.gateway
                    .rooms
                    .set_muted(&joined.room, joined.peer, muted);
                Flow::Continue
            }
            ClientMessage::Subscribe { participant } => self.subscribe(&participant, true).await,
            ClientMessage::Unsubscribe { participant } => self.subscribe(&participant, false).await,
            ClientMessage::Metadata { metadata } => {
                let Some(joined) = &self.joined else {
                    return self.not_joined().await;
                };
                if metadata.len() > MAX_METADATA_BYTES {
                    self.send(ServerMessage::error(
                        ErrorCode::TooLarge,
                        format!("metadata is limited to {MAX_METADATA_BYTES} bytes"),
                    ))
                    .await;
                    return Flow::Continue;
                }
                self.gateway
                    .rooms
                    .set_metadata(&joined.room, joined.peer, metadata);
                Flow::Continue
            }
            ClientMessage::Answer { sdp } => {
                let Some(joined) = &self.joined else {
                    return self.not_joined().await;
                };
                if let Err(e) = self.gateway.media.accept_answer(joined.peer, &sdp).await {
                    self.send(ServerMessage::error(ErrorCode::BadSdp, e.to_string()))
                        .await;
                }
                Flow::Continue
            }
            ClientMessage::Ping => {
                self.send(ServerMessage::Pong).await;
                Flow::Continue
            }
            ClientMessage::Leave => Flow::End("left".into()),
        }
    }

    async fn subscribe(&mut self, participant: &str, subscribed: bool) -> Flow {
        let Some(joined) = &self.joined else {
            return self.not_joined().await;
        };
        let Some(source) = self.gateway.rooms.peer_of(&joined.room, participant) else {
            self.send(ServerMessage::error(
                ErrorCode::UnknownParticipant,
                format!("no participant {participant:?} in the room"),
            ))
            .await;
            return Flow::Continue;
        };
        let peer = joined.peer;
        if let Err(e) = self
            .gateway
            .media
            .set_subscribed(peer, source, subscribed)
            .await
        {
            self.send(ServerMessage::error(ErrorCode::Media, e.to_string()))
                .await;
        }
        Flow::Continue
    }

    async fn join(
        &mut self,
        token: &str,
        sdp: &str,
        agent: AgentStart,
        metadata: Option<String>,
        notices: &mpsc::Sender<PeerNotice>,
        messages: &mpsc::Sender<ServerMessage>,
    ) -> Flow {
        if let Err(refusal) = self.gateway.limits.check_join(&self.permit) {
            self.send(ServerMessage::error(
                ErrorCode::RateLimited,
                refusal.to_string(),
            ))
            .await;
            return Flow::Continue;
        }
        let claims = match self.gateway.keys.verify_any_room(token) {
            Ok(claims) => claims,
            Err(e) => {
                self.send(ServerMessage::error(ErrorCode::Unauthorized, e.to_string()))
                    .await;
                return Flow::Continue;
            }
        };
        // Only now, with the token verified, does the connection take a session slot.
        let Some(slot) = self.gateway.enter() else {
            self.send(ServerMessage::error(
                ErrorCode::Unavailable,
                "the gateway is at capacity",
            ))
            .await;
            return Flow::End("the gateway is at capacity".into());
        };
        let room = claims.room.clone();
        let metadata = metadata.unwrap_or_default();
        if metadata.len() > MAX_METADATA_BYTES {
            self.send(ServerMessage::error(
                ErrorCode::TooLarge,
                format!("metadata is limited to {MAX_METADATA_BYTES} bytes"),
            ))
            .await;
            return Flow::Continue;
        }
        if let Err(e) = self.gateway.rooms.admit(&room) {
            self.send(ServerMessage::error(ErrorCode::RoomFull, e.to_string()))
                .await;
            return Flow::Continue;
        }
        let (peer, answer) = match self
            .gateway
            .media
            .add_peer(&room, sdp, true, notices.clone())
            .await
        {
            Ok(added) => added,
            Err(DriverError::Peer(e)) => {
                self.send(ServerMessage::error(ErrorCode::BadSdp, e.to_string()))
                    .await;
                return Flow::Continue;
            }
            Err(e) => return Flow::End(e.to_string()),
        };
        let member = Member {
            peer,
            identity: claims.sub.clone(),
            kind: MemberKind::WebSocket,
            metadata,
            muted: false,
            messages: Some(messages.clone()),
            ender: Ender::Messages,
        };
        let present = match self.gateway.rooms.enter(&room, member) {
            Ok(present) => present,
            Err(e) => {
                self.gateway.media.remove(peer).await;
                self.send(ServerMessage::error(ErrorCode::RoomFull, e.to_string()))
                    .await;
                return Flow::Continue;
            }
        };
        let started = self
            .gateway
            .start_agent(&claims, peer, agent, messages.clone())
            .await;
        let (agent_name, agent) = match started {
            Ok(Some((name, bridge, speaker))) => (Some(name), Some((bridge, speaker))),
            Ok(None) => (None, None),
            Err(e) => {
                self.gateway.rooms.leave(&room, peer);
                self.gateway.media.remove(peer).await;
                let code = match e {
                    AgentStartError::NotGranted => ErrorCode::Unauthorized,
                    AgentStartError::Unknown(_) => ErrorCode::UnknownAgent,
                    AgentStartError::Failed(_) | AgentStartError::Unavailable(_) => {
                        ErrorCode::Unavailable
                    }
                };
                self.send(ServerMessage::error(code, e.to_string())).await;
                return Flow::Continue;
            }
        };
        tracing::info!(%room, identity = %claims.sub, %peer, agent = ?agent_name, "joined");
        self.permit.mark_authenticated();
        self.joined = Some(Joined {
            room: room.clone(),
            peer,
            agent,
            _slot: slot,
        });
        self.send(ServerMessage::Joined {
            v: PROTOCOL_VERSION,
            room,
            identity: claims.sub,
            sdp: answer,
            agent: agent_name,
        })
        .await;
        for (identity, metadata) in present {
            let metadata = (!metadata.is_empty()).then_some(metadata);
            self.send(ServerMessage::ParticipantJoined { identity, metadata })
                .await;
        }
        Flow::Continue
    }

    async fn on_typed(&mut self, text: String) {
        let Some(joined) = &self.joined else {
            self.not_joined().await;
            return;
        };
        if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS {
            self.send(ServerMessage::error(
                ErrorCode::BadMessage,
                format!("text must be 1-{MAX_TEXT_CHARS} characters"),
            ))
            .await;
            return;
        }
        match &joined.agent {
            Some((bridge, _)) => {
                if bridge.text.try_send(text).is_err() {
                    self.send(ServerMessage::error(
                        ErrorCode::Unavailable,
                        "the agent is busy; try again",
                    ))
                    .await;
                }
            }
            None => {
                self.send(ServerMessage::error(
                    ErrorCode::BadState,
                    "there is no agent in this room",
                ))
                .await;
            }
        }
    }

    async fn on_notice(&mut self, notice: PeerNotice) -> Flow {
        match notice {
            PeerNotice::Connected => Flow::Continue,
            PeerNotice::Offer(sdp) => {
                self.send(ServerMessage::Offer { sdp }).await;
                Flow::Continue
            }
            PeerNotice::Text(text) => {
                match ClientMessage::decode(&text) {
                    Ok(ClientMessage::Text { text }) => self.on_typed(text).await,
                    Ok(_) => {
                        self.send(ServerMessage::error(
                            ErrorCode::BadMessage,
                            "only text messages are accepted on the data channel",
                        ))
                        .await;
                    }
                    Err(e) => self.send(e.to_server_message()).await,
                }
                Flow::Continue
            }
            PeerNotice::Closed(reason) => Flow::End(match reason {
                CloseReason::ConnectTimeout => format!(
                    "media did not connect (ICE/DTLS) within {} s",
                    dartmouth_media::core::CONNECT_TIMEOUT.as_secs()
                ),
                CloseReason::Disconnected => "media connection lost".into(),
                CloseReason::Removed => "removed".into(),
                CloseReason::Failed(e) => format!("media failed: {e}"),
            }),
        }
    }

    async fn forward_agent_message(&mut self, message: ServerMessage) {
        if let (Some(joined), ServerMessage::Transcript { .. }) = (&self.joined, &message) {
            // The data channel carries transcripts too, for clients that chat over it.
            let _ = self
                .gateway
                .media
                .send_text(joined.peer, message.to_json())
                .await;
        }
        self.send(message).await;
    }

    async fn not_joined(&mut self) -> Flow {
        self.send(ServerMessage::error(ErrorCode::BadState, "join first"))
            .await;
        Flow::Continue
    }

    async fn send(&mut self, message: ServerMessage) {
        let _ = self
            .socket
            .send(Message::Text(message.to_json().into()))
            .await;
    }

    async fn leave(&mut self) {
        if let Some(joined) = self.joined.take() {
            if let Some((bridge, speaker)) = joined.agent {
                self.gateway.stop_agent(&joined.room, bridge, speaker).await;
            }
            self.gateway.rooms.leave(&joined.room, joined.peer);
            self.gateway.media.remove(joined.peer).await;
        }
    }
}

const _: () = assert!(MAX_MESSAGE_BYTES < MAX_FRAME_BYTES);
