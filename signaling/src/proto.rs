//! The client ↔ gateway wire protocol, version [`PROTOCOL_VERSION`].
//!
//! Every message is one JSON object with a `"type"` tag, sent as a WebSocket text frame (or as a
//! data-channel string for the subset marked below). Unknown types, missing fields and oversized
//! messages are refused with an [`ServerMessage::Error`] and the connection stays open.
//!
//! A session, as a browser sees it:
//! 1. `POST /api/token` (development) or its own backend hands it a room token.
//! 2. It opens `/ws`, sends [`ClientMessage::Join`] with the token and its SDP offer.
//! 3. The gateway answers with [`ServerMessage::Joined`] (the SDP answer); ICE and DTLS run on the
//!    gateway's one UDP port. Client candidates may trickle in [`ClientMessage::Candidate`].
//! 4. While the call runs, the gateway streams transcripts, agent states and per-turn latencies.
//! 5. Either side ends it: [`ClientMessage::Leave`] or [`ServerMessage::Bye`].
//!
//! ```
//! use dartmouth_signaling::proto::{ClientMessage, PROTOCOL_VERSION};
//!
//! let join: ClientMessage = serde_json::from_str(
//!     r#"{"type":"join","v":1,"token":"t","sdp":"v=0...","agent":"assistant"}"#,
//! ).unwrap();
//! assert!(matches!(join, ClientMessage::Join { v: PROTOCOL_VERSION, .. }));
//! ```

use serde::{Deserialize, Serialize};

/// The protocol version this gateway speaks. A join with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message the gateway accepts, in bytes (an SDP offer is 2–6 KB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest typed message to an agent, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// Largest participant metadata, in bytes.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// Whom an agent listens to in a room with several people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentListen {
    /// The participant who brought it.
    #[default]
    Me,
    /// Whoever speaks loudest (the room's active speaker).
    ActiveSpeaker,
    /// Everyone, mixed; each transcript names who spoke.
    Everyone,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Join a room: the first message on a connection.
    Join {
        /// Protocol version; must equal [`PROTOCOL_VERSION`].
        v: u32,
        /// Access token (JWT) naming the room, the identity and the grants.
        token: String,
        /// The client's SDP offer (audio, optionally a data channel).
        sdp: String,
        /// Which configured agent should join the room, if the token grants `agent`
        /// (default: the room's configured agent, or none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// How the agent answers: spoken audio (default) or text only (client-side TTS).
        #[serde(default)]
        output: AgentOutput,
        /// Whom the agent listens to (default: the joining participant).
        #[serde(default)]
        listen: AgentListen,
        /// The participant's metadata, shown to the others (at most [`MAX_METADATA_BYTES`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<String>,
    },
    /// The client's answer to a [`ServerMessage::Offer`] (renegotiation).
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// A trickled ICE candidate of the client.
    Candidate {
        /// The `candidate:` attribute value as the browser gives it (empty = end of candidates).
        candidate: String,
    },
    /// The client's microphone was muted or unmuted: nobody (agent included) hears it while
    /// muted.
    Mute {
        /// Muted or not.
        muted: bool,
    },
    /// A typed message to the agent (also accepted on the data channel).
    Text {
        /// What the person typed (at most [`MAX_TEXT_CHARS`]).
        text: String,
    },
    /// Hear `participant` again (every participant is heard by default).
    Subscribe {
        /// Their identity.
        participant: String,
    },
    /// Stop hearing `participant`.
    Unsubscribe {
        /// Their identity.
        participant: String,
    },
    /// Replace this participant's metadata (the others get [`ServerMessage::ParticipantMetadata`]).
    Metadata {
        /// Free text, e.g. JSON (at most [`MAX_METADATA_BYTES`]).
        metadata: String,
    },
    /// Leave the room; the gateway answers with [`ServerMessage::Bye`] and closes.
    Leave,
    /// Keep-alive; answered with [`ServerMessage::Pong`].
    Ping,
}

/// How the agent answers a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentOutput {
    /// Spoken audio on the agent's track (and text events).
    #[default]
    Audio,
    /// Text events only: the client speaks them with its own TTS.
    Text,
}

/// Whose words a transcript holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The person.
    User,
    /// The agent.
    Agent,
}

/// What the agent is doing, as the demo shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStateWire {
    /// Waiting for the person.
    Listening,
    /// Transcribing and generating.
    Thinking,
    /// Playing an answer.
    Speaking,
    /// Paused because the person talked over it.
    Interrupted,
}

/// One turn's latencies in milliseconds from the end of the person's speech.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TurnLatency {
    /// End-of-turn decision.
    pub end_of_turn_ms: f64,
    /// Final transcript.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stt_ms: Option<f64>,
    /// First LLM token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub llm_first_token_ms: Option<f64>,
    /// First synthesized audio.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tts_first_audio_ms: Option<f64>,
    /// First agent audio packet sent to the client.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_packet_out_ms: Option<f64>,
    /// What ended the turn, and the signals it rested on (spoken turns only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<TurnDecision>,
}

/// Why the end-of-turn detector ended a turn.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TurnDecision {
    /// `model` (Smart Turn was sure enough), `transcript` (the words read complete and the
    /// silence reached their limit), `silence` (the silence limit) or `max_duration`.
    pub reason: String,
    /// Smart Turn's latest probability that the turn was complete.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probability: Option<f64>,
    /// Times Smart Turn was asked about the final pause.
    pub asks: u32,
    /// The threshold in force at the decision.
    pub threshold: f64,
    /// What the speculative transcript read like: `question`, `statement`, `incomplete`,
    /// `unclear`.
    pub transcript_form: String,
    /// The agent's eagerness: `low`, `normal`, `high`.
    pub eagerness: String,
}

/// What the gateway sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// Protocol version.
        v: u32,
        /// The room.
        room: String,
        /// The client's identity (from its token).
        identity: String,
        /// The gateway's SDP answer.
        sdp: String,
        /// The agent in the room, if any.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        agent: Option<String>,
    },
    /// A new SDP offer from the gateway (another participant's track to subscribe to); the client
    /// replies with [`ClientMessage::Answer`].
    Offer {
        /// SDP offer.
        sdp: String,
    },
    /// A transcript, partial (while speaking or generating) or final.
    Transcript {
        /// Who spoke.
        speaker: Speaker,
        /// The words.
        text: String,
        /// Final for this turn, or a partial that will be replaced.
        #[serde(rename = "final")]
        is_final: bool,
        /// The turn.
        turn: u64,
        /// For people's words in a room: the identity of who spoke them.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        participant: Option<String>,
    },
    /// The agent's state changed.
    AgentState {
        /// The new state.
        state: AgentStateWire,
    },
    /// The person barged in: the agent stopped; `heard` is what of its answer was played.
    Interrupted {
        /// The interrupted turn.
        turn: u64,
        /// The answer as heard.
        heard: String,
    },
    /// The person acknowledged over the agent ("uh-huh", "right"); it kept talking.
    Backchannel {
        /// The turn whose answer went on.
        turn: u64,
        /// What they said.
        text: String,
    },
    /// A turn finished; its latencies.
    Latency {
        /// The turn.
        turn: u64,
        /// The numbers.
        #[serde(flatten)]
        latency: TurnLatency,
        /// Providers that served (STT, LLM, TTS).
        providers: [String; 3],
    },
    /// Another participant joined the room.
    ParticipantJoined {
        /// Their identity.
        identity: String,
        /// Their metadata.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        metadata: Option<String>,
    },
    /// A participant changed their metadata.
    ParticipantMetadata {
        /// Their identity.
        identity: String,
        /// The new metadata.
        metadata: String,
    },
    /// A participant was muted or unmuted (by themselves or by the room's administrator).
    ParticipantMuted {
        /// Their identity.
        identity: String,
        /// Muted or not.
        muted: bool,
    },
    /// Who is speaking now, loudest first (agents by their identity `agent:NAME`).
    ActiveSpeakers {
        /// Identities.
        speakers: Vec<String>,
    },
    /// A participant left the room.
    ParticipantLeft {
        /// Their identity.
        identity: String,
    },
    /// A request was refused or something failed; the connection stays open unless a
    /// [`ServerMessage::Bye`] follows.
    Error {
        /// Stable machine-readable code (`bad_message`, `bad_sdp`, `unauthorized`, …).
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
    /// A phone caller in the room pressed keys (DTMF).
    Dtmf {
        /// The caller's identity (`sip:<number>`).
        identity: String,
        /// The digits, in order.
        digits: String,
    },
    /// Progress of an outbound phone call placed into the room (`POST /api/sip/calls`).
    SipCall {
        /// The call's id.
        call_id: String,
        /// `ringing`, `answered`, `busy`, `no_answer`, `failed`, `ended`, `machine`, `human`,
        /// `transfer`.
        state: String,
        /// The SIP status that caused it, when there is one.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        status: Option<u16>,
    },
    /// Answer to [`ClientMessage::Ping`].
    Pong,
    /// The session ended.
    Bye {
        /// Why.
        reason: String,
    },
}

/// Machine-readable error codes of [`ServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was not valid JSON or not a known message.
    BadMessage,
    /// The message was larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Protocol version mismatch.
    UnsupportedVersion,
    /// The token was missing, forged, expired or for another room, or lacks a grant.
    Unauthorized,
    /// The SDP could not be parsed or had nothing the gateway can use.
    BadSdp,
    /// A message that is not valid in the current state (e.g. a second join).
    BadState,
    /// The named agent is not configured.
    UnknownAgent,
    /// The gateway is at capacity.
    Unavailable,
    /// The room is full, closed or over its time limit.
    RoomFull,
    /// No such participant in the room.
    UnknownParticipant,
    /// Media failed (ICE/DTLS timeout, peer lost).
    Media,
    /// The client's address is over a per-minute quota (see `limits`).
    RateLimited,
    /// The agent could not answer a turn (a model failed or was saturated); the session goes on.
    AgentFailed,
}

impl ServerMessage {
    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"bad_message","message":"unserialisable"}"#.into()
        })
    }
}

/// Why a client message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// The wire error for this refusal.
    pub fn to_server_message(&self) -> ServerMessage {
        let code = match self {
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::Invalid(_) => ErrorCode::BadMessage,
        };
        ServerMessage::error(code, self.to_string())
    }
}

impl ClientMessage {
    /// Parses one client message, enforcing the size limit before parsing.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(text.len()));
        }
        serde_json::from_str(text).map_err(|e| DecodeError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_have_stable_wire_names() {
        let latency = ServerMessage::Latency {
            turn: 3,
            latency: TurnLatency {
                end_of_turn_ms: 300.0,
                stt_ms: Some(500.0),
                ..TurnLatency::default()
            },
            providers: ["moonshine".into(), "smollm2".into(), "piper".into()],
        };
        let json: serde_json::Value = serde_json::from_str(&latency.to_json()).unwrap();
        assert_eq!(json["type"], "latency");
        assert_eq!(json["end_of_turn_ms"], 300.0);
        assert!(json.get("llm_first_token_ms").is_none());
        let transcript = ServerMessage::Transcript {
            speaker: Speaker::User,
            text: "hi".into(),
            is_final: true,
            turn: 1,
            participant: Some("alice".into()),
        };
        assert!(transcript.to_json().contains(r#""final":true"#));
        assert!(transcript.to_json().contains(r#""participant":"alice""#));
    }

    #[test]
    fn bad_client_messages_are_refused_with_a_reason() {
        let too_big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert_eq!(
            ClientMessage::decode(&too_big),
            Err(DecodeError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        for bad in [
            "not json",
            r#"{"type":"dance"}"#,
            r#"{"type":"join","v":1}"#,
            r#"{"type":"text","text":"hi","extra":1}"#,
        ] {
            let err = ClientMessage::decode(bad).unwrap_err();
            assert!(matches!(err, DecodeError::Invalid(_)), "{bad}: {err:?}");
            assert!(matches!(
                err.to_server_message(),
                ServerMessage::Error {
                    code: ErrorCode::BadMessage,
                    ..
                }
            ));
        }
        assert_eq!(
            ClientMessage::decode(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        );
    }
}
