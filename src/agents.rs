//! The gateway's agents: the configured profiles on the embedded models, loaded once and shared
//! by every session (each session gets its own small VAD and end-of-turn models).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dartmouth_models::ModelStore;
use dartmouth_signaling::proto::AgentOutput;
use dartmouth_signaling::{AgentFactory, AgentInfo};
use dartmouth_voice::agent::{AgentConfig, AgentSession, Providers};
use dartmouth_voice::embedded::{
    EmbeddedLlmProvider, EspeakProvider, MoonshineProvider, PiperProvider,
};
use dartmouth_voice::fallback::FallbackLlm;
use dartmouth_voice::http::HttpProviderConfig;
use dartmouth_voice::http::openai_llm::OpenAiLlm;
use dartmouth_voice::ingest::Ingest;
use dartmouth_voice::provider::{Llm, Stt, Tts};
use dartmouth_voice::turn::{SmartTurn, TurnConfig};
use dartmouth_voice::vad::{SileroVad, VadConfig};

use crate::config::AgentProfile;

/// Sample rate of the agent's outgoing track (Opus at 48 kHz).
const OUTPUT_RATE: u32 = 48_000;
/// How long a remote LLM gets to start answering before the embedded model takes over.
const REMOTE_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Agents on the embedded models.
pub struct EmbeddedAgents {
    store: ModelStore,
    profiles: BTreeMap<String, AgentProfile>,
    default_agent: Option<String>,
    room_agents: BTreeMap<String, String>,
    stt: Arc<dyn Stt>,
    /// Each agent's language model: the embedded one, or a remote one with it as fallback.
    llms: BTreeMap<String, Arc<dyn Llm>>,
    piper: Arc<dyn Tts>,
    espeak: Arc<dyn Tts>,
}

impl EmbeddedAgents {
    /// Loads the shared models (a few seconds) and checks the per-session ones load.
    pub fn load(
        store: ModelStore,
        profiles: BTreeMap<String, AgentProfile>,
        default_agent: &str,
        room_agents: BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let stt: Arc<dyn Stt> = Arc::new(MoonshineProvider::load(&store)?);
        let llm: Arc<dyn Llm> = Arc::new(EmbeddedLlmProvider::load(&store, Default::default())?);
        let mut llms = BTreeMap::new();
        for (name, profile) in &profiles {
            llms.insert(name.clone(), agent_llm(profile, &llm)?);
        }
        let piper: Arc<dyn Tts> = Arc::new(PiperProvider::load(&store)?);
        let espeak: Arc<dyn Tts> = Arc::new(EspeakProvider::new("en-us")?);
        let agents = Self {
            store,
            profiles,
            default_agent: (default_agent != "none").then(|| default_agent.to_string()),
            room_agents,
            stt,
            llms,
            piper,
            espeak,
        };
        agents.ingest().context("loading the listening models")?;
        Ok(agents)
    }

    fn ingest(&self) -> anyhow::Result<Ingest> {
        Ok(Ingest::new(
            SileroVad::load(&self.store)?,
            Box::new(SmartTurn::load(&self.store)?),
            VadConfig::default(),
            TurnConfig::default(),
        ))
    }
}

impl AgentFactory for EmbeddedAgents {
    fn agents(&self) -> Vec<AgentInfo> {
        self.profiles
            .iter()
            .map(|(name, profile)| AgentInfo {
                name: name.clone(),
                description: profile.description.clone(),
            })
            .collect()
    }

    fn default_agent(&self, room: &str) -> Option<String> {
        match self.room_agents.get(room) {
            Some(agent) if agent == "none" => None,
            Some(agent) => Some(agent.clone()),
            None => self.default_agent.clone(),
        }
    }

    fn start(&self, name: &str, output: AgentOutput) -> Result<AgentSession, String> {
        let profile = self
            .profiles
            .get(name)
            .ok_or_else(|| format!("no agent named {name:?}"))?;
        let ingest = self.ingest().map_err(|e| format!("{e:#}"))?;
        let tts = match profile.voice.as_str() {
            "espeak" => self.espeak.clone(),
            _ => self.piper.clone(),
        };
        let config = AgentConfig {
            system_prompt: profile.system_prompt.clone(),
            max_tokens: profile.max_tokens,
            output_rate: OUTPUT_RATE,
            speech_output: output == AgentOutput::Audio,
            preemptive_answer: profile.preemptive_answer,
            ..AgentConfig::default()
        };
        let llm = self
            .llms
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no language model for agent {name:?}"))?;
        let providers = Providers {
            stt: self.stt.clone(),
            llm,
            tts,
        };
        Ok(AgentSession::start(config, providers, ingest))
    }
}

/// The agent's language model: the embedded one, or its OpenAI-compatible server with the
/// embedded model as the fallback (on an error, or no first token within two seconds).
fn agent_llm(profile: &AgentProfile, embedded: &Arc<dyn Llm>) -> anyhow::Result<Arc<dyn Llm>> {
    if profile.llm_url.is_empty() {
        return Ok(embedded.clone());
    }
    let mut config = HttpProviderConfig::new(&profile.llm_url, &profile.llm_model)
        .with_first_token_timeout(REMOTE_FIRST_TOKEN_TIMEOUT);
    if !profile.llm_api_key_env.is_empty() {
        let key = std::env::var(&profile.llm_api_key_env).with_context(|| {
            format!(
                "the API key variable {} is not set",
                profile.llm_api_key_env
            )
        })?;
        config = config.with_api_key(key);
    }
    let remote: Arc<dyn Llm> = Arc::new(OpenAiLlm::new(config)?);
    Ok(Arc::new(FallbackLlm::new(
        vec![remote, embedded.clone()],
        REMOTE_FIRST_TOKEN_TIMEOUT,
    )))
}
