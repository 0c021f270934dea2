//! A gateway on loopback ports inside the test process: media driver, signaling routes, tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dartmouth_models::ModelStore;
use dartmouth_signaling::agent::SharedAgentFactory;
use dartmouth_signaling::limits::LimitsConfig;
use dartmouth_signaling::proto::AgentOutput;
use dartmouth_signaling::{
    AgentFactory, AgentInfo, AgentRefusal, AgentRequest, Gateway, Grants, TokenKeys,
};
use dartmouth_voice::admission::{Admission, DEFAULT_ADMISSION_BUDGET, LoadSource};
use dartmouth_voice::agent::{AgentConfig, AgentSession, Providers};
use dartmouth_voice::embedded::{EmbeddedLlmProvider, EspeakProvider, MoonshineProvider};
use dartmouth_voice::listening::ListeningService;
use dartmouth_voice::provider::{Llm, Stt, Tts};
use tokio::sync::watch;

/// Secret the test gateway signs tokens with.
pub const TEST_SECRET: &[u8] = b"dartmouth test secret, long enough for HS256";

/// A running gateway.
pub struct TestGateway {
    /// HTTP address (signaling, WHIP/WHEP, tokens).
    pub http: SocketAddr,
    /// The shared state, for inspecting sessions and peers.
    pub gateway: Arc<Gateway>,
    /// Its token keys.
    pub keys: TokenKeys,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway with `agents` on 127.0.0.1 (random ports).
    pub async fn start(agents: SharedAgentFactory) -> Self {
        Self::start_with_limits(agents, LimitsConfig::default()).await
    }

    /// [`TestGateway::start`] with other per-address limits. Clients may connect from any source
    /// address of 127.0.0.0/8, so a test can be several clients by address.
    pub async fn start_with_limits(agents: SharedAgentFactory, limits: LimitsConfig) -> Self {
        let (media, driver) =
            dartmouth_media::driver::bind("127.0.0.1:0".parse().expect("addr"), None)
                .await
                .expect("binding the media socket");
        let keys = TokenKeys::new(TEST_SECRET);
        let (stop, stopped) = watch::channel(false);
        let gateway =
            Gateway::with_limits(media, keys.clone(), agents, true, stopped.clone(), limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding HTTP");
        let http = listener.local_addr().expect("addr");
        let app = dartmouth_signaling::routes(gateway.clone());
        let mut stop_http = stopped.clone();
        let server = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_http.wait_for(|s| *s).await;
                })
                .await;
        });
        let media_task = tokio::spawn(driver.run());
        Self {
            http,
            gateway,
            keys,
            stop,
            tasks: vec![server, media_task],
        }
    }

    /// A token for `identity` in `room` with every grant.
    pub fn token(&self, room: &str, identity: &str) -> String {
        self.keys
            .issue(room, identity, Grants::default(), 600)
            .expect("token")
    }

    /// `http://…/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `ws://…/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// Waits (bounded) until no session and no media peer is left; returns whether that happened.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.gateway.active_sessions() == 0 && self.gateway.media().peer_count() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the gateway.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.gateway.drain(Duration::from_secs(5)).await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// One agent, `test`, on the embedded models with the espeak-ng voice (fast to synthesise);
/// `None` (test skips) when the models are not provisioned.
pub struct EmbeddedTestAgent {
    listening: ListeningService,
    admission: Admission,
    stt: Arc<dyn Stt>,
    llm: Arc<dyn Llm>,
    tts: Arc<dyn Tts>,
}

impl EmbeddedTestAgent {
    /// Loads the models, or `None` with a printed reason. Admits any number of sessions.
    pub fn load() -> Option<Arc<Self>> {
        Self::load_with_capacity(usize::MAX)
    }

    /// Like [`EmbeddedTestAgent::load`], admitting at most `capacity` sessions at once (and
    /// none while a model is saturated), as the gateway does.
    pub fn load_with_capacity(capacity: usize) -> Option<Arc<Self>> {
        let store = ModelStore::from_env();
        let loaded = (|| -> Result<Self, String> {
            let stt: Arc<dyn Stt> =
                Arc::new(MoonshineProvider::load(&store).map_err(|e| e.to_string())?);
            let llm: Arc<dyn Llm> = Arc::new(
                EmbeddedLlmProvider::load(&store, Default::default()).map_err(|e| e.to_string())?,
            );
            let tts: Arc<dyn Tts> =
                Arc::new(EspeakProvider::new("en-us").map_err(|e| e.to_string())?);
            let models: Vec<(String, LoadSource)> = vec![
                ("stt".into(), {
                    let stt = stt.clone();
                    Arc::new(move || stt.scheduler_load())
                }),
                ("llm".into(), {
                    let llm = llm.clone();
                    Arc::new(move || llm.scheduler_load())
                }),
            ];
            Ok(Self {
                admission: Admission::new(capacity, DEFAULT_ADMISSION_BUDGET, models),
                stt,
                llm,
                tts,
                listening: ListeningService::start(&store).map_err(|e| e.to_string())?,
            })
        })();
        match loaded {
            Ok(agent) => Some(Arc::new(agent)),
            Err(e) => {
                eprintln!("SKIP: models unavailable ({e}); run `dartmouth models fetch`");
                None
            }
        }
    }
}

impl AgentFactory for EmbeddedTestAgent {
    fn agents(&self) -> Vec<AgentInfo> {
        vec![AgentInfo {
            name: "test".into(),
            description: "embedded models, espeak voice".into(),
        }]
    }
    fn default_agent(&self, _room: &str) -> Option<String> {
        Some("test".into())
    }
    fn start(&self, request: &AgentRequest) -> Result<AgentSession, AgentRefusal> {
        let admitted = self
            .admission
            .try_admit()
            .map_err(|refusal| AgentRefusal::Unavailable(refusal.to_string()))?;
        let config = AgentConfig {
            system_prompt: "You are a helpful voice assistant. Answer in one short sentence."
                .into(),
            max_tokens: 40,
            output_rate: request.output_rate,
            speech_output: request.output == AgentOutput::Audio,
            onset_hold: !request.echo_path,
            ..AgentConfig::default()
        };
        let providers = Providers::new(self.stt.clone(), self.llm.clone(), self.tts.clone());
        Ok(AgentSession::start(config, providers, &self.listening).with_admission(admitted))
    }
}

/// A complete SDP offer with one `sendrecv` audio m-line (str0m, Opus) and a loopback host
/// candidate, for join and WHIP requests that need a valid offer but no media.
pub fn audio_offer() -> String {
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    if let Ok(candidate) = str0m::Candidate::host(SocketAddr::from(([127, 0, 0, 1], 50999)), "udp")
    {
        rtc.add_local_candidate(candidate);
    }
    let mut change = rtc.sdp_api();
    change.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendRecv,
        None,
        None,
        None,
    );
    match change.apply() {
        Some((offer, _)) => offer.to_sdp_string(),
        None => String::new(),
    }
}

/// What `heard` (48 kHz mono) says, by the embedded speech to text.
pub async fn transcribe(heard: &[i16]) -> String {
    let store = dartmouth_models::ModelStore::from_env();
    let stt = dartmouth_voice::embedded::MoonshineProvider::load(&store).unwrap();
    crate::transcribe_48k(&stt, heard).await
}
