//! RTP audio jitter buffer: a pure state machine with time as input.
//!
//! `push(now, seq, ts, payload)` stores a packet in a pre-allocated ring of fixed-size slots;
//! `pop(now)`, called once per 20 ms frame by the driver, releases frames in sequence order after
//! an adaptive target delay. The delay follows the RFC 3550 interarrival jitter estimate within
//! [`MIN_DELAY`, `MAX_DELAY`]: playout is held back one frame at a time while the buffered delay
//! is below target, underruns add delay by themselves, and one buffered frame at a time is
//! discarded while the delay is more than a frame above target. A missing frame is reported as
//! `Lost` only once a later packet is buffered; before that the buffer reports `Empty`.
//! Every packet is taken to carry one 20 ms frame: playout is paced by sequence number, while
//! timestamps feed only the jitter estimate.

use std::time::Duration;

/// Packets the ring holds (1.28 s of 20 ms frames); packets further ahead push the oldest out.
pub const CAPACITY: usize = 64;
/// Bytes per slot; larger payloads are dropped.
pub const SLOT_BYTES: usize = 1500;
/// Duration of one frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// Target delay before the first jitter measurements.
pub const INITIAL_DELAY: Duration = Duration::from_millis(40);
/// Lower bound of the adaptive target delay.
pub const MIN_DELAY: Duration = Duration::from_millis(20);
/// Upper bound of the adaptive target delay.
pub const MAX_DELAY: Duration = Duration::from_millis(200);
/// Multiple of the jitter estimate added to one frame to form the target delay.
const JITTER_FACTOR: f64 = 4.0;
/// Packets measured before the jitter estimate replaces [`INITIAL_DELAY`].
const WARMUP_PACKETS: u64 = 16;

/// What `push` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Stored,
    /// Already buffered; dropped.
    Duplicate,
    /// Its slot was already played or declared lost; dropped.
    Late,
    /// Payload longer than [`SLOT_BYTES`]; dropped.
    TooLarge,
}

/// One released frame, borrowed from the buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutPacket<'a> {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// The payload as received.
    pub payload: &'a [u8],
}

/// Result of one `pop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next frame in order.
    Packet(PlayoutPacket<'a>),
    /// The frame `seq` is missing while later ones are buffered: conceal it.
    Lost {
        /// Sequence number of the missing frame.
        seq: u16,
    },
    /// Nothing to play yet (before the initial delay, underrun, or holding back to grow delay).
    Empty,
}

/// Counters and the current delays.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets stored.
    pub received: u64,
    /// Frames reported as `Lost`.
    pub lost: u64,
    /// Packets dropped because they arrived after their slot was played.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Frames discarded to shrink the delay or to make room.
    pub discarded: u64,
    /// RFC 3550 interarrival jitter estimate.
    pub jitter: Duration,
    /// Adaptive target delay.
    pub target_delay: Duration,
    /// Audio buffered ahead of the next frame to play.
    pub current_delay: Duration,
}

#[derive(Clone)]
struct Slot {
    /// Extended sequence number stored here, if occupied.
    ext_seq: Option<i64>,
    timestamp: u32,
    len: usize,
    data: [u8; SLOT_BYTES],
}

/// The jitter buffer; see the module docs.
pub struct JitterBuffer {
    slots: Box<[Slot]>,
    clock_rate: u32,
    /// Next extended sequence number to play (valid once a packet arrived).
    next: i64,
    /// Highest extended sequence number received.
    highest: Option<i64>,
    /// Arrival time of the first packet; playout starts `target` after it.
    first_arrival: Option<Duration>,
    started: bool,
    /// The previous `pop` held playout back to grow the delay.
    held_last: bool,
    /// Previous packet's `(timestamp, transit time in seconds)` for the jitter estimate.
    last_transit: Option<(u32, f64)>,
    /// Timestamp of the latest packet relative to the first, unwrapped.
    ts_unwrapped: i64,
    jitter_secs: f64,
    target: Duration,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("next", &self.next)
            .field("highest", &self.highest)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl JitterBuffer {
    /// An empty buffer for a stream with the given RTP `clock_rate` (48000 for Opus).
    pub fn new(clock_rate: u32) -> Self {
        let empty = Slot {
            ext_seq: None,
            timestamp: 0,
            len: 0,
            data: [0; SLOT_BYTES],
        };
        Self {
            slots: vec![empty; CAPACITY].into_boxed_slice(),
            clock_rate: clock_rate.max(1),
            next: 0,
            highest: None,
            first_arrival: None,
            started: false,
            held_last: false,
            last_transit: None,
            ts_unwrapped: 0,
            jitter_secs: 0.0,
            target: INITIAL_DELAY,
            stats: JitterStats::default(),
        }
    }

    /// Current counters and delays.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            jitter: Duration::from_secs_f64(self.jitter_secs),
            target_delay: self.target,
            current_delay: FRAME * self.buffered_ahead() as u32,
            ..self.stats
        }
    }

    fn index(ext: i64) -> usize {
        ext.rem_euclid(CAPACITY as i64) as usize
    }

    /// Frames buffered beyond the next one to play (how long the newest packet will wait).
    fn buffered_ahead(&self) -> i64 {
        self.highest.map_or(0, |h| (h - self.next).max(0))
    }

    /// Offers one received packet at time `now`.
    pub fn push(&mut self, now: Duration, seq: u16, timestamp: u32, payload: &[u8]) -> PushOutcome {
        if payload.len() > SLOT_BYTES {
            return PushOutcome::TooLarge;
        }
        let ext = match self.highest {
            None => i64::from(seq),
            Some(h) => h + i64::from(seq.wrapping_sub(h as u16) as i16),
        };
        if self.highest.is_none() {
            self.next = ext;
            self.first_arrival = Some(now);
        }
        if ext < self.next {
            let span = self.highest.map_or(0, |h| h - ext);
            if self.started || span >= CAPACITY as i64 {
                self.stats.late += 1;
                return PushOutcome::Late;
            }
            // Reordered ahead of playout start: play it first.
            self.next = ext;
        }
        let idx = Self::index(ext);
        if self.slots[idx].ext_seq == Some(ext) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        // Too far ahead for the ring: drop the oldest frames to make room (drop-oldest).
        let newest_allowed = self.next + CAPACITY as i64 - 1;
        if ext > newest_allowed {
            let shift = ext - newest_allowed;
            for e in self.next..self.next + shift.min(CAPACITY as i64) {
                if self.slots[Self::index(e)].ext_seq.take().is_some() {
                    self.stats.discarded += 1;
                }
            }
            self.next += shift;
        }
        let slot = &mut self.slots[idx];
        slot.ext_seq = Some(ext);
        slot.timestamp = timestamp;
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.stats.received += 1;
        self.update_jitter(now, timestamp);
        PushOutcome::Stored
    }

    /// RFC 3550 §6.4.1: J += (|D| - J) / 16, with D the change in transit time.
    fn update_jitter(&mut self, now: Duration, timestamp: u32) {
        let clock = f64::from(self.clock_rate);
        if let Some((prev_ts, prev_transit)) = self.last_transit {
            self.ts_unwrapped += i64::from(timestamp.wrapping_sub(prev_ts) as i32);
            let transit = now.as_secs_f64() - self.ts_unwrapped as f64 / clock;
            let d = (transit - prev_transit).abs();
            self.jitter_secs += (d - self.jitter_secs) / 16.0;
            self.last_transit = Some((timestamp, transit));
        } else {
            self.ts_unwrapped = 0;
            self.last_transit = Some((timestamp, now.as_secs_f64()));
        }
        if self.stats.received >= WARMUP_PACKETS {
            let want = FRAME.as_secs_f64() + JITTER_FACTOR * self.jitter_secs;
            let want = want.clamp(MIN_DELAY.as_secs_f64(), MAX_DELAY.as_secs_f64());
            self.target = Duration::from_secs_f64(want);
        }
    }

    /// Releases the next 20 ms frame at time `now`; call once per frame period.
    pub fn pop(&mut self, now: Duration) -> Playout<'_> {
        let Some(highest) = self.highest else {
            return Playout::Empty;
        };
        if !self.started {
            let first = self.first_arrival.unwrap_or(now);
            if now.saturating_sub(first) < self.target {
                return Playout::Empty;
            }
            self.started = true;
        }
        if highest < self.next {
            return Playout::Empty; // underrun
        }
        let target_frames = (self.target.as_secs_f64() / FRAME.as_secs_f64()).round() as i64;
        let ahead = highest - self.next;
        if ahead + 1 < target_frames && !self.held_last {
            // Hold back one frame (never two in a row, so a stream's tail still drains) to let
            // the delay grow towards the target.
            self.held_last = true;
            return Playout::Empty;
        }
        self.held_last = false;
        if ahead > target_frames + 1
            && self.slots[Self::index(self.next)].ext_seq == Some(self.next)
        {
            // Discard one buffered frame to shrink the delay.
            self.slots[Self::index(self.next)].ext_seq = None;
            self.stats.discarded += 1;
            self.next += 1;
        }
        let ext = self.next;
        self.next += 1;
        let idx = Self::index(ext);
        if self.slots[idx].ext_seq != Some(ext) {
            self.stats.lost += 1;
            return Playout::Lost { seq: ext as u16 };
        }
        let slot = &mut self.slots[idx];
        slot.ext_seq = None;
        Playout::Packet(PlayoutPacket {
            seq: ext as u16,
            timestamp: slot.timestamp,
            payload: &slot.data[..slot.len],
        })
    }
}

#[cfg(test)]
#[path = "jitter_tests.rs"]
mod tests;
