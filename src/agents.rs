//! The gateway's agents: the configured profiles on the embedded models, loaded once and shared
//! by every session (listening too: one batched VAD and end-of-turn service for all of them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dartmouth_models::ModelStore;
use dartmouth_signaling::proto::AgentOutput;
use dartmouth_signaling::{AgentFactory, AgentInfo, AgentRefusal, AgentRequest};
use dartmouth_voice::admission::{
    Admission, AdmissionState, DEFAULT_ADMISSION_BUDGET, LoadSource, default_capacity,
};
use dartmouth_voice::agent::{AgentConfig, AgentSession, Providers};
use dartmouth_voice::embedded::{
    EmbeddedLlmProvider, EspeakProvider, MoonshineProvider, PiperProvider,
};
use dartmouth_voice::fallback::FallbackLlm;
use dartmouth_voice::http::HttpProviderConfig;
use dartmouth_voice::http::openai_llm::OpenAiLlm;
use dartmouth_voice::knowledge::AgentTools;
use dartmouth_voice::listening::{ListenConfig, ListeningService};
use dartmouth_voice::provider::{Llm, Stt, Tts};
use dartmouth_voice::turn::TurnConfig;

use crate::agent_tools::{AskAgent, ToolSet};
use crate::config::AgentProfile;
use crate::platform_link::{PlatformKnowledge, PlatformObserver};
use dartmouth_platform::client::PlatformClient;

/// Sample rate of the agent's outgoing track (Opus at 48 kHz).
const OUTPUT_RATE: u32 = 48_000;
/// How long a remote LLM gets to start answering before the embedded model takes over.
const REMOTE_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Agents on the embedded models.
pub struct EmbeddedAgents {
    /// VAD and end-of-turn for every session, batched.
    listening: ListeningService,
    profiles: BTreeMap<String, AgentProfile>,
    default_agent: Option<String>,
    room_agents: BTreeMap<String, String>,
    stt: Arc<dyn Stt>,
    /// Each agent's language model: the embedded one, or a remote one with it as fallback.
    llms: BTreeMap<String, Arc<dyn Llm>>,
    piper: Arc<dyn Tts>,
    espeak: Arc<dyn Tts>,
    /// How many sessions the models carry.
    admission: Admission,
    /// The embedded language model (what the sidecar's chat endpoint serves).
    embedded_llm: Arc<dyn Llm>,
    /// The platform sidecar, once it is up: knowledge and events of every session.
    platform: std::sync::OnceLock<PlatformClient>,
}

/// The sidecar's AI backends on freshly loaded embedded models (`dartmouth platform` alone).
pub fn load_backends(store: &ModelStore) -> anyhow::Result<dartmouth_platform::ai::Backends> {
    let stt: Arc<dyn Stt> = Arc::new(MoonshineProvider::load(store)?);
    let llm: Arc<dyn Llm> = Arc::new(EmbeddedLlmProvider::load(store, Default::default())?);
    let piper: Arc<dyn Tts> = Arc::new(PiperProvider::load(store)?);
    let espeak: Arc<dyn Tts> = Arc::new(EspeakProvider::new("en-us")?);
    Ok(crate::platform_link::backends(
        stt,
        llm,
        vec![("piper".into(), piper), ("espeak".into(), espeak)],
    ))
}

impl EmbeddedAgents {
    /// The sidecar's AI backends on these agents' models (shared, not loaded twice).
    pub fn backends(&self) -> dartmouth_platform::ai::Backends {
        crate::platform_link::backends(
            self.stt.clone(),
            self.embedded_llm.clone(),
            vec![
                ("piper".into(), self.piper.clone()),
                ("espeak".into(), self.espeak.clone()),
            ],
        )
    }

    /// Sessions started from now on retrieve knowledge from and report events to `platform`.
    pub fn set_platform(&self, platform: PlatformClient) {
        let _ = self.platform.set(platform);
    }

    /// Loads the shared models (a few seconds) and checks the per-session ones load.
    pub fn load(
        store: ModelStore,
        profiles: BTreeMap<String, AgentProfile>,
        default_agent: &str,
        room_agents: BTreeMap<String, String>,
        max_sessions: usize,
    ) -> anyhow::Result<Self> {
        let stt: Arc<dyn Stt> = Arc::new(MoonshineProvider::load(&store)?);
        let llm: Arc<dyn Llm> = Arc::new(EmbeddedLlmProvider::load(&store, Default::default())?);
        let mut llms = BTreeMap::new();
        for (name, profile) in &profiles {
            llms.insert(name.clone(), agent_llm(profile, &llm)?);
        }
        let piper: Arc<dyn Tts> = Arc::new(PiperProvider::load(&store)?);
        let espeak: Arc<dyn Tts> = Arc::new(EspeakProvider::new("en-us")?);
        let listening = ListeningService::start(&store).context("loading the listening models")?;
        let capacity = if max_sessions == 0 {
            default_capacity()
        } else {
            max_sessions
        };
        let models: Vec<(String, LoadSource)> = vec![
            (stt.name().to_string(), {
                let stt = stt.clone();
                Arc::new(move || stt.scheduler_load())
            }),
            (llm.name().to_string(), {
                let llm = llm.clone();
                Arc::new(move || llm.scheduler_load())
            }),
            (piper.name().to_string(), {
                let piper = piper.clone();
                Arc::new(move || piper.scheduler_load())
            }),
        ];
        let admission = Admission::new(capacity, DEFAULT_ADMISSION_BUDGET, models);
        let agents = Self {
            admission,
            listening,
            profiles,
            default_agent: (default_agent != "none").then(|| default_agent.to_string()),
            room_agents,
            stt,
            llms,
            piper,
            espeak,
            embedded_llm: llm,
            platform: std::sync::OnceLock::new(),
        };
        Ok(agents)
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

    fn start(&self, request: &AgentRequest) -> Result<AgentSession, AgentRefusal> {
        let (name, output) = (request.agent.as_str(), request.output);
        let admitted = self
            .admission
            .try_admit()
            .map_err(|refusal| AgentRefusal::Unavailable(refusal.to_string()))?;
        let profile = self
            .profiles
            .get(name)
            .ok_or_else(|| AgentRefusal::Failed(format!("no agent named {name:?}")))?;
        let tts = match profile.voice.as_str() {
            "espeak" => self.espeak.clone(),
            _ => self.piper.clone(),
        };
        let config = AgentConfig {
            system_prompt: profile.system_prompt.clone(),
            max_tokens: profile.max_tokens,
            output_rate: if request.output_rate == 0 {
                OUTPUT_RATE
            } else {
                request.output_rate
            },
            speech_output: output == AgentOutput::Audio,
            onset_hold: !request.echo_path,
            preemptive_answer: profile.preemptive_answer,
            listening: ListenConfig {
                turn: TurnConfig::with_eagerness(profile.eagerness),
                ..ListenConfig::default()
            },
            ..AgentConfig::default()
        };
        let llm =
            self.llms.get(name).cloned().ok_or_else(|| {
                AgentRefusal::Failed(format!("no language model for agent {name:?}"))
            })?;
        let mut providers = Providers::new(self.stt.clone(), llm, tts);
        if let Some(platform) = self.platform.get() {
            providers.knowledge = Some(Arc::new(PlatformKnowledge::new(platform.clone(), name)));
            providers.observer = Some(PlatformObserver::start(
                platform.clone(),
                name,
                &request.room,
                &request.identity,
            ));
        }
        // Only a remote model calls functions; the embedded one answers from its prompt. An
        // agent on a phone call may also press keys and transfer the call.
        if !profile.llm_url.is_empty() {
            let mut tools: Vec<Arc<dyn AgentTools>> = Vec::new();
            if let Some(platform) = self.platform.get() {
                tools.push(Arc::new(AskAgent::new(platform.clone(), name)));
            }
            if let Some(call) = request.phone.clone() {
                tools.push(Arc::new(call));
            }
            providers.tools = ToolSet::combine(tools);
        }
        Ok(AgentSession::start(config, providers, &self.listening).with_admission(admitted))
    }

    fn capacity(&self) -> Option<AdmissionState> {
        Some(self.admission.state())
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
