//! WebSocket signaling: one connection is one participant's session (see [`crate::proto`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use dartmouth_media::driver::DriverError;
use dartmouth_media::driver::NOTICE_CAPACITY;
use dartmouth_media::{CloseReason, PeerId, PeerNotice};
use tokio::sync::mpsc;

use crate::agent::{AGENT_MESSAGE_CAPACITY, AgentBridge};
use crate::gateway::{AgentStartError, Gateway};
use crate::proto::{
    AgentOutput, ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, MAX_TEXT_CHARS, PROTOCOL_VERSION,
    ServerMessage,
};

/// How long a new connection may take to send its join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame the WebSocket layer reads (bigger ones close the connection); messages above
/// [`MAX_MESSAGE_BYTES`] but below this get an error and the connection stays open.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

pub(crate) async fn upgrade(ws: WebSocketUpgrade, State(gateway): State<Arc<Gateway>>) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let Some(_guard) = gateway.enter() else {
                let mut socket = socket;
                let busy =
                    ServerMessage::error(ErrorCode::Unavailable, "the gateway is at capacity");
                let _ = socket.send(Message::Text(busy.to_json().into())).await;
                return;
            };
            Session::new(gateway, socket).run().await;
        })
}

struct Joined {
    room: String,
    peer: PeerId,
    agent: Option<(AgentBridge, PeerId)>,
}

struct Session {
    gateway: Arc<Gateway>,
    socket: WebSocket,
    joined: Option<Joined>,
}

enum Flow {
    Continue,
    End(String),
}

impl Session {
    fn new(gateway: Arc<Gateway>, socket: WebSocket) -> Self {
        Self {
            gateway,
            socket,
            joined: None,
        }
    }

    async fn run(mut self) {
        let (notice_tx, mut notices) = mpsc::channel(NOTICE_CAPACITY);
        let (message_tx, mut messages) = mpsc::channel(AGENT_MESSAGE_CAPACITY);
        let mut shutdown = self.gateway.shutdown.clone();
        let join_deadline = tokio::time::sleep(JOIN_TIMEOUT);
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
                message = messages.recv() => {
                    if let Some(message) = message {
                        self.forward_agent_message(message).await;
                    }
                    Flow::Continue
                }
                _ = &mut join_deadline, if self.joined.is_none() => {
                    Flow::End(format!("no join within {} s", JOIN_TIMEOUT.as_secs()))
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
                self.join(&token, &sdp, agent, output, notices, messages)
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
                if let Some((bridge, _)) = self.joined.as_ref().and_then(|j| j.agent.as_ref()) {
                    bridge
                        .muted
                        .store(muted, std::sync::atomic::Ordering::Relaxed);
                }
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

    async fn join(
        &mut self,
        token: &str,
        sdp: &str,
        agent: Option<String>,
        output: AgentOutput,
        notices: &mpsc::Sender<PeerNotice>,
        messages: &mpsc::Sender<ServerMessage>,
    ) -> Flow {
        let claims = match self.gateway.keys.verify_any_room(token) {
            Ok(claims) => claims,
            Err(e) => {
                self.send(ServerMessage::error(ErrorCode::Unauthorized, e.to_string()))
                    .await;
                return Flow::Continue;
            }
        };
        let room = claims.room.clone();
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
        let started = self
            .gateway
            .start_agent(
                &room,
                peer,
                agent,
                claims.grants(),
                output,
                messages.clone(),
            )
            .await;
        let (agent_name, agent) = match started {
            Ok(Some((name, bridge, speaker))) => (Some(name), Some((bridge, speaker))),
            Ok(None) => (None, None),
            Err(e) => {
                self.gateway.media.remove(peer).await;
                let code = match e {
                    AgentStartError::NotGranted => ErrorCode::Unauthorized,
                    AgentStartError::Unknown(_) => ErrorCode::UnknownAgent,
                    AgentStartError::Failed(_) => ErrorCode::Unavailable,
                };
                self.send(ServerMessage::error(code, e.to_string())).await;
                return Flow::Continue;
            }
        };
        tracing::info!(%room, identity = %claims.sub, %peer, agent = ?agent_name, "joined");
        let present = self
            .gateway
            .enter_room(&room, peer, &claims.sub, messages.clone());
        self.joined = Some(Joined {
            room: room.clone(),
            peer,
            agent,
        });
        self.send(ServerMessage::Joined {
            v: PROTOCOL_VERSION,
            room,
            identity: claims.sub,
            sdp: answer,
            agent: agent_name,
        })
        .await;
        for identity in present {
            self.send(ServerMessage::ParticipantJoined { identity })
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
                bridge.stop().await;
                self.gateway.media.remove(speaker).await;
            }
            self.gateway.leave_room(&joined.room, joined.peer);
            self.gateway.media.remove(joined.peer).await;
        }
    }
}

const _: () = assert!(MAX_MESSAGE_BYTES < MAX_FRAME_BYTES);
