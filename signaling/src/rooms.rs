//! The gateway's room registry: who is in which room (WebSocket, WHIP and WHEP participants and
//! agents), room options and limits, and the room events sent to participants (joins, leaves,
//! metadata, mutes, active speakers). The media core knows peers; this knows people.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dartmouth_media::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::agent::{Floor, Names, RoomSeat};
use crate::gateway::RoomEvents;
use crate::proto::ServerMessage;

/// Participants a room takes unless its options say otherwise.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 100;
/// How long a room created over the API lives without participants, unless its options say
/// otherwise (rooms created by a join end with their last participant).
pub const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);
/// Most rooms one gateway holds.
pub const MAX_ROOMS: usize = 1024;

/// Options of a room (`POST /api/rooms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomOptions {
    /// Most participants (people and agents) at once.
    #[serde(default = "default_max_participants")]
    pub max_participants: usize,
    /// The room closes (everyone is removed) this long after it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_secs: Option<u64>,
    /// An empty room is removed after this long.
    #[serde(default = "default_empty_timeout")]
    pub empty_timeout_secs: u64,
    /// Free text about the room.
    #[serde(default)]
    pub metadata: String,
}

fn default_max_participants() -> usize {
    DEFAULT_MAX_PARTICIPANTS
}

fn default_empty_timeout() -> u64 {
    DEFAULT_EMPTY_TIMEOUT.as_secs()
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            max_duration_secs: None,
            empty_timeout_secs: DEFAULT_EMPTY_TIMEOUT.as_secs(),
            metadata: String::new(),
        }
    }
}

/// How a participant is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    /// WebSocket signaling (the demo, `dartmouth talk`).
    WebSocket,
    /// WHIP ingest.
    Whip,
    /// WHEP egress.
    Whep,
    /// An agent.
    Agent,
}

/// How to end a participant's session from outside (kick, room closed).
#[derive(Debug, Clone)]
pub enum Ender {
    /// A WebSocket session: a `bye` on its message queue ends it.
    Messages,
    /// A WHIP/WHEP session, by its id.
    Http(String),
    /// Ended with its owner's session.
    WithOwner,
}

/// One participant as the room sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its media peer (or in-process participant).
    pub peer: PeerId,
    /// Identity (from the token; `agent:NAME` for agents).
    pub identity: String,
    /// How it is connected.
    pub kind: MemberKind,
    /// Metadata it set.
    pub metadata: String,
    /// Muted on the server.
    pub muted: bool,
    /// Where its room events go (WebSocket participants).
    pub messages: Option<mpsc::Sender<ServerMessage>>,
    /// How to end it.
    pub ender: Ender,
}

/// A participant as `/api/rooms/{room}/participants` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantInfo {
    /// Identity.
    pub identity: String,
    /// Connection kind.
    pub kind: MemberKind,
    /// Muted on the server.
    pub muted: bool,
    /// Its metadata.
    pub metadata: String,
}

/// A room as `/api/rooms` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomInfo {
    /// Name.
    pub name: String,
    /// Participants now.
    pub participants: usize,
    /// Created (unix seconds).
    pub created_at: u64,
    /// Its options.
    pub options: RoomOptions,
}

struct Room {
    options: RoomOptions,
    created: Instant,
    created_at: u64,
    /// Created over the API (kept while empty until its timeout) or by a join.
    explicit: bool,
    members: Vec<Member>,
    empty_since: Option<Instant>,
    floor: Arc<Floor>,
}

/// Why a participant cannot enter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The room has its maximum of participants.
    #[error("the room is full ({0} participants)")]
    Full(usize),
    /// The gateway holds its maximum of rooms.
    #[error("the gateway holds its maximum of {MAX_ROOMS} rooms")]
    TooManyRooms,
    /// Creating a room that exists.
    #[error("the room already exists")]
    Exists,
    /// No such room.
    #[error("no such room")]
    NoRoom,
    /// No such participant.
    #[error("no participant {0:?} in the room")]
    NoParticipant(String),
    /// Bad options.
    #[error("{0}")]
    BadOptions(String),
}

/// Every room of the gateway.
#[derive(Default)]
pub struct RoomRegistry {
    rooms: Mutex<HashMap<String, Room>>,
    /// Who hears about participants entering and leaving, if anyone.
    events: std::sync::OnceLock<Arc<dyn RoomEvents>>,
}

impl RoomRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports participants entering and leaving to `sink` from now on (once).
    pub fn set_events(&self, sink: Arc<dyn RoomEvents>) {
        let _ = self.events.set(sink);
    }

    /// Creates a room with `options` (`POST /api/rooms`).
    pub fn create(&self, name: &str, options: RoomOptions) -> Result<RoomInfo, RoomError> {
        if options.max_participants == 0 {
            return Err(RoomError::BadOptions(
                "max_participants must be at least 1".into(),
            ));
        }
        let mut rooms = self.lock();
        if rooms.contains_key(name) {
            return Err(RoomError::Exists);
        }
        if rooms.len() >= MAX_ROOMS {
            return Err(RoomError::TooManyRooms);
        }
        let room = new_room(options, true);
        let info = info(name, &room);
        rooms.insert(name.to_string(), room);
        Ok(info)
    }

    /// Every room.
    pub fn list(&self) -> Vec<RoomInfo> {
        let rooms = self.lock();
        let mut list: Vec<_> = rooms.iter().map(|(n, r)| info(n, r)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// One room.
    pub fn get(&self, name: &str) -> Option<RoomInfo> {
        self.lock().get(name).map(|r| info(name, r))
    }

    /// The participants of a room.
    pub fn participants(&self, name: &str) -> Option<Vec<ParticipantInfo>> {
        self.lock().get(name).map(|r| {
            r.members
                .iter()
                .map(|m| ParticipantInfo {
                    identity: m.identity.clone(),
                    kind: m.kind,
                    muted: m.muted,
                    metadata: m.metadata.clone(),
                })
                .collect()
        })
    }

    /// Checks that one more participant fits in `room` (creating it on first use).
    pub fn admit(&self, room: &str) -> Result<(), RoomError> {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) && rooms.len() >= MAX_ROOMS {
            return Err(RoomError::TooManyRooms);
        }
        let r = rooms
            .entry(room.to_string())
            .or_insert_with(|| new_room(RoomOptions::default(), false));
        if r.members.len() >= r.options.max_participants {
            return Err(RoomError::Full(r.options.max_participants));
        }
        Ok(())
    }

    /// Records a participant, tells the others, and returns who was already there (identity,
    /// metadata).
    pub fn enter(&self, room: &str, member: Member) -> Result<Vec<(String, String)>, RoomError> {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) && rooms.len() >= MAX_ROOMS {
            return Err(RoomError::TooManyRooms);
        }
        let r = rooms
            .entry(room.to_string())
            .or_insert_with(|| new_room(RoomOptions::default(), false));
        if r.members.len() >= r.options.max_participants {
            return Err(RoomError::Full(r.options.max_participants));
        }
        let present = r
            .members
            .iter()
            .map(|m| (m.identity.clone(), m.metadata.clone()))
            .collect();
        let joined = ServerMessage::ParticipantJoined {
            identity: member.identity.clone(),
            metadata: (!member.metadata.is_empty()).then(|| member.metadata.clone()),
        };
        tell(&r.members, &joined);
        if let Some(sink) = self.events.get() {
            sink.joined(room, &member.identity);
        }
        r.members.push(member);
        r.empty_since = None;
        Ok(present)
    }

    /// Removes a participant and tells the others.
    pub fn leave(&self, room: &str, peer: PeerId) {
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        let Some(index) = r.members.iter().position(|m| m.peer == peer) else {
            return;
        };
        let left = r.members.remove(index);
        if let Some(sink) = self.events.get() {
            sink.left(room, &left.identity);
        }
        tell(
            &r.members,
            &ServerMessage::ParticipantLeft {
                identity: left.identity,
            },
        );
        if r.members.is_empty() {
            if r.explicit {
                r.empty_since = Some(Instant::now());
            } else {
                rooms.remove(room);
            }
        }
    }

    /// Whether `room` has participants.
    pub fn is_occupied(&self, room: &str) -> bool {
        self.lock().get(room).is_some_and(|r| !r.members.is_empty())
    }

    /// Sends `message` to every participant of `room` with a message queue (never waits: a
    /// full queue misses it).
    pub fn tell_room(&self, room: &str, message: &ServerMessage) {
        if let Some(r) = self.lock().get(room) {
            tell(&r.members, message);
        }
    }

    /// The peer of `identity` in `room` (the first, if it joined twice).
    pub fn peer_of(&self, room: &str, identity: &str) -> Option<PeerId> {
        let rooms = self.lock();
        let r = rooms.get(room)?;
        r.members
            .iter()
            .find(|m| m.identity == identity)
            .map(|m| m.peer)
    }

    /// Every peer of `identity` in `room`, with how to end it.
    pub fn members_named(&self, room: &str, identity: &str) -> Result<Vec<Member>, RoomError> {
        let rooms = self.lock();
        let r = rooms.get(room).ok_or(RoomError::NoRoom)?;
        let found: Vec<Member> = r
            .members
            .iter()
            .filter(|m| m.identity == identity)
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(RoomError::NoParticipant(identity.into()));
        }
        Ok(found)
    }

    /// Records a mute and tells the room.
    pub fn set_muted(&self, room: &str, peer: PeerId, muted: bool) {
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.iter_mut().find(|m| m.peer == peer) else {
            return;
        };
        m.muted = muted;
        let message = ServerMessage::ParticipantMuted {
            identity: m.identity.clone(),
            muted,
        };
        tell(&r.members, &message);
    }

    /// Records metadata and tells the others.
    pub fn set_metadata(&self, room: &str, peer: PeerId, metadata: String) {
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.iter_mut().find(|m| m.peer == peer) else {
            return;
        };
        m.metadata = metadata.clone();
        let message = ServerMessage::ParticipantMetadata {
            identity: m.identity.clone(),
            metadata,
        };
        let others: Vec<Member> = r
            .members
            .iter()
            .filter(|o| o.peer != peer)
            .cloned()
            .collect();
        tell(&others, &message);
    }

    /// Sends `message` to every WebSocket participant of `room`.
    pub fn broadcast(&self, room: &str, message: &ServerMessage) {
        if let Some(r) = self.lock().get(room) {
            tell(&r.members, message);
        }
    }

    /// Identities of `peers` in `room`, in order (unknown peers skipped).
    pub fn identities(&self, room: &str, peers: &[PeerId]) -> Vec<String> {
        let rooms = self.lock();
        let Some(r) = rooms.get(room) else {
            return Vec::new();
        };
        peers
            .iter()
            .filter_map(|p| r.members.iter().find(|m| m.peer == *p))
            .map(|m| m.identity.clone())
            .collect()
    }

    /// The seat an agent of `room` takes: the room's floor, and names of its participants.
    pub fn seat(self: &Arc<Self>, room: &str) -> RoomSeat {
        let floor = {
            let mut rooms = self.lock();
            let r = rooms
                .entry(room.to_string())
                .or_insert_with(|| new_room(RoomOptions::default(), false));
            r.floor.clone()
        };
        let registry = Arc::downgrade(self);
        let room = room.to_string();
        let names: Names = Arc::new(move |peer| {
            let registry = registry.upgrade()?;
            registry.identities(&room, &[peer]).pop()
        });
        RoomSeat { floor, names }
    }

    /// Removes a room, returning its members (to be ended).
    pub fn remove(&self, room: &str) -> Option<Vec<Member>> {
        self.lock().remove(room).map(|r| r.members)
    }

    /// Rooms past their time limit (with their members, to be ended) and empty rooms past their
    /// empty timeout (removed here).
    pub fn expire(&self, now: Instant) -> Vec<(String, Vec<Member>)> {
        let mut rooms = self.lock();
        rooms.retain(|_, r| {
            !r.empty_since.is_some_and(|since| {
                now.duration_since(since).as_secs() >= r.options.empty_timeout_secs
            })
        });
        let over: Vec<String> = rooms
            .iter()
            .filter(|(_, r)| {
                r.options
                    .max_duration_secs
                    .is_some_and(|limit| now.duration_since(r.created).as_secs() >= limit)
            })
            .map(|(n, _)| n.clone())
            .collect();
        over.into_iter()
            .filter_map(|name| rooms.remove(&name).map(|r| (name, r.members)))
            .collect()
    }
}

fn new_room(options: RoomOptions, explicit: bool) -> Room {
    let now = Instant::now();
    Room {
        empty_since: explicit.then_some(now),
        options,
        created: now,
        created_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        explicit,
        members: Vec::new(),
        floor: Arc::default(),
    }
}

fn info(name: &str, room: &Room) -> RoomInfo {
    RoomInfo {
        name: name.to_string(),
        participants: room.members.len(),
        created_at: room.created_at,
        options: room.options.clone(),
    }
}

/// Sends `message` to every member with a message queue (never waits: a full queue drops it).
fn tell(members: &[Member], message: &ServerMessage) {
    for member in members {
        if let Some(tx) = &member.messages {
            let _ = tx.try_send(message.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(peer: u64, identity: &str) -> (Member, mpsc::Receiver<ServerMessage>) {
        let (tx, rx) = mpsc::channel(16);
        (
            Member {
                peer: PeerId(peer),
                identity: identity.into(),
                kind: MemberKind::WebSocket,
                metadata: String::new(),
                muted: false,
                messages: Some(tx),
                ender: Ender::Messages,
            },
            rx,
        )
    }

    #[test]
    fn limits_events_and_timeouts() {
        let rooms = Arc::new(RoomRegistry::default());
        let options = RoomOptions {
            max_participants: 2,
            empty_timeout_secs: 0,
            ..RoomOptions::default()
        };
        rooms.create("r", options.clone()).unwrap();
        assert_eq!(rooms.create("r", options).unwrap_err(), RoomError::Exists);
        let (a, mut a_rx) = member(1, "alice");
        let (b, _b_rx) = member(2, "bob");
        let (c, _) = member(3, "carol");
        assert!(rooms.enter("r", a).unwrap().is_empty());
        assert_eq!(rooms.enter("r", b).unwrap()[0].0, "alice");
        assert_eq!(rooms.enter("r", c).unwrap_err(), RoomError::Full(2));
        assert!(matches!(
            a_rx.try_recv(),
            Ok(ServerMessage::ParticipantJoined { identity, .. }) if identity == "bob"
        ));
        assert_eq!(rooms.peer_of("r", "bob"), Some(PeerId(2)));
        assert_eq!(
            rooms.seat("r").names.as_ref()(PeerId(2)),
            Some("bob".into())
        );
        rooms.leave("r", PeerId(2));
        rooms.leave("r", PeerId(1));
        assert_eq!(rooms.get("r").unwrap().participants, 0, "an API room stays");
        assert!(rooms.expire(Instant::now()).is_empty());
        assert!(rooms.get("r").is_none(), "until its empty timeout");
        // Rooms made by a join go with their last participant.
        let (d, _) = member(4, "dave");
        rooms.enter("adhoc", d).unwrap();
        rooms.leave("adhoc", PeerId(4));
        assert!(rooms.get("adhoc").is_none());
    }
}
