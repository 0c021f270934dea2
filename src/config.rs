//! Configuration: documented defaults, overlaid by `dartmouth.toml`, then by
//! `DARTMOUTH_SECTION__KEY` environment variables, then by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dartmouth_models::{Asset, ModelStore};
use dartmouth_voice::turn::Eagerness;
use serde::{Deserialize, Serialize};
use toml::Value;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "DARTMOUTH_CONFIG";
/// Prefix of environment overrides: `DARTMOUTH_SERVER__HTTP=0.0.0.0:8080`.
const ENV_PREFIX: &str = "DARTMOUTH_";
/// Separator between section and key in environment overrides.
const ENV_SEPARATOR: &str = "__";

/// The whole effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gateway.
    pub server: ServerConfig,
    /// The platform sidecar.
    pub platform: PlatformSection,
    /// Logging.
    pub log: LogConfig,
    /// Model files.
    pub models: ModelsConfig,
    /// Voice agents clients can bring into a room, by name.
    pub agents: BTreeMap<String, AgentProfile>,
    /// The SFU: audio slots per subscriber and publisher policing.
    pub media: MediaSection,
    /// The SIP bridge (off unless `sip.listen` or `serve --sip` is set).
    pub sip: dartmouth_signaling::sip::SipSettings,
}

/// `[media]`: the selective forwarding unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// Audio slots per subscriber: the top-N speakers it hears at once (WHEP: 1).
    pub max_slots: usize,
    /// Police publishers (drop packets beyond the rates below).
    pub policing: bool,
    /// Sustained packets per second a publisher may send.
    pub max_packets_per_sec: u32,
    /// Sustained payload bits per second a publisher may send.
    pub max_bitrate: u32,
}

impl Default for MediaSection {
    fn default() -> Self {
        let defaults = dartmouth_media::MediaConfig::default();
        Self {
            max_slots: defaults.max_slots,
            policing: defaults.policing.enabled,
            max_packets_per_sec: defaults.policing.max_packets_per_sec,
            max_bitrate: defaults.policing.max_bitrate,
        }
    }
}

impl MediaSection {
    /// The media core's settings.
    pub fn core_config(&self) -> dartmouth_media::MediaConfig {
        let defaults = dartmouth_media::MediaConfig::default();
        dartmouth_media::MediaConfig {
            max_slots: self.max_slots,
            policing: dartmouth_media::PolicingConfig {
                enabled: self.policing,
                max_packets_per_sec: self.max_packets_per_sec,
                max_bitrate: self.max_bitrate,
                ..defaults.policing
            },
            ..defaults
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            platform: PlatformSection::default(),
            log: LogConfig::default(),
            models: ModelsConfig::default(),
            agents: default_agents(),
            media: MediaSection::default(),
            sip: Default::default(),
        }
    }
}

/// One configured voice agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentProfile {
    /// What it is, for the demo's agent picker.
    pub description: String,
    /// Its system prompt.
    pub system_prompt: String,
    /// Voice: `piper` (natural, default) or `espeak` (robotic, fastest).
    pub voice: String,
    /// Longest answer in tokens.
    pub max_tokens: usize,
    /// An OpenAI-compatible chat-completions server to answer with (OpenAI, Ollama, llama.cpp
    /// server, vLLM), e.g. `http://127.0.0.1:11434/v1`; empty: the embedded model only. The
    /// embedded model stays behind it as the fallback.
    pub llm_url: String,
    /// Model name for `llm_url`.
    pub llm_model: String,
    /// Environment variable holding the API key for `llm_url` (the key itself never goes in
    /// the configuration file).
    pub llm_api_key_env: String,
    /// Start answering at a pause, before the end of the turn is decided (the answer is held
    /// until the turn ends there, and dropped if the person goes on). Lowers latency by the
    /// end-of-turn wait; turn it off where each LLM call costs money.
    pub preemptive_answer: bool,
    /// How readily a pause ends the caller's turn: `low` (waits for people who pause to
    /// think), `normal` or `high` (answers sooner, cuts in more often).
    pub eagerness: Eagerness,
}

impl Default for AgentProfile {
    fn default() -> Self {
        Self {
            description: "A helpful voice assistant".into(),
            system_prompt:
                "You are a helpful voice assistant. Answer in one or two short sentences.".into(),
            voice: "piper".into(),
            max_tokens: 96,
            llm_url: String::new(),
            llm_model: String::new(),
            llm_api_key_env: String::new(),
            preemptive_answer: true,
            eagerness: Eagerness::Normal,
        }
    }
}

/// The agents a fresh install offers.
fn default_agents() -> BTreeMap<String, AgentProfile> {
    let mut agents = BTreeMap::new();
    agents.insert("assistant".into(), AgentProfile::default());
    agents.insert(
        "robot".into(),
        AgentProfile {
            description: "Terse answers in a robotic espeak-ng voice (lowest latency)".into(),
            system_prompt: "You are a terse robot. Answer in one short sentence.".into(),
            voice: "espeak".into(),
            max_tokens: 48,
            ..AgentProfile::default()
        },
    );
    agents
}

/// Gateway listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP listener: demo, REST, signaling, WHIP/WHEP, metrics.
    pub http: String,
    /// UDP listener shared by every WebRTC peer.
    pub media_udp: String,
    /// Public address advertised in ICE candidates (empty: the media listener's address).
    pub public_ip: String,
    /// URL of a remote platform sidecar; empty starts one in-process on `platform.http`.
    pub platform_url: String,
    /// API key (`dk_…`, developer role) the gateway presents to a remote platform sidecar;
    /// with the in-process sidecar a fresh one is made at every start.
    pub platform_api_key: String,
    /// Secret that signs and verifies room tokens (HS256); empty: a random development key is
    /// made at startup and `POST /api/token` is enabled.
    pub token_secret: String,
    /// Enable `POST /api/token` even with a configured secret (development only).
    pub dev_tokens: bool,
    /// Agent a room gets when the client names none (`none`: no agent).
    pub default_agent: String,
    /// Per-room agents overriding `default_agent`: `room_agents = { lobby = "none", support = "robot" }`.
    pub room_agents: BTreeMap<String, String>,
    /// Agent sessions this machine carries at once; more are refused with `unavailable` (503
    /// for WHIP). 0: the measured default for the embedded models (see `dartmouth bench load`).
    pub max_agent_sessions: usize,
    /// Per-address limits at the gateway's doors (`[server.limits]`).
    pub limits: ClientLimits,
    /// PEM certificate chain: serve HTTPS/WSS (with `tls_key`). Empty: plain HTTP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Serve HTTPS with a self-signed development certificate made under `$DARTMOUTH_HOME/tls`
    /// (browsers allow the microphone only in a secure context, so this lets the demo work from
    /// another machine).
    pub tls_self_signed: bool,
    /// The platform agent id whose files receive finished room recordings (when a sidecar is
    /// connected; without one they stay under `$DARTMOUTH_HOME/recordings`).
    pub recordings_owner: String,
}

/// Per-address limits: what an unauthenticated or greedy client may hold or do
/// (see `dartmouth_signaling::limits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// WebSockets one address may hold open before their token verified.
    pub pending_per_ip: usize,
    /// WebSockets the gateway holds open before their token verified, from all addresses.
    pub pending_total: usize,
    /// Milliseconds a WebSocket has to send a join whose token verifies.
    pub join_deadline_ms: u64,
    /// WebSockets plus WHIP/WHEP sessions one address may hold at once.
    pub connections_per_ip: usize,
    /// New WebSockets per minute from one address.
    pub connects_per_minute: u32,
    /// Join attempts per minute from one address.
    pub joins_per_minute: u32,
    /// WHIP/WHEP session requests per minute from one address.
    pub whip_per_minute: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        let d = dartmouth_signaling::limits::LimitsConfig::default();
        Self {
            pending_per_ip: d.pending_per_ip,
            pending_total: d.pending_total,
            join_deadline_ms: d.join_deadline.as_millis() as u64,
            connections_per_ip: d.connections_per_ip,
            connects_per_minute: d.connects_per_minute,
            joins_per_minute: d.joins_per_minute,
            whip_per_minute: d.http_sessions_per_minute,
        }
    }
}

impl ServerConfig {
    /// The certificate to serve the gateway with, if TLS is on (the self-signed one is made
    /// under `home` when asked for).
    pub fn tls_files(&self, home: &Path) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        if self.tls_self_signed {
            let host = self.http.rsplit_once(':').map_or("", |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let names = [host.to_string(), self.public_ip.clone()];
            return crate::tls::self_signed(home, &names).map(Some);
        }
        Ok((!self.tls_cert.is_empty()).then(|| crate::tls::TlsFiles {
            cert: PathBuf::from(&self.tls_cert),
            key: PathBuf::from(&self.tls_key),
        }))
    }
}

impl ClientLimits {
    /// The signaling crate's form.
    pub fn to_signaling(&self) -> dartmouth_signaling::limits::LimitsConfig {
        dartmouth_signaling::limits::LimitsConfig {
            pending_per_ip: self.pending_per_ip,
            pending_total: self.pending_total,
            join_deadline: std::time::Duration::from_millis(self.join_deadline_ms),
            connections_per_ip: self.connections_per_ip,
            connects_per_minute: self.connects_per_minute,
            joins_per_minute: self.joins_per_minute,
            http_sessions_per_minute: self.whip_per_minute,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:8080".into(),
            media_udp: "127.0.0.1:5004".into(),
            public_ip: String::new(),
            platform_url: String::new(),
            platform_api_key: String::new(),
            token_secret: String::new(),
            dev_tokens: false,
            default_agent: "assistant".into(),
            room_agents: BTreeMap::new(),
            max_agent_sessions: 0,
            limits: ClientLimits::default(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_self_signed: false,
            recordings_owner: crate::recording_store::DEFAULT_RECORDINGS_OWNER.into(),
        }
    }
}

/// The platform sidecar: its listener and its service settings (see `dartmouth_platform::PlatformConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlatformSection {
    /// HTTP listener of the sidecar (loopback by default: it is an internal API).
    pub http: String,
    /// PEM certificate chain: serve the sidecar over HTTPS (with `tls_key`).
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Everything else: database, tokens, limits, storage.
    #[serde(flatten)]
    pub service: dartmouth_platform::PlatformConfig,
}

impl Default for PlatformSection {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:8081".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            service: dartmouth_platform::PlatformConfig {
                data_dir: dartmouth_models::default_home().join("platform"),
                ..dartmouth_platform::PlatformConfig::default()
            },
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `info,dartmouth_media=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where model files are read from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Models directory; empty means `$DARTMOUTH_HOME/models` (default `~/.cache/dartmouth/models`).
    pub dir: String,
    /// Per-file overrides, keyed by asset (`silero_vad = "/opt/vad.onnx"`); see `dartmouth models list`.
    pub paths: BTreeMap<String, PathBuf>,
}

impl Config {
    /// Loads the configuration: defaults, then the file (`path`, else `$DARTMOUTH_CONFIG`, else
    /// `./dartmouth.toml` if present), then environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let explicit = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        let file = match explicit {
            Some(path) => Some(path),
            None => Some(PathBuf::from("dartmouth.toml")).filter(|p| p.is_file()),
        };
        let file_text = match &file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading configuration file {}", path.display()))?,
            ),
            None => None,
        };
        Self::from_sources(file_text.as_deref(), std::env::vars()).with_context(|| match &file {
            Some(path) => format!("configuration from {} and the environment", path.display()),
            None => "configuration from the environment".into(),
        })
    }

    /// Builds the configuration from a TOML text and environment variables (testable core of
    /// [`Config::load`]).
    pub fn from_sources(
        file_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut value = Value::try_from(Config::default())?;
        if let Some(text) = file_text {
            let file: Value =
                toml::from_str(text).context("the configuration file is not valid TOML")?;
            merge(&mut value, file);
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains(ENV_SEPARATOR) {
                continue; // DARTMOUTH_HOME, DARTMOUTH_CONFIG …
            }
            let path: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
            set_path(&mut value, &path, parse_env_value(&raw))
                .with_context(|| format!("environment variable {name}"))?;
        }
        let config: Config = value.try_into().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (section, cert, key) in [
            ("server", &self.server.tls_cert, &self.server.tls_key),
            ("platform", &self.platform.tls_cert, &self.platform.tls_key),
        ] {
            if cert.is_empty() != key.is_empty() {
                bail!("{section}.tls_cert and {section}.tls_key go together: set both or neither");
            }
        }
        if self.server.tls_self_signed && !self.server.tls_cert.is_empty() {
            bail!("server.tls_self_signed and server.tls_cert exclude each other");
        }
        for (name, agent) in &self.agents {
            if !matches!(agent.voice.as_str(), "piper" | "espeak") {
                bail!(
                    "agent `{name}`: unknown voice `{}` (piper or espeak)",
                    agent.voice
                );
            }
            if !agent.llm_url.is_empty() {
                if !(agent.llm_url.starts_with("http://") || agent.llm_url.starts_with("https://"))
                {
                    bail!(
                        "agent `{name}`: llm_url `{}` is not an http(s) URL",
                        agent.llm_url
                    );
                }
                if agent.llm_model.is_empty() {
                    bail!("agent `{name}`: llm_url is set but llm_model is empty");
                }
            }
        }
        for (room, agent) in &self.server.room_agents {
            if agent != "none" && !self.agents.contains_key(agent) {
                bail!("server.room_agents: room `{room}` names unknown agent `{agent}`");
            }
        }
        if !(1..=dartmouth_media::core::MAX_SLOTS).contains(&self.media.max_slots) {
            bail!(
                "media.max_slots must be 1-{}",
                dartmouth_media::core::MAX_SLOTS
            );
        }
        let default = &self.server.default_agent;
        if default != "none" && !self.agents.contains_key(default) {
            bail!("server.default_agent `{default}` is not one of [agents.*]");
        }
        self.sip.validate().map_err(anyhow::Error::msg)?;
        for rule in &self.sip.dial_plan {
            let agent = rule.agent.as_str();
            if !matches!(agent, "" | "none" | "echo") && !self.agents.contains_key(agent) {
                bail!("sip.dial_plan: unknown agent `{agent}`");
            }
        }
        for key in self.models.paths.keys() {
            if Asset::from_key(key).is_none() {
                let known: Vec<&str> = Asset::all().map(Asset::key).collect();
                bail!(
                    "unknown model file `{key}` in [models.paths]; known: {}",
                    known.join(", ")
                );
            }
        }
        Ok(())
    }

    /// The model store this configuration describes.
    pub fn model_store(&self) -> ModelStore {
        let mut store = if self.models.dir.is_empty() {
            ModelStore::from_env()
        } else {
            ModelStore::new(&self.models.dir)
        };
        for (key, path) in &self.models.paths {
            if let Some(asset) = Asset::from_key(key) {
                store = store.with_override(asset, path);
            }
        }
        store
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// The configuration as TOML with every secret replaced by `<redacted>` (for `config show`).
    pub fn to_toml_redacted(&self) -> String {
        const REDACTED: &str = "<redacted>";
        let mut shown = self.clone();
        if !shown.server.platform_api_key.is_empty() {
            shown.server.platform_api_key = REDACTED.into();
        }
        if !shown.server.token_secret.is_empty() {
            shown.server.token_secret = REDACTED.into();
        }
        let service = &mut shown.platform.service;
        for secret in [&mut service.jwt_secret, &mut service.room_token_secret] {
            if secret.is_some() {
                *secret = Some(REDACTED.into());
            }
        }
        if let Some(s3) = &mut service.s3
            && s3.secret_access_key.is_some()
        {
            s3.secret_access_key = Some(REDACTED.into());
        }
        if let Some(admin) = &mut service.bootstrap_admin {
            admin.password = REDACTED.into();
        }
        shown.to_toml()
    }
}

/// Environment values are TOML scalars when they parse as one (`true`, `8080`), else strings.
fn parse_env_value(raw: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Table(base), Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn set_path(root: &mut Value, path: &[String], value: Value) -> anyhow::Result<()> {
    let (last, parents) = path.split_last().context("empty key")?;
    let mut node = root;
    for key in parents {
        let table = node.as_table_mut().context("not a section")?;
        node = table
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .with_context(|| format!("`{}` is not a section", parents.join(".")))?;
    // Keep strings strings where the default is a string ("8080" for a port-like text field).
    let value = match (table.get(last), value) {
        (Some(Value::String(_)), Value::Integer(i)) => Value::String(i.to_string()),
        (_, value) => value,
    };
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = Config::from_sources(None, env(&[])).unwrap();
        assert_eq!(config.server.http, "127.0.0.1:8080");
        assert_eq!(config.platform.http, "127.0.0.1:8081");
        assert_eq!(config.log.format, LogFormat::Pretty);
    }

    #[test]
    fn the_file_then_the_environment_override_defaults() {
        let file = "[server]\nhttp = \"0.0.0.0:9000\"\n[log]\nformat = \"json\"\n";
        let config = Config::from_sources(
            Some(file),
            env(&[
                ("DARTMOUTH_SERVER__HTTP", "127.0.0.1:9100"),
                ("DARTMOUTH_MODELS__PATHS__SILERO_VAD", "/opt/vad.onnx"),
                ("DARTMOUTH_HOME", "/ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.http, "127.0.0.1:9100");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(
            config.model_store().path(Asset::SileroVad),
            PathBuf::from("/opt/vad.onnx")
        );
    }

    #[test]
    fn typos_and_unknown_models_are_refused_with_the_key() {
        let err = Config::from_sources(Some("[server]\nhtp = \"x\"\n"), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("htp"), "{err:#}");
        let err = Config::from_sources(None, env(&[("DARTMOUTH_MODELS__PATHS__NOPE", "/x")]))
            .unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        let err = Config::from_sources(Some("not toml ["), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("not valid TOML"), "{err:#}");
    }

    #[test]
    fn agents_are_configurable_per_room_and_checked() {
        let file = "[server]\nroom_agents = { lobby = \"none\", help = \"robot\" }\n\
                    [agents.pirate]\nsystem_prompt = \"Talk like a pirate.\"\nvoice = \"espeak\"\n";
        let config = Config::from_sources(Some(file), env(&[])).unwrap();
        assert_eq!(config.agents["pirate"].voice, "espeak");
        assert!(config.agents.contains_key("assistant"), "defaults stay");
        assert_eq!(config.server.room_agents["help"], "robot");
        let err =
            Config::from_sources(Some("[agents.x]\nvoice = \"alexa\"\n"), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("alexa"), "{err:#}");
        let err = Config::from_sources(
            Some("[server]\nroom_agents = { a = \"ghost\" }\n"),
            env(&[]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("ghost"), "{err:#}");
        let ollama =
            "[agents.local]\nllm_url = \"http://127.0.0.1:11434/v1\"\nllm_model = \"llama3.2\"\n";
        let config = Config::from_sources(Some(ollama), env(&[])).unwrap();
        assert_eq!(config.agents["local"].llm_model, "llama3.2");
        let err = Config::from_sources(
            Some("[agents.x]\nllm_url = \"ftp://x\"\nllm_model = \"m\"\n"),
            env(&[]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("ftp://x"), "{err:#}");
        let err = Config::from_sources(Some("[agents.x]\nllm_url = \"http://x\"\n"), env(&[]))
            .unwrap_err();
        assert!(format!("{err:#}").contains("llm_model"), "{err:#}");
    }

    #[test]
    fn client_limits_are_configurable_under_server() {
        let config = Config::from_sources(
            Some("[server.limits]\npending_per_ip = 3\n"),
            env(&[("DARTMOUTH_SERVER__LIMITS__JOIN_DEADLINE_MS", "1500")]),
        )
        .unwrap();
        let limits = config.server.limits.to_signaling();
        assert_eq!(limits.pending_per_ip, 3);
        assert_eq!(limits.join_deadline, std::time::Duration::from_millis(1500));
        assert_eq!(limits.pending_total, ClientLimits::default().pending_total);
    }

    #[test]
    fn tls_needs_both_files_or_self_signed() {
        let err =
            Config::from_sources(Some("[server]\ntls_cert = \"/x.crt\"\n"), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("tls_key"), "{err:#}");
        let config = Config::from_sources(
            None,
            env(&[
                ("DARTMOUTH_PLATFORM__TLS_CERT", "/p.crt"),
                ("DARTMOUTH_PLATFORM__TLS_KEY", "/p.key"),
            ]),
        )
        .unwrap();
        assert_eq!(config.platform.tls_key, "/p.key");
        assert_eq!(
            config.server.tls_files(Path::new("/nonexistent")).unwrap(),
            None
        );
    }

    #[test]
    fn config_show_hides_secrets() {
        let config = Config::from_sources(
            Some("[server]\ntoken_secret = \"hunter2-hunter2\"\n[platform]\njwt_secret = \"s3cr3t-s3cr3t\"\n"),
            env(&[]),
        )
        .unwrap();
        let shown = config.to_toml_redacted();
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn the_rendered_configuration_parses_back_to_itself() {
        let config = Config::from_sources(None, env(&[("DARTMOUTH_LOG__LEVEL", "debug")])).unwrap();
        let again = Config::from_sources(Some(&config.to_toml()), env(&[])).unwrap();
        assert_eq!(config, again);
    }
}
