//! Digest authentication of inbound requests (RFC 3261 §22, RFC 2617 MD5 with `qop=auth`).
//!
//! Nonces are stateless: the issue time and a keyed hash of it, so an unauthenticated caller
//! holds no memory here; a nonce is good for [`NONCE_LIFETIME`].

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use rsipstack::dialog::authenticate::verify_digest;
use rsipstack::sip::Method;
use rsipstack::sip::typed::Authorization;

/// How long a challenge's nonce is accepted, in seconds.
pub const NONCE_LIFETIME: u64 = 300;

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestOutcome {
    /// Valid credentials of this user.
    Authorized(String),
    /// No credentials (or a stale nonce): challenge with 401.
    Challenge,
    /// Credentials that are wrong: refuse with 403.
    Forbidden,
}

/// Issues challenges and checks answers for one realm.
pub struct DigestServer {
    realm: String,
    key: std::collections::hash_map::RandomState,
}

impl DigestServer {
    /// A server for `realm` with a random key.
    pub fn new(realm: &str) -> Self {
        Self {
            realm: realm.to_string(),
            key: std::collections::hash_map::RandomState::new(),
        }
    }

    fn sign(&self, issued: u64) -> u64 {
        let mut h = self.key.build_hasher();
        h.write_u64(issued);
        h.finish()
    }

    /// A `WWW-Authenticate` value with a fresh nonce.
    pub fn challenge(&self) -> String {
        let issued = now_secs();
        format!(
            "Digest realm=\"{}\", nonce=\"{issued:x}.{:016x}\", algorithm=MD5, qop=\"auth\"",
            self.realm,
            self.sign(issued)
        )
    }

    fn nonce_valid(&self, nonce: &str) -> bool {
        let Some((issued, mac)) = nonce.split_once('.') else {
            return false;
        };
        let (Ok(issued), Ok(mac)) = (
            u64::from_str_radix(issued, 16),
            u64::from_str_radix(mac, 16),
        ) else {
            return false;
        };
        self.sign(issued) == mac && now_secs().saturating_sub(issued) <= NONCE_LIFETIME
    }

    /// Checks the raw `Authorization` header value of a request against `password_of(user)`.
    pub fn check(
        &self,
        raw: Option<&str>,
        method: &Method,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> DigestOutcome {
        let Some(raw) = raw else {
            return DigestOutcome::Challenge;
        };
        let Ok(auth) = Authorization::parse(raw) else {
            return DigestOutcome::Forbidden;
        };
        if auth.realm != self.realm {
            return DigestOutcome::Forbidden;
        }
        if !self.nonce_valid(&auth.nonce) {
            return DigestOutcome::Challenge;
        }
        match password_of(&auth.username) {
            Some(password) if verify_digest(&auth, &password, method, raw) => {
                DigestOutcome::Authorized(auth.username.clone())
            }
            _ => DigestOutcome::Forbidden,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::dialog::authenticate::compute_digest;
    use rsipstack::sip::headers::auth::Algorithm;

    fn answer(server: &DigestServer, user: &str, password: &str) -> String {
        let challenge = server.challenge();
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let uri = "sip:100@127.0.0.1:5060";
        let response = compute_digest(
            user,
            password,
            "dartmouth",
            nonce,
            &Method::Invite,
            uri,
            Algorithm::Md5,
            None,
        );
        format!(
            "Digest username=\"{user}\", realm=\"dartmouth\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5"
        )
    }

    #[test]
    fn right_wrong_and_missing_credentials() {
        let server = DigestServer::new("dartmouth");
        let users = |u: &str| (u == "pbx").then(|| "s3cret".to_string());
        assert_eq!(
            server.check(None, &Method::Invite, users),
            DigestOutcome::Challenge
        );
        let good = answer(&server, "pbx", "s3cret");
        assert_eq!(
            server.check(Some(&good), &Method::Invite, users),
            DigestOutcome::Authorized("pbx".into())
        );
        let bad = answer(&server, "pbx", "guess");
        assert_eq!(
            server.check(Some(&bad), &Method::Invite, users),
            DigestOutcome::Forbidden
        );
        let stranger = answer(&server, "eve", "s3cret");
        assert_eq!(
            server.check(Some(&stranger), &Method::Invite, users),
            DigestOutcome::Forbidden
        );
        // A nonce another server (another key) issued is stale here: challenge again.
        let other = DigestServer::new("dartmouth");
        assert_eq!(
            other.check(Some(&good), &Method::Invite, users),
            DigestOutcome::Challenge
        );
        assert_eq!(
            server.check(Some("Digest garbage"), &Method::Invite, users),
            DigestOutcome::Forbidden
        );
    }
}
