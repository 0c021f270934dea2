//! `dartmouth models fetch|list|convert-whisper`.

use std::path::Path;

use anyhow::Context;
use dartmouth_models::fetch::{self, AssetStatus, FetchOptions};
use dartmouth_models::manifest::Origin;
use dartmouth_models::{Asset, MODELS, ModelStore};

/// Provisions every model (or the named ones) into the store.
pub fn fetch(store: &ModelStore, only: &[String]) -> anyhow::Result<()> {
    let assets = selected_assets(only)?;
    println!("models directory: {}", store.dir().display());
    let report = fetch::fetch(store, &FetchOptions::for_store(store), assets)?;
    println!(
        "{} files already present, {} extracted, {} converted, {} overridden by configuration; {} packages downloaded",
        report.already_present.len(),
        report.extracted.len(),
        report.converted.len(),
        report.overridden.len(),
        report.downloaded_packages.len()
    );
    for package in &report.downloaded_packages {
        println!("  downloaded {package}");
    }
    Ok(())
}

fn selected_assets(only: &[String]) -> anyhow::Result<Vec<Asset>> {
    if only.is_empty() {
        return Ok(Asset::all().collect());
    }
    let mut assets = Vec::new();
    for name in only {
        let model = MODELS.iter().find(|m| m.name == name).with_context(|| {
            let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
            format!("unknown model `{name}`; known: {}", names.join(", "))
        })?;
        assets.extend(model.assets.iter().copied());
    }
    // The ONNX-based models need the runtime library, and the manifest order keeps conversions
    // after their inputs.
    assets.push(Asset::OnnxRuntime);
    let mut ordered: Vec<Asset> = Asset::all().filter(|a| assets.contains(a)).collect();
    ordered.dedup();
    Ok(ordered)
}

/// Prints every model with its size, licence, source and whether its files are present and verified.
pub fn list(store: &ModelStore) -> anyhow::Result<bool> {
    println!("models directory: {}", store.dir().display());
    println!(
        "{:<24} {:>9}  {:<13} {:<36} status",
        "model", "size", "licence", "source package"
    );
    let mut all_usable = true;
    for model in MODELS {
        let mut size = 0;
        let mut sources = Vec::new();
        let mut states = Vec::new();
        for asset in model.assets {
            let spec = asset.spec();
            size += if spec.size > 0 {
                spec.size
            } else {
                std::fs::metadata(store.path(*asset))
                    .map(|m| m.len())
                    .unwrap_or(0)
            };
            let source = match spec.origin {
                Origin::Package { package, .. } => format!(
                    "{} {}=={}",
                    package.registry.label(),
                    package.name,
                    package.version
                ),
                Origin::Converted { .. } => "converted locally".to_string(),
            };
            if !sources.contains(&source) {
                sources.push(source);
            }
            let state = fetch::status(store, *asset)?;
            all_usable &= state.is_usable();
            states.push((asset, state));
        }
        let summary = if states.iter().all(|(_, s)| *s == AssetStatus::Verified) {
            "present, sha256 verified".to_string()
        } else if states.iter().all(|(_, s)| s.is_usable()) {
            "present (locally converted or overridden files not checksummed)".to_string()
        } else {
            let problems: Vec<String> = states
                .iter()
                .filter(|(_, s)| !s.is_usable())
                .map(|(a, s)| match s {
                    AssetStatus::Missing => format!("{} missing", a.spec().file_name),
                    AssetStatus::Corrupt { .. } => {
                        format!("{} CHECKSUM MISMATCH", a.spec().file_name)
                    }
                    _ => String::new(),
                })
                .collect();
            problems.join(", ")
        };
        println!(
            "{:<24} {:>7.1}MB  {:<13} {:<36} {}",
            model.name,
            size as f64 / 1e6,
            model.license,
            sources.join(" + "),
            summary
        );
    }
    if !all_usable {
        println!("run `dartmouth models fetch` to provision what is missing");
    }
    Ok(all_usable)
}

/// Converts a CTranslate2 Whisper directory into a ggml file for whisper.cpp.
pub fn convert_whisper(ct2_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let report = dartmouth_models::convert::whisper::convert_ct2_dir(ct2_dir, out)?;
    println!(
        "wrote {} ({} tensors, sha256 {})",
        out.display(),
        report.tensors,
        report.sha256
    );
    Ok(())
}
