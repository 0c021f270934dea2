//! A gateway on loopback ports inside the test process: media driver, signaling routes, tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dartmouth_models::ModelStore;
use dartmouth_signaling::agent::SharedAgentFactory;
use dartmouth_signaling::proto::AgentOutput;
use dartmouth_signaling::{AgentFactory, AgentInfo, Gateway, Grants, TokenKeys};
use dartmouth_voice::agent::{AgentConfig, AgentSession, Providers};
use dartmouth_voice::embedded::{EmbeddedLlmProvider, EspeakProvider, MoonshineProvider};
use dartmouth_voice::ingest::Ingest;
use dartmouth_voice::provider::{Llm, Stt, Tts};
use dartmouth_voice::turn::{SmartTurn, TurnConfig};
use dartmouth_voice::vad::{SileroVad, VadConfig};
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
        let (media, driver) =
            dartmouth_media::driver::bind("127.0.0.1:0".parse().expect("addr"), None)
                .await
                .expect("binding the media socket");
        let keys = TokenKeys::new(TEST_SECRET);
        let (stop, stopped) = watch::channel(false);
        let gateway = Gateway::new(media, keys.clone(), agents, true, stopped.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding HTTP");
        let http = listener.local_addr().expect("addr");
        let app = dartmouth_signaling::routes(gateway.clone());
        let mut stop_http = stopped.clone();
        let server = tokio::spawn(async move {
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
    store: ModelStore,
    stt: Arc<dyn Stt>,
    llm: Arc<dyn Llm>,
    tts: Arc<dyn Tts>,
}

impl EmbeddedTestAgent {
    /// Loads the models, or `None` with a printed reason.
    pub fn load() -> Option<Arc<Self>> {
        let store = ModelStore::from_env();
        let loaded = (|| -> Result<Self, String> {
            Ok(Self {
                stt: Arc::new(MoonshineProvider::load(&store).map_err(|e| e.to_string())?),
                llm: Arc::new(
                    EmbeddedLlmProvider::load(&store, Default::default())
                        .map_err(|e| e.to_string())?,
                ),
                tts: Arc::new(EspeakProvider::new("en-us").map_err(|e| e.to_string())?),
                store: store.clone(),
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
    fn start(&self, _name: &str, output: AgentOutput) -> Result<AgentSession, String> {
        let ingest = Ingest::new(
            SileroVad::load(&self.store).map_err(|e| e.to_string())?,
            Box::new(SmartTurn::load(&self.store).map_err(|e| e.to_string())?),
            VadConfig::default(),
            TurnConfig::default(),
        );
        let config = AgentConfig {
            system_prompt: "You are a helpful voice assistant. Answer in one short sentence."
                .into(),
            max_tokens: 40,
            speech_output: output == AgentOutput::Audio,
            ..AgentConfig::default()
        };
        let providers = Providers {
            stt: self.stt.clone(),
            llm: self.llm.clone(),
            tts: self.tts.clone(),
        };
        Ok(AgentSession::start(config, providers, ingest))
    }
}
