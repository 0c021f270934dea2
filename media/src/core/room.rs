//! A room: who is in it, its active-speaker ranking, and which source each subscriber's slots
//! carry.

use std::collections::HashMap;

use super::PeerId;
use super::peer::Peer;
use crate::speakers::{ActiveSpeakers, SpeakerConfig};

/// What an in-process participant hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// One participant.
    Participant(PeerId),
    /// Whoever ranks first among the people (not agents) of the room.
    ActiveSpeaker,
    /// Every other participant, each packet tagged with its source (the listener mixes).
    Everyone,
}

/// An in-process participant (an agent, a SIP caller).
#[derive(Debug)]
pub(crate) struct Virtual {
    pub(crate) room: std::sync::Arc<str>,
    /// Agents are not heard by listeners of the active speaker or of everyone (agents would
    /// answer each other).
    pub(crate) agent: bool,
    pub(crate) listen: Option<Listen>,
    pub(crate) muted: bool,
}

/// One room.
#[derive(Debug)]
pub(crate) struct Room {
    /// Every participant, WebRTC and in-process.
    pub(crate) members: Vec<PeerId>,
    pub(crate) speakers: ActiveSpeakers,
}

impl Room {
    pub(crate) fn new(config: SpeakerConfig) -> Self {
        Self {
            members: Vec::new(),
            speakers: ActiveSpeakers::new(config),
        }
    }
}

/// The source an active-speaker listener hears: the first of the ranking that is a person.
pub(crate) fn active_person(
    room: &Room,
    listener: PeerId,
    virtuals: &HashMap<PeerId, Virtual>,
) -> Option<PeerId> {
    room.speakers
        .ranking()
        .iter()
        .copied()
        .find(|s| *s != listener && !virtuals.get(s).is_some_and(|v| v.agent))
}

/// Whether `listener` (in-process, listening with `mode`) hears `source`.
pub(crate) fn hears(
    mode: Listen,
    room: &Room,
    listener: PeerId,
    source: PeerId,
    virtuals: &HashMap<PeerId, Virtual>,
) -> bool {
    if listener == source {
        return false;
    }
    match mode {
        Listen::Participant(p) => p == source,
        Listen::Everyone => !virtuals.get(&source).is_some_and(|v| v.agent),
        Listen::ActiveSpeaker => active_person(room, listener, virtuals) == Some(source),
    }
}

/// Points `peer`'s slots at the first sources of the ranking it wants to hear. A source already
/// in a slot stays there (no switch for the subscriber); a slot whose source dropped out takes
/// the next wanted source, its stream re-anchored at the elapsed time. Returns whether anything
/// changed.
pub(crate) fn assign_slots(peer: &mut Peer, ranking: &[PeerId]) -> bool {
    let capacity = peer.slots.len();
    if capacity == 0 {
        return false;
    }
    let wanted = |s: &PeerId| *s != peer.id && !peer.unsubscribed.contains(s);
    let mut desired = [PeerId(0); super::MAX_SLOTS];
    let mut n = 0;
    for source in ranking.iter().filter(|s| wanted(s)) {
        if n == capacity.min(super::MAX_SLOTS) {
            break;
        }
        desired[n] = *source;
        n += 1;
    }
    let desired = &desired[..n];
    let mut changed = false;
    for slot in &mut peer.slots {
        if slot.source.is_some_and(|s| !desired.contains(&s)) {
            slot.source = None;
            changed = true;
        }
    }
    for source in desired {
        if peer.slots.iter().any(|s| s.source == Some(*source)) {
            continue;
        }
        if let Some(slot) = peer.slots.iter_mut().find(|s| s.source.is_none()) {
            slot.source = Some(*source);
            slot.rewriter.switch_source_elapsed(source.0);
            changed = true;
        }
    }
    changed
}
