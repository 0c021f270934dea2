//! `dartmouth talk URL`: a native WebRTC client (the same str0m client the end-to-end tests use)
//! for developers without a browser. With `--in question.wav --out heard.wav` it runs headless:
//! it says the file, records what it hears and hangs up after the agent's answer; without them it
//! uses the machine's microphone and speaker through `cpal`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use dartmouth_signaling::proto::{AgentListen, ServerMessage, Speaker};
use dartmouth_tests::client::{FRAME, LiveAudio};
use dartmouth_tests::{CallOptions, RtcClient};

/// Frames queued between the audio devices and the client (one second).
const DEVICE_QUEUE_FRAMES: usize = 50;

/// What `dartmouth talk` was asked.
#[derive(Debug)]
pub struct TalkOptions {
    /// Gateway base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Identity (for a development token).
    pub identity: String,
    /// A room token; without one, a development token is asked of `POST /api/token`.
    pub token: Option<String>,
    /// Say this WAV instead of using the microphone.
    pub input: Option<PathBuf>,
    /// Record what is heard into this WAV instead of playing it.
    pub output: Option<PathBuf>,
    /// The agent to bring (`none`: none).
    pub agent: Option<String>,
    /// Whom the agent listens to.
    pub listen: AgentListen,
    /// Longest call.
    pub seconds: u64,
}

/// Runs a call.
pub fn talk(options: TalkOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(options: TalkOptions) -> anyhow::Result<()> {
    let base = options.url.trim_end_matches('/').to_string();
    let Some(host) = base
        .strip_prefix("http://")
        .map(|h| format!("ws://{h}/ws"))
        .or_else(|| {
            base.strip_prefix("https://")
                .map(|h| format!("wss://{h}/ws"))
        })
    else {
        bail!("the URL must start with http:// or https:// (the gateway's HTTP address)");
    };
    let token = match options.token.clone() {
        Some(token) => token,
        None => dev_token(&base, &options.room, &options.identity).await?,
    };
    let speech = match &options.input {
        Some(path) => {
            let (samples, rate) = crate::voice_cmd::read_wav_mono(path)?;
            let floats: Vec<f32> = samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
            dartmouth_voice::resample::resample_all(&floats, rate, 48_000)?
                .iter()
                .map(|s| dartmouth_voice::frame::f32_to_i16(*s))
                .collect()
        }
        None => Vec::new(),
    };
    let headless = options.input.is_some() || options.output.is_some();
    let _devices;
    let audio = if headless {
        None
    } else {
        let (live, devices) = devices::open().context("opening the microphone and speaker")?;
        _devices = devices;
        Some(live)
    };
    let (events_tx, mut events) = tokio::sync::mpsc::channel(256);
    let printer = tokio::spawn(async move {
        while let Some(message) = events.recv().await {
            print_message(&message);
        }
    });
    let call = RtcClient::call(
        host,
        token,
        CallOptions {
            agent: options.agent.clone(),
            listen: options.listen,
            speech,
            limit: Duration::from_secs(options.seconds),
            hang_up_after_answer: headless.then_some(Duration::from_millis(1500)),
            events: Some(events_tx),
            audio,
            ..CallOptions::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let _ = printer.await;
    eprintln!(
        "media connected in {} ms; heard {:.1} s",
        call.connect_time.as_millis(),
        call.heard.len() as f64 / 48_000.0
    );
    if let Some(out) = &options.output {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut wav = hound::WavWriter::create(out, spec)
            .with_context(|| format!("creating {}", out.display()))?;
        for sample in &call.heard {
            wav.write_sample(*sample)?;
        }
        wav.finalize()?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn print_message(message: &ServerMessage) {
    match message {
        ServerMessage::Transcript {
            speaker,
            text,
            is_final: true,
            participant,
            ..
        } => {
            let who = match (speaker, participant) {
                (Speaker::Agent, _) => "agent".to_string(),
                (Speaker::User, Some(p)) => p.clone(),
                (Speaker::User, None) => "you".to_string(),
            };
            println!("{who}: {text}");
        }
        ServerMessage::ParticipantJoined { identity, .. } => println!("* {identity} joined"),
        ServerMessage::ParticipantLeft { identity } => println!("* {identity} left"),
        ServerMessage::ActiveSpeakers { speakers } if !speakers.is_empty() => {
            println!("* speaking: {}", speakers.join(", "));
        }
        ServerMessage::Error { code, message } => eprintln!("error ({code:?}): {message}"),
        ServerMessage::Bye { reason } => println!("* bye: {reason}"),
        _ => {}
    }
}

/// A development token from `POST /api/token`.
async fn dev_token(base: &str, room: &str, identity: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/token"))
        .json(&serde_json::json!({ "room": room, "identity": identity }))
        .send()
        .await
        .with_context(|| format!("asking {base}/api/token for a development token"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "no development token ({status}): {}; pass --token",
            body["error"].as_str().unwrap_or("")
        );
    }
    body["token"]
        .as_str()
        .map(str::to_string)
        .context("the token response has no token")
}

/// The machine's microphone and speaker (cpal), as 20 ms frames of 48 kHz mono.
mod devices {
    use super::{DEVICE_QUEUE_FRAMES, FRAME, LiveAudio};
    use anyhow::Context;
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

    /// Open streams; dropping them stops the devices.
    pub struct Devices {
        _input: cpal::Stream,
        _output: cpal::Stream,
    }

    /// The default configuration if it is `f32`, else an `f32` one at the default rate (or the
    /// closest the device has).
    fn f32_config(
        default: cpal::SupportedStreamConfig,
        supported: Vec<cpal::SupportedStreamConfigRange>,
    ) -> Option<cpal::SupportedStreamConfig> {
        if default.sample_format() == cpal::SampleFormat::F32 {
            return Some(default);
        }
        let range = supported
            .into_iter()
            .find(|r| r.sample_format() == cpal::SampleFormat::F32)?;
        let rate = default
            .sample_rate()
            .max(range.min_sample_rate())
            .min(range.max_sample_rate());
        Some(range.with_sample_rate(rate))
    }

    pub fn open() -> anyhow::Result<(LiveAudio, Devices)> {
        let host = cpal::default_host();
        let mic = host.default_input_device().context("no microphone")?;
        let speaker = host.default_output_device().context("no speaker")?;
        let in_config = f32_config(
            mic.default_input_config()?,
            mic.supported_input_configs()?.collect(),
        )
        .context("the microphone offers no 32-bit float format")?;
        let out_config = f32_config(
            speaker.default_output_config()?,
            speaker.supported_output_configs()?.collect(),
        )
        .context("the speaker offers no 32-bit float format")?;
        let (mic_tx, mic_rx) = std::sync::mpsc::sync_channel(DEVICE_QUEUE_FRAMES);
        let (spk_tx, spk_rx) = std::sync::mpsc::sync_channel::<[i16; FRAME]>(DEVICE_QUEUE_FRAMES);
        let in_rate = f64::from(in_config.sample_rate().0);
        let in_channels = usize::from(in_config.channels());
        let mut pending: Vec<i16> = Vec::with_capacity(FRAME * 2);
        let mut phase = 0.0f64;
        let input = mic.build_input_stream(
            &in_config.config(),
            move |data: &[f32], _: &_| {
                // Mono, then nearest-sample resampling to 48 kHz (a voice call, not hi-fi).
                let step = in_rate / 48_000.0;
                let frames = data.len() / in_channels;
                while phase < frames as f64 {
                    let i = phase as usize * in_channels;
                    let s = data[i..i + in_channels].iter().sum::<f32>() / in_channels as f32;
                    pending.push((s.clamp(-1.0, 1.0) * 32767.0) as i16);
                    phase += step;
                }
                phase -= frames as f64;
                while pending.len() >= FRAME {
                    let mut frame = [0i16; FRAME];
                    frame.copy_from_slice(&pending[..FRAME]);
                    pending.drain(..FRAME);
                    let _ = mic_tx.try_send(frame);
                }
            },
            |e| eprintln!("microphone: {e}"),
            None,
        )?;
        let out_rate = f64::from(out_config.sample_rate().0);
        let out_channels = usize::from(out_config.channels());
        let mut current = [0i16; FRAME];
        let mut position = FRAME as f64;
        let output = speaker.build_output_stream(
            &out_config.config(),
            move |data: &mut [f32], _: &_| {
                let step = 48_000.0 / out_rate;
                for frame in data.chunks_mut(out_channels) {
                    if position >= FRAME as f64 {
                        current = spk_rx.try_recv().unwrap_or([0; FRAME]);
                        position -= FRAME as f64;
                    }
                    let s = f32::from(current[position as usize]) / 32768.0;
                    frame.iter_mut().for_each(|o| *o = s);
                    position += step;
                }
            },
            |e| eprintln!("speaker: {e}"),
            None,
        )?;
        input.play()?;
        output.play()?;
        Ok((
            LiveAudio {
                mic: mic_rx,
                speaker: spk_tx,
            },
            Devices {
                _input: input,
                _output: output,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dartmouth_tests::gateway::{EmbeddedTestAgent, transcribe};
    use dartmouth_tests::{TestGateway, speak_48k};

    /// `dartmouth talk --in question.wav --out heard.wav` against a gateway with an agent: the
    /// recording holds the spoken answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn headless_talk_records_the_agents_answer() {
        let _ = crate::rustls_default_provider();
        let Some(agents) = EmbeddedTestAgent::load() else {
            return;
        };
        let Some(question) = speak_48k("What is the capital of France?") else {
            println!("SKIPPED: espeak-ng is not installed");
            return;
        };
        let gateway = TestGateway::start(agents).await;
        let dir = std::env::temp_dir().join(format!("dartmouth-talk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (input, output) = (dir.join("q.wav"), dir.join("heard.wav"));
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut wav = hound::WavWriter::create(&input, spec).unwrap();
        question.iter().for_each(|s| wav.write_sample(*s).unwrap());
        wav.finalize().unwrap();
        run(TalkOptions {
            url: gateway.url(""),
            room: "talk".into(),
            identity: "dev".into(),
            token: None,
            input: Some(input),
            output: Some(output.clone()),
            agent: None,
            listen: AgentListen::Me,
            seconds: 40,
        })
        .await
        .expect("the call runs");
        let (heard, rate) = dartmouth_tests::read_wav_i16(&output).expect("a recording");
        assert_eq!(rate, 48_000);
        let words = transcribe(&heard).await;
        eprintln!("talk heard: {words:?}");
        assert!(
            words.split_whitespace().count() >= 3,
            "the recording holds the answer: {words:?}"
        );
        gateway.stop().await;
    }
}
