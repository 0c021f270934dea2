//! Where model files live: the cache directory under `$DARTMOUTH_HOME`, with per-asset overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest::Asset;

/// Environment variable naming Dartmouth's data directory.
pub const HOME_ENV: &str = "DARTMOUTH_HOME";

/// The models directory and any files the configuration points elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStore {
    dir: PathBuf,
    overrides: BTreeMap<Asset, PathBuf>,
}

impl ModelStore {
    /// A store rooted at `dir` (the directory that holds the model files).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            overrides: BTreeMap::new(),
        }
    }

    /// The default store: `$DARTMOUTH_HOME/models`, else `~/.cache/dartmouth/models`.
    pub fn from_env() -> Self {
        Self::new(default_home().join("models"))
    }

    /// Points one asset at a file outside the models directory.
    pub fn with_override(mut self, asset: Asset, path: impl Into<PathBuf>) -> Self {
        self.overrides.insert(asset, path.into());
        self
    }

    /// The models directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the asset's path is an override rather than the cache.
    pub fn is_overridden(&self, asset: Asset) -> bool {
        self.overrides.contains_key(&asset)
    }

    /// The path an asset is read from (override, else the cache directory).
    pub fn path(&self, asset: Asset) -> PathBuf {
        self.overrides
            .get(&asset)
            .cloned()
            .unwrap_or_else(|| self.dir.join(asset.spec().file_name))
    }

    /// The path of an asset that must already exist, with an error that says how to get it.
    pub fn require(&self, asset: Asset) -> Result<PathBuf, crate::Error> {
        let path = self.path(asset);
        if path.is_file() {
            Ok(path)
        } else {
            Err(crate::Error::Missing { asset, path })
        }
    }
}

/// Dartmouth's data directory: `$DARTMOUTH_HOME`, else `~/.cache/dartmouth`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    user_home.join(".cache").join("dartmouth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_wins_over_the_cache_directory() {
        let store =
            ModelStore::new("/cache").with_override(Asset::SileroVad, "/elsewhere/vad.onnx");
        assert_eq!(
            store.path(Asset::SileroVad),
            PathBuf::from("/elsewhere/vad.onnx")
        );
        assert_eq!(
            store.path(Asset::SmartTurn),
            PathBuf::from("/cache/smart-turn-v3.2-cpu.onnx")
        );
        assert!(store.is_overridden(Asset::SileroVad));
    }

    #[test]
    fn a_missing_file_names_the_asset_and_the_fix() {
        let store = ModelStore::new("/nonexistent-dartmouth-dir");
        let err = store.require(Asset::SileroVad).unwrap_err().to_string();
        assert!(err.contains("silero_vad.onnx"), "{err}");
        assert!(err.contains("dartmouth models fetch"), "{err}");
    }
}
