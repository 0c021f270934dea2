//! Publisher policing: a token bucket on packets and on bytes per publisher. Packets beyond the
//! configured rate are dropped before forwarding (and counted), so one flooding client cannot
//! spend the room's forwarding budget; the others are unaffected.

use std::time::{Duration, Instant};

/// Limits applied to every publisher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicingConfig {
    /// Sustained packets per second (Opus at 10 ms frames sends 100).
    pub max_packets_per_sec: u32,
    /// Sustained payload bits per second (Opus voice tops out near 128 kbit/s).
    pub max_bitrate: u32,
    /// How much above the rate may arrive at once (a burst after a network hiccup).
    pub burst: Duration,
    /// Off: forward everything.
    pub enabled: bool,
}

impl Default for PolicingConfig {
    fn default() -> Self {
        Self {
            max_packets_per_sec: 100,
            max_bitrate: 256_000,
            burst: Duration::from_millis(500),
            enabled: true,
        }
    }
}

/// One publisher's buckets.
#[derive(Debug, Clone)]
pub struct Policer {
    packets: f64,
    bytes: f64,
    last: Option<Instant>,
    /// Packets dropped so far.
    pub dropped: u64,
}

impl Default for Policer {
    fn default() -> Self {
        Self::new()
    }
}

impl Policer {
    /// Full buckets.
    pub fn new() -> Self {
        Self {
            packets: f64::MAX,
            bytes: f64::MAX,
            last: None,
            dropped: 0,
        }
    }

    /// Whether a packet of `bytes` arriving at `now` is within the limits (and takes its tokens).
    pub fn admit(&mut self, config: &PolicingConfig, now: Instant, bytes: usize) -> bool {
        if !config.enabled {
            return true;
        }
        let burst = config.burst.as_secs_f64();
        let packet_rate = f64::from(config.max_packets_per_sec);
        let byte_rate = f64::from(config.max_bitrate) / 8.0;
        let (packet_cap, byte_cap) = (packet_rate * burst + 1.0, byte_rate * burst + 1500.0);
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        self.last = Some(now);
        self.packets = (self.packets.min(packet_cap) + elapsed * packet_rate).min(packet_cap);
        self.bytes = (self.bytes.min(byte_cap) + elapsed * byte_rate).min(byte_cap);
        let size = bytes as f64;
        if self.packets >= 1.0 && self.bytes >= size {
            self.packets -= 1.0;
            self.bytes -= size;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        policer: &mut Policer,
        config: &PolicingConfig,
        pps: u64,
        secs: u64,
        size: usize,
    ) -> u64 {
        let t0 = Instant::now();
        let interval = Duration::from_nanos(1_000_000_000 / pps);
        (0..pps * secs)
            .filter(|i| policer.admit(config, t0 + interval * *i as u32, size))
            .count() as u64
    }

    #[test]
    fn a_normal_publisher_is_never_policed() {
        let config = PolicingConfig::default();
        let mut p = Policer::new();
        assert_eq!(run(&mut p, &config, 50, 20, 160), 1000);
        assert_eq!(p.dropped, 0);
    }

    #[test]
    fn ten_times_the_rate_is_cut_to_the_limit() {
        let config = PolicingConfig::default();
        let mut p = Policer::new();
        let passed = run(&mut p, &config, 500, 10, 80);
        // 100 packets/s for 10 s plus the burst.
        assert!((1000..=1060).contains(&passed), "{passed} passed");
        assert!(p.dropped >= 3900);
    }

    #[test]
    fn oversized_bitrate_is_cut_too() {
        let config = PolicingConfig::default();
        let mut p = Policer::new();
        // 50 packets/s of 1200 bytes = 480 kbit/s: about half is dropped.
        let passed = run(&mut p, &config, 50, 10, 1200);
        assert!((250..=300).contains(&passed), "{passed} passed");
        let off = PolicingConfig {
            enabled: false,
            ..config
        };
        assert_eq!(run(&mut Policer::new(), &off, 500, 2, 1200), 1000);
    }
}
