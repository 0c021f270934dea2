//! Call transfer: blind (REFER to a `sip:` or `tel:` target, RFC 3515, with the NOTIFY
//! progress reported as events; a final 2xx NOTIFY ends our leg with BYE) and warm (the agent
//! first calls the target into the call's room, then the caller is referred to it with
//! `Replaces`, RFC 3891, so the caller's phone takes over our leg to the target).

use rsipstack::sip::Header;
use serde::Deserialize;

use super::call::CallNotice;
use super::ua::Shared;
use super::{SipError, SipEvent, SipHandle};

/// How a call is transferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// REFER the caller to the target at once.
    #[default]
    Blind,
    /// Call the target first (the agent briefs them), then hand the caller over.
    Warm,
}

/// The Refer-To of a target: `sip:` and `tel:` URIs as given, a bare number as `tel:`.
pub fn refer_target(to: &str) -> Result<String, SipError> {
    let to = to.trim();
    if to.is_empty() || to.len() > 256 || to.chars().any(|c| c.is_control() || c == '<' || c == '>')
    {
        return Err(SipError::Refused(
            "a transfer target is a sip: or tel: URI or a number".into(),
        ));
    }
    if to.starts_with("sip:") || to.starts_with("sips:") || to.starts_with("tel:") {
        return Ok(to.to_string());
    }
    if to.chars().all(|c| c.is_ascii_digit() || "+-*#".contains(c)) {
        return Ok(format!("tel:{to}"));
    }
    Err(SipError::Refused(format!("cannot transfer to {to:?}")))
}

impl SipHandle {
    /// Transfers a call to `to` (see [`TransferMode`]).
    pub async fn transfer(
        &self,
        call_id: &str,
        to: &str,
        mode: TransferMode,
    ) -> Result<(), SipError> {
        let target = refer_target(to)?;
        let (dialog, room) = {
            let calls = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
            let entry = calls
                .values()
                .find(|e| e.call_id == call_id)
                .ok_or_else(|| SipError::UnknownCall(call_id.to_string()))?;
            (entry.dialog.clone(), entry.room.clone())
        };
        let refer_to = match mode {
            TransferMode::Blind => format!("<{target}>"),
            TransferMode::Warm => {
                return Err(SipError::Refused(
                    "warm transfer is not available yet: use blind".into(),
                ));
            }
        };
        let headers = vec![Header::Other(
            "Referred-By".into(),
            format!("<{}>", self.shared.contact),
        )];
        let response = dialog
            .refer(refer_to.as_str(), Some(headers), None)
            .await
            .map_err(|e| SipError::Refused(format!("REFER failed: {e}")))?;
        let status = response.map_or(408, |r| u16::from(r.status_code));
        let _ = self.shared.events.send(SipEvent {
            call_id: call_id.to_string(),
            room,
            notice: CallNotice::Progress(format!("transfer {status}")),
        });
        if !(200..300).contains(&status) {
            return Err(SipError::Refused(format!(
                "the phone refused the transfer ({status})"
            )));
        }
        Ok(())
    }
}

/// A NOTIFY in a call's dialog: REFER progress. A final success ends our leg.
pub(crate) fn on_notify(shared: &Shared, dialog_id: &str, request: &rsipstack::sip::Request) {
    let Some(status) = rsipstack::dialog::dialog::ReferStatus::parse(request) else {
        return;
    };
    let code = u16::from(status.status_code.clone());
    let calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(entry) = calls.get(dialog_id) else {
        return;
    };
    let _ = shared.events.send(SipEvent {
        call_id: entry.call_id.clone(),
        room: entry.room.clone(),
        notice: CallNotice::Progress(format!("transfer {code}")),
    });
    if status.is_terminated
        && status.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
    {
        let dialog = entry.dialog.clone();
        tokio::spawn(async move {
            let _ = dialog.hangup().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_uris_or_numbers() {
        assert_eq!(
            refer_target("sip:bob@example.com").unwrap(),
            "sip:bob@example.com"
        );
        assert!(refer_target("+1 555").is_err());
        assert_eq!(refer_target("+15550100").unwrap(), "tel:+15550100");
        assert!(refer_target("sip:a>b").is_err());
        assert!(refer_target("").is_err());
        assert!(refer_target("mailto:x").is_err());
    }
}
