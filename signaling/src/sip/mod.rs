//! The SIP bridge: phone calls in and out of rooms and agents.
//!
//! A user agent on UDP and TCP (on `rsipstack`: transactions, dialogs, digest) answers
//! INVITEs routed by the dial plan to a room and an agent, negotiates PCMU, PCMA, G.722 or
//! Opus, and runs each call's RTP through the media crate's sans-IO [`RtpSession`]
//! (latching, RFC 4733 digits, comfort noise) and jitter buffer. The caller talks to the agent in
//! PCM at the codec's rate and is seated in the room as an ordinary participant ([`room`]).
//! The agent's model may press keys on the call and transfer it ([`tools`]).
//!
//! [`RtpSession`]: dartmouth_media::rtp_session::RtpSession
//!
//! ```
//! use dartmouth_signaling::sip::SipSettings;
//!
//! let settings = SipSettings { listen: "127.0.0.1:0".into(), ..SipSettings::default() };
//! assert!(settings.validate().is_ok());
//! ```

pub(crate) mod api;
pub mod call;
pub mod config;
pub mod digest;
pub mod echo;
mod inbound;
pub mod outbound;
pub mod ports;
pub mod register;
pub mod room;
pub mod sdp;
pub mod tools;
mod transfer;
mod ua;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{DialRule, SipSettings, TrunkSettings};
pub use tools::CallTools;
pub use ua::SipServer;

/// Reads bytes as the SIP transport does (a fuzzing and testing entry point): `Some` with the
/// method (or status) of a message that parses, and whether its body would be refused as
/// shorter than its Content-Length; the DTMF digit of the body as SIP INFO would read it.
pub fn read_message(bytes: &[u8]) -> Option<(String, bool, Option<char>)> {
    let message = rsipstack::sip::SipMessage::try_from(bytes).ok()?;
    match message {
        rsipstack::sip::SipMessage::Request(request) => Some((
            request.method.to_string(),
            ua::body_truncated(&request),
            ua::info_digit(&request.body),
        )),
        rsipstack::sip::SipMessage::Response(response) => {
            Some((u16::from(response.status_code).to_string(), false, None))
        }
    }
}

/// Why the SIP bridge could not start or act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// A configuration value is wrong.
    #[error("SIP configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot bind SIP on {0}: {1}")]
    Bind(SocketAddr, String),
    /// No call with this id.
    #[error("no SIP call {0:?}")]
    UnknownCall(String),
    /// The call cannot do this now.
    #[error("{0}")]
    Refused(String),
}

/// Events kept for slow subscribers of [`SipHandle::subscribe`] (older ones are skipped).
pub const SIP_EVENT_CAPACITY: usize = 256;

/// Something a call reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SipEvent {
    /// The call's SIP Call-ID.
    pub call_id: String,
    /// Its room.
    pub room: String,
    /// What happened.
    pub notice: call::CallNotice,
}

/// A cloneable handle on the running bridge, for the HTTP API and the agent tools.
#[derive(Clone)]
pub struct SipHandle {
    pub(crate) shared: Arc<ua::Shared>,
}

impl SipHandle {
    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.shared.call_count()
    }

    /// Every call's notices from now on (digits, transcripts, progress).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SipEvent> {
        self.shared.events.subscribe()
    }

    /// Sends DTMF digits into the call as RFC 4733 telephone-events.
    pub fn send_digits(&self, call_id: &str, digits: &str) -> Result<(), SipError> {
        let calls = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        let entry = calls
            .values()
            .find(|e| e.call_id == call_id)
            .ok_or_else(|| SipError::UnknownCall(call_id.to_string()))?;
        if entry.negotiated.dtmf_pt.is_none() {
            return Err(SipError::Refused(
                "the call did not negotiate telephone-events".into(),
            ));
        }
        entry
            .commands
            .try_send(call::CallCommand::SendDigits(digits.to_string()))
            .map_err(|_| SipError::Refused("the call is busy".into()))
    }

    /// Hangs a call up (BYE).
    pub async fn hangup(&self, call_id: &str) -> Result<(), SipError> {
        let dialog = {
            let calls = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
            calls
                .values()
                .find(|e| e.call_id == call_id)
                .map(|e| e.dialog.clone())
                .ok_or_else(|| SipError::UnknownCall(call_id.to_string()))?
        };
        let _ = dialog.hangup().await;
        self.shared.end_call(&dialog.id().to_string());
        Ok(())
    }

    /// Dials out (see [`outbound::DialRequest`]); returns the Call-ID at once, progress comes
    /// as [`SipEvent`]s and room events.
    pub async fn dial(&self, request: outbound::DialRequest) -> Result<String, SipError> {
        outbound::dial(self.shared.clone(), request).await
    }

    /// Registration state of each trunk that registers.
    pub fn registrations(&self) -> std::collections::HashMap<String, register::RegistrationStatus> {
        self.shared
            .registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Media counters of every finished call, summed.
    pub fn totals(&self) -> call::CallStats {
        *self.shared.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room of a call.
    pub fn room_of(&self, call_id: &str) -> Option<String> {
        let calls = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls
            .values()
            .find(|e| e.call_id == call_id)
            .map(|e| e.room.clone())
    }

    /// The Call-IDs of the calls in `room`.
    pub fn calls_in(&self, room: &str) -> Vec<String> {
        let calls = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls
            .values()
            .filter(|e| e.room == room)
            .map(|e| e.call_id.clone())
            .collect()
    }
}
