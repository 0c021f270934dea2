//! Reading the SmolLM2 GGUF: its byte-level BPE tokenizer from the metadata, and its weights
//! re-quantised to Q8_0 in memory.

use std::io::{Cursor, Read, Seek};

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::embedded::LlmError;
use super::stream::TokenBytes;

fn metadata<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a Value, LlmError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| LlmError::Tokenizer(format!("the GGUF has no `{key}`")))
}

fn string_array(ct: &gguf_file::Content, key: &str) -> Result<Vec<String>, LlmError> {
    let bad = |e: candle_core::Error| LlmError::Tokenizer(format!("`{key}`: {e}"));
    metadata(ct, key)?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| v.to_string().cloned().map_err(bad))
        .collect()
}

fn integer(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::I8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

/// llama.cpp token types that are not text: unknown (2), control (3), unused (5).
fn is_special_type(t: i64) -> bool {
    matches!(t, 2 | 3 | 5)
}

/// The GGUF's byte-level BPE tokenizer with SmolLM2's pre-tokenizer (`smollm` in the GGUF,
/// which candle does not know): digits one by one, then byte-level without a prefix space.
pub(crate) fn build_tokenizer(
    ct: &gguf_file::Content,
) -> Result<(Tokenizer, TokenBytes), LlmError> {
    let model = metadata(ct, "tokenizer.ggml.model")?.to_string().ok();
    if model.map(String::as_str) != Some("gpt2") {
        return Err(LlmError::Tokenizer(format!(
            "unsupported tokenizer model {model:?} (expected byte-level BPE, `gpt2`)"
        )));
    }
    let tokens = string_array(ct, "tokenizer.ggml.tokens")?;
    let types: Vec<i64> = match ct.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?
            .iter()
            .map(|t| integer(t).unwrap_or(1))
            .collect(),
        None => Vec::new(),
    };
    let special = |i: usize| types.get(i).copied().is_some_and(is_special_type);
    let merges = string_array(ct, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_owned(), b.to_owned())),
            None => Err(LlmError::Tokenizer(format!("bad merge `{m}`"))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|&(i, _)| special(i))
        .map(|(_, t)| AddedToken::from(t.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&specials);

    let bytes = TokenBytes::new(
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), special(i))),
    );
    Ok((tokenizer, bytes))
}

/// The GGUF rewritten in memory with its quantised matrices as Q8_0; 1-D tensors (norms) and
/// tensors already in Q8_0 or a float format are kept as they are. The tokenizer metadata is
/// left out (the model does not read it).
pub(crate) fn requantise<R: Read + Seek>(
    ct: &gguf_file::Content,
    reader: &mut R,
    device: &Device,
) -> candle_core::Result<Vec<u8>> {
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut size = 0;
    for name in names {
        let qt = ct.tensor(reader, name, device)?;
        let qt = match qt.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_0 => qt,
            _ if qt.rank() == 2
                && qt.shape().dims()[1].is_multiple_of(GgmlDType::Q8_0.block_size()) =>
            {
                QTensor::quantize(&qt.dequantize(device)?, GgmlDType::Q8_0)?
            }
            _ => QTensor::quantize(&qt.dequantize(device)?, GgmlDType::F32)?,
        };
        size += qt.storage_size_in_bytes();
        tensors.push((name.as_str(), qt));
    }
    let metadata: Vec<(&str, &Value)> = ct
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer.") && k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::with_capacity(size + (1 << 20)));
    gguf_file::write(&mut out, &metadata, &refs)?;
    Ok(out.into_inner())
}
