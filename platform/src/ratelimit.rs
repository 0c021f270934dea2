//! Rate limiting with `governor`: one keyed limiter per route group; over quota → `429` with
//! `Retry-After`.
//!
//! Login, registration and refresh are keyed by the client's address alone (never by a header the
//! client chooses), and login and registration also per account; failed logins back off
//! exponentially per account and per address, and while backed off no password is hashed. The
//! general API is keyed by credential *and* by address (with four times the quota), so random
//! `Authorization` headers cannot lift it. The address is the TCP peer's, or the one a configured
//! trusted proxy names in `X-Forwarded-For` (see [`crate::http::client_ip`]).

use crate::config::RateLimitConfig;
use crate::error::{ApiError, PlatformError};
use crate::http::client_ip;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Keys kept before stale ones are purged.
const PURGE_THRESHOLD: usize = 10_000;

/// The route groups that have their own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteGroup {
    /// Login, registration, refresh: strict, against credential stuffing.
    Auth,
    /// Everything else under `/v1`.
    Api,
}

impl RouteGroup {
    /// The group of a request path.
    pub fn of(path: &str) -> RouteGroup {
        match path {
            "/v1/auth/login" | "/v1/auth/register" | "/v1/auth/refresh" => RouteGroup::Auth,
            _ => RouteGroup::Api,
        }
    }
}

/// Login failures remembered at most (oldest forgotten first when full).
const MAX_TRACKED_FAILURES: usize = 100_000;
/// Failures are forgotten this long after the last one.
const FAILURE_MEMORY: Duration = Duration::from_secs(3600);

/// The limiters of all route groups.
pub struct RateLimits {
    enabled: bool,
    api: KeyedLimiter,
    api_by_address: KeyedLimiter,
    auth: KeyedLimiter,
    accounts: KeyedLimiter,
    clock: DefaultClock,
    backoff: Backoff,
    /// Peers whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
}

/// Exponential back-off after failed logins, per key (`acct:<email>`, `ip:<addr>`).
struct Backoff {
    free_failures: u32,
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Instant,
}

impl Backoff {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds `key` must still wait, if it is backed off.
    fn wait(&self, key: &str, now: Instant) -> Option<u64> {
        let table = self.table();
        let entry = table.get(key)?;
        (entry.locked_until > now)
            .then(|| (entry.locked_until - now).as_secs_f64().ceil().max(1.0) as u64)
    }

    fn fail(&self, key: String, now: Instant) {
        let mut table = self.table();
        if table.len() >= MAX_TRACKED_FAILURES {
            table.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
            if table.len() >= MAX_TRACKED_FAILURES
                && let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: now,
        });
        if now.duration_since(entry.last) >= FAILURE_MEMORY {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= self.free_failures {
            let doublings = (entry.count - self.free_failures).min(20);
            let delay = self.base.saturating_mul(1 << doublings).min(self.max);
            entry.locked_until = now + delay;
        }
    }

    fn clear(&self, key: &str) {
        self.table().remove(key);
    }
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    /// Limiters for the configured quotas.
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            enabled: config.enabled,
            api: RateLimiter::keyed(
                Quota::per_second(nonzero(config.api_per_second))
                    .allow_burst(nonzero(config.api_burst)),
            ),
            api_by_address: RateLimiter::keyed(
                Quota::per_second(nonzero(config.api_per_second.saturating_mul(4)))
                    .allow_burst(nonzero(config.api_burst.saturating_mul(4))),
            ),
            auth: RateLimiter::keyed(
                Quota::per_minute(nonzero(config.auth_per_minute))
                    .allow_burst(nonzero(config.auth_burst)),
            ),
            accounts: RateLimiter::keyed(
                Quota::per_minute(nonzero(config.account_per_minute))
                    .allow_burst(nonzero(config.account_burst)),
            ),
            clock: DefaultClock::default(),
            backoff: Backoff {
                free_failures: config.failures_before_backoff,
                base: Duration::from_millis(config.backoff_base_ms),
                max: Duration::from_secs(config.backoff_max_secs),
                failures: Mutex::new(HashMap::new()),
            },
            trusted_proxies: Vec::new(),
        }
    }

    /// Believes `X-Forwarded-For` from these peers (IP addresses or CIDR networks).
    pub fn with_trusted_proxies(mut self, proxies: &[String]) -> Result<Self, PlatformError> {
        self.trusted_proxies = proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        PlatformError::Config(format!(
                            "trusted_proxies: {p:?} is not an IP address or CIDR network"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Takes one login or registration attempt for `email` from `client`: refused while either
    /// is backed off after failures, or when the account is over its own quota.
    pub fn check_account(&self, client: &str, email: &str) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let account = account_key(email);
        if let Some(wait) = self
            .backoff
            .wait(&account, now)
            .or(self.backoff.wait(client, now))
        {
            return Err(wait);
        }
        Self::take(&self.accounts, &self.clock, &account)
    }

    /// Records a failed login of `email` from `client` (both back off).
    pub fn login_failed(&self, client: &str, email: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        self.backoff.fail(account_key(email), now);
        self.backoff.fail(client.to_string(), now);
    }

    /// Records a successful login: the account's failures are forgotten (the address's are not,
    /// so one known password does not reset a spray from the same address).
    pub fn login_succeeded(&self, email: &str) {
        self.backoff.clear(&account_key(email));
    }

    fn take(limiter: &KeyedLimiter, clock: &DefaultClock, key: &str) -> Result<(), u64> {
        if limiter.len() > PURGE_THRESHOLD {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            not_until
                .wait_time_from(clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }

    /// Takes one request from `key`'s budget in `group`; `Err(seconds)` to wait when over quota.
    pub fn check(&self, group: RouteGroup, key: &str) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let limiter = match group {
            RouteGroup::Api => &self.api,
            RouteGroup::Auth => &self.auth,
        };
        Self::take(limiter, &self.clock, key)
    }

    /// Takes one general API request from the client's address (a wider quota than a
    /// credential's, shared by every credential the address presents).
    fn check_address(&self, address: &str) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        Self::take(&self.api_by_address, &self.clock, address)
    }
}

fn account_key(email: &str) -> String {
    format!("acct:{}", email.trim().to_ascii_lowercase())
}

/// The credential key of a request, if it carries one.
fn credential_key(request: &Request) -> Option<String> {
    request.headers().get(AUTHORIZATION).map(|credential| {
        format!(
            "cred:{}",
            &hex::encode(Sha256::digest(credential.as_bytes()))[..24]
        )
    })
}

/// Middleware applying the quotas to `/v1/…` (health and metrics are never limited).
pub(crate) async fn enforce(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let address = client_ip(
        request.headers(),
        request.extensions(),
        &state.limits.trusted_proxies,
    );
    let checked = match RouteGroup::of(request.uri().path()) {
        // Never keyed by a header: login needs none, so any header would be a fresh budget.
        RouteGroup::Auth => state.limits.check(RouteGroup::Auth, &address),
        RouteGroup::Api => {
            state
                .limits
                .check_address(&address)
                .and_then(|()| match credential_key(&request) {
                    Some(credential) => state.limits.check(RouteGroup::Api, &credential),
                    None => state.limits.check(RouteGroup::Api, &address),
                })
        }
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(wait) => ApiError::rate_limited(wait).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_exhausts_per_key_and_group() {
        let limits = RateLimits::new(&RateLimitConfig {
            enabled: true,
            api_per_second: 1,
            api_burst: 2,
            auth_per_minute: 1,
            auth_burst: 1,
            ..RateLimitConfig::default()
        });
        assert!(limits.check(RouteGroup::Api, "a").is_ok());
        assert!(limits.check(RouteGroup::Api, "a").is_ok());
        let wait = limits.check(RouteGroup::Api, "a").unwrap_err();
        assert!((1..=2).contains(&wait));
        assert!(limits.check(RouteGroup::Api, "b").is_ok());
        assert!(limits.check(RouteGroup::Auth, "a").is_ok());
        assert!(limits.check(RouteGroup::Auth, "a").unwrap_err() >= 1);
    }

    #[test]
    fn failed_logins_back_off_exponentially_per_account_and_address() {
        let limits = RateLimits::new(&RateLimitConfig {
            failures_before_backoff: 2,
            backoff_base_ms: 1000,
            backoff_max_secs: 8,
            account_burst: 100,
            ..RateLimitConfig::default()
        });
        limits.login_failed("ip:192.0.2.1", "Victim@example.com");
        assert!(
            limits
                .check_account("ip:192.0.2.9", "victim@example.com")
                .is_ok()
        );
        limits.login_failed("ip:192.0.2.1", "victim@example.com");
        assert_eq!(
            limits
                .backoff
                .wait("acct:victim@example.com", Instant::now()),
            Some(1)
        );
        assert!(
            limits
                .check_account("ip:192.0.2.9", "victim@example.com")
                .is_err()
        );
        assert!(
            limits
                .check_account("ip:192.0.2.1", "other@example.com")
                .is_err(),
            "the address too"
        );
        for _ in 0..10 {
            limits.login_failed("ip:192.0.2.1", "victim@example.com");
        }
        let wait = limits
            .backoff
            .wait("acct:victim@example.com", Instant::now())
            .unwrap();
        assert!((7..=8).contains(&wait), "capped at the maximum: {wait}");
        limits.login_succeeded("victim@example.com");
        assert!(
            limits
                .check_account("ip:192.0.2.9", "victim@example.com")
                .is_ok()
        );
    }
}
