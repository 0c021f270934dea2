//! A new inbound INVITE, from admission to a running call: who may call (IP allow-list, else
//! digest: 401 challenge, 403 wrong credentials), capacity (503), the offer (400 malformed,
//! 488 no common codec), the dial plan (404 no route), 180 Ringing while the agent starts,
//! then 200 OK with the answer, or with our offer when the INVITE carried none (the answer
//! then arrives in the ACK). A CANCEL before the answer ends the setup cleanly.

use std::sync::Arc;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc;

use super::call::{CallCommand, CallNotice, Talker};
use super::config::DialRule;
use super::digest::DigestOutcome;
use super::room::RoomSeat;
use super::sdp::{self, Direction, Negotiated};
use super::ua::{EstablishedCall, Shared, source_of};
use crate::agent::AgentRequest;
use crate::proto::AgentOutput;

/// What the dial plan chose for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub room: String,
    /// The agent's name, `echo`, or `None`.
    pub agent: Option<String>,
    pub caller: String,
}

fn user_of(uri: &rsipstack::sip::Uri) -> String {
    uri.user().unwrap_or("").chars().take(64).collect()
}

/// The dial plan's answer for a request.
pub(crate) fn route(shared: &Shared, request: &rsipstack::sip::Request) -> Option<Route> {
    let to = user_of(&request.uri);
    let from = request
        .from_header()
        .ok()
        .and_then(|f| f.uri().ok())
        .map(|u| user_of(&u))
        .unwrap_or_default();
    let rule: &DialRule = shared
        .settings
        .dial_plan
        .iter()
        .find(|r| r.matches(&to, &from, |name| request.header_value(name)))?;
    let room = rule.room_for(&to, &from);
    let agent = match rule.agent.as_str() {
        "none" => None,
        "" => shared.gateway.agents.default_agent(&room),
        name => Some(name.to_string()),
    };
    Some(Route {
        room,
        agent,
        caller: if from.is_empty() {
            "caller".into()
        } else {
            from
        },
    })
}

async fn refuse(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    let _ = tx.reply_with(status, headers, None).await;
}

/// Handles a new INVITE to the end of its setup.
pub(crate) async fn invite(shared: Arc<Shared>, mut tx: Transaction) {
    // Who is calling.
    let source = source_of(&tx);
    if !source.is_some_and(|s| shared.allowed(s.ip())) {
        let raw = tx.original.header_value("Authorization");
        match shared
            .digest
            .check(raw.as_deref(), &Method::Invite, |u| shared.password_of(u))
        {
            DigestOutcome::Authorized(_) => {}
            DigestOutcome::Challenge => {
                let challenge = Header::WwwAuthenticate(shared.digest.challenge().into());
                return refuse(&mut tx, StatusCode::Unauthorized, vec![challenge]).await;
            }
            DigestOutcome::Forbidden => {
                return refuse(&mut tx, StatusCode::Forbidden, vec![]).await;
            }
        }
    }
    if shared.call_count() >= shared.settings.max_calls {
        let retry = Header::Other("Retry-After".into(), "5".into());
        return refuse(&mut tx, StatusCode::ServiceUnavailable, vec![retry]).await;
    }
    // What they offer.
    let offer = if tx.original.body.is_empty() {
        None
    } else {
        match sdp::parse(&tx.original.body).and_then(|r| sdp::negotiate(&r, &shared.codecs)) {
            Ok(n) => Some(n),
            Err(sdp::SdpError::NoCommonCodec | sdp::SdpError::NoAudio) => {
                let accept = Header::Other("Accept".into(), "application/sdp".into());
                return refuse(&mut tx, StatusCode::NotAcceptableHere, vec![accept]).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "INVITE with a bad SDP offer");
                return refuse(&mut tx, StatusCode::BadRequest, vec![]).await;
            }
        }
    };
    // Where it goes.
    let Some(route) = route(&shared, &tx.original) else {
        return refuse(&mut tx, StatusCode::NotFound, vec![]).await;
    };
    let Some((socket, local_rtp)) = shared.ports.bind().await else {
        return refuse(&mut tx, StatusCode::ServiceUnavailable, vec![]).await;
    };
    let advertised_rtp = std::net::SocketAddr::new(shared.advertised, local_rtp.port());
    let dialog = match shared.dialogs.get_or_create_server_invite(
        &tx,
        shared.state_sender.clone(),
        None,
        Some(shared.contact.clone()),
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "cannot create the dialog");
            return refuse(&mut tx, StatusCode::ServerInternalError, vec![]).await;
        }
    };
    let call_id = tx
        .original
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let mut handler = dialog.clone();
    tokio::spawn(async move {
        let _ = handler.handle(&mut tx).await;
    });
    let _ = dialog.ringing(None, None);
    let ringing = tokio::time::sleep(std::time::Duration::from_millis(shared.settings.ring_ms));

    // The caller's partner: the agent (started on a blocking thread: it loads its listening
    // models), or the echo loop. The codec decides the agent's rate.
    let codec = offer.map_or(shared.codecs[0], |n| n.codec);
    let talker = match start_talker(&shared, &route, codec, &call_id).await {
        Ok(talker) => talker,
        Err(e) => {
            tracing::warn!(error = %e, room = %route.room, "SIP call refused: the agent did not start");
            let _ = dialog.reject(Some(StatusCode::ServiceUnavailable), None);
            return;
        }
    };
    ringing.await;
    if dialog.state().is_terminated() {
        tracing::info!(%call_id, "SIP call cancelled before the answer");
        if let Talker::Agent(session) = talker {
            session.stop().await;
        }
        return;
    }
    let seat = if route.agent.is_none() || shared.gateway.room_has_members(&route.room) {
        RoomSeat::join(&shared.gateway.media, &route.room)
            .await
            .ok()
    } else {
        None
    };
    let session_id = u64::from(local_rtp.port()) << 32 | u64::from(rand_u32());
    let (body, negotiated) = match offer {
        Some(n) => (
            sdp::answer(&n, advertised_rtp, session_id, 1, n.direction.answer()),
            n,
        ),
        None => {
            // No offer: we offer, and the answer comes in the ACK. Until then the media task
            // sends to nobody and latches onto whoever sends valid RTP.
            let provisional = Negotiated {
                codec,
                audio_pt: codec.static_payload_type().unwrap_or(111),
                dtmf_pt: Some(101),
                cn_pt: Some(13),
                remote: std::net::SocketAddr::new(shared.advertised, 0),
                direction: Direction::SendRecv,
            };
            (
                sdp::offer(&shared.codecs, advertised_rtp, session_id, 1),
                provisional,
            )
        }
    };
    shared.start_call(EstablishedCall {
        call_id: call_id.clone(),
        dialog: dialog.clone(),
        room: route.room.clone(),
        identity: format!("sip:{}", route.caller),
        socket,
        local_rtp: advertised_rtp,
        negotiated,
        sdp_session: session_id,
        talker,
        seat,
    });
    let headers = vec![Header::ContentType("application/sdp".into())];
    if dialog
        .accept(Some(headers), Some(body.into_bytes()))
        .is_err()
    {
        shared.end_call(&dialog.id().to_string());
        return;
    }
    tracing::info!(%call_id, room = %route.room, agent = ?route.agent, codec = negotiated.codec.name(), "SIP call answered");
}

/// The dialog was confirmed by the ACK: for an INVITE without an offer, the ACK holds the answer.
pub(crate) fn confirmed(shared: &Shared, dialog_id: &str) {
    let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
    let Some(entry) = calls.get_mut(dialog_id) else {
        return;
    };
    let Some(ack) = entry.dialog.last_remote_ack() else {
        return;
    };
    if ack.body.is_empty() || entry.negotiated.remote.port() != 0 {
        return;
    }
    match sdp::parse(&ack.body).and_then(|r| sdp::negotiate(&r, &shared.codecs)) {
        Ok(n) => {
            entry.negotiated = n;
            let _ = entry.commands.try_send(CallCommand::Renegotiated(n));
        }
        Err(e) => {
            tracing::info!(error = %e, "the ACK's SDP answer is unusable; hanging up");
            let dialog = entry.dialog.clone();
            tokio::spawn(async move {
                let _ = dialog.hangup().await;
            });
        }
    }
}

/// The caller's partner for the call `call_id`; an agent is started with the call's tools
/// ([`AgentRequest::phone`]).
pub(crate) async fn start_talker(
    shared: &Arc<Shared>,
    route: &Route,
    codec: dartmouth_media::PhoneCodec,
    call_id: &str,
) -> Result<Talker, String> {
    match route.agent.as_deref() {
        None => Ok(Talker::Silence),
        Some("echo") => Ok(Talker::Echo),
        Some(name) => {
            if !shared
                .gateway
                .agents
                .agents()
                .iter()
                .any(|a| a.name == name)
            {
                return Err(format!("no agent named {name:?}"));
            }
            let request = AgentRequest {
                agent: name.to_string(),
                room: route.room.clone(),
                identity: format!("sip:{}", route.caller),
                output: AgentOutput::Audio,
                output_rate: codec.sample_rate(),
                echo_path: true,
                phone: Some(super::tools::CallTools::new(shared, call_id)),
            };
            let factory = shared.gateway.agents.clone();
            let session = tokio::task::spawn_blocking(move || factory.start(&request))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(Talker::Agent(session))
        }
    }
}

/// Turns a call's notices into room events until the call ends.
pub(crate) async fn forward_notices(
    shared: &Shared,
    call_id: &str,
    room: &str,
    identity: &str,
    mut notices: mpsc::Receiver<CallNotice>,
) {
    use crate::proto::{ServerMessage, Speaker};
    while let Some(notice) = notices.recv().await {
        let _ = shared.events.send(super::SipEvent {
            call_id: call_id.to_string(),
            room: room.to_string(),
            notice: notice.clone(),
        });
        let message = match notice {
            CallNotice::Digits(digits) => ServerMessage::Dtmf {
                identity: identity.to_string(),
                digits,
            },
            CallNotice::CallerSaid(text) => ServerMessage::Transcript {
                speaker: Speaker::User,
                text,
                is_final: true,
                turn: 0,
                participant: Some(identity.to_string()),
            },
            CallNotice::AgentSaid(text) => ServerMessage::Transcript {
                speaker: Speaker::Agent,
                text,
                is_final: true,
                turn: 0,
                participant: None,
            },
            CallNotice::Interrupted(heard) => ServerMessage::Interrupted { turn: 0, heard },
            CallNotice::Progress(_) => continue,
            CallNotice::MediaTimeout => {
                tracing::info!(%room, %identity, "no RTP for a minute: hanging up");
                continue;
            }
        };
        shared.gateway.room_event(room, message);
    }
}

pub(crate) fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(1);
    h.finish() as u32
}
