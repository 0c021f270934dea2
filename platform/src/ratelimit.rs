//! Rate limiting with `governor`: one keyed limiter per route group, keyed by credential
//! (API key or user token) or else client IP; over quota → `429` with `Retry-After`.

use crate::config::RateLimitConfig;
use crate::error::ApiError;
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
use std::num::NonZeroU32;

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

/// The limiters of all route groups.
pub struct RateLimits {
    enabled: bool,
    api: KeyedLimiter,
    auth: KeyedLimiter,
    clock: DefaultClock,
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
            auth: RateLimiter::keyed(
                Quota::per_minute(nonzero(config.auth_per_minute))
                    .allow_burst(nonzero(config.auth_burst)),
            ),
            clock: DefaultClock::default(),
        }
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
        if limiter.len() > PURGE_THRESHOLD {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil() as u64
        })
    }
}

/// The limiter key of a request: a hash of its credential, else its client IP.
fn limiter_key(request: &Request) -> String {
    match request.headers().get(AUTHORIZATION) {
        Some(credential) => format!(
            "cred:{}",
            &hex::encode(Sha256::digest(credential.as_bytes()))[..24]
        ),
        None => client_ip(request.headers(), request.extensions()),
    }
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
    let group = RouteGroup::of(request.uri().path());
    let key = limiter_key(&request);
    match state.limits.check(group, &key) {
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
        });
        assert!(limits.check(RouteGroup::Api, "a").is_ok());
        assert!(limits.check(RouteGroup::Api, "a").is_ok());
        let wait = limits.check(RouteGroup::Api, "a").unwrap_err();
        assert!((1..=2).contains(&wait));
        assert!(limits.check(RouteGroup::Api, "b").is_ok());
        assert!(limits.check(RouteGroup::Auth, "a").is_ok());
        assert!(limits.check(RouteGroup::Auth, "a").unwrap_err() >= 1);
    }
}
