//! A phone call's functions for the agent on it: `send_digits` (DTMF as RFC 4733
//! telephone-events, to find one's way through a phone menu) and `transfer_call` (a blind
//! transfer, REFER to a `sip:` or `tel:` target, after the agent's goodbye has played). They go
//! through the same [`SipHandle`] calls as the HTTP API (`/dtmf`, `/transfer`), so they report
//! the same events; bad arguments come back to the model as an error naming the problem.
//!
//! The bridge hands them to the agent factory in [`crate::AgentRequest::phone`] when it starts the
//! agent of a SIP call; any other session (a browser's) gets none.

use std::sync::{Arc, Weak};
use std::time::Duration;

use dartmouth_voice::knowledge::{AgentTools, ToolEvent};
use dartmouth_voice::provider::{
    CancellationToken, EventStream, ToolCall, ToolSpec, event_channel,
};
use serde_json::json;

use super::call::{CallCommand, GOODBYE_LIMIT};
use super::transfer::{TransferMode, refer_target};
use super::ua::Shared;
use super::{SipError, SipHandle};

/// The DTMF tool's name, as the model calls it.
pub const SEND_DIGITS: &str = "send_digits";
/// The transfer tool's name, as the model calls it.
pub const TRANSFER_CALL: &str = "transfer_call";
/// Most digits one `send_digits` call sends (what the call's digit queue holds).
pub const MAX_TOOL_DIGITS: usize = dartmouth_media::rtp_session::DTMF_QUEUE;

/// `send_digits` and `transfer_call` for one SIP call.
#[derive(Clone)]
pub struct CallTools {
    /// The bridge (weak: the call's agent must not keep the bridge alive).
    shared: Weak<Shared>,
    call_id: String,
}

impl std::fmt::Debug for CallTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTools")
            .field("call_id", &self.call_id)
            .finish()
    }
}

/// The same tools: the same call of the same bridge.
impl PartialEq for CallTools {
    fn eq(&self, other: &Self) -> bool {
        self.call_id == other.call_id && Weak::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for CallTools {}

impl CallTools {
    pub(crate) fn new(shared: &Arc<Shared>, call_id: &str) -> Self {
        Self {
            shared: Arc::downgrade(shared),
            call_id: call_id.to_string(),
        }
    }

    /// The SIP Call-ID the tools act on.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    fn handle(&self) -> Result<SipHandle, String> {
        self.shared
            .upgrade()
            .map(|shared| SipHandle { shared })
            .ok_or_else(|| "the phone bridge has stopped".to_string())
    }
}

/// The string argument `name` of a call, or why it is unusable.
fn argument(call: &ToolCall, name: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(&call.arguments)
        .map_err(|e| format!("arguments are not JSON: {e}"))?;
    value[name]
        .as_str()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("`{name}` (a non-empty string) is required"))
}

/// The digits of a `send_digits` call (upper-cased), or why they are unusable.
pub fn tool_digits(call: &ToolCall) -> Result<String, String> {
    let digits = argument(call, "digits")?;
    if let Some(bad) = digits
        .chars()
        .find(|c| dartmouth_media::rtp_session::digit_event(*c).is_none())
    {
        return Err(format!(
            "`digits` may only hold 0-9, *, # and A-D: {digits:?} has {bad:?}"
        ));
    }
    if digits.len() > MAX_TOOL_DIGITS {
        return Err(format!(
            "`digits` holds at most {MAX_TOOL_DIGITS} digits, not {}",
            digits.len()
        ));
    }
    Ok(digits.to_ascii_uppercase())
}

/// The Refer-To target of a `transfer_call` call, or why it is unusable.
pub fn tool_target(call: &ToolCall) -> Result<String, String> {
    let target = argument(call, "target")?;
    refer_target(&target).map_err(|e| match e {
        SipError::Refused(why) => format!("`target`: {why}"),
        other => other.to_string(),
    })
}

/// What the model hears of a refusal by the bridge.
fn refusal(e: SipError) -> String {
    match e {
        SipError::UnknownCall(_) => {
            "the call is not connected (it has ended or not started)".into()
        }
        SipError::Refused(why) => why,
        other => other.to_string(),
    }
}

impl CallTools {
    fn send_digits(&self, call: &ToolCall) -> ToolEvent {
        let sent = tool_digits(call).and_then(|digits| {
            self.handle()?
                .send_digits(&self.call_id, &digits)
                .map_err(refusal)?;
            Ok(digits)
        });
        match sent {
            Ok(digits) => ToolEvent::Output(format!("sent {digits}")),
            Err(e) => ToolEvent::Error(e),
        }
    }

    /// Waits (bounded) until the agent has said its goodbye, then transfers. `None` when
    /// cancelled before the transfer began.
    async fn transfer(&self, target: String, cancel: &CancellationToken) -> Option<ToolEvent> {
        let handle = match self.handle() {
            Ok(h) => h,
            Err(e) => return Some(ToolEvent::Error(e)),
        };
        let commands = {
            let calls = handle
                .shared
                .calls
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            calls
                .values()
                .find(|e| e.call_id == self.call_id)
                .map(|e| e.commands.clone())
        };
        let Some(commands) = commands else {
            return Some(ToolEvent::Error(refusal(SipError::UnknownCall(
                self.call_id.clone(),
            ))));
        };
        let (quiet_tx, quiet_rx) = tokio::sync::oneshot::channel();
        if commands.try_send(CallCommand::WhenQuiet(quiet_tx)).is_ok() {
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::timeout(GOODBYE_LIMIT + Duration::from_secs(1), quiet_rx) => {}
            }
        }
        Some(
            match handle
                .transfer(&self.call_id, &target, TransferMode::Blind)
                .await
            {
                Ok(()) => ToolEvent::Output(format!(
                    "transferring the caller to {target}: the phone accepted; this call ends when the transfer completes"
                )),
                Err(e) => ToolEvent::Error(refusal(e)),
            },
        )
    }
}

impl AgentTools for CallTools {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: SEND_DIGITS.into(),
                description: "Press keys on this phone call (DTMF tones), e.g. to choose options in a phone menu or enter a number.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "digits": {
                            "type": "string",
                            "description": "The keys in order: 0-9, *, # and A-D, at most 32, e.g. \"1\" or \"4321#\""
                        }
                    },
                    "required": ["digits"]
                }),
            },
            ToolSpec {
                name: TRANSFER_CALL.into(),
                description: "Transfer the caller to another number or SIP address (blind transfer). Say a short goodbye first: the transfer waits until you have finished speaking, and this call ends once it succeeds.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "target": {
                            "type": "string",
                            "description": "A sip: or tel: URI, e.g. \"sip:sales@example.com\" or \"tel:+15550100\""
                        }
                    },
                    "required": ["target"]
                }),
            },
        ]
    }

    fn call(&self, call: ToolCall, cancel: CancellationToken) -> EventStream<ToolEvent> {
        let (tx, rx) = event_channel();
        let tools = self.clone();
        tokio::spawn(async move {
            let event = match call.name.as_str() {
                SEND_DIGITS => tools.send_digits(&call),
                TRANSFER_CALL => match tool_target(&call) {
                    Err(e) => ToolEvent::Error(e),
                    Ok(target) => match tools.transfer(target, &cancel).await {
                        Some(event) => event,
                        None => return,
                    },
                },
                other => ToolEvent::Error(format!("no tool named {other:?} on this call")),
            };
            let _ = tx.send(event).await;
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn digits_are_validated() {
        assert_eq!(
            tool_digits(&call(SEND_DIGITS, r#"{"digits": "123#"}"#)),
            Ok("123#".into())
        );
        assert_eq!(
            tool_digits(&call(SEND_DIGITS, r#"{"digits": " *9ad "}"#)),
            Ok("*9AD".into())
        );
        let bad = tool_digits(&call(SEND_DIGITS, r#"{"digits": "12x"}"#)).unwrap_err();
        assert!(bad.contains("\"12x\"") && bad.contains("'x'"), "{bad}");
        assert!(
            tool_digits(&call(SEND_DIGITS, r#"{"digits": ""}"#))
                .unwrap_err()
                .contains("`digits`")
        );
        assert!(
            tool_digits(&call(SEND_DIGITS, r#"{"digits": 5}"#))
                .unwrap_err()
                .contains("`digits`")
        );
        assert!(
            tool_digits(&call(SEND_DIGITS, "{digits: 12"))
                .unwrap_err()
                .contains("not JSON")
        );
        let long = format!(r#"{{"digits": "{}"}}"#, "1".repeat(33));
        assert!(
            tool_digits(&call(SEND_DIGITS, &long))
                .unwrap_err()
                .contains("at most 32")
        );
    }

    #[test]
    fn targets_are_validated() {
        assert_eq!(
            tool_target(&call(
                TRANSFER_CALL,
                r#"{"target": "sip:desk@example.com"}"#
            )),
            Ok("sip:desk@example.com".into())
        );
        assert_eq!(
            tool_target(&call(TRANSFER_CALL, r#"{"target": "tel:+15550100"}"#)),
            Ok("tel:+15550100".into())
        );
        let bad = tool_target(&call(TRANSFER_CALL, r#"{"target": "mailto:x@y"}"#)).unwrap_err();
        assert!(bad.contains("mailto:x@y"), "{bad}");
        assert!(
            tool_target(&call(TRANSFER_CALL, r#"{"to": "sip:a@b"}"#))
                .unwrap_err()
                .contains("`target`")
        );
    }

    #[tokio::test]
    async fn a_stopped_bridge_or_bad_arguments_answer_with_an_error() {
        let tools = CallTools {
            shared: Weak::new(),
            call_id: "abc".into(),
        };
        let names: Vec<String> = tools.specs().into_iter().map(|s| s.name).collect();
        assert_eq!(names, [SEND_DIGITS, TRANSFER_CALL]);
        let mut events = tools.call(
            call(SEND_DIGITS, r#"{"digits": "12x"}"#),
            CancellationToken::new(),
        );
        let Some(ToolEvent::Error(e)) = events.recv().await else {
            panic!("an error");
        };
        assert!(e.contains("'x'"), "{e}");
        let mut events = tools.call(
            call(SEND_DIGITS, r#"{"digits": "1"}"#),
            CancellationToken::new(),
        );
        assert_eq!(
            events.recv().await,
            Some(ToolEvent::Error("the phone bridge has stopped".into()))
        );
        let mut events = tools.call(call("dance", "{}"), CancellationToken::new());
        assert!(matches!(events.recv().await, Some(ToolEvent::Error(_))));
    }
}
