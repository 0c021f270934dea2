//! SFU forwarding: sequence-number and timestamp rewriting for one outgoing audio track.
//!
//! A subscriber sees one continuous RTP stream even when the forwarded source switches between
//! publishers or a publisher restarts its stream. Within a source the mapping is a fixed wrapping
//! offset, so reordered packets map consistently; at a switch the offsets are re-anchored so the
//! first packet of the new source follows the last one sent.

/// Identifies a forwarded source (a publisher's track, or one incarnation of it).
pub type SourceId = u64;

/// Default timestamp advance at a switch: one 20 ms frame at the 48 kHz Opus RTP clock.
pub const DEFAULT_TS_STEP: u32 = 960;

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
    /// Highest (newest) outgoing sequence number and timestamp sent so far.
    highest: Option<Sent>,
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
            highest: None,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
