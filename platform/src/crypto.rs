//! Encryption service: AES-256-GCM envelope encryption with key ids and rotation, plus the
//! sidecar's generated secrets (kept in `data_dir/secrets.json`).
//!
//! An envelope is `enc1.<kid>.<wrapped data key>.<ciphertext>` (base64url parts): each value gets a
//! fresh 256-bit data key, which is itself encrypted under the key-encryption key `kid`. Rotation
//! adds a new active key; old keys keep decrypting and [`Keyring::rewrap`] moves envelopes over.

use crate::error::PlatformError;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const PREFIX: &str = "enc1";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::rng().fill_bytes(&mut buf);
    buf
}

fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = random_bytes::<12>();
    let mut out = nonce.to_vec();
    // Encryption with a valid key and nonce cannot fail for in-memory buffers.
    out.extend(
        cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("AES-GCM encryption"),
    );
    out
}

fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, PlatformError> {
    if sealed.len() < 12 + 16 {
        return Err(PlatformError::Crypto("ciphertext too short".into()));
    }
    let (nonce, ct) = sealed.split_at(12);
    Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| PlatformError::Crypto("authentication failed".into()))
}

/// Key-encryption keys by id, one of them active for new envelopes.
#[derive(Clone, Serialize, Deserialize)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring with one freshly generated key.
    pub fn generate() -> Keyring {
        let mut ring = Keyring {
            active: String::new(),
            keys: BTreeMap::new(),
        };
        ring.rotate();
        ring
    }

    /// The id of the key used for new envelopes.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// All key ids, oldest first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Adds a new random key and makes it active; returns its id.
    pub fn rotate(&mut self) -> String {
        let id = format!(
            "k{}-{}",
            self.keys.len() + 1,
            hex::encode(random_bytes::<4>())
        );
        self.keys
            .insert(id.clone(), hex::encode(random_bytes::<32>()));
        self.active = id.clone();
        id
    }

    fn key(&self, id: &str) -> Result<[u8; 32], PlatformError> {
        let hex_key = self
            .keys
            .get(id)
            .ok_or_else(|| PlatformError::Crypto(format!("unknown key id {id}")))?;
        let bytes = hex::decode(hex_key).map_err(|e| PlatformError::Crypto(e.to_string()))?;
        bytes
            .try_into()
            .map_err(|_| PlatformError::Crypto("key is not 32 bytes".into()))
    }

    /// Encrypts `plaintext` into an envelope string under the active key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, PlatformError> {
        let kek = self.key(&self.active)?;
        let dek = random_bytes::<32>();
        let wrapped = seal(&kek, &dek);
        let body = seal(&dek, plaintext);
        Ok(format!(
            "{PREFIX}.{}.{}.{}",
            self.active,
            B64.encode(wrapped),
            B64.encode(body)
        ))
    }

    fn parse<'a>(&self, envelope: &'a str) -> Result<(&'a str, Vec<u8>, Vec<u8>), PlatformError> {
        let bad = || PlatformError::Crypto("malformed envelope".into());
        let mut parts = envelope.split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad());
        }
        let kid = parts.next().ok_or_else(bad)?;
        let wrapped = B64
            .decode(parts.next().ok_or_else(bad)?)
            .map_err(|_| bad())?;
        let body = B64
            .decode(parts.next().ok_or_else(bad)?)
            .map_err(|_| bad())?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok((kid, wrapped, body))
    }

    /// Decrypts an envelope made by any key still in the ring.
    pub fn decrypt(&self, envelope: &str) -> Result<Vec<u8>, PlatformError> {
        let (kid, wrapped, body) = self.parse(envelope)?;
        let dek: [u8; 32] = open(&self.key(kid)?, &wrapped)?
            .try_into()
            .map_err(|_| PlatformError::Crypto("bad data key".into()))?;
        open(&dek, &body)
    }

    /// Re-wraps an envelope's data key under the active key (the ciphertext itself is unchanged).
    pub fn rewrap(&self, envelope: &str) -> Result<String, PlatformError> {
        let (kid, wrapped, body) = self.parse(envelope)?;
        if kid == self.active {
            return Ok(envelope.to_string());
        }
        let dek = open(&self.key(kid)?, &wrapped)?;
        let rewrapped = seal(&self.key(&self.active)?, &dek);
        Ok(format!(
            "{PREFIX}.{}.{}.{}",
            self.active,
            B64.encode(rewrapped),
            B64.encode(body)
        ))
    }

    /// Whether a string looks like an envelope made here.
    pub fn is_envelope(text: &str) -> bool {
        text.starts_with("enc1.")
    }
}

/// Secrets the sidecar generates once and keeps across restarts.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secrets {
    /// HMAC key for access tokens.
    pub jwt_secret: String,
    /// HMAC key for gateway room tokens.
    pub room_token_secret: String,
    /// HMAC key for signed file URLs.
    pub url_signing_secret: String,
    /// Key-encryption keys.
    pub keyring: Keyring,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Path of the secrets file under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("secrets.json")
    }

    /// Loads the secrets file, creating it (mode 0600) with fresh secrets if missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Secrets, PlatformError> {
        let path = Self::path(data_dir);
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            return serde_json::from_str(&text)
                .map_err(|e| PlatformError::Config(format!("{}: {e}", path.display())));
        }
        std::fs::create_dir_all(data_dir)?;
        let secrets = Secrets {
            jwt_secret: hex::encode(random_bytes::<32>()),
            room_token_secret: hex::encode(random_bytes::<32>()),
            url_signing_secret: hex::encode(random_bytes::<32>()),
            keyring: Keyring::generate(),
        };
        secrets.save(data_dir)?;
        Ok(secrets)
    }

    /// Writes the secrets file atomically with owner-only permissions.
    pub fn save(&self, data_dir: &Path) -> Result<(), PlatformError> {
        let path = Self::path(data_dir);
        let tmp = path.with_extension("json.tmp");
        let text =
            serde_json::to_string_pretty(self).map_err(|e| PlatformError::Config(e.to_string()))?;
        std::fs::write(&tmp, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let mut ring = Keyring::generate();
        let old = ring.encrypt(b"4111 secret").unwrap();
        let old_kid = ring.active_key_id().to_string();
        let new_kid = ring.rotate();
        assert_ne!(old_kid, new_kid);
        assert_eq!(ring.decrypt(&old).unwrap(), b"4111 secret");
        let fresh = ring.encrypt(b"x").unwrap();
        assert!(fresh.contains(&new_kid));
        let moved = ring.rewrap(&old).unwrap();
        assert!(moved.contains(&new_kid));
        assert_eq!(ring.decrypt(&moved).unwrap(), b"4111 secret");
    }

    #[test]
    fn tampering_and_unknown_keys_fail() {
        let ring = Keyring::generate();
        let env = ring.encrypt(b"hello").unwrap();
        let mut parts: Vec<String> = env.split('.').map(String::from).collect();
        let mut body = B64.decode(&parts[3]).unwrap();
        body[14] ^= 1;
        parts[3] = B64.encode(body);
        assert!(ring.decrypt(&parts.join(".")).is_err());
        let other = Keyring::generate();
        assert!(other.decrypt(&env).is_err());
        assert!(ring.decrypt("enc1.nope").is_err());
    }
}
