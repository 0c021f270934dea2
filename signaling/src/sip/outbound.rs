//! Outbound calls: dial a number through a trunk (or a SIP URI directly), report progress as
//! room events (ringing, answered, busy, no answer, failed with the status), and seat the
//! callee with the room's agent once answered.
//!
//! The agent starts before the INVITE is sent and is handed the callee's "Hello?" at once; the
//! INVITE waits (at most [`GREETING_READY_LIMIT`]) until the greeting's first audio is
//! synthesized and held in the playout queue. So even a phone that answers without ringing
//! (auto-answer, a PBX, a machine) hears the first frame on the first 20 ms tick after the
//! 200 OK — not after the callee speaks, and never before pick-up. The cost is post-dial delay
//! at our end, which the callee never hears.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dartmouth_media::PhoneCodec;
use dartmouth_voice::agent::AgentSession;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{StatusCode, Uri};
use rsipstack::transport::SipAddr;

use super::call::{CallNotice, Talker};
use super::config::{TrunkSettings, parse_codecs};
use super::inbound::{Route, rand_u32};
use super::room::RoomSeat;
use super::sdp;
use super::ua::{EstablishedCall, Shared};
use super::{SipError, SipEvent};

/// What the greeting is prompted with: what a person says on picking up.
pub const PICK_UP_LINE: &str = "Hello?";
/// Longest the INVITE waits for the greeting's first audio.
pub const GREETING_READY_LIMIT: Duration = Duration::from_secs(3);
/// How often the greeting's readiness is looked at.
const GREETING_POLL: Duration = Duration::from_millis(20);

/// An outbound call to place.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialRequest {
    /// A number (dialled through `trunk`) or a `sip:` URI (dialled directly).
    pub to: String,
    /// The trunk (default: the only configured one).
    #[serde(default)]
    pub trunk: Option<String>,
    /// The room the callee joins.
    #[serde(default)]
    pub room: String,
    /// The agent that talks to the callee (default: the room's).
    #[serde(default)]
    pub agent: Option<String>,
    /// Caller number presented (default: the trunk's).
    #[serde(default)]
    pub from: Option<String>,
}

/// Progress of an outbound call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// 180/183.
    Ringing,
    /// 200 OK.
    Answered,
    /// 486/600.
    Busy,
    /// 408/480/487, or no final answer.
    NoAnswer,
    /// Anything else.
    Failed(u16),
}

impl Progress {
    /// The wire name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Progress::Ringing => "ringing",
            Progress::Answered => "answered",
            Progress::Busy => "busy",
            Progress::NoAnswer => "no_answer",
            Progress::Failed(_) => "failed",
        }
    }

    fn of(status: u16) -> Self {
        match status {
            180 | 183 => Progress::Ringing,
            200..=299 => Progress::Answered,
            486 | 600 => Progress::Busy,
            408 | 480 | 487 => Progress::NoAnswer,
            s => Progress::Failed(s),
        }
    }
}

/// Where a dialled call goes: the request URI, the trunk's settings if any.
fn target(
    shared: &Shared,
    request: &DialRequest,
) -> Result<(Uri, Option<TrunkSettings>), SipError> {
    if request.to.starts_with("sip:") {
        let uri = Uri::try_from(request.to.as_str())
            .map_err(|e| SipError::Refused(format!("bad SIP URI: {e}")))?;
        return Ok((
            uri,
            request
                .trunk
                .as_ref()
                .and_then(|t| shared.settings.trunks.get(t))
                .cloned(),
        ));
    }
    let trunks = &shared.settings.trunks;
    let trunk = match &request.trunk {
        Some(name) => trunks
            .get(name)
            .ok_or_else(|| SipError::Refused(format!("no trunk named {name:?}")))?,
        None if trunks.len() == 1 => trunks.values().next().expect("one trunk"),
        None => return Err(SipError::Refused("name a trunk, or dial a sip: URI".into())),
    };
    let number: String = request
        .to
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+*#".contains(*c))
        .take(32)
        .collect();
    if number.is_empty() {
        return Err(SipError::Refused("no number to dial".into()));
    }
    let transport = if trunk.transport == "tcp" {
        ";transport=tcp"
    } else {
        ""
    };
    let uri = Uri::try_from(format!("sip:{number}@{}{transport}", trunk.address).as_str())
        .map_err(|e| SipError::Refused(format!("bad trunk address: {e}")))?;
    Ok((uri, Some(trunk.clone())))
}

/// Places the call in the background; returns its Call-ID at once (progress comes as events).
pub(crate) async fn dial(shared: Arc<Shared>, request: DialRequest) -> Result<String, SipError> {
    if shared.call_count() >= shared.settings.max_calls {
        return Err(SipError::Refused("at the call limit".into()));
    }
    let (callee, trunk) = target(&shared, &request)?;
    let codecs = match trunk.as_ref().map(|t| parse_codecs(&t.codecs)) {
        Some(Ok(c)) if !c.is_empty() => c,
        _ => shared.codecs.clone(),
    };
    // One rate for the whole offer, so the agent (started before the answer) speaks at it.
    let rate = codecs[0].sample_rate();
    let codecs: Vec<PhoneCodec> = codecs
        .into_iter()
        .filter(|c| c.sample_rate() == rate)
        .collect();
    let room = if request.room.is_empty() {
        "sip-outbound".to_string()
    } else {
        request.room.clone()
    };
    let agent = match request.agent.as_deref() {
        Some("none") => None,
        Some(name) => Some(name.to_string()),
        None => shared.gateway.agents.default_agent(&room),
    };
    let (socket, local_rtp) = shared
        .ports
        .bind()
        .await
        .ok_or_else(|| SipError::Refused("no RTP port free".into()))?;
    let advertised_rtp = SocketAddr::new(shared.advertised, local_rtp.port());
    let call_id = format!("{:08x}{:08x}@dartmouth", rand_u32(), rand_u32());
    let username = trunk
        .as_ref()
        .map(|t| t.username.clone())
        .unwrap_or_default();
    let from_number = request
        .from
        .clone()
        .or_else(|| {
            trunk.as_ref().map(|t| {
                if t.from_number.is_empty() {
                    t.username.clone()
                } else {
                    t.from_number.clone()
                }
            })
        })
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "dartmouth".into());
    let host = SocketAddr::new(
        shared.advertised,
        shared
            .contact
            .host_with_port
            .port
            .as_ref()
            .map_or(5060, |p| p.value()),
    );
    let caller = Uri::try_from(format!("sip:{from_number}@{host}").as_str())
        .map_err(|e| SipError::Refused(e.to_string()))?;
    let credential = trunk
        .as_ref()
        .filter(|t| !t.password_env.is_empty())
        .map(|t| Credential {
            username: username.clone(),
            password: std::env::var(&t.password_env).unwrap_or_default(),
            realm: None,
            auth_username: None,
        });
    let session = u64::from(local_rtp.port()) << 32 | u64::from(rand_u32());
    let offer = sdp::offer(&codecs, advertised_rtp, session, 1);
    let option = InviteOption {
        caller,
        callee: callee.clone(),
        destination: SipAddr::try_from(&callee).ok(),
        content_type: Some("application/sdp".into()),
        offer: Some(offer.into_bytes()),
        contact: shared.contact.clone(),
        credential,
        call_id: Some(call_id.clone()),
        ..Default::default()
    };
    let route = Route {
        room: room.clone(),
        agent,
        caller: request.to.chars().take(32).collect(),
    };
    let id = call_id.clone();
    tokio::spawn(async move {
        place(
            shared,
            option,
            route,
            codecs,
            socket,
            advertised_rtp,
            session,
            id,
        )
        .await
    });
    Ok(call_id)
}

fn progress(shared: &Shared, call_id: &str, room: &str, state: Progress) {
    let status = match state {
        Progress::Failed(s) => Some(s),
        _ => None,
    };
    shared.gateway.room_event(
        room,
        crate::proto::ServerMessage::SipCall {
            call_id: call_id.to_string(),
            state: state.name().into(),
            status,
        },
    );
    let _ = shared.events.send(SipEvent {
        call_id: call_id.to_string(),
        room: room.to_string(),
        notice: CallNotice::Progress(state.name().to_string()),
    });
}

/// Returns once the agent's greeting has audio queued, or after [`GREETING_READY_LIMIT`].
async fn greeting_ready(session: &AgentSession) {
    let deadline = tokio::time::Instant::now() + GREETING_READY_LIMIT;
    while !session.is_speaking() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(GREETING_POLL).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn place(
    shared: Arc<Shared>,
    option: InviteOption,
    route: Route,
    codecs: Vec<PhoneCodec>,
    socket: tokio::net::UdpSocket,
    local_rtp: SocketAddr,
    session: u64,
    call_id: String,
) {
    let room = route.room.clone();
    // The agent, ready (and its greeting synthesized) by the time the callee picks up.
    let talker = match &route.agent {
        None => Talker::Silence,
        Some(name) => {
            match super::inbound::start_talker(&shared, &route, codecs[0], &call_id).await {
                Ok(Talker::Agent(session)) => {
                    session.push_text(PICK_UP_LINE);
                    greeting_ready(&session).await;
                    Talker::Agent(session)
                }
                Ok(other) => other,
                Err(e) => {
                    tracing::warn!(error = %e, agent = %name, "outbound call: the agent did not start");
                    progress(&shared, &call_id, &room, Progress::Failed(503));
                    return;
                }
            }
        }
    };
    shared
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(call_id.clone(), room.clone());
    let result = shared
        .dialogs
        .do_invite(option, shared.state_sender.clone())
        .await;
    shared
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&call_id);
    let (dialog, response) = match result {
        Ok((dialog, Some(response)))
            if response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
        {
            (dialog, response)
        }
        Ok((_, response)) => {
            let status = response.map_or(408, |r| u16::from(r.status_code));
            progress(&shared, &call_id, &room, Progress::of(status));
            stop_talker(talker).await;
            return;
        }
        Err(e) => {
            tracing::info!(error = %e, %call_id, "outbound call failed");
            progress(
                &shared,
                &call_id,
                &room,
                Progress::Failed(u16::from(StatusCode::ServiceUnavailable)),
            );
            stop_talker(talker).await;
            return;
        }
    };
    let negotiated = match sdp::parse(&response.body).and_then(|r| sdp::negotiate(&r, &codecs)) {
        Ok(n) => n,
        Err(e) => {
            tracing::info!(error = %e, %call_id, "the callee's answer is unusable; hanging up");
            let _ = dialog.hangup().await;
            progress(&shared, &call_id, &room, Progress::Failed(488));
            stop_talker(talker).await;
            return;
        }
    };
    progress(&shared, &call_id, &room, Progress::Answered);
    let seat = if route.agent.is_none() || shared.gateway.room_has_members(&room) {
        RoomSeat::join(&shared.gateway.media, &room).await.ok()
    } else {
        None
    };
    shared.start_call(EstablishedCall {
        call_id,
        dialog,
        room,
        identity: format!("sip:{}", route.caller),
        socket,
        local_rtp,
        negotiated,
        sdp_session: session,
        talker,
        seat,
    });
}

async fn stop_talker(talker: Talker) {
    if let Talker::Agent(session) = talker {
        session.stop().await;
    }
}

/// A provisional response to a pending outbound INVITE.
pub(crate) fn early(shared: &Shared, call_id: &str, status: u16) {
    let room = shared
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(call_id)
        .cloned();
    if let Some(room) = room
        && Progress::of(status) == Progress::Ringing
    {
        progress(shared, call_id, &room, Progress::Ringing);
    }
}
