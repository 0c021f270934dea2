//! Per-client limits at the gateway's doors, before and apart from the session cap.
//!
//! An unauthenticated client must hold nothing a real user needs: a WebSocket counts against the
//! session cap ([`crate::Gateway`]'s slots) only after its token verified. Until then it holds a
//! *pending* place, from a small budget per source address and a global one, and must join
//! within [`LimitsConfig::join_deadline`]. Source addresses are also limited in how many
//! connections they keep open, how fast they connect, how many joins they attempt and how many
//! WHIP/WHEP sessions they create per minute.
//!
//! IPv6 clients are keyed by their /64 (one subscriber usually holds a whole /64).
//!
//! ```
//! use std::net::IpAddr;
//! use dartmouth_signaling::limits::{Limits, LimitsConfig};
//!
//! let limits = Limits::new(LimitsConfig { pending_per_ip: 1, ..LimitsConfig::default() });
//! let ip: IpAddr = "192.0.2.7".parse().unwrap();
//! let first = limits.admit_connection(Some(ip)).unwrap();
//! assert!(limits.admit_connection(Some(ip)).is_err(), "one pending connection per address");
//! let _first = first.authenticated();
//! assert!(limits.admit_connection(Some(ip)).is_ok(), "an authenticated one no longer counts");
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::ConnectInfo;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Keys a rate limiter keeps before stale ones are purged.
const PURGE_THRESHOLD: usize = 10_000;

/// The limits, all per source address unless named global.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// WebSockets an address may hold open before their token verified.
    pub pending_per_ip: usize,
    /// WebSockets the whole gateway holds open before their token verified.
    pub pending_total: usize,
    /// How long a WebSocket may take to send a join whose token verifies.
    pub join_deadline: Duration,
    /// WebSockets and WHIP/WHEP sessions an address may hold at once (authenticated or not).
    pub connections_per_ip: usize,
    /// New WebSocket connections per minute from one address (bursts up to a quarter of it).
    pub connects_per_minute: u32,
    /// Join attempts per minute from one address (bursts up to a quarter of it).
    pub joins_per_minute: u32,
    /// WHIP/WHEP session requests per minute from one address (bursts up to a quarter of it).
    pub http_sessions_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            pending_per_ip: 16,
            pending_total: 1024,
            join_deadline: Duration::from_secs(5),
            connections_per_ip: 64,
            connects_per_minute: 240,
            joins_per_minute: 120,
            http_sessions_per_minute: 120,
        }
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The address holds too many connections that have not authenticated.
    #[error("too many connections from your address are waiting to join")]
    PendingPerIp,
    /// The gateway holds too many connections that have not authenticated.
    #[error("too many connections are waiting to join; try again shortly")]
    PendingTotal,
    /// The address holds too many connections.
    #[error("too many connections from your address")]
    ConnectionsPerIp,
    /// The address is over a per-minute quota; retry after this many seconds.
    #[error("too many requests from your address; retry in {0} s")]
    RateLimited(u64),
}

impl Refusal {
    /// Seconds a client should wait before retrying, when known.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Refusal::RateLimited(secs) => Some(secs),
            _ => None,
        }
    }
}

type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

#[derive(Debug, Default)]
struct Counts {
    per_ip: HashMap<IpAddr, PerIp>,
    pending_total: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct PerIp {
    pending: usize,
    connections: usize,
}

/// The gateway's per-address limits (shared; cheap to check).
pub struct Limits {
    config: LimitsConfig,
    counts: Mutex<Counts>,
    connects: KeyedLimiter,
    joins: KeyedLimiter,
    http_sessions: KeyedLimiter,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn per_minute(n: u32) -> Quota {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new((n.get() / 4).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n).allow_burst(burst)
}

/// The key of an address: itself for IPv4, its /64 for IPv6 (IPv4-mapped IPv6 as IPv4).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Clients whose address is unknown (no connect info: in-process tests) share this key.
const UNKNOWN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

impl Limits {
    /// Limits with this configuration.
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            connects: RateLimiter::keyed(per_minute(config.connects_per_minute)),
            joins: RateLimiter::keyed(per_minute(config.joins_per_minute)),
            http_sessions: RateLimiter::keyed(per_minute(config.http_sessions_per_minute)),
            config,
            counts: Mutex::new(Counts::default()),
            clock: DefaultClock::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rate(&self, limiter: &KeyedLimiter, key: IpAddr) -> Result<(), Refusal> {
        if limiter.len() > PURGE_THRESHOLD {
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Refusal::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    /// Admits a new WebSocket from `ip` as pending (not yet authenticated), or refuses it.
    pub fn admit_connection(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let key = ip.map(address_key).unwrap_or(UNKNOWN);
        {
            let mut counts = self.counts();
            let total = counts.pending_total;
            let here = counts.per_ip.get(&key).copied().unwrap_or_default();
            if here.connections >= self.config.connections_per_ip {
                return Err(Refusal::ConnectionsPerIp);
            }
            if here.pending >= self.config.pending_per_ip {
                return Err(Refusal::PendingPerIp);
            }
            if total >= self.config.pending_total {
                return Err(Refusal::PendingTotal);
            }
            self.rate(&self.connects, key)?;
            let entry = counts.per_ip.entry(key).or_default();
            entry.pending += 1;
            entry.connections += 1;
            counts.pending_total += 1;
        }
        Ok(Permit {
            limits: self.clone(),
            key,
            pending: true,
        })
    }

    /// Admits a WHIP/WHEP session request from `ip` (rate and open connections), or refuses it.
    /// The permit is already authenticated: hold it for the session's life.
    pub fn admit_http_session(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let key = ip.map(address_key).unwrap_or(UNKNOWN);
        let mut counts = self.counts();
        let here = counts.per_ip.get(&key).copied().unwrap_or_default();
        if here.connections >= self.config.connections_per_ip {
            return Err(Refusal::ConnectionsPerIp);
        }
        self.rate(&self.http_sessions, key)?;
        counts.per_ip.entry(key).or_default().connections += 1;
        Ok(Permit {
            limits: self.clone(),
            key,
            pending: false,
        })
    }

    /// Takes one join attempt from `permit`'s address budget.
    pub fn check_join(&self, permit: &Permit) -> Result<(), Refusal> {
        self.rate(&self.joins, permit.key)
    }

    /// Connections not yet authenticated, gateway-wide.
    pub fn pending(&self) -> usize {
        self.counts().pending_total
    }

    /// Connections (pending or not) held by the address `ip`.
    pub fn connections_of(&self, ip: IpAddr) -> usize {
        self.counts()
            .per_ip
            .get(&address_key(ip))
            .map_or(0, |c| c.connections)
    }

    fn release(&self, key: IpAddr, pending: bool) {
        let mut counts = self.counts();
        if pending {
            counts.pending_total = counts.pending_total.saturating_sub(1);
        }
        if let Some(entry) = counts.per_ip.get_mut(&key) {
            if pending {
                entry.pending = entry.pending.saturating_sub(1);
            }
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && entry.pending == 0 {
                counts.per_ip.remove(&key);
            }
        }
    }
}

/// One admitted connection's place in the counts; released on drop.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    key: IpAddr,
    pending: bool,
}

impl Permit {
    /// The token verified: the connection no longer counts as pending (it still counts as one
    /// of its address's connections).
    pub fn authenticated(mut self) -> Self {
        self.mark_authenticated();
        self
    }

    /// In place form of [`Permit::authenticated`].
    pub fn mark_authenticated(&mut self) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let mut counts = self.limits.counts();
        counts.pending_total = counts.pending_total.saturating_sub(1);
        if let Some(entry) = counts.per_ip.get_mut(&self.key) {
            entry.pending = entry.pending.saturating_sub(1);
        }
    }

    /// Whether the connection has not authenticated yet.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(self.key, self.pending);
    }
}

/// The client's address as the TCP connection shows it (`None` without connect info).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn pending_budget_is_per_address_and_released() {
        let limits = Limits::new(LimitsConfig {
            pending_per_ip: 2,
            ..LimitsConfig::default()
        });
        let a = limits.admit_connection(ip("192.0.2.1")).unwrap();
        let _b = limits.admit_connection(ip("192.0.2.1")).unwrap();
        assert_eq!(
            limits.admit_connection(ip("192.0.2.1")).unwrap_err(),
            Refusal::PendingPerIp
        );
        let _c = limits.admit_connection(ip("192.0.2.2")).unwrap();
        drop(a);
        let _d = limits.admit_connection(ip("192.0.2.1")).unwrap();
        assert_eq!(limits.pending(), 3, "dropped permits are released");
    }

    #[test]
    fn global_pending_budget_and_connection_cap() {
        let limits = Limits::new(LimitsConfig {
            pending_total: 2,
            connections_per_ip: 3,
            ..LimitsConfig::default()
        });
        let a = limits.admit_connection(ip("192.0.2.1")).unwrap();
        let _b = limits.admit_connection(ip("192.0.2.2")).unwrap();
        assert_eq!(
            limits.admit_connection(ip("192.0.2.3")).unwrap_err(),
            Refusal::PendingTotal
        );
        let a = a.authenticated();
        assert_eq!(limits.pending(), 1);
        let _c = limits
            .admit_connection(ip("192.0.2.1"))
            .unwrap()
            .authenticated();
        let _d = limits.admit_http_session(ip("192.0.2.1")).unwrap();
        assert_eq!(limits.connections_of("192.0.2.1".parse().unwrap()), 3);
        assert_eq!(
            limits.admit_http_session(ip("192.0.2.1")).unwrap_err(),
            Refusal::ConnectionsPerIp
        );
        drop(a);
        assert!(limits.admit_http_session(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_v4_as_v4() {
        let limits = Limits::new(LimitsConfig {
            pending_per_ip: 1,
            ..LimitsConfig::default()
        });
        let _a = limits.admit_connection(ip("2001:db8:1:2::1")).unwrap();
        assert!(limits.admit_connection(ip("2001:db8:1:2::ffff")).is_err());
        assert!(limits.admit_connection(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = limits.admit_connection(ip("192.0.2.9")).unwrap();
        assert!(limits.admit_connection(ip("::ffff:192.0.2.9")).is_err());
    }

    #[test]
    fn joins_and_http_sessions_are_rate_limited_per_address() {
        let limits = Limits::new(LimitsConfig {
            joins_per_minute: 8,
            http_sessions_per_minute: 4,
            ..LimitsConfig::default()
        });
        let permit = limits.admit_connection(ip("192.0.2.1")).unwrap();
        for _ in 0..2 {
            limits.check_join(&permit).unwrap();
        }
        let refused = limits.check_join(&permit).unwrap_err();
        assert!(refused.retry_after().is_some_and(|s| s >= 1), "{refused:?}");
        let other = limits.admit_connection(ip("192.0.2.2")).unwrap();
        assert!(limits.check_join(&other).is_ok());
        let _s = limits.admit_http_session(ip("192.0.2.3")).unwrap();
        assert!(matches!(
            limits.admit_http_session(ip("192.0.2.3")),
            Err(Refusal::RateLimited(_))
        ));
    }
}
