//! CTranslate2 → ggml conversion of Whisper models, for whisper.cpp (`whisper-rs`).
//!
//! The output is the legacy ggml file whisper.cpp's `whisper_model_load` reads: the `ggml` magic,
//! eleven `i32` hyper-parameters, the mel filterbank, the byte-level vocabulary, then one record
//! per tensor (`i32` rank, name length and type, the dimensions innermost first, the name, the
//! data) named as in OpenAI's PyTorch checkpoints. Weight matrices are written as `f16` (bit-exact
//! copies of an `f16` CTranslate2 model); biases, norms, conv biases and positional embeddings as
//! `f32`, the types the loader allocates.
//!
//! CTranslate2 stores some weights differently from the checkpoint, which this module undoes:
//! self-attention query/key/value are one fused linear (`linear_0`, `3d × d`), cross-attention
//! key/value another (`linear_1`, `2d × d`); layer norms are `gamma`/`beta`; the output projection
//! is an alias of the token embedding. Whisper's key projection has no bias; CTranslate2 stores
//! zeros there and whisper.cpp has no tensor for it (a key bias shifts every score of a query by
//! the same amount, which softmax ignores), so it is dropped. The mel filterbank is computed
//! ([`crate::mel::mel_filters`]).
//!
//! ```no_run
//! use std::path::Path;
//! let report = dartmouth_models::convert::whisper::convert_ct2_dir(
//!     Path::new("faster-whisper-tiny.en"),
//!     Path::new("ggml-tiny.en.bin"),
//! )?;
//! println!("{} tensors, sha256 {}", report.tensors, report.sha256);
//! # Ok::<(), dartmouth_models::Error>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::ct2::Ct2Model;
use crate::Error;
use tensors::{Planned, tensor_bytes, tensor_plan};

mod tensors;

/// ggml's file magic, `"ggml"` as a little-endian `u32`.
const GGML_MAGIC: u32 = 0x6767_6d6c;
/// ggml type ids of the two element types written.
pub(crate) const GGML_F32: i32 = 0;
pub(crate) const GGML_F16: i32 = 1;
/// Whisper's STFT parameters, which fix the filterbank's shape.
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// The file written.
    pub output: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its sha256, lower-case hex.
    pub sha256: String,
    /// Number of tensors written.
    pub tensors: usize,
    /// Number of byte-level vocabulary entries written (the special tokens follow implicitly).
    pub vocab_tokens: usize,
    /// The model's hyper-parameters.
    pub hparams: Hparams,
    /// Wall time of the conversion.
    pub elapsed: Duration,
}

/// Whisper hyper-parameters, in the order of the ggml header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    /// Vocabulary size including special and timestamp tokens.
    pub n_vocab: usize,
    /// Encoder positions (1500 for 30 s).
    pub n_audio_ctx: usize,
    /// Encoder width.
    pub n_audio_state: usize,
    /// Encoder attention heads.
    pub n_audio_head: usize,
    /// Encoder layers.
    pub n_audio_layer: usize,
    /// Decoder positions.
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder attention heads.
    pub n_text_head: usize,
    /// Decoder layers.
    pub n_text_layer: usize,
    /// Mel bands of the input.
    pub n_mels: usize,
}

pub(crate) fn bad(reason: impl Into<String>) -> Error {
    Error::Convert {
        what: "Whisper CTranslate2 model to ggml",
        reason: reason.into(),
    }
}

/// Converts the directory layout CTranslate2 writes (`model.bin`, `vocabulary.txt`,
/// `config.json`) into a ggml file at `out`.
pub fn convert_ct2_dir(dir: &Path, out: &Path) -> Result<ConvertReport, Error> {
    convert_ct2_to_ggml(
        &dir.join("model.bin"),
        &dir.join("vocabulary.txt"),
        &dir.join("config.json"),
        out,
    )
}

/// Converts a CTranslate2 Whisper model into whisper.cpp's ggml format at `out`.
///
/// The file is written to `out` + `.partial` and renamed when complete, so an interrupted or
/// failed run never leaves a truncated model under the final name.
pub fn convert_ct2_to_ggml(
    model_bin: &Path,
    vocabulary: &Path,
    config: &Path,
    out: &Path,
) -> Result<ConvertReport, Error> {
    let started = Instant::now();
    check_config(config)?;
    let model = Ct2Model::read(model_bin)?;
    if model.spec_name != "WhisperSpec" {
        return Err(bad(format!(
            "{} holds a {} model, not a Whisper one",
            model_bin.display(),
            model.spec_name
        )));
    }
    let hparams = hparams(&model)?;
    let tokens = read_vocabulary(vocabulary, hparams.n_vocab)?;
    let tensors = tensor_plan(&model, &hparams)?;

    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = write_ggml(&partial, &model, &hparams, &tokens, &tensors);
    let (bytes, sha256) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        Error::io(
            format!("renaming {} to {}", partial.display(), out.display()),
            e,
        )
    })?;
    Ok(ConvertReport {
        output: out.to_path_buf(),
        bytes,
        sha256,
        tensors: tensors.len(),
        vocab_tokens: tokens.len(),
        hparams,
        elapsed: started.elapsed(),
    })
}

/// The config only has to be a CTranslate2 Whisper config; ggml keeps none of its fields.
fn check_config(path: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{} is not JSON: {e}", path.display())))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad(format!("{} is not a JSON object", path.display())))?;
    if !obj.contains_key("suppress_ids") && !obj.contains_key("lang_ids") {
        return Err(bad(format!(
            "{} has neither suppress_ids nor lang_ids: not a CTranslate2 Whisper config",
            path.display()
        )));
    }
    Ok(())
}

/// Number of `prefix/layer_N` blocks.
fn count_layers(model: &Ct2Model, prefix: &str) -> usize {
    let scope = format!("{prefix}/layer_");
    model
        .names()
        .filter_map(|n| {
            n.strip_prefix(&scope)?
                .split('/')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn dims<const N: usize>(model: &Ct2Model, name: &str) -> Result<[usize; N], Error> {
    let var = model.require(name).map_err(|_| {
        bad(format!(
            "no variable {name}: not a CTranslate2 Whisper model"
        ))
    })?;
    var.shape.as_slice().try_into().map_err(|_| {
        bad(format!(
            "{name} has shape {:?}, expected {N} dimensions",
            var.shape
        ))
    })
}

fn heads(model: &Ct2Model, name: &str, width: usize) -> Result<usize, Error> {
    match model.get(name) {
        Some(_) => usize::try_from(model.scalar_int(name)?)
            .ok()
            .filter(|&h| h > 0 && width.is_multiple_of(h))
            .ok_or_else(|| bad(format!("{name} does not divide the width {width}"))),
        // Every Whisper size uses 64-wide heads.
        None => Ok(width / 64),
    }
}

fn hparams(model: &Ct2Model) -> Result<Hparams, Error> {
    let [n_audio_state, n_mels, kernel] = dims::<3>(model, "encoder/conv1/weight")?;
    if kernel != 3 {
        return Err(bad(format!(
            "encoder/conv1 kernel is {kernel}, Whisper's is 3"
        )));
    }
    let enc_pos = "encoder/position_encodings/encodings";
    let [n_audio_ctx, enc_width] = match model.get(enc_pos) {
        Some(_) => dims::<2>(model, enc_pos)?,
        // Older specs compute the encoder's sinusoids at run time: Whisper's are 1500 long.
        None => [1500, n_audio_state],
    };
    let [n_vocab, n_text_state] = dims::<2>(model, "decoder/embeddings/weight")?;
    let [n_text_ctx, dec_width] = dims::<2>(model, "decoder/position_encodings/encodings")?;
    if enc_width != n_audio_state || dec_width != n_text_state || n_text_state != n_audio_state {
        return Err(bad(format!(
            "inconsistent widths: encoder {n_audio_state}/{enc_width}, decoder {n_text_state}/{dec_width}"
        )));
    }
    let n_audio_layer = count_layers(model, "encoder");
    let n_text_layer = count_layers(model, "decoder");
    if n_audio_layer == 0 || n_text_layer == 0 {
        return Err(bad("the model has no encoder or decoder layers"));
    }
    if let (Some(proj), Some(emb)) = (
        model.get("decoder/projection/weight"),
        model.get("decoder/embeddings/weight"),
    ) && model.bytes(proj) != model.bytes(emb)
    {
        return Err(bad(
            "the output projection differs from the token embedding; whisper.cpp ties them",
        ));
    }
    Ok(Hparams {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head: heads(model, "encoder/num_heads", n_audio_state)?,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head: heads(model, "decoder/num_heads", n_text_state)?,
        n_text_layer,
        n_mels,
    })
}

/// GPT-2's byte-level alphabet: the printable Latin-1 bytes stand for themselves, every other byte
/// for `U+0100 + n`, numbered in byte order. Returns the byte each character stands for.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut next = 0u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(0x100 + next - 1).expect("below the surrogates")
            };
            (c, b)
        })
        .collect()
}

/// The ordinary tokens of the vocabulary as raw bytes: every entry before `<|endoftext|>`
/// (whisper.cpp names the special and timestamp tokens itself).
fn read_vocabulary(path: &Path, n_vocab: usize) -> Result<Vec<Vec<u8>>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    if lines.len() != n_vocab {
        return Err(bad(format!(
            "{} has {} tokens, the model's embedding has {n_vocab} rows",
            path.display(),
            lines.len()
        )));
    }
    let eot = lines
        .iter()
        .position(|&l| l == "<|endoftext|>")
        .ok_or_else(|| bad(format!("{} has no <|endoftext|> token", path.display())))?;
    let decoder = byte_decoder();
    lines[..eot]
        .iter()
        .enumerate()
        .map(|(i, token)| {
            token
                .chars()
                .map(|c| decoder.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| {
                    bad(format!(
                        "token {i} ({token:?}) is not in GPT-2's byte-level alphabet"
                    ))
                })
        })
        .collect()
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_ggml(
    path: &Path,
    model: &Ct2Model,
    hp: &Hparams,
    tokens: &[Vec<u8>],
    tensors: &[Planned],
) -> Result<(u64, String), Error> {
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let file = File::create(path).map_err(io)?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let i32_of =
        |v: usize| i32::try_from(v).map_err(|_| bad(format!("{v} does not fit the ggml header")));
    let mut header = Vec::new();
    header.extend_from_slice(&GGML_MAGIC.to_le_bytes());
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
    ] {
        header.extend_from_slice(&i32_of(v)?.to_le_bytes());
    }
    header.extend_from_slice(&GGML_F16.to_le_bytes()); // ftype: mostly f16
    let n_freqs = N_FFT / 2 + 1;
    header.extend_from_slice(&i32_of(hp.n_mels)?.to_le_bytes());
    header.extend_from_slice(&i32_of(n_freqs)?.to_le_bytes());
    for v in crate::mel::mel_filters(SAMPLE_RATE, N_FFT, hp.n_mels) {
        header.extend_from_slice(&v.to_le_bytes());
    }
    header.extend_from_slice(&i32_of(tokens.len())?.to_le_bytes());
    for t in tokens {
        header.extend_from_slice(&i32_of(t.len())?.to_le_bytes());
        header.extend_from_slice(t);
    }
    w.write_all(&header).map_err(io)?;

    for t in tensors {
        let data = tensor_bytes(model, t, hp)?;
        let mut rec = Vec::with_capacity(12 + 4 * t.shape.len() + t.name.len());
        rec.extend_from_slice(&i32_of(t.shape.len())?.to_le_bytes());
        rec.extend_from_slice(&i32_of(t.name.len())?.to_le_bytes());
        rec.extend_from_slice(&t.ggml_type.to_le_bytes());
        for &dim in t.shape.iter().rev() {
            rec.extend_from_slice(&i32_of(dim)?.to_le_bytes());
        }
        rec.extend_from_slice(t.name.as_bytes());
        w.write_all(&rec).map_err(io)?;
        w.write_all(&data).map_err(io)?;
    }
    w.flush().map_err(io)?;
    let Hashing {
        inner,
        hasher,
        bytes,
    } = w;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok((bytes, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection_with_gpt2s_space_and_newline() {
        let dec = byte_decoder();
        assert_eq!(dec.len(), 256);
        assert_eq!(dec[&'Ġ'], b' ');
        assert_eq!(dec[&'Ċ'], b'\n');
        assert_eq!(dec[&'a'], b'a');
        let mut seen: Vec<u8> = dec.values().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=255).collect::<Vec<u8>>());
    }

    #[test]
    fn a_missing_input_is_an_error_and_leaves_no_output() {
        let dir =
            std::env::temp_dir().join(format!("dartmouth-convert-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.bin");
        assert!(convert_ct2_dir(&dir, &out).is_err());
        assert!(!out.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
