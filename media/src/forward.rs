//! SFU forwarding: sequence-number and timestamp rewriting for one outgoing audio track.
//!
//! A subscriber sees one continuous RTP stream even when the forwarded source switches between
//! publishers or a publisher restarts its stream. Within a source the mapping is a fixed wrapping
//! offset, so reordered packets map consistently; at a switch the offsets are re-anchored so the
//! first packet of the new source follows the last one sent. The timestamp advances across a
//! switch by the wall-clock time between the last packet sent and the new source's first
//! ([`SeqTsRewriter::switch_source_elapsed`]), so a receiver's jitter buffer sees the pause that
//! really happened.

use std::time::Instant;

/// Identifies a forwarded source (a publisher's track, or one incarnation of it).
pub type SourceId = u64;

/// Default timestamp advance at a switch: one 20 ms frame at the 48 kHz Opus RTP clock.
pub const DEFAULT_TS_STEP: u32 = 960;
/// RTP clock of the forwarded audio (Opus).
const CLOCK_RATE: u64 = 48_000;

/// Wrapping "a is newer than b" for 16-bit sequence numbers.
fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Wrapping "a is newer than b" for 32-bit timestamps.
fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Offsets for the currently forwarded source.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Incoming sequence number of the first packet forwarded from this source.
    first_seq: u16,
    /// Added (wrapping) to incoming sequence numbers.
    seq_offset: u16,
    /// Added (wrapping) to incoming timestamps.
    ts_offset: u32,
}

/// The last packet sent, in outgoing numbering.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    ts: u32,
}

/// Rewrites `(seq, ts)` of forwarded packets so the outgoing stream stays continuous.
#[derive(Debug, Clone)]
pub struct SeqTsRewriter {
    /// The source whose packets are forwarded; packets from any other source are dropped.
    current: Option<SourceId>,
    /// Set once the current source's first packet has been seen.
    anchor: Option<Anchor>,
    /// Timestamp advance applied between the last sent packet and the new source's first one.
    pending_ts_step: u32,
    /// Measure that advance from the wall clock at the new source's first packet instead.
    pending_elapsed: bool,
    /// Highest (newest) outgoing sequence number and timestamp sent so far.
    highest: Option<Sent>,
    /// When the last packet was sent (for elapsed-time switches).
    last_sent_at: Option<Instant>,
}

impl Default for SeqTsRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqTsRewriter {
    /// A rewriter with no source selected yet.
    pub fn new() -> Self {
        Self {
            current: None,
            anchor: None,
            pending_ts_step: DEFAULT_TS_STEP,
            pending_elapsed: false,
            highest: None,
            last_sent_at: None,
        }
    }

    /// The source currently forwarded, if any.
    pub fn current_source(&self) -> Option<SourceId> {
        self.current
    }

    /// Forwards `source` from its next packet on, whose timestamp will follow the last sent one by
    /// `ts_step` ticks (the media time between the two, e.g. elapsed time × clock rate; at least
    /// one frame). Calling it with the current source re-anchors it, which is how a publisher's
    /// stream restart (new SSRC, sequence or timestamp base) is handled.
    pub fn switch_source(&mut self, source: SourceId, ts_step: u32) {
        self.current = Some(source);
        self.anchor = None;
        self.pending_ts_step = ts_step.max(1);
        self.pending_elapsed = false;
    }

    /// Like [`SeqTsRewriter::switch_source`], but the timestamp of the new source's first packet
    /// follows the last sent one by the wall-clock time between them (at least one frame); needs
    /// [`SeqTsRewriter::rewrite_at`]. Used for speaker switches, mute/unmute and restarts.
    pub fn switch_source_elapsed(&mut self, source: SourceId) {
        self.switch_source(source, DEFAULT_TS_STEP);
        self.pending_elapsed = true;
    }

    /// [`SeqTsRewriter::rewrite`] for a packet forwarded at `now` (elapsed-time switches).
    pub fn rewrite_at(
        &mut self,
        now: Instant,
        source: SourceId,
        seq: u16,
        ts: u32,
    ) -> Option<(u16, u32)> {
        if self.anchor.is_none() && self.pending_elapsed && self.current == Some(source) {
            if let Some(last) = self.last_sent_at {
                let elapsed = now.saturating_duration_since(last);
                let ticks = (elapsed.as_micros() as u64 * CLOCK_RATE / 1_000_000)
                    .clamp(u64::from(DEFAULT_TS_STEP), u64::from(u32::MAX / 2));
                self.pending_ts_step = ticks as u32;
            }
            self.pending_elapsed = false;
        }
        let out = self.rewrite(source, seq, ts)?;
        self.last_sent_at = Some(now);
        Some(out)
    }

    /// Maps an incoming packet of `source` to its outgoing `(seq, ts)`. Returns `None` when the
    /// packet must not be forwarded: it belongs to another source than the current one, or it is a
    /// reordered packet older than the current source's first forwarded packet (its outgoing
    /// number would collide with the previous source's).
    pub fn rewrite(&mut self, source: SourceId, seq: u16, ts: u32) -> Option<(u16, u32)> {
        if self.current != Some(source) {
            return None;
        }
        let anchor = match self.anchor {
            Some(a) => {
                if seq_newer(a.first_seq, seq) {
                    return None;
                }
                a
            }
            None => {
                let a = match self.highest {
                    // The very first stream passes through unchanged.
                    None => Anchor {
                        first_seq: seq,
                        seq_offset: 0,
                        ts_offset: 0,
                    },
                    Some(last) => Anchor {
                        first_seq: seq,
                        seq_offset: last.seq.wrapping_add(1).wrapping_sub(seq),
                        ts_offset: last.ts.wrapping_add(self.pending_ts_step).wrapping_sub(ts),
                    },
                };
                self.anchor = Some(a);
                a
            }
        };
        let out = Sent {
            seq: seq.wrapping_add(anchor.seq_offset),
            ts: ts.wrapping_add(anchor.ts_offset),
        };
        self.highest = Some(match self.highest {
            None => out,
            Some(h) => Sent {
                seq: if seq_newer(out.seq, h.seq) {
                    out.seq
                } else {
                    h.seq
                },
                ts: if ts_newer(out.ts, h.ts) { out.ts } else { h.ts },
            },
        });
        Some((out.seq, out.ts))
    }
}

/// Extends the 16-bit sequence numbers of one outgoing stream to the 64-bit counter SRTP needs
/// (its rollover counter), starting below 65 536 so no out-of-band ROC is needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    /// The extended number of `seq`, the newest or a reordered packet near it.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            self.last = Some(u64::from(seq));
            return u64::from(seq);
        };
        let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
        let extended = (last as i64 + delta).max(0) as u64;
        if extended > last {
            self.last = Some(extended);
        }
        extended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: SourceId = 1;
    const B: SourceId = 2;

    #[test]
    fn first_source_passes_through() {
        let mut r = SeqTsRewriter::new();
        assert_eq!(r.rewrite(A, 10, 1000), None, "nothing selected yet");
        r.switch_source(A, DEFAULT_TS_STEP);
        assert_eq!(r.rewrite(A, 10, 1000), Some((10, 1000)));
        assert_eq!(r.rewrite(A, 11, 1960), Some((11, 1960)));
        assert_eq!(r.current_source(), Some(A));
    }

    #[test]
    fn switch_keeps_continuity_and_drops_old_source() {
        let mut r = SeqTsRewriter::new();
        r.switch_source(A, DEFAULT_TS_STEP);
        for i in 0..5u16 {
            r.rewrite(A, 100 + i, 50_000 + u32::from(i) * 960);
        }
        // Last sent: (104, 53_840).
        r.switch_source(B, 3 * 960);
        assert_eq!(
            r.rewrite(A, 105, 54_800),
            None,
            "old source is no longer forwarded"
        );
        assert_eq!(
            r.rewrite(B, 7_000, 9_999_000),
            Some((105, 53_840 + 3 * 960))
        );
        assert_eq!(
            r.rewrite(B, 7_001, 9_999_960),
            Some((106, 53_840 + 4 * 960))
        );
        // Switching back re-anchors again after B's last packet.
        r.switch_source(A, DEFAULT_TS_STEP);
        assert_eq!(r.rewrite(A, 300, 123), Some((107, 53_840 + 5 * 960)));
    }

    #[test]
    fn wraps_across_switch() {
        let mut r = SeqTsRewriter::new();
        r.switch_source(A, DEFAULT_TS_STEP);
        assert_eq!(
            r.rewrite(A, 65_534, u32::MAX - 960),
            Some((65_534, u32::MAX - 960))
        );
        assert_eq!(r.rewrite(A, 65_535, u32::MAX), Some((65_535, u32::MAX)));
        r.switch_source(B, DEFAULT_TS_STEP);
        assert_eq!(r.rewrite(B, 40_000, 7), Some((0, 959)));
        assert_eq!(r.rewrite(B, 40_001, 967), Some((1, 1919)));
        // A source wrapping on its own keeps the offset.
        r.switch_source(A, DEFAULT_TS_STEP);
        assert_eq!(r.rewrite(A, 65_535, 0), Some((2, 2879)));
        assert_eq!(r.rewrite(A, 0, 960), Some((3, 3839)));
    }

    #[test]
    fn reordered_packets_map_consistently() {
        let mut r = SeqTsRewriter::new();
        r.switch_source(A, DEFAULT_TS_STEP);
        r.rewrite(A, 10, 0);
        r.switch_source(B, DEFAULT_TS_STEP);
        let first = r.rewrite(B, 500, 96_000).unwrap();
        let third = r.rewrite(B, 502, 97_920).unwrap();
        let second = r.rewrite(B, 501, 96_960).unwrap();
        assert_eq!(first, (11, 960));
        assert_eq!(second, (12, 1920));
        assert_eq!(third, (13, 2880));
        // A late packet from before the switch anchor would collide with A's numbers: dropped.
        assert_eq!(r.rewrite(B, 499, 95_040), None);
        // Highest sent stays the newest even after a reordered one.
        r.switch_source(A, DEFAULT_TS_STEP);
        assert_eq!(r.rewrite(A, 20, 0), Some((14, 3840)));
    }

    #[test]
    fn publisher_restart_is_reanchored() {
        let mut r = SeqTsRewriter::new();
        r.switch_source(A, DEFAULT_TS_STEP);
        r.rewrite(A, 1_000, 10_000);
        r.rewrite(A, 1_001, 10_960);
        // The publisher restarts with a fresh random base: same source, re-anchored.
        r.switch_source(A, 2 * 960);
        assert_eq!(r.rewrite(A, 42, 77), Some((1_002, 10_960 + 1_920)));
        assert_eq!(r.rewrite(A, 43, 1_037), Some((1_003, 10_960 + 2_880)));
    }

    #[test]
    fn long_run_is_gapless() {
        let mut r = SeqTsRewriter::new();
        let mut expected: Option<(u16, u32)> = None;
        for round in 0..40u32 {
            let src = SourceId::from(round % 3);
            r.switch_source(src, DEFAULT_TS_STEP);
            let base_seq = (round * 40_009) as u16;
            let base_ts = round.wrapping_mul(2_654_435_761);
            for i in 0..3_000u32 {
                let out = r
                    .rewrite(
                        src,
                        base_seq.wrapping_add(i as u16),
                        base_ts.wrapping_add(i * 960),
                    )
                    .unwrap();
                if let Some((s, t)) = expected {
                    assert_eq!(out, (s.wrapping_add(1), t.wrapping_add(960)));
                }
                expected = Some(out);
            }
        }
    }

    #[test]
    fn a_switch_advances_the_timestamp_by_the_elapsed_time() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new();
        r.switch_source_elapsed(A);
        assert_eq!(r.rewrite_at(t0, A, 10, 1000), Some((10, 1000)));
        // B's first packet arrives 230 ms after A's last: 230 ms of 48 kHz ticks, not one frame.
        r.switch_source_elapsed(B);
        let at = t0 + Duration::from_millis(230);
        assert_eq!(r.rewrite_at(at, B, 500, 7), Some((11, 1000 + 11_040)));
        // Back-to-back packets of one source keep the source's own spacing.
        let at = at + Duration::from_millis(20);
        assert_eq!(r.rewrite_at(at, B, 501, 967), Some((12, 1000 + 12_000)));
        // A switch without a pause still advances at least one frame.
        r.switch_source_elapsed(A);
        assert_eq!(r.rewrite_at(at, A, 11, 1960), Some((13, 1000 + 12_960)));
    }

    #[test]
    fn mute_and_unmute_continue_without_a_sequence_gap() {
        // Server-side mute: the publisher keeps sending, nothing is forwarded; at unmute the
        // stream re-anchors, so the subscriber sees no "lost" packets and the real pause.
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new();
        r.switch_source_elapsed(A);
        for i in 0..10u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            r.rewrite_at(at, A, 100 + i, u32::from(i) * 960);
        }
        // Muted for packets 110..160 (one second), unmuted at 160.
        r.switch_source_elapsed(A);
        let at = t0 + Duration::from_millis(20 * 60);
        assert_eq!(r.rewrite_at(at, A, 160, 60 * 960), Some((110, 60 * 960)));
        assert_eq!(
            r.rewrite_at(at + Duration::from_millis(20), A, 161, 61 * 960),
            Some((111, 61 * 960))
        );
    }

    #[test]
    fn loss_passes_through_as_a_gap() {
        // Lost packets stay lost for the subscriber (its jitter buffer conceals them); the
        // mapping does not close the gap, or timestamps and sequence numbers would disagree.
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new();
        r.switch_source_elapsed(A);
        r.switch_source_elapsed(B);
        r.rewrite_at(t0, B, 1, 960);
        assert_eq!(r.rewrite_at(t0, B, 2, 1920), Some((2, 1920)));
        assert_eq!(
            r.rewrite_at(t0, B, 5, 4800),
            Some((5, 4800)),
            "3 and 4 lost"
        );
        assert_eq!(
            r.rewrite_at(t0, B, 4, 3840),
            Some((4, 3840)),
            "a late one fits"
        );
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap() {
        let mut e = SeqExtender::default();
        assert_eq!(e.extend(65_534), 65_534);
        assert_eq!(e.extend(65_535), 65_535);
        assert_eq!(e.extend(0), 65_536);
        assert_eq!(
            e.extend(65_535),
            65_535,
            "a reordered packet from before the wrap"
        );
        assert_eq!(e.extend(1), 65_537);
    }
}
