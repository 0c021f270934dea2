//! Forwarding: a publisher's packet checked, policed, ranked, and written into the slots of the
//! subscribers that should hear it; slot assignment when the ranking changes.

use std::sync::Arc;
use std::time::Instant;

use str0m::media::{Direction, MediaKind};
use str0m::rtp::RtpPacket;

use super::room::{Virtual, assign_slots, hears};
use super::{CoreEvent, MAX_PAYLOAD, MediaCore, PeerId, level_from_size, mark_ready, push_event};
use crate::speakers::SILENT_DBOV;

impl MediaCore {
    /// One RTP packet from a peer: checked, policed, ranked and forwarded.
    pub(super) fn on_rtp(&mut self, now: Instant, index: usize, packet: RtpPacket) {
        let peer = &mut self.peers[index];
        let ssrc = packet.header.ssrc;
        if peer.publish_ssrc != Some(ssrc) {
            let mid = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
            if mid.is_none() || mid != peer.publish_mid {
                self.counters.malformed += 1;
                return;
            }
            let restarted = peer.publish_ssrc.replace(ssrc).is_some();
            if restarted {
                // A new stream of the same publisher: every slot carrying it re-anchors.
                let (id, room) = (peer.id, peer.room.clone());
                self.reanchor(&room, id);
            }
        }
        let peer = &mut self.peers[index];
        let payload = &packet.payload;
        if Some(packet.header.payload_type) != peer.publish_pt
            || payload.is_empty()
            || payload.len() > MAX_PAYLOAD
        {
            self.counters.malformed += 1;
            return;
        }
        self.counters.received += 1;
        peer.stats.packets_received += 1;
        if !peer
            .policer
            .admit(&self.config.policing, now, payload.len())
        {
            peer.stats.policed = peer.policer.dropped;
            self.counters.policed += 1;
            return;
        }
        if peer.muted {
            return;
        }
        let level = match packet.header.ext_vals.audio_level {
            Some(l) => l.unsigned_abs().min(SILENT_DBOV),
            None => level_from_size(payload.len()),
        };
        let (id, room) = (peer.id, peer.room.clone());
        let seq = packet.header.sequence_number;
        self.route(
            now,
            &room,
            id,
            seq,
            packet.header.timestamp,
            level,
            &packet.payload,
        );
    }

    /// Delivers one packet of `source`: its tap, the room's in-process listeners, and every
    /// subscriber whose slots carry it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route(
        &mut self,
        now: Instant,
        room_name: &Arc<str>,
        source: PeerId,
        seq: u16,
        rtp_time: u32,
        level: u8,
        payload: &Arc<[u8]>,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let new_source = room.speakers.observe(now, source, level);
        if new_source {
            self.reassign(room_name);
        }
        let Self {
            rooms,
            virtuals,
            peers,
            index,
            events,
            counters,
            ready,
            ..
        } = self;
        let Some(room) = rooms.get(room_name) else {
            return;
        };
        let audio = |listener| CoreEvent::Audio {
            peer: source,
            listener,
            seq,
            rtp_time,
            level,
            payload: payload.clone(),
        };
        if index.get(&source).is_some_and(|i| peers[*i].tap) {
            push_event(events, counters, audio(None));
        }
        for member in &room.members {
            if let Some(Virtual {
                listen: Some(mode), ..
            }) = virtuals.get(member)
                && hears(*mode, room, *member, source, virtuals)
            {
                push_event(events, counters, audio(Some(*member)));
            }
        }
        for member in &room.members {
            if *member == source {
                continue;
            }
            let Some(&i) = index.get(member) else {
                continue;
            };
            let peer = &mut peers[i];
            if !peer.connected {
                continue;
            }
            let Some(slot) = peer.slots.iter().position(|s| s.source == Some(source)) else {
                continue;
            };
            let Some((seq, ts)) = peer.slots[slot]
                .rewriter
                .rewrite_at(now, source.0, seq, rtp_time)
            else {
                continue;
            };
            if peer.write_slot(slot, now, seq, ts, level, payload) {
                counters.forwarded += 1;
                mark_ready(peer, ready);
            }
        }
    }

    /// Offers a WebSocket peer the slots it did not offer itself (once, after it connects).
    pub(super) fn offer_missing_slots(&mut self, index: usize) {
        let max = self.config.max_slots;
        let peer = &mut self.peers[index];
        if !peer.renegotiable || peer.pending.is_some() || peer.slots.len() >= max {
            return;
        }
        let mut change = peer.rtc.sdp_api();
        let mids: Vec<_> = (peer.slots.len()..max)
            .map(|n| {
                change.add_media(
                    MediaKind::Audio,
                    Direction::SendOnly,
                    Some(format!("slot-{n}")),
                    None,
                    None,
                )
            })
            .collect();
        if let Some((offer, pending)) = change.apply() {
            peer.pending = Some((pending, mids));
            mark_ready(peer, &mut self.ready);
            let id = peer.id;
            self.push_event(CoreEvent::Renegotiate(id, offer.to_sdp_string()));
        }
    }

    /// Re-ranks every room's speakers; reassigns slots and reports speaking changes.
    pub(super) fn rank_speakers(&mut self, now: Instant) {
        let mut changed = Vec::new();
        for (name, room) in &mut self.rooms {
            let change = room.speakers.update(now);
            if change.ranking || change.speaking {
                changed.push((name.clone(), change));
            }
        }
        for (name, change) in changed {
            if change.ranking {
                self.reassign(&name);
            }
            if change.speaking
                && let Some(room) = self.rooms.get(&name)
            {
                let speakers = room.speakers.speaking().to_vec();
                self.push_event(CoreEvent::ActiveSpeakers {
                    room: name,
                    speakers,
                });
            }
        }
    }

    /// Points every subscriber of `room` at the sources it should hear now.
    pub(super) fn reassign(&mut self, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for member in &r.members {
            if let Some(&i) = self.index.get(member) {
                assign_slots(&mut self.peers[i], r.speakers.ranking());
            }
        }
    }

    /// Re-anchors every slot that carries `source` (its stream restarted).
    pub(super) fn reanchor(&mut self, room: &str, source: PeerId) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for member in &r.members {
            if let Some(&i) = self.index.get(member) {
                for slot in &mut self.peers[i].slots {
                    if slot.source == Some(source) {
                        slot.rewriter.switch_source_elapsed(source.0);
                    }
                }
            }
        }
    }
}
