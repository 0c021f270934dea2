//! The CTranslate2 → ggml Whisper converter, checked end to end: the converted file loads in
//! whisper.cpp and transcribes real speech; broken inputs give errors, not panics or half files.

use std::path::{Path, PathBuf};

use dartmouth_models::convert::whisper::{convert_ct2_dir, convert_ct2_to_ggml};
use dartmouth_models::{Asset, ModelStore};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

const LIBRIVOX: &str =
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb";

/// (clip, what CTranslate2 4.x itself transcribes greedily from the same tiny.en files, and the
/// human reference of `pocketsphinx-testdata`). A faithful conversion reproduces the former word
/// for word, including tiny.en's own mistake on 0880 ("ill disposed" heard as "old-sposed").
const CLIPS: [(&str, &str, &str); 2] = [
    (
        "0870",
        "And Mr. John Dashwood had then leisure to consider how much there might be prudently in his power to do for them.",
        "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
    ),
    (
        "0880",
        "He was not an old-sposed young man.",
        "he was not an ill disposed young man",
    ),
];

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dartmouth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ct2_paths() -> (PathBuf, PathBuf, PathBuf) {
    let store = ModelStore::from_env();
    let need = |a| {
        store
            .require(a)
            .expect("Whisper CT2 files provisioned: run `dartmouth models fetch`")
    };
    (
        need(Asset::WhisperCt2Model),
        need(Asset::WhisperCt2Vocabulary),
        need(Asset::WhisperCt2Config),
    )
}

fn read_wav_16k(path: &str) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (16_000, 1, 16)
    );
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect()
        })
        .filter(|w: &String| !w.is_empty())
        .collect()
}

#[test]
fn converted_model_loads_in_whisper_cpp_and_transcribes_librivox() {
    let (bin, vocab, config) = ct2_paths();
    let tmp = TempDir::new("convert-whisper");
    let out = tmp.0.join("ggml-tiny.en.bin");
    let report = convert_ct2_to_ggml(&bin, &vocab, &config, &out).expect("conversion succeeds");
    println!(
        "converted in {:.2?}: {} tensors, {} vocab tokens, {} bytes, sha256 {}",
        report.elapsed, report.tensors, report.vocab_tokens, report.bytes, report.sha256
    );
    let hp = report.hparams;
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_audio_ctx,
            hp.n_audio_state,
            hp.n_audio_head,
            hp.n_audio_layer
        ),
        (51_864, 1500, 384, 6, 4)
    );
    assert_eq!(
        (hp.n_text_ctx, hp.n_text_head, hp.n_text_layer, hp.n_mels),
        (448, 6, 4, 80)
    );
    // 5 conv/position tensors + 15 per encoder block + 2 (ln_post) + 2 + 24 per decoder block + 2.
    assert_eq!(report.tensors, 5 + 15 * 4 + 2 + 2 + 24 * 4 + 2);
    assert_eq!(
        report.vocab_tokens, 50_256,
        "ordinary tokens precede <|endoftext|>"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), report.bytes);
    assert!(!tmp.0.join("ggml-tiny.en.bin.partial").exists());

    whisper_rs::install_logging_hooks();
    let ctx = WhisperContext::new_with_params(&out, WhisperContextParameters::default())
        .expect("whisper.cpp loads the converted model");
    assert_eq!(ctx.model_n_vocab(), 51_864);
    assert!(!ctx.is_multilingual());
    assert_eq!(ctx.token_to_str(ctx.token_eot()).unwrap(), "[_EOT_]");
    // The vocabulary survived byte-level decoding: GPT-2's "Ġthe" (262) is " the".
    assert_eq!(ctx.token_to_str(262).unwrap(), " the");
    assert_eq!(ctx.token_to_str(1169).unwrap(), "the");

    let mut state = ctx.create_state().unwrap();
    for (clip, ct2_text, human) in CLIPS {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(2);
        params.set_language(Some("en"));
        params.set_no_timestamps(true);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        let pcm = read_wav_16k(&format!("{LIBRIVOX}-{clip}.wav"));
        state.full(params, &pcm).expect("transcription runs");
        let text: String = state
            .as_iter()
            .map(|s| s.to_str_lossy().unwrap().into_owned())
            .collect();
        println!("{clip}: {text:?}");
        assert_eq!(
            words(&text),
            words(ct2_text),
            "{clip}: {text:?} differs from CTranslate2's output"
        );
        let (got, want) = (words(&text), words(human));
        let matching = got.iter().filter(|w| want.contains(w)).count();
        assert!(
            matching * 10 >= want.len() * 7,
            "{clip}: only {matching} of {} reference words recognised in {text:?}",
            want.len()
        );
    }
}

#[test]
fn the_directory_form_reads_ct2_file_names() {
    let (bin, vocab, config) = ct2_paths();
    let tmp = TempDir::new("convert-whisper-dir");
    // A CTranslate2 directory made of links to the store's files.
    for (src, name) in [
        (&bin, "model.bin"),
        (&vocab, "vocabulary.txt"),
        (&config, "config.json"),
    ] {
        std::os::unix::fs::symlink(src, tmp.0.join(name)).unwrap();
    }
    let out = tmp.0.join("out.bin");
    let report = convert_ct2_dir(&tmp.0, &out).unwrap();
    assert_eq!(report.output, out);
    assert!(out.is_file());
}

fn assert_clean_error(bin: &Path, vocab: &Path, config: &Path, dir: &Path, expect: &str) {
    let out = dir.join("bad.bin");
    let err = convert_ct2_to_ggml(bin, vocab, config, &out).expect_err("broken input must fail");
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains(expect),
        "error {msg:?} should mention {expect:?}"
    );
    assert!(!out.exists(), "no output on failure");
    assert!(
        !dir.join("bad.bin.partial").exists(),
        "no partial file on failure"
    );
}

#[test]
fn truncated_garbage_or_mismatched_inputs_are_errors_not_panics() {
    let (bin, vocab, config) = ct2_paths();
    let tmp = TempDir::new("convert-whisper-bad");
    let model = std::fs::read(&bin).unwrap();

    let truncated = tmp.0.join("truncated.bin");
    std::fs::write(&truncated, &model[..model.len() / 2]).unwrap();
    assert_clean_error(&truncated, &vocab, &config, &tmp.0, "truncated");

    let header_only = tmp.0.join("header.bin");
    std::fs::write(&header_only, &model[..30]).unwrap();
    assert_clean_error(&header_only, &vocab, &config, &tmp.0, "truncated");

    let garbage = tmp.0.join("garbage.bin");
    std::fs::write(
        &garbage,
        b"this is not a CTranslate2 model at all, just some text",
    )
    .unwrap();
    assert_clean_error(&garbage, &vocab, &config, &tmp.0, "binary version");

    let empty = tmp.0.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_error(&empty, &vocab, &config, &tmp.0, "truncated");

    let short_vocab = tmp.0.join("vocabulary.txt");
    std::fs::write(&short_vocab, "a\nb\n<|endoftext|>\n").unwrap();
    assert_clean_error(&bin, &short_vocab, &config, &tmp.0, "tokens");

    let not_json = tmp.0.join("config.json");
    std::fs::write(&not_json, "{ nope").unwrap();
    assert_clean_error(&bin, &vocab, &not_json, &tmp.0, "not JSON");

    assert_clean_error(
        &tmp.0.join("missing.bin"),
        &vocab,
        &config,
        &tmp.0,
        "missing.bin",
    );
}
