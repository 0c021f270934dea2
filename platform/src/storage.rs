//! Storage service: files per agent on the local filesystem (the embedded default) or an
//! S3-compatible bucket (`object_store`), with signed time-limited download URLs and
//! path-traversal protection. Content type and size limits are enforced by the routes in `files`.

use crate::config::S3Config;
use crate::error::{ApiError, PlatformError};
use hmac::{Hmac, Mac};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest accepted storage key.
pub const MAX_KEY_LEN: usize = 512;
/// Most `/`-separated segments in a key.
pub const MAX_KEY_SEGMENTS: usize = 16;

/// Validates a storage key: `/`-separated segments of `A-Z a-z 0-9 . _ -`, none `.` or `..`,
/// no leading or trailing `/`, at most [`MAX_KEY_LEN`] bytes.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::bad_request(format!("invalid file key: {why}")));
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return bad("must be 1-512 bytes");
    }
    let segments: Vec<&str> = key.split('/').collect();
    if segments.len() > MAX_KEY_SEGMENTS {
        return bad("too many segments");
    }
    for segment in segments {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("empty, '.' or '..' segment");
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return bad("segments may hold only letters, digits, '.', '_' and '-'");
        }
    }
    Ok(())
}

/// Where file bytes live.
#[derive(Debug)]
enum Backend {
    /// `<root>/<agent>/<key>` on the local filesystem.
    Local { root: PathBuf },
    /// `<agent>/<key>` in a bucket.
    Bucket { store: Arc<dyn ObjectStore> },
}

/// File storage: object bytes per agent and key, plus URL signing.
#[derive(Debug)]
pub struct Storage {
    backend: Backend,
    signing_secret: String,
}

impl Storage {
    /// Local storage rooted at `root` (created if missing), signing URLs with `signing_secret`.
    pub fn local(root: PathBuf, signing_secret: String) -> Result<Storage, PlatformError> {
        std::fs::create_dir_all(&root)?;
        Ok(Storage {
            backend: Backend::Local { root },
            signing_secret,
        })
    }

    /// Storage in an S3-compatible bucket.
    pub fn s3(config: &S3Config, signing_secret: String) -> Result<Storage, PlatformError> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| PlatformError::Config(format!("s3 storage: {e}")))?;
        Ok(Storage {
            backend: Backend::Bucket {
                store: Arc::new(store),
            },
            signing_secret,
        })
    }

    /// The backend's name: `local` or `s3`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Local { .. } => "local",
            Backend::Bucket { .. } => "s3",
        }
    }

    /// The bucket path of a file, validating agent and key.
    fn object_path(agent: &str, key: &str) -> Result<object_store::path::Path, ApiError> {
        crate::documents::check_name("agent_id", agent)?;
        check_key(key)?;
        object_store::path::Path::parse(format!("{agent}/{key}"))
            .map_err(|_| ApiError::bad_request("invalid file key"))
    }

    /// The local path of a file, validating agent and key.
    fn local_path(root: &Path, agent: &str, key: &str) -> Result<PathBuf, ApiError> {
        crate::documents::check_name("agent_id", agent)?;
        check_key(key)?;
        let path = root.join(agent).join(key);
        // Defence in depth: the joined path must stay under the root.
        if !path.starts_with(root)
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(ApiError::bad_request("invalid file key"));
        }
        Ok(path)
    }

    /// Stores a file; replaces an existing one whole (never a partial file).
    pub async fn put(&self, agent: &str, key: &str, bytes: &[u8]) -> Result<(), ApiError> {
        let root = match &self.backend {
            Backend::Local { root } => root,
            Backend::Bucket { store } => {
                let path = Self::object_path(agent, key)?;
                store
                    .put(&path, PutPayload::from(bytes.to_vec()))
                    .await
                    .map_err(ApiError::internal)?;
                return Ok(());
            }
        };
        let path = Self::local_path(root, agent, key)?;
        let parent = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(ApiError::internal)?;
        let tmp = parent.join(format!(".upload-{}", crate::auth::tokens::random_hex(8)));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(ApiError::internal)?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ApiError::internal(e));
        }
        Ok(())
    }

    /// Reads a file; 404 if missing.
    pub async fn get(&self, agent: &str, key: &str) -> Result<Vec<u8>, ApiError> {
        let root = match &self.backend {
            Backend::Local { root } => root,
            Backend::Bucket { store } => {
                let path = Self::object_path(agent, key)?;
                return match store.get(&path).await {
                    Ok(found) => Ok(found.bytes().await.map_err(ApiError::internal)?.to_vec()),
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(ApiError::not_found("no such file"))
                    }
                    Err(e) => Err(ApiError::internal(e)),
                };
            }
        };
        let path = Self::local_path(root, agent, key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ApiError::not_found("no such file"))
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// Deletes a file; missing files are fine.
    pub async fn delete(&self, agent: &str, key: &str) -> Result<(), ApiError> {
        let root = match &self.backend {
            Backend::Local { root } => root,
            Backend::Bucket { store } => {
                let path = Self::object_path(agent, key)?;
                return match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(ApiError::internal(e)),
                };
            }
        };
        let path = Self::local_path(root, agent, key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    fn mac(&self, agent: &str, key: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.signing_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(format!("{agent}\n{key}\n{expires}").as_bytes());
        mac
    }

    /// Signature of a download URL valid until `expires` (unix seconds).
    pub fn sign(&self, agent: &str, key: &str, expires: u64) -> String {
        hex::encode(self.mac(agent, key, expires).finalize().into_bytes())
    }

    /// Checks a signature (constant time) and expiry.
    pub fn verify_signature(
        &self,
        agent: &str,
        key: &str,
        expires: u64,
        signature: &str,
        now: u64,
    ) -> bool {
        let Ok(bytes) = hex::decode(signature) else {
            return false;
        };
        expires >= now && self.mac(agent, key, expires).verify_slice(&bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_reject_traversal_and_odd_characters() {
        for good in ["a.wav", "audio/2026/greeting_1.wav", "x-y.z"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/../../b",
            "/abs",
            "a//b",
            "a/",
            ".",
            "a\\b",
            "a b",
            "a\0b",
            "ü",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signatures_bind_agent_key_and_expiry() {
        let dir = std::env::temp_dir().join(format!("dm-sign-{}", std::process::id()));
        let s = Storage::local(dir, "secret".into()).unwrap();
        let sig = s.sign("a1", "k.wav", 100);
        assert!(s.verify_signature("a1", "k.wav", 100, &sig, 50));
        assert!(!s.verify_signature("a1", "k.wav", 100, &sig, 101));
        assert!(!s.verify_signature("a2", "k.wav", 100, &sig, 50));
        assert!(!s.verify_signature("a1", "k.wav", 101, &sig, 50));
        assert!(!s.verify_signature("a1", "k.wav", 100, "zz", 50));
    }
}
