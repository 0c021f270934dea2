//! The tensors of a whisper.cpp model file and where each comes from in a CTranslate2 Whisper
//! model: names and shapes of OpenAI's checkpoint, row blocks of CTranslate2's fused linears.

use super::{GGML_F16, GGML_F32, Hparams, bad};
use crate::Error;
use crate::convert::ct2::Ct2Model;

/// Where a ggml tensor's values come from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// Rows `rows` of a CTranslate2 variable (the whole of it when `None`).
    Ct2 {
        name: String,
        rows: Option<(usize, usize)>,
    },
    /// Whisper's sinusoidal encoder positions, computed.
    Sinusoids,
}

/// One ggml tensor to write.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) name: String,
    /// Shape, outermost first (as in the PyTorch checkpoint).
    pub(super) shape: Vec<usize>,
    pub(super) ggml_type: i32,
    source: Source,
}

fn whole(name: String) -> Source {
    Source::Ct2 { name, rows: None }
}

fn rows(name: String, from: usize, to: usize) -> Source {
    let rows = Some((from, to));
    Source::Ct2 { name, rows }
}

/// Builds the tensor list; `d` is the model width.
struct Plan {
    d: usize,
    items: Vec<Planned>,
}

impl Plan {
    fn add(&mut self, name: String, shape: &[usize], ggml_type: i32, source: Source) {
        let shape = shape.to_vec();
        self.items.push(Planned {
            name,
            shape,
            ggml_type,
            source,
        });
    }

    /// A layer norm: `gamma`/`beta` → `weight`/`bias`.
    fn norm(&mut self, to: &str, from: &str) {
        let d = self.d;
        self.add(
            format!("{to}.weight"),
            &[d],
            GGML_F32,
            whole(format!("{from}/gamma")),
        );
        self.add(
            format!("{to}.bias"),
            &[d],
            GGML_F32,
            whole(format!("{from}/beta")),
        );
    }

    /// A linear layer of `inp` → `out` features.
    fn linear(&mut self, to: &str, from: &str, out: usize, inp: usize) {
        let (w, b) = (format!("{from}/weight"), format!("{from}/bias"));
        self.add(format!("{to}.weight"), &[out, inp], GGML_F16, whole(w));
        self.add(format!("{to}.bias"), &[out], GGML_F32, whole(b));
    }

    /// Query, key (no bias) and value from row blocks of fused linears: the query is rows `0..d`
    /// of `q`, the key and value the `d`-row blocks of `kv` starting at row `kv_first`.
    fn qkv(&mut self, to: &str, q: &str, kv: &str, kv_first: usize) {
        let d = self.d;
        let (k0, v0) = (kv_first, kv_first + d);
        let (qw, qb) = (format!("{q}/weight"), format!("{q}/bias"));
        let (kvw, kvb) = (format!("{kv}/weight"), format!("{kv}/bias"));
        self.add(
            format!("{to}.query.weight"),
            &[d, d],
            GGML_F16,
            rows(qw, 0, d),
        );
        self.add(format!("{to}.query.bias"), &[d], GGML_F32, rows(qb, 0, d));
        self.add(
            format!("{to}.key.weight"),
            &[d, d],
            GGML_F16,
            rows(kvw.clone(), k0, k0 + d),
        );
        self.add(
            format!("{to}.value.weight"),
            &[d, d],
            GGML_F16,
            rows(kvw, v0, v0 + d),
        );
        self.add(
            format!("{to}.value.bias"),
            &[d],
            GGML_F32,
            rows(kvb, v0, v0 + d),
        );
    }

    /// A transformer block's self-attention (fused q/k/v in `linear_0`) and feed-forward part.
    fn self_attention_and_mlp(&mut self, to: &str, from: &str) {
        let (d, sa) = (self.d, format!("{from}/self_attention"));
        self.norm(&format!("{to}.attn_ln"), &format!("{sa}/layer_norm"));
        let fused = format!("{sa}/linear_0");
        self.qkv(&format!("{to}.attn"), &fused, &fused, d);
        self.linear(&format!("{to}.attn.out"), &format!("{sa}/linear_1"), d, d);
        self.norm(&format!("{to}.mlp_ln"), &format!("{from}/ffn/layer_norm"));
        self.linear(
            &format!("{to}.mlp.0"),
            &format!("{from}/ffn/linear_0"),
            4 * d,
            d,
        );
        self.linear(
            &format!("{to}.mlp.2"),
            &format!("{from}/ffn/linear_1"),
            d,
            4 * d,
        );
    }
}

/// The list of tensors whisper.cpp expects, each mapped to its CTranslate2 source.
pub(super) fn tensor_plan(model: &Ct2Model, hp: &Hparams) -> Result<Vec<Planned>, Error> {
    let d = hp.n_audio_state;
    let mut p = Plan {
        d,
        items: Vec::new(),
    };
    let enc_pos = "encoder/position_encodings/encodings";
    let enc_pos = match model.get(enc_pos) {
        Some(_) => whole(enc_pos.into()),
        None => Source::Sinusoids,
    };
    p.add(
        "encoder.positional_embedding".into(),
        &[hp.n_audio_ctx, d],
        GGML_F32,
        enc_pos,
    );
    for (i, inp) in [(1, hp.n_mels), (2, d)] {
        let (w, b) = (
            format!("encoder/conv{i}/weight"),
            format!("encoder/conv{i}/bias"),
        );
        p.add(
            format!("encoder.conv{i}.weight"),
            &[d, inp, 3],
            GGML_F16,
            whole(w),
        );
        // Biases become [d, 1] columns so ggml can broadcast them over time.
        p.add(format!("encoder.conv{i}.bias"), &[d, 1], GGML_F32, whole(b));
    }
    for i in 0..hp.n_audio_layer {
        p.self_attention_and_mlp(
            &format!("encoder.blocks.{i}"),
            &format!("encoder/layer_{i}"),
        );
    }
    p.norm("encoder.ln_post", "encoder/layer_norm");

    let (pos, emb) = (
        "decoder/position_encodings/encodings",
        "decoder/embeddings/weight",
    );
    p.add(
        "decoder.positional_embedding".into(),
        &[hp.n_text_ctx, d],
        GGML_F32,
        whole(pos.into()),
    );
    p.add(
        "decoder.token_embedding.weight".into(),
        &[hp.n_vocab, d],
        GGML_F16,
        whole(emb.into()),
    );
    for i in 0..hp.n_text_layer {
        let (to, from) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
        p.self_attention_and_mlp(&to, &from);
        // Cross-attention: query in `linear_0`, fused key/value in `linear_1`, output `linear_2`.
        let ca = format!("{from}/attention");
        p.norm(&format!("{to}.cross_attn_ln"), &format!("{ca}/layer_norm"));
        p.qkv(
            &format!("{to}.cross_attn"),
            &format!("{ca}/linear_0"),
            &format!("{ca}/linear_1"),
            0,
        );
        p.linear(
            &format!("{to}.cross_attn.out"),
            &format!("{ca}/linear_2"),
            d,
            d,
        );
    }
    p.norm("decoder.ln", "decoder/layer_norm");

    for t in &p.items {
        check_source(model, t)?;
    }
    Ok(p.items)
}

/// Checks that a planned tensor's source exists and has the rows and width it needs. A missing
/// bias is allowed (written as zeros).
fn check_source(model: &Ct2Model, t: &Planned) -> Result<(), Error> {
    let Source::Ct2 { name, rows } = &t.source else {
        return Ok(());
    };
    let Some(var) = model.get(name) else {
        if name.ends_with("/bias") {
            return Ok(());
        }
        return Err(bad(format!(
            "no variable {name} (for {}): not a CTranslate2 Whisper model",
            t.name
        )));
    };
    let want: usize = t.shape.iter().product();
    let have = match rows {
        None => var.len(),
        Some((from, to)) => {
            let total_rows = var.shape.first().copied().unwrap_or(0);
            if *to > total_rows {
                return Err(bad(format!(
                    "{name} has {total_rows} rows, {} needs rows {from}..{to}",
                    t.name
                )));
            }
            var.len() / total_rows.max(1) * (to - from)
        }
    };
    if have != want {
        return Err(bad(format!(
            "{name} (shape {:?}) does not fit {} (shape {:?})",
            var.shape, t.name, t.shape
        )));
    }
    Ok(())
}

/// Whisper's encoder positions: `[sin(p·f_0..), cos(p·f_0..)]`, `f_i = 10000^(−i/(d/2−1))`.
fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let step = 10_000f64.ln() / (half.max(2) - 1) as f64;
    let mut out = Vec::with_capacity(length * channels);
    for p in 0..length {
        let angles: Vec<f64> = (0..half)
            .map(|i| p as f64 * (-step * i as f64).exp())
            .collect();
        out.extend(angles.iter().map(|a| a.sin() as f32));
        out.extend(angles.iter().map(|a| a.cos() as f32));
    }
    out
}

/// The values of one planned tensor, as `f32` or `f16` bits per its ggml type.
pub(super) fn tensor_bytes(model: &Ct2Model, t: &Planned, hp: &Hparams) -> Result<Vec<u8>, Error> {
    let n: usize = t.shape.iter().product();
    // Element range of the wanted rows (the plan checked that they exist).
    let slice = |total: usize| match &t.source {
        Source::Ct2 {
            rows: Some((from, to)),
            ..
        } => {
            let cols = n / (to - from);
            (from * cols, to * cols)
        }
        _ => (0, total),
    };
    let name = match &t.source {
        Source::Sinusoids => {
            let values = sinusoids(hp.n_audio_ctx, hp.n_audio_state);
            return Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        }
        Source::Ct2 { name, .. } => name,
    };
    if model.get(name).is_none() {
        // A missing bias (checked in the plan): zeros.
        let size = if t.ggml_type == GGML_F16 { 2 } else { 4 };
        return Ok(vec![0; n * size]);
    }
    Ok(if t.ggml_type == GGML_F16 {
        let all = model.values_f16(name)?;
        let (a, b) = slice(all.len());
        all[a..b].iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        let all = model.values_f32(name)?;
        let (a, b) = slice(all.len());
        all[a..b].iter().flat_map(|v| v.to_le_bytes()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_start_with_sin_zero_and_cos_one() {
        let s = sinusoids(3, 8);
        assert_eq!(&s[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((s[8] - 1f32.sin()).abs() < 1e-7);
    }
}
