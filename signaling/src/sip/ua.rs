//! The user agent: the rsipstack endpoint on UDP and TCP, the dispatch of incoming
//! transactions (new INVITEs, in-dialog requests, OPTIONS, everything else refused per RFC
//! 3261), and the dialog-state loop that turns re-INVITEs, INFO and BYE into call commands.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use dartmouth_media::PhoneCodec;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, DialogStateSender, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::SipError;
use super::call::{self, CALL_COMMAND_CAPACITY, CALL_NOTICE_CAPACITY, CallCommand, Talker};
use super::config::{Cidr, SipSettings, parse_codecs};
use super::digest::DigestServer;
use super::ports::PortPool;
use super::room::RoomSeat;
use super::sdp::{self, Direction, Negotiated};
use crate::gateway::Gateway;

/// Methods this user agent handles (the `Allow` header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, PRACK, UPDATE, REFER, NOTIFY";

/// A call the user agent holds.
pub(crate) struct CallEntry {
    /// The SIP Call-ID (what the API names calls by).
    pub call_id: String,
    pub dialog: InviteDialog,
    pub commands: mpsc::Sender<CallCommand>,
    pub room: String,
    pub local_rtp: SocketAddr,
    pub negotiated: Negotiated,
    /// Our SDP's `o=` version, bumped with every new description.
    pub sdp_version: u64,
    pub sdp_session: u64,
    pub task: tokio::task::JoinHandle<()>,
}

/// Everything the UA's tasks share.
pub(crate) struct Shared {
    pub gateway: Arc<Gateway>,
    pub settings: SipSettings,
    pub codecs: Vec<PhoneCodec>,
    pub allow: Vec<Cidr>,
    pub digest: DigestServer,
    pub endpoint: EndpointInnerRef,
    pub dialogs: Arc<DialogLayer>,
    pub state_sender: DialogStateSender,
    pub contact: rsipstack::sip::Uri,
    pub advertised: IpAddr,
    pub ports: PortPool,
    /// Calls by dialog id.
    pub calls: Mutex<HashMap<String, CallEntry>>,
    pub cancel: CancellationToken,
    /// Media counters of every finished call, summed.
    pub totals: Mutex<super::call::CallStats>,
    /// Registration state per trunk.
    pub registrations: Mutex<HashMap<String, super::register::RegistrationStatus>>,
    /// Outbound INVITEs not yet answered: Call-ID → room (for ringing events).
    pub pending: Mutex<HashMap<String, String>>,
    /// What calls report, for subscribers (the API, tests).
    pub events: tokio::sync::broadcast::Sender<super::SipEvent>,
}

impl Shared {
    pub(crate) fn call_count(&self) -> usize {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn password_of(&self, user: &str) -> Option<String> {
        let variable = self.settings.users.get(user)?;
        std::env::var(variable).ok()
    }

    pub(crate) fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    /// Stops a call's media and forgets it.
    pub(crate) fn end_call(&self, dialog_id: &str) {
        let entry = self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dialog_id);
        if let Some(entry) = entry {
            let _ = entry.commands.try_send(CallCommand::Hangup);
            self.dialogs.remove_dialog(&entry.dialog.id());
        }
    }

    /// Starts an established call's media task and holds the call (answered inbound or
    /// dialled outbound alike): the task reports the call's notices as events, adds its media
    /// counters to the totals when it ends and then hangs up; the room hears that the caller
    /// joined.
    pub(crate) fn start_call(self: &Arc<Self>, call: EstablishedCall) {
        let EstablishedCall {
            call_id,
            dialog,
            room,
            identity,
            socket,
            local_rtp,
            negotiated,
            sdp_session,
            talker,
            seat,
        } = call;
        let (commands, command_rx) = mpsc::channel(CALL_COMMAND_CAPACITY);
        let (notice_tx, notices) = mpsc::channel(CALL_NOTICE_CAPACITY);
        let dialog_id = dialog.id().to_string();
        let task = {
            let shared = self.clone();
            let (room, identity, call_id, dialog_id) = (
                room.clone(),
                identity.clone(),
                call_id.clone(),
                dialog_id.clone(),
            );
            tokio::spawn(async move {
                let media = call::run(socket, negotiated, talker, seat, command_rx, notice_tx);
                let events =
                    super::inbound::forward_notices(&shared, &call_id, &room, &identity, notices);
                let (stats, ()) = tokio::join!(media, events);
                shared
                    .totals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(&stats);
                tracing::info!(%room, %call_id, ?stats, "SIP call media ended");
                // Still held: the media ended on its own (timeout), so hang up.
                let entry = shared
                    .calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&dialog_id);
                if let Some(entry) = entry {
                    let _ = entry.dialog.hangup().await;
                    shared.dialogs.remove_dialog(&entry.dialog.id());
                }
                shared.gateway.leave_room_identity(&room, &identity);
            })
        };
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(
            dialog_id,
            CallEntry {
                call_id,
                dialog,
                commands,
                room: room.clone(),
                local_rtp,
                negotiated,
                sdp_version: 1,
                sdp_session,
                task,
            },
        );
        self.gateway.room_event(
            &room,
            crate::proto::ServerMessage::ParticipantJoined {
                identity,
                metadata: None,
            },
        );
    }
}

/// A call whose SDP is agreed, ready for [`Shared::start_call`].
pub(crate) struct EstablishedCall {
    pub call_id: String,
    pub dialog: InviteDialog,
    pub room: String,
    /// The caller's identity in the room (`sip:` and the caller).
    pub identity: String,
    /// The call's RTP socket.
    pub socket: tokio::net::UdpSocket,
    /// The RTP address our SDP advertises.
    pub local_rtp: SocketAddr,
    pub negotiated: Negotiated,
    /// Our SDP's `o=` session id.
    pub sdp_session: u64,
    pub talker: Talker,
    pub seat: Option<RoomSeat>,
}

/// The running user agent.
pub struct SipServer {
    pub(crate) shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SipServer {
    /// Binds UDP and TCP on `settings.listen` and starts answering.
    pub async fn start(settings: SipSettings, gateway: Arc<Gateway>) -> Result<Self, SipError> {
        settings.validate().map_err(SipError::Config)?;
        let listen: SocketAddr = settings.listen.parse().map_err(|_| {
            SipError::Config(format!(
                "sip.listen `{}` is not an address",
                settings.listen
            ))
        })?;
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.clone());
        let udp = UdpConnection::create_connection(listen, None, Some(cancel.child_token()))
            .await
            .map_err(|e| SipError::Bind(listen, e.to_string()))?;
        let local: SocketAddr = udp
            .get_addr()
            .addr
            .clone()
            .try_into()
            .map_err(|_| SipError::Bind(listen, "no local address".into()))?;
        transport.add_transport(udp.into());
        // TCP on the same port as UDP.
        let tcp = TcpListenerConnection::new(local, None)
            .await
            .map_err(|e| SipError::Bind(local, format!("TCP: {e}")))?;
        transport.add_transport(tcp.into());
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport)
            .with_user_agent(concat!("dartmouth/", env!("CARGO_PKG_VERSION")))
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipError::Bind(local, e.to_string()))?;
        let advertised: IpAddr = match settings.public_ip.trim() {
            "" => local.ip(),
            ip => ip
                .parse()
                .map_err(|_| SipError::Config(format!("sip.public_ip `{ip}` is not an address")))?,
        };
        let contact = rsipstack::sip::Uri::try_from(
            format!(
                "sip:dartmouth@{}",
                SocketAddr::new(advertised, local.port())
            )
            .as_str(),
        )
        .map_err(|e| SipError::Config(e.to_string()))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (state_sender, states) = dialogs.new_dialog_state_channel();
        let codecs = parse_codecs(&settings.codecs).map_err(SipError::Config)?;
        let shared = Arc::new(Shared {
            gateway,
            allow: settings.allow_list(),
            digest: DigestServer::new(&settings.realm),
            ports: PortPool::new(local.ip(), settings.rtp_port_min, settings.rtp_port_max),
            codecs,
            settings,
            endpoint: endpoint.inner.clone(),
            dialogs,
            state_sender,
            contact,
            advertised,
            calls: Mutex::new(HashMap::new()),
            cancel: cancel.clone(),
            pending: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            totals: Mutex::new(Default::default()),
            events: tokio::sync::broadcast::channel(super::SIP_EVENT_CAPACITY).0,
        });
        let endpoint_task = tokio::spawn(async move { endpoint.serve().await });
        let dispatch = tokio::spawn(dispatch(shared.clone(), incoming));
        let dialog_states = tokio::spawn(dialog_states(shared.clone(), states));
        let mut tasks = vec![endpoint_task, dispatch, dialog_states];
        for (name, trunk) in &shared.settings.trunks {
            if trunk.register {
                let task =
                    super::register::keep_registered(shared.clone(), name.clone(), trunk.clone());
                tasks.push(tokio::spawn(task));
            }
        }
        tracing::info!(%local, "SIP user agent listening (UDP and TCP)");
        Ok(Self {
            shared,
            local,
            tasks,
        })
    }

    /// The SIP listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.shared.call_count()
    }

    /// A handle for the HTTP API.
    pub fn handle(&self) -> super::SipHandle {
        super::SipHandle {
            shared: self.shared.clone(),
        }
    }

    /// Hangs up every call (BYE) and stops the listeners.
    pub async fn stop(self) {
        let entries: Vec<CallEntry> = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, e)| e)
            .collect();
        for entry in entries {
            let _ = entry.commands.try_send(CallCommand::Hangup);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), entry.dialog.hangup())
                .await;
            let _ = entry.task.await;
        }
        // The gateway's handle on us goes (it would keep the bridge's state alive).
        self.shared.gateway.set_sip(None);
        self.shared.cancel.cancel();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The source address of a request.
pub(crate) fn source_of(tx: &Transaction) -> Option<SocketAddr> {
    let remote = tx.connection.as_ref()?.get_remote_addr()?;
    remote.addr.clone().try_into().ok()
}

/// Whether a request's body is shorter than its Content-Length (a UDP datagram that lost its
/// end: RFC 3261 §18.3 answers it with 400).
pub(crate) fn body_truncated(request: &rsipstack::sip::Request) -> bool {
    let declared = request
        .header_value("Content-Length")
        .or_else(|| request.header_value("l"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    declared.is_some_and(|length| length > request.body.len())
}

async fn dispatch(shared: Arc<Shared>, mut incoming: rsipstack::transaction::TransactionReceiver) {
    while let Some(mut tx) = incoming.recv().await {
        if body_truncated(&tx.original) {
            if tx.original.method != Method::Ack {
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::BadRequest).await;
                });
            }
            continue;
        }
        let has_tag = tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.tag().ok().flatten())
            .is_some();
        if has_tag {
            match shared.dialogs.match_dialog(&tx) {
                Some(mut dialog) => {
                    tokio::spawn(async move {
                        let _ = dialog.handle(&mut tx).await;
                    });
                }
                None if tx.original.method == Method::Ack => {}
                None => {
                    tokio::spawn(async move {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    });
                }
            }
            continue;
        }
        match tx.original.method {
            Method::Invite => {
                tokio::spawn(super::inbound::invite(shared.clone(), tx));
            }
            Method::Options => {
                tokio::spawn(async move {
                    let headers = vec![
                        Header::Allow(ALLOW.into()),
                        Header::Other("Accept".into(), "application/sdp".into()),
                    ];
                    let _ = tx.reply_with(StatusCode::OK, headers, None).await;
                });
            }
            Method::Ack => {}
            Method::Bye | Method::Cancel | Method::Info | Method::Update | Method::PRack => {
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                });
            }
            _ => {
                tokio::spawn(async move {
                    let headers = vec![Header::Allow(ALLOW.into())];
                    let _ = tx
                        .reply_with(StatusCode::MethodNotAllowed, headers, None)
                        .await;
                });
            }
        }
    }
}

async fn dialog_states(shared: Arc<Shared>, mut states: DialogStateReceiver) {
    while let Some(state) = states.recv().await {
        match state {
            DialogState::Terminated(id, reason) => {
                tracing::info!(dialog = %id, ?reason, "SIP call ended");
                shared.end_call(&id.to_string());
            }
            DialogState::Confirmed(id, _) => super::inbound::confirmed(&shared, &id.to_string()),
            DialogState::Early(id, response) => {
                super::outbound::early(&shared, &id.call_id, u16::from(response.status_code));
            }
            DialogState::Updated(id, request, handle) => {
                let shared = shared.clone();
                tokio::spawn(
                    async move { reinvite(&shared, &id.to_string(), &request, handle).await },
                );
            }
            DialogState::Info(id, request, handle) => {
                let digit = info_digit(&request.body);
                if let Some(digit) = digit {
                    let calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(entry) = calls.get(&id.to_string()) {
                        let _ = entry.commands.try_send(CallCommand::Digit(digit));
                    }
                }
                tokio::spawn(async move {
                    let status = if digit.is_some() {
                        StatusCode::OK
                    } else {
                        StatusCode::UnsupportedMediaType
                    };
                    let _ = handle.reply(status).await;
                });
            }
            DialogState::Options(_, _, handle) => {
                tokio::spawn(async move {
                    let _ = handle.reply(StatusCode::OK).await;
                });
            }
            DialogState::Notify(id, request, handle) => {
                let transferred = super::transfer::on_notify(&shared, &id.to_string(), &request);
                tokio::spawn(async move {
                    let _ = handle.reply(StatusCode::OK).await;
                    // The transfer is done: our leg ends (BYE after the NOTIFY's 200).
                    if let Some(dialog) = transferred {
                        let _ = dialog.hangup().await;
                    }
                });
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                tokio::spawn(async move {
                    let _ = handle.reply(StatusCode::NotImplemented).await;
                });
            }
            _ => {}
        }
    }
}

/// A re-INVITE or UPDATE: hold, resume, a new address or codec. A re-INVITE without an offer
/// gets our current description as the offer.
async fn reinvite(
    shared: &Shared,
    dialog_id: &str,
    request: &rsipstack::sip::Request,
    handle: TransactionHandle,
) {
    let reply = {
        let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        match calls.get_mut(dialog_id) {
            None => Err(StatusCode::CallTransactionDoesNotExist),
            Some(entry) => {
                entry.sdp_version += 1;
                if request.body.is_empty() {
                    let body = sdp::answer(
                        &entry.negotiated,
                        entry.local_rtp,
                        entry.sdp_session,
                        entry.sdp_version,
                        Direction::SendRecv,
                    );
                    Ok(body)
                } else {
                    let allowed = [entry.negotiated.codec];
                    match sdp::parse(&request.body).and_then(|remote| {
                        sdp::negotiate(&remote, &allowed)
                            .or_else(|_| sdp::negotiate(&remote, &shared.codecs))
                    }) {
                        Ok(negotiated) => {
                            entry.negotiated = negotiated;
                            let _ = entry
                                .commands
                                .try_send(CallCommand::Renegotiated(negotiated));
                            Ok(sdp::answer(
                                &negotiated,
                                entry.local_rtp,
                                entry.sdp_session,
                                entry.sdp_version,
                                negotiated.direction.answer(),
                            ))
                        }
                        Err(sdp::SdpError::NoCommonCodec) => Err(StatusCode::NotAcceptableHere),
                        Err(_) => Err(StatusCode::BadRequest),
                    }
                }
            }
        }
    };
    match reply {
        Ok(body) => {
            let headers = vec![Header::ContentType("application/sdp".into())];
            let _ = handle
                .respond(StatusCode::OK, Some(headers), Some(body.into_bytes()))
                .await;
        }
        Err(status) => {
            let _ = handle.reply(status).await;
        }
    }
}

/// A DTMF digit in a SIP INFO body (`application/dtmf-relay` `Signal=5`, or `application/dtmf`).
pub(crate) fn info_digit(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| text.trim().to_string());
    let mut chars = value.chars();
    let digit = chars.next()?;
    (chars.next().is_none() && dartmouth_media::rtp_session::digit_event(digit).is_some())
        .then(|| digit.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_bodies_carry_one_digit() {
        assert_eq!(info_digit(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit(b"Signal= #\r\n"), Some('#'));
        assert_eq!(info_digit(b"7"), Some('7'));
        assert_eq!(info_digit(b"Signal=55"), None);
        assert_eq!(info_digit(b"hello"), None);
        assert_eq!(info_digit(&[0xff]), None);
    }
}
