//! Room access tokens: HS256 JWTs naming the room, the identity and what the holder may do.
//!
//! The claims are compatible with the room tokens the platform sidecar mints
//! (`aud = "dartmouth-gateway"`, `sub`, `room`, `can_publish`), so a backend can hand out tokens
//! from the sidecar and the gateway verifies them with the shared secret.
//!
//! ```
//! use dartmouth_signaling::token::{Grants, TokenKeys};
//!
//! let keys = TokenKeys::new(b"a secret of at least 32 bytes, please!!");
//! let token = keys.issue("demo", "alice", Grants::default(), 60).unwrap();
//! let claims = keys.verify(&token, "demo").unwrap();
//! assert_eq!(claims.sub, "alice");
//! assert!(keys.verify(&token, "other-room").is_err());
//! ```

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The audience every room token carries.
pub const AUDIENCE: &str = "dartmouth-gateway";
/// Longest lifetime `issue` grants, in seconds (one day).
pub const MAX_TTL_SECS: u64 = 24 * 3600;
/// The room name of a token that administers every room (with the `admin` grant).
pub const ALL_ROOMS: &str = "*";
/// Clock skew tolerated when checking expiry, in seconds.
const LEEWAY_SECS: u64 = 5;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May send audio.
    pub publish: bool,
    /// May receive others' audio.
    pub subscribe: bool,
    /// May bring an agent into the room.
    pub agent: bool,
    /// Administers the room: may end anyone's WHIP/WHEP session in it, and manage it over
    /// `/api/rooms` (list, mute, kick, delete); a token for room `*` with this grant manages
    /// every room.
    #[serde(default)]
    pub admin: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            publish: true,
            subscribe: true,
            agent: true,
            admin: false,
        }
    }
}

/// The claims of a room token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// The identity.
    pub sub: String,
    /// The room.
    pub room: String,
    /// Grants (tokens from the platform carry only `can_publish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
    /// Platform-style publish grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// Audience: [`AUDIENCE`].
    pub aud: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
}

impl RoomClaims {
    /// The effective grants: explicit grants, else the platform's `can_publish` with subscribe
    /// and agent allowed.
    pub fn grants(&self) -> Grants {
        self.grants.unwrap_or(Grants {
            publish: self.can_publish.unwrap_or(true),
            subscribe: true,
            agent: true,
            admin: false,
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token was given.
    #[error("a room token is required")]
    Missing,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token's signature, algorithm or audience is wrong.
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// The token is for another room.
    #[error("the token is for room {token_room:?}, not {requested:?}")]
    WrongRoom {
        /// Room named in the token.
        token_room: String,
        /// Room asked for.
        requested: String,
    },
    /// The request cannot be issued.
    #[error("cannot issue the token: {0}")]
    Issue(String),
}

/// The gateway's signing key.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a shared secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Issues a token for `identity` in `room`, valid `ttl_secs` (at most [`MAX_TTL_SECS`]).
    pub fn issue(
        &self,
        room: &str,
        identity: &str,
        grants: Grants,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        if !(room == ALL_ROOMS && grants.admin) {
            validate_name("room", room)?;
        }
        validate_name("identity", identity)?;
        if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
            return Err(TokenError::Issue(format!(
                "ttl_secs must be between 1 and {MAX_TTL_SECS}"
            )));
        }
        let now = now_secs();
        let claims = RoomClaims {
            sub: identity.into(),
            room: room.into(),
            grants: Some(grants),
            can_publish: None,
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Issue(e.to_string()))
    }

    /// Verifies signature, audience, expiry and room.
    pub fn verify(&self, token: &str, room: &str) -> Result<RoomClaims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let claims = jsonwebtoken::decode::<RoomClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?
            .claims;
        if claims.room != room {
            return Err(TokenError::WrongRoom {
                token_room: claims.room,
                requested: room.into(),
            });
        }
        Ok(claims)
    }

    /// Verifies a token without a room to compare against (the room comes from the token).
    pub fn verify_any_room(&self, token: &str) -> Result<RoomClaims, TokenError> {
        let room = self.peek_room(token).unwrap_or_default();
        self.verify(token, &room)
    }

    fn peek_room(&self, token: &str) -> Option<String> {
        let payload = token.split('.').nth(1)?;
        let bytes = base64_url_decode(payload)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        value.get("room")?.as_str().map(str::to_string)
    }
}

/// Checks a room or identity name: 1–64 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_name(what: &str, name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::Issue(format!(
            "{what} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn base64_url_decode(input: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in input.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|c| *c == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"test secret that is long enough for hs256")
    }

    #[test]
    fn forged_expired_and_wrong_room_tokens_are_refused_with_a_reason() {
        let keys = keys();
        let token = keys.issue("demo", "alice", Grants::default(), 60).unwrap();
        assert_eq!(keys.verify_any_room(&token).unwrap().room, "demo");
        let other = TokenKeys::new(b"another secret that is long enough!!!");
        assert!(matches!(
            other.verify(&token, "demo"),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            keys.verify(&token, "lobby"),
            Err(TokenError::WrongRoom { .. })
        ));
        assert_eq!(keys.verify("", "demo"), Err(TokenError::Missing));
        assert!(matches!(
            keys.verify("a.b.c", "demo"),
            Err(TokenError::Invalid(_))
        ));
        // An expired token, signed correctly.
        let now = now_secs();
        let expired = RoomClaims {
            sub: "bob".into(),
            room: "demo".into(),
            grants: None,
            can_publish: Some(false),
            aud: AUDIENCE.into(),
            iat: now - 7200,
            exp: now - 3600,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &expired, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&token, "demo"), Err(TokenError::Expired));
    }

    #[test]
    fn platform_style_claims_map_to_grants() {
        let claims = RoomClaims {
            sub: "u".into(),
            room: "r".into(),
            grants: None,
            can_publish: Some(false),
            aud: AUDIENCE.into(),
            iat: 0,
            exp: 0,
        };
        assert!(!claims.grants().publish);
        assert!(claims.grants().subscribe);
    }

    #[test]
    fn bad_names_and_lifetimes_are_refused() {
        let keys = keys();
        assert!(keys.issue("", "a", Grants::default(), 60).is_err());
        assert!(
            keys.issue("room with space", "a", Grants::default(), 60)
                .is_err()
        );
        assert!(keys.issue("r", "a", Grants::default(), 0).is_err());
        assert!(
            keys.issue("r", "a", Grants::default(), MAX_TTL_SECS + 1)
                .is_err()
        );
    }
}
