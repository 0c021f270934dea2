//! The agent registry: agent instances (embedded voice agents and external ones) register with a
//! name, capabilities, an endpoint and a version, then heartbeat. Their health is derived from the
//! heartbeats (and what they report): an instance that misses [`DOWN_AFTER_INTERVALS`] heartbeat
//! intervals is down and receives no requests; its next heartbeat brings it back. Discovery is
//! by capability; routing picks a healthy instance round-robin or least-loaded. A watcher
//! publishes every health change as a `registry.agent_status` event. Registered agents message
//! each other through [`messages`] (request/reply or fire-and-forget, over the event bus).
//!
//! State lives in the database (SQLite or PostgreSQL), so it survives a sidecar restart.

mod client;
pub mod messages;
pub mod routes;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Heartbeat intervals an instance may miss before it is down.
pub const DOWN_AFTER_INTERVALS: i64 = 3;
/// Default heartbeat interval (ms) when registration names none.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: i64 = 10_000;
/// Shortest and longest heartbeat intervals accepted (ms).
pub const HEARTBEAT_INTERVAL_RANGE_MS: std::ops::RangeInclusive<i64> = 100..=3_600_000;
/// Default concurrent requests or calls an instance takes.
pub const DEFAULT_CAPACITY: i64 = 10;
/// The topic of health changes.
pub const TOPIC_STATUS: &str = "registry.agent_status";

/// An instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heartbeating on time, reporting no trouble, with room for more work.
    Healthy,
    /// Late (over 1.5 intervals), self-reported degraded, or full: routed to only when no
    /// instance is healthy.
    Degraded,
    /// Missed [`DOWN_AFTER_INTERVALS`] intervals: never routed to.
    Down,
}

impl Health {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }

    /// Parses a stored name (unknown: down).
    pub fn parse(name: &str) -> Health {
        match name {
            "healthy" => Health::Healthy,
            "degraded" => Health::Degraded,
            _ => Health::Down,
        }
    }
}

/// What decides an instance's health, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vitals {
    /// Unix ms of the last heartbeat (or the registration).
    pub last_heartbeat: i64,
    /// The promised heartbeat interval (ms).
    pub interval_ms: i64,
    /// The instance said it is degraded in its last heartbeat.
    pub reported_degraded: bool,
    /// Requests or calls in progress (reported, plus routed since).
    pub active: i64,
    /// Most it takes at once.
    pub capacity: i64,
}

impl Vitals {
    /// The health at unix ms `now`.
    pub fn health(&self, now: i64) -> Health {
        let age = now.saturating_sub(self.last_heartbeat);
        if age > self.interval_ms.saturating_mul(DOWN_AFTER_INTERVALS) {
            Health::Down
        } else if self.reported_degraded
            || age > self.interval_ms.saturating_mul(3) / 2
            || self.active >= self.capacity
        {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }
}

/// How [`pick`] chooses among instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The instance routed to longest ago.
    #[default]
    RoundRobin,
    /// The instance with the smallest share of its capacity in use.
    LeastLoaded,
}

/// An instance as [`pick`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Instance id (ties break on it, so picks are deterministic).
    pub id: String,
    /// Its health now.
    pub health: Health,
    /// In progress.
    pub active: i64,
    /// Most at once.
    pub capacity: i64,
    /// Unix ms it was last routed to (0: never).
    pub last_routed_at: i64,
}

/// The index of the instance a request goes to: healthy ones first; when none is healthy, a
/// degraded one that still has room; never a down one.
pub fn pick(candidates: &[Candidate], strategy: Strategy) -> Option<usize> {
    let eligible = |c: &Candidate, health: Health| c.health == health && c.active < c.capacity;
    let tier = if candidates.iter().any(|c| eligible(c, Health::Healthy)) {
        Health::Healthy
    } else {
        Health::Degraded
    };
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| eligible(c, tier))
        .min_by(|(_, a), (_, b)| {
            let by_strategy = match strategy {
                Strategy::RoundRobin => std::cmp::Ordering::Equal,
                // a.active / a.capacity against b.active / b.capacity, without division.
                Strategy::LeastLoaded => (i128::from(a.active) * i128::from(b.capacity))
                    .cmp(&(i128::from(b.active) * i128::from(a.capacity))),
            };
            by_strategy
                .then(a.last_routed_at.cmp(&b.last_routed_at))
                .then(a.id.cmp(&b.id))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals(last_heartbeat: i64) -> Vitals {
        Vitals {
            last_heartbeat,
            interval_ms: 1000,
            reported_degraded: false,
            active: 0,
            capacity: 2,
        }
    }

    #[test]
    fn health_follows_the_heartbeats() {
        assert_eq!(vitals(10_000).health(10_900), Health::Healthy);
        assert_eq!(vitals(10_000).health(11_600), Health::Degraded);
        assert_eq!(vitals(10_000).health(13_000), Health::Degraded);
        assert_eq!(vitals(10_000).health(13_001), Health::Down);
        let reported = Vitals {
            reported_degraded: true,
            ..vitals(10_000)
        };
        assert_eq!(reported.health(10_100), Health::Degraded);
        let full = Vitals {
            active: 2,
            ..vitals(10_000)
        };
        assert_eq!(full.health(10_100), Health::Degraded);
        // A clock step backwards is not a missed heartbeat.
        assert_eq!(vitals(10_000).health(9_000), Health::Healthy);
    }

    fn candidate(id: &str, health: Health, active: i64, last_routed_at: i64) -> Candidate {
        Candidate {
            id: id.into(),
            health,
            active,
            capacity: 4,
            last_routed_at,
        }
    }

    #[test]
    fn round_robin_takes_the_longest_unused_healthy_instance() {
        let all = [
            candidate("a", Health::Healthy, 0, 30),
            candidate("b", Health::Healthy, 3, 10),
            candidate("c", Health::Down, 0, 0),
            candidate("d", Health::Degraded, 0, 0),
        ];
        assert_eq!(pick(&all, Strategy::RoundRobin), Some(1));
        assert_eq!(pick(&all, Strategy::LeastLoaded), Some(0));
    }

    #[test]
    fn degraded_instances_serve_only_when_none_is_healthy_and_down_ones_never() {
        let all = [
            candidate("a", Health::Down, 0, 0),
            candidate("b", Health::Degraded, 1, 5),
            candidate("c", Health::Degraded, 4, 0),
        ];
        assert_eq!(pick(&all, Strategy::RoundRobin), Some(1), "c is full");
        assert_eq!(pick(&all[..1], Strategy::RoundRobin), None);
        assert_eq!(pick(&[], Strategy::LeastLoaded), None);
    }

    #[test]
    fn least_loaded_compares_shares_of_capacity() {
        let mut small = candidate("small", Health::Healthy, 1, 0);
        small.capacity = 2;
        let mut large = candidate("large", Health::Healthy, 3, 9);
        large.capacity = 10;
        assert_eq!(pick(&[small, large], Strategy::LeastLoaded), Some(1));
    }
}
