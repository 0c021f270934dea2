//! One WebRTC peer of the core: its str0m instance, the line it publishes on, the slots it
//! receives on, its policing and its RTCP-derived statistics.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::stats::{MediaEgressStats, MediaIngressStats};

use super::PeerId;
use crate::forward::{SeqExtender, SeqTsRewriter};
use crate::police::Policer;

/// What the peer on the other end reports about the audio it receives from us (RTCP receiver
/// reports), and what we measure about the audio it sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStats {
    /// Round-trip time (RTCP, else ICE consent checks).
    pub rtt: Option<Duration>,
    /// Interarrival jitter the peer reports for the audio we send it.
    pub jitter: Option<Duration>,
    /// Fraction (0–1) of our packets the peer reports lost.
    pub fraction_lost: Option<f32>,
    /// Packets the peer reports lost in total.
    pub packets_lost: u64,
    /// RTP packets sent to the peer.
    pub packets_sent: u64,
    /// RTP packets received from the peer.
    pub packets_received: u64,
    /// Interarrival jitter of the peer's own audio, as we measure it.
    pub ingress_jitter: Option<Duration>,
    /// Fraction of the peer's audio we lost.
    pub ingress_fraction_lost: Option<f32>,
    /// The peer's packets dropped by policing.
    pub policed: u64,
}

/// A line a peer receives audio on, and the source forwarded into it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) mid: Mid,
    pub(crate) pt: Pt,
    pub(crate) source: Option<PeerId>,
    pub(crate) rewriter: SeqTsRewriter,
    pub(crate) seq: SeqExtender,
}

impl Slot {
    pub(crate) fn new(mid: Mid, pt: Pt) -> Self {
        Self {
            mid,
            pt,
            source: None,
            rewriter: SeqTsRewriter::new(),
            seq: SeqExtender::default(),
        }
    }
}

/// A WebRTC peer.
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    pub(crate) room: Arc<str>,
    pub(crate) rtc: Rtc,
    pub(crate) deadline: Option<Instant>,
    pub(crate) connected: bool,
    pub(crate) publish_mid: Option<Mid>,
    pub(crate) publish_pt: Option<Pt>,
    /// The SSRC the peer publishes with (a change is a restart of its stream).
    pub(crate) publish_ssrc: Option<Ssrc>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) channel: Option<ChannelId>,
    pub(crate) tap: bool,
    pub(crate) wake: Instant,
    /// Whether the peer's signaling can carry a new offer (WebSocket yes, WHIP/WHEP no).
    pub(crate) renegotiable: bool,
    /// An offer sent and not yet answered, with the new lines it adds.
    pub(crate) pending: Option<(SdpPendingOffer, Vec<Mid>)>,
    /// Server-side mute: its audio reaches nobody.
    pub(crate) muted: bool,
    /// Sources this peer does not want to hear.
    pub(crate) unsubscribed: HashSet<PeerId>,
    pub(crate) policer: Policer,
    pub(crate) stats: PeerStats,
    /// Queued in the core's ready list (polled before the core reports a timeout).
    pub(crate) ready: bool,
    /// When the peer's timers were last given the time (at most once per instant).
    pub(crate) timer_served: Option<Instant>,
}

impl Peer {
    /// Writes one forwarded packet into `slot` (already rewritten to `(seq, ts)`).
    pub(crate) fn write_slot(
        &mut self,
        slot: usize,
        now: Instant,
        seq: u16,
        ts: u32,
        dbov: u8,
        payload: &Arc<[u8]>,
    ) -> bool {
        let slot = &mut self.slots[slot];
        let (mid, pt, seq_no) = (slot.mid, slot.pt, slot.seq.extend(seq));
        let mut direct = self.rtc.direct_api();
        let Some(tx) = direct.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let ext = ExtensionValues {
            audio_level: Some(-(dbov.min(127) as i8)),
            voice_activity: Some(dbov < crate::speakers::SILENT_DBOV),
            ..ExtensionValues::default()
        };
        tx.write_rtp(RtpWrite::new(pt, seq_no.into(), ts, now, payload.clone()).ext_vals(ext));
        self.stats.packets_sent += 1;
        true
    }

    /// Folds str0m's per-line egress statistics (the peer's receiver reports) into the peer's.
    pub(crate) fn egress_stats(&mut self, s: &MediaEgressStats) {
        if let Some(rtt) = s.rtt {
            self.stats.rtt = Some(rtt);
        }
        if let Some(loss) = s.loss {
            self.stats.fraction_lost = Some(loss);
        }
        if let Some(remote) = &s.remote {
            self.stats.jitter = Some(ticks(remote.jitter));
            self.stats.packets_lost = remote.packets_lost;
        }
    }

    /// Folds the statistics of the peer's published audio into the peer's.
    pub(crate) fn ingress_stats(&mut self, s: &MediaIngressStats) {
        if Some(s.mid) != self.publish_mid {
            return;
        }
        self.stats.ingress_jitter = Some(ticks(s.jitter));
        if s.loss.is_some() {
            self.stats.ingress_fraction_lost = s.loss;
        }
        if self.stats.rtt.is_none() {
            self.stats.rtt = s.rtt;
        }
    }
}

/// RTP timestamp units (48 kHz) as time.
fn ticks(t: u32) -> Duration {
    Duration::from_micros(u64::from(t) * 1_000_000 / 48_000)
}
