//! A reader of CTranslate2's `model.bin`: the named, typed tensors a CTranslate2 converter saved.
//!
//! Layout (all integers little-endian): `u32` binary version, the spec name, `u32` spec revision,
//! `u32` variable count, then per variable its name, `u8` rank, `u32` per dimension, `u8` dtype,
//! `u32` byte count and the raw bytes; finally `u32` alias count and (alias, target) name pairs.
//! A name is a `u16` length that counts a trailing NUL, then the UTF-8 bytes and the NUL.
//! Every read is bounds-checked, so a truncated or foreign file is an error, never a panic.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use crate::Error;

/// Binary versions whose layout this reader knows.
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;

/// Element type of a CTranslate2 variable (the ids of CTranslate2's `DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 8-bit signed integer (quantised weights or flags).
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One stored tensor: its shape, element type and where its bytes are in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Dimensions, outermost first (CTranslate2 and PyTorch order).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    bytes: Range<usize>,
}

impl Variable {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed `model.bin`, holding the file's bytes.
#[derive(Debug)]
pub struct Ct2Model {
    /// The spec that wrote the file (`WhisperSpec`, `TransformerSpec` …).
    pub spec_name: String,
    /// Revision of that spec's weight layout.
    pub spec_revision: u32,
    /// The file's binary format version.
    pub binary_version: u32,
    data: Vec<u8>,
    variables: BTreeMap<String, Variable>,
    aliases: BTreeMap<String, String>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Convert {
        what: "CTranslate2 model.bin",
        reason: reason.into(),
    }
}

/// A bounds-checked cursor over the file.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            bad(format!(
                "file ends at byte {} while reading {what} ({n} bytes needed at offset {}): truncated or not a CTranslate2 model",
                self.data.len(),
                self.pos
            ))
        })?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, Error> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        let Some((&0, text)) = raw.split_last() else {
            return Err(bad(format!(
                "{what} at offset {} is not NUL-terminated",
                self.pos - len
            )));
        };
        String::from_utf8(text.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }
}

impl Ct2Model {
    /// Reads and parses a `model.bin`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let data =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(data)
    }

    /// Parses the bytes of a `model.bin`.
    pub fn parse(data: Vec<u8>) -> Result<Self, Error> {
        let mut c = Cursor {
            data: &data,
            pos: 0,
        };
        let binary_version = c.u32("binary version")?;
        if !SUPPORTED_VERSIONS.contains(&binary_version) {
            return Err(bad(format!(
                "binary version {binary_version} is not one this reader knows ({}..={}); is this a CTranslate2 model.bin?",
                SUPPORTED_VERSIONS.start(),
                SUPPORTED_VERSIONS.end()
            )));
        }
        let spec_name = c.string("spec name")?;
        let spec_revision = c.u32("spec revision")?;
        let count = c.u32("variable count")? as usize;
        let mut variables = BTreeMap::new();
        for i in 0..count {
            let name = c.string(&format!("name of variable {i}"))?;
            let rank = c.u8("rank")?;
            let mut shape = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                shape.push(c.u32("dimension")? as usize);
            }
            let id = c.u8("dtype")?;
            let dtype = DType::from_id(id)
                .ok_or_else(|| bad(format!("variable {name} has unknown dtype id {id}")))?;
            let n_bytes = c.u32("byte count")? as usize;
            let elements = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("variable {name} has an impossible shape {shape:?}")))?;
            if elements.checked_mul(dtype.size()) != Some(n_bytes) {
                return Err(bad(format!(
                    "variable {name}: shape {shape:?} of {dtype:?} needs {} bytes, the file says {n_bytes}",
                    elements.saturating_mul(dtype.size())
                )));
            }
            let start = c.pos;
            c.take(n_bytes, &format!("data of {name}"))?;
            variables.insert(
                name,
                Variable {
                    shape,
                    dtype,
                    bytes: start..start + n_bytes,
                },
            );
        }
        let n_aliases = c.u32("alias count")? as usize;
        let mut aliases = BTreeMap::new();
        for _ in 0..n_aliases {
            let alias = c.string("alias name")?;
            let target = c.string("alias target")?;
            aliases.insert(alias, target);
        }
        if c.pos != data.len() {
            return Err(bad(format!(
                "{} unexpected bytes after the aliases",
                data.len() - c.pos
            )));
        }
        Ok(Self {
            spec_name,
            spec_revision,
            binary_version,
            data,
            variables,
            aliases,
        })
    }

    /// The variable with this name, following an alias if the name is one.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.variables.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|target| self.variables.get(target))
        })
    }

    /// The variable with this name, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&Variable, Error> {
        self.get(name)
            .ok_or_else(|| bad(format!("no variable {name} in a {} model", self.spec_name)))
    }

    /// Names of all stored variables (aliases excluded), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// The raw little-endian bytes of a variable.
    pub fn bytes(&self, var: &Variable) -> &[u8] {
        &self.data[var.bytes.clone()]
    }

    /// An integer scalar (flags, head counts), whatever its integer width.
    pub fn scalar_int(&self, name: &str) -> Result<i64, Error> {
        let var = self.require(name)?;
        let b = self.bytes(var);
        if var.len() != 1 {
            return Err(bad(format!(
                "{name} should be a scalar, has shape {:?}",
                var.shape
            )));
        }
        Ok(match var.dtype {
            DType::I8 => i64::from(b[0] as i8),
            DType::I16 => i64::from(i16::from_le_bytes([b[0], b[1]])),
            DType::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            other => return Err(bad(format!("{name} should be an integer, is {other:?}"))),
        })
    }

    /// A float tensor's values as `f32`. An int8 tensor is dequantised with its `<name>_scale`
    /// companion (one scale per row), as CTranslate2 quantises weights.
    pub fn values_f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        let var = self.require(name)?;
        let b = self.bytes(var);
        Ok(match var.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DType::Bf16 => b
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            DType::I8 => {
                let scales = self.values_f32(&format!("{name}_scale")).map_err(|_| {
                    bad(format!(
                        "{name} is int8 without a {name}_scale: not a quantised weight"
                    ))
                })?;
                let rows = var.shape.first().copied().unwrap_or(1);
                if scales.len() != rows || rows == 0 {
                    return Err(bad(format!(
                        "{name}_scale has {} values for {rows} rows",
                        scales.len()
                    )));
                }
                let cols = var.len() / rows;
                b.iter()
                    .enumerate()
                    .map(|(i, &q)| f32::from(q as i8) / scales[i / cols])
                    .collect()
            }
            other => return Err(bad(format!("{name} is {other:?}, not a float tensor"))),
        })
    }

    /// A float tensor's values as IEEE half bits (copied exactly when stored as `f16`).
    pub fn values_f16(&self, name: &str) -> Result<Vec<u16>, Error> {
        let var = self.require(name)?;
        if var.dtype == DType::F16 {
            let b = self.bytes(var);
            return Ok(b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect());
        }
        Ok(self.values_f32(name)?.into_iter().map(f32_to_f16).collect())
    }
}

/// IEEE half bits to `f32` (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: renormalise the mantissa.
            let shift = mant.leading_zeros() - 21;
            let m = (mant << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// `f32` to IEEE half bits, rounding to nearest even (overflow gives infinity).
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        // Subnormal half: shift the mantissa (with its implicit bit) into place, rounding.
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let round = rem > halfway || (rem == halfway && half & 1 == 1);
        return sign | (half + u32::from(round)) as u16;
    }
    let half = ((e as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    let round = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    sign | (half + u32::from(round)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn tiny_model() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        name(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        name(&mut b, "a/heads");
        b.push(0);
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&6i16.to_le_bytes());
        name(&mut b, "a/w");
        b.push(2);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&f32_to_f16(1.5).to_le_bytes());
        b.extend_from_slice(&f32_to_f16(-2.0).to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        name(&mut b, "a/alias");
        name(&mut b, "a/w");
        b
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let m = Ct2Model::parse(tiny_model()).unwrap();
        assert_eq!(m.spec_name, "WhisperSpec");
        assert_eq!(m.spec_revision, 3);
        assert_eq!(m.scalar_int("a/heads").unwrap(), 6);
        assert_eq!(m.values_f32("a/alias").unwrap(), vec![1.5, -2.0]);
        assert_eq!(m.require("a/w").unwrap().shape, vec![1, 2]);
        assert!(m.require("nope").is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = tiny_model();
        for len in 0..full.len() {
            assert!(
                Ct2Model::parse(full[..len].to_vec()).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }

    #[test]
    fn half_conversion_round_trips() {
        for h in 0u16..=0xffff {
            let f = f16_to_f32(h);
            if f.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "{h:#06x} -> {f}");
        }
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1.0 + 1.0 / 4096.0), 0x3c00, "ties round to even");
    }
}
