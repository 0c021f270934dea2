//! Access tokens (HS256 JWT), gateway room tokens, argon2 password hashing and opaque-secret helpers.

use crate::auth::roles::Role;
use crate::config::PlatformConfig;
use crate::error::PlatformError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// The user's role when the token was issued.
    pub role: Role,
    /// Session (refresh-token family) id; revoking the family revokes the token.
    pub sid: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// Claims of a gateway room token (audience `dartmouth-gateway`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomClaims {
    /// User id.
    pub sub: String,
    /// Room name.
    pub room: String,
    /// Whether the holder may publish audio.
    pub can_publish: bool,
    /// Issuer.
    pub iss: String,
    /// Audience: `dartmouth-gateway`.
    pub aud: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
}

/// Audience of room tokens.
pub const ROOM_AUDIENCE: &str = "dartmouth-gateway";

/// Unix seconds now.
pub fn now_secs() -> u64 {
    (crate::db::now_ms() / 1000) as u64
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// SHA-256 of a secret, hex-encoded (how refresh tokens and API keys are stored).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time string comparison.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Signs and verifies access and room tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    room_encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl_secs: u64,
    room_ttl_secs: u64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Builds an issuer from the config and secrets.
    pub fn new(config: &PlatformConfig, jwt_secret: &str, room_secret: &str) -> TokenIssuer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[config.jwt_issuer.as_str()]);
        validation.set_audience(&[config.jwt_audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        TokenIssuer {
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            room_encoding: EncodingKey::from_secret(room_secret.as_bytes()),
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl_secs: config.access_token_ttl_secs,
            room_ttl_secs: config.room_token_ttl_secs,
        }
    }

    /// Access-token lifetime in seconds.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access_ttl_secs
    }

    /// Issues an access token for a user session.
    pub fn issue_access(
        &self,
        user_id: &str,
        role: Role,
        session: &str,
    ) -> Result<String, PlatformError> {
        let now = now_secs();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            role,
            sid: session.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.access_ttl_secs,
            jti: random_hex(8),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| PlatformError::Crypto(e.to_string()))
    }

    /// Verifies signature, algorithm, issuer, audience and expiry of an access token.
    pub fn verify_access(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }

    /// Mints a gateway room token; returns it with its expiry (unix seconds).
    pub fn issue_room(
        &self,
        user_id: &str,
        room: &str,
        can_publish: bool,
    ) -> Result<(String, u64), PlatformError> {
        let now = now_secs();
        let claims = RoomClaims {
            sub: user_id.to_string(),
            room: room.to_string(),
            can_publish,
            iss: self.issuer.clone(),
            aud: ROOM_AUDIENCE.to_string(),
            iat: now,
            exp: now + self.room_ttl_secs,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.room_encoding)
                .map_err(|e| PlatformError::Crypto(e.to_string()))?;
        Ok((token, claims.exp))
    }
}

/// Argon2id password hashing with configurable cost.
#[derive(Debug, Clone)]
pub struct PasswordHashing {
    params: Params,
    dummy_hash: String,
    /// One permit per argon2 computation that fits the memory budget.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// How long a login or registration waits for an argon2 slot before it is refused.
const HASH_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a bounded hash did not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot stayed busy for [`HASH_SLOT_WAIT`].
    #[error("password hashing is busy; retry shortly")]
    Busy,
    /// The hash itself failed.
    #[error(transparent)]
    Failed(#[from] PlatformError),
}

impl PasswordHashing {
    /// Builds a hasher; also precomputes a dummy hash to keep unknown-user logins as slow as real ones.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<PasswordHashing, PlatformError> {
        let params = Params::new(memory_kib.max(8), iterations.max(1), 1, None)
            .map_err(|e| PlatformError::Config(format!("argon2 params: {e}")))?;
        let mut hashing = PasswordHashing {
            params,
            dummy_hash: String::new(),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        };
        hashing.dummy_hash = hashing.hash(&random_hex(16))?;
        Ok(hashing)
    }

    /// Bounds concurrent hashes so together they use at most `budget_mib` of memory (at least
    /// one runs).
    pub fn with_memory_budget(mut self, budget_mib: u32) -> Self {
        let per_hash_kib = u64::from(self.params.m_cost()).max(1);
        let slots = (u64::from(budget_mib) * 1024 / per_hash_kib).clamp(1, 1024) as usize;
        self.permits = std::sync::Arc::new(tokio::sync::Semaphore::new(slots));
        self
    }

    /// How many hashes may run at once.
    pub fn slots(&self) -> usize {
        self.permits.available_permits()
    }

    /// Hashes concurrently at most as the memory budget allows (on the blocking pool).
    pub async fn hash_bounded(&self, password: String) -> Result<String, HashError> {
        let hashing = self.clone();
        self.bounded(move || hashing.hash(&password))
            .await?
            .map_err(HashError::Failed)
    }

    /// Verifies concurrently at most as the memory budget allows (on the blocking pool).
    pub async fn verify_bounded(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let hashing = self.clone();
        self.bounded(move || hashing.verify(&password, stored.as_deref()))
            .await
    }

    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(HASH_SLOT_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| HashError::Failed(PlatformError::Crypto(e.to_string())))
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            self.params.clone(),
        )
    }

    /// Hashes a password into a PHC string (blocking; call from `spawn_blocking`).
    pub fn hash(&self, password: &str) -> Result<String, PlatformError> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| PlatformError::Crypto(e.to_string()))?;
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PlatformError::Crypto(e.to_string()))
    }

    /// Verifies a password against a stored PHC string; `None` checks against a dummy (always false).
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let target = stored.unwrap_or(&self.dummy_hash);
        let ok = PasswordHash::new(target)
            .map(|parsed| {
                self.argon()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && stored.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&PlatformConfig::default(), "secret-a", "room-secret")
    }

    #[test]
    fn access_token_round_trip_and_forgery() {
        let iss = issuer();
        let token = iss.issue_access("u1", Role::User, "s1").unwrap();
        let claims = iss.verify_access(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("u1", Role::User));
        let other = TokenIssuer::new(&PlatformConfig::default(), "secret-b", "room-secret");
        assert!(other.verify_access(&token).is_none());
    }

    #[test]
    fn passwords_verify_only_when_right() {
        let h = PasswordHashing::new(8, 1).unwrap();
        let stored = h.hash("correct horse").unwrap();
        assert!(h.verify("correct horse", Some(&stored)));
        assert!(!h.verify("wrong", Some(&stored)));
        assert!(!h.verify("correct horse", None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn argon2_work_is_bounded_by_the_memory_budget() {
        let default = PasswordHashing::new(19456, 1)
            .unwrap()
            .with_memory_budget(256);
        assert_eq!(default.slots(), 13, "256 MiB / 19 MiB");
        assert_eq!(
            PasswordHashing::new(19456, 1)
                .unwrap()
                .with_memory_budget(1)
                .slots(),
            1,
            "at least one"
        );
        let two = PasswordHashing::new(1024, 1).unwrap().with_memory_budget(2);
        assert_eq!(two.slots(), 2);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (two, running, most) = (two.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    two.bounded(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
