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

/// The REFER progress a NOTIFY reports (RFC 3515 §2.4.5): the status of its `message/sipfrag`
/// body and whether the subscription is terminated; `None` for other NOTIFYs.
///
/// (rsipstack's `ReferStatus::parse` looks for `Event` and `Subscription-State` among untyped
/// headers only, but a received NOTIFY has them typed, so it never matches.)
pub(crate) fn refer_progress(request: &rsipstack::sip::Request) -> Option<(u16, bool)> {
    use rsipstack::sip::prelude::HeadersExt;
    let event = request.header_value("Event")?.to_ascii_lowercase();
    if event.split(';').next().map(str::trim) != Some("refer") {
        return None;
    }
    let terminated = request
        .header_value("Subscription-State")?
        .to_ascii_lowercase()
        .trim_start()
        .starts_with("terminated");
    let body = std::str::from_utf8(&request.body).ok()?;
    let code = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("SIP/2.0 "))?
        .split_whitespace()
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|c| (100..700).contains(c))?;
    Some((code, terminated))
}

/// A NOTIFY in a call's dialog: REFER progress, reported as an event. A final success ends our
/// leg: the dialog returned is to be hung up (after the NOTIFY is answered).
pub(crate) fn on_notify(
    shared: &Shared,
    dialog_id: &str,
    request: &rsipstack::sip::Request,
) -> Option<rsipstack::dialog::invite_dialog::InviteDialog> {
    let (code, terminated) = refer_progress(request)?;
    let calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
    let entry = calls.get(dialog_id)?;
    let _ = shared.events.send(SipEvent {
        call_id: entry.call_id.clone(),
        room: entry.room.clone(),
        notice: CallNotice::Progress(format!("transfer {code}")),
    });
    (terminated && (200..300).contains(&code)).then(|| entry.dialog.clone())
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

    fn notify(headers: &str, body: &str) -> rsipstack::sip::Request {
        let text = format!(
            "NOTIFY sip:dartmouth@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
             From: <sip:caller@127.0.0.1:5062>;tag=a\r\nTo: <sip:agent@127.0.0.1>;tag=b\r\n\
             Call-ID: c1\r\nCSeq: 3 NOTIFY\r\n{headers}\
             Content-Type: message/sipfrag\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match rsipstack::sip::SipMessage::try_from(text.as_bytes()).expect("a NOTIFY") {
            rsipstack::sip::SipMessage::Request(r) => r,
            _ => panic!("a request"),
        }
    }

    #[test]
    fn notify_bodies_report_refer_progress() {
        let done = notify(
            "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n",
            "SIP/2.0 200 OK\r\n",
        );
        assert_eq!(refer_progress(&done), Some((200, true)));
        let trying = notify(
            "Event: refer;id=3\r\nSubscription-State: active;expires=60\r\n",
            "SIP/2.0 100 Trying",
        );
        assert_eq!(refer_progress(&trying), Some((100, false)));
        let other = notify(
            "Event: presence\r\nSubscription-State: active\r\n",
            "SIP/2.0 200 OK",
        );
        assert_eq!(refer_progress(&other), None);
        let garbled = notify(
            "Event: refer\r\nSubscription-State: terminated\r\n",
            "hello",
        );
        assert_eq!(refer_progress(&garbled), None);
    }
}
