//! `dartmouth say` (TTS alone) and `dartmouth converse` (the whole voice pipeline on a WAV file).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dartmouth_models::ModelStore;
use dartmouth_voice::agent::{AgentConfig, AgentEvent, AgentSession, Providers, TurnRecord};
use dartmouth_voice::embedded::{
    EmbeddedLlmProvider, EspeakProvider, MoonshineProvider, PiperProvider, WhisperProvider,
};
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION};
use dartmouth_voice::listening::ListeningService;
use dartmouth_voice::provider::{CancellationToken, Stt, Tts, TtsEvent, TtsRequest};

/// Which speech-to-text engine the CLI runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SttChoice {
    /// Moonshine base-en (default: lower WER and faster here).
    Moonshine,
    /// Whisper tiny.en through whisper.cpp.
    Whisper,
}

/// Which text-to-speech engine the CLI runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TtsChoice {
    /// Piper en_US-joe-medium.
    Piper,
    /// espeak-ng.
    Espeak,
}

fn tts_provider(store: &ModelStore, choice: TtsChoice) -> anyhow::Result<Arc<dyn Tts>> {
    Ok(match choice {
        TtsChoice::Piper => Arc::new(PiperProvider::load(store)?),
        TtsChoice::Espeak => Arc::new(EspeakProvider::new("en-us")?),
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Speaks `text` into a WAV file.
pub fn say(store: &ModelStore, text: &str, out: &Path, voice: TtsChoice) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        bail!("nothing to say: the text is empty");
    }
    let tts = tts_provider(store, voice)?;
    let started = Instant::now();
    let samples = runtime()?.block_on(async {
        let mut stream = tts.synthesize(TtsRequest::new(text), CancellationToken::new());
        let mut samples = Vec::new();
        while let Some(event) = stream.recv().await {
            match event {
                TtsEvent::Audio(chunk) => samples.extend(chunk.samples),
                TtsEvent::Done => break,
                TtsEvent::Error(e) => bail!("{e}"),
            }
        }
        Ok(samples)
    })?;
    write_wav(out, &samples, tts.sample_rate())?;
    let seconds = samples.len() as f64 / f64::from(tts.sample_rate());
    println!(
        "wrote {} ({seconds:.2} s of speech at {} Hz by {} in {:.0} ms)",
        out.display(),
        tts.sample_rate(),
        tts.name(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Options of `dartmouth converse`.
#[derive(Debug, Clone)]
pub struct ConverseOptions {
    /// Feed audio at twice real time (the fastest the listening thread keeps up with) instead of in real time.
    pub fast: bool,
    /// Speech to text engine.
    pub stt: SttChoice,
    /// Text to speech engine.
    pub tts: TtsChoice,
    /// System prompt.
    pub system_prompt: Option<String>,
}

/// Runs the whole pipeline on a WAV question and writes the spoken answer.
pub fn converse(
    store: &ModelStore,
    input: &Path,
    out: &Path,
    options: &ConverseOptions,
) -> anyhow::Result<()> {
    let (samples, rate) = read_wav_mono(input)?;
    println!("loading models…");
    let stt: Arc<dyn Stt> = match options.stt {
        SttChoice::Moonshine => Arc::new(MoonshineProvider::load(store)?),
        SttChoice::Whisper => Arc::new(WhisperProvider::load(store)?),
    };
    let llm = Arc::new(EmbeddedLlmProvider::load(store, Default::default())?);
    let tts = tts_provider(store, options.tts)?;
    let listening = ListeningService::start(store)?;
    let mut config = AgentConfig {
        output_rate: 24_000,
        ..AgentConfig::default()
    };
    if let Some(prompt) = &options.system_prompt {
        config.system_prompt = prompt.clone();
    }
    let output_rate = config.output_rate;
    let fast = options.fast;
    let (answer, records) = runtime()?.block_on(async move {
        let mut session = AgentSession::start(config, Providers::new(stt, llm, tts), &listening);
        let frame_len = (rate as usize * FRAME_DURATION.as_millis() as usize) / 1000;
        // Two seconds of silence after the question let the end-of-turn detector decide.
        let mut padded = samples;
        padded.extend(std::iter::repeat_n(0i16, rate as usize * 2));
        // Fast is 2× real time: faster, and the listening thread (Smart Turn takes up to ~200 ms
        // under load) overflows its one-second queue and drops audio.
        let pace = if fast {
            FRAME_DURATION / 2
        } else {
            FRAME_DURATION
        };
        let mut answer = Vec::new();
        let mut records = Vec::new();
        let mut ticker = tokio::time::interval(pace);
        let mut timestamp = Duration::ZERO;
        for block in padded.chunks(frame_len) {
            ticker.tick().await;
            session.push_audio(AudioFrame::new(block, rate, 1, timestamp)?);
            timestamp += FRAME_DURATION;
            if !fast {
                pull(&session, timestamp, &mut answer, true);
            }
            drain_events(&mut session, &mut records);
        }
        // Wait for the answer to be generated and played out (bounded).
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut frames = tokio::time::interval(if fast {
            Duration::from_millis(1)
        } else {
            FRAME_DURATION
        });
        while records.is_empty() && Instant::now() < deadline {
            frames.tick().await;
            timestamp += FRAME_DURATION;
            pull(&session, timestamp, &mut answer, !fast);
            drain_events(&mut session, &mut records);
        }
        session.stop().await;
        anyhow::Ok((answer, records))
    })?;
    write_wav(out, &answer, output_rate)?;
    if records.is_empty() {
        bail!(
            "no answer within two minutes: was there speech in {}?",
            input.display()
        );
    }
    for record in &records {
        print_record(record);
    }
    println!(
        "wrote {} ({:.2} s)",
        out.display(),
        answer.len() as f64 / f64::from(output_rate)
    );
    Ok(())
}

fn pull(session: &AgentSession, timestamp: Duration, out: &mut Vec<i16>, keep_silence: bool) {
    match session.pull_frame(timestamp) {
        Some(frame) => out.extend_from_slice(frame.samples()),
        None if keep_silence => out.extend(std::iter::repeat_n(0, 480)),
        None => {}
    }
}

fn drain_events(session: &mut AgentSession, records: &mut Vec<TurnRecord>) {
    while let Some(event) = session.try_event() {
        match event {
            AgentEvent::UserTranscript { text, .. } => println!("you:   {text}"),
            AgentEvent::AgentSpeech { text, .. } => println!("agent: {text}"),
            AgentEvent::Interrupted { heard, .. } => println!("(interrupted; heard: {heard})"),
            AgentEvent::Error(e) => eprintln!("error: {e}"),
            AgentEvent::TurnFailed { stage, reason, .. } => {
                eprintln!("the turn was not answered ({stage}): {reason}")
            }
            AgentEvent::TurnComplete(record) => records.push(*record),
            AgentEvent::State(_)
            | AgentEvent::Resumed { .. }
            | AgentEvent::Backchannel { .. }
            | AgentEvent::UserPartial { .. } => {}
        }
    }
}

fn print_record(record: &TurnRecord) {
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.0}", d.as_secs_f64() * 1000.0)
        })
    };
    println!();
    println!(
        "turn {} ({}/{}/{})",
        record.turn.0, record.providers.0, record.providers.1, record.providers.2
    );
    println!("  {:<36} {:>8}", "stage (from end of speech)", "ms");
    println!(
        "  {:<36} {:>8}",
        "end-of-turn decision",
        ms(Some(record.end_of_turn))
    );
    println!("  {:<36} {:>8}", "STT final", ms(record.stt_final));
    println!(
        "  {:<36} {:>8}",
        "LLM first token",
        ms(record.llm_first_token)
    );
    println!(
        "  {:<36} {:>8}",
        "TTS first audio",
        ms(record.tts_first_audio)
    );
    println!(
        "  {:<36} {:>8}",
        "first frame out",
        ms(record.first_frame_out)
    );
    println!("  reply: {}", record.answer.trim());
}

/// Reads a WAV as mono 16-bit samples (stereo averaged, float converted).
pub fn read_wav_mono(path: &Path) -> anyhow::Result<(Vec<i16>, u32)> {
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = reader.spec();
    let samples: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int if spec.bits_per_sample == 16 => {
            reader.samples::<i16>().collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Int => {
            let shift = spec.bits_per_sample.saturating_sub(16);
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| (v >> shift) as i16))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(dartmouth_voice::frame::f32_to_i16))
            .collect::<Result<_, _>>()?,
    };
    let mono = match spec.channels {
        1 => samples,
        2 => samples
            .chunks_exact(2)
            .map(|p| ((i32::from(p[0]) + i32::from(p[1])) / 2) as i16)
            .collect(),
        n => bail!("{}: {n} channels; mono or stereo expected", path.display()),
    };
    if !dartmouth_voice::frame::SUPPORTED_RATES.contains(&spec.sample_rate) {
        bail!(
            "{}: {} Hz is not a supported rate ({:?})",
            path.display(),
            spec.sample_rate,
            dartmouth_voice::frame::SUPPORTED_RATES
        );
    }
    Ok((mono, spec.sample_rate))
}

fn write_wav(path: &Path, samples: &[i16], rate: u32) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)
        .with_context(|| format!("writing {}", path.display()))?;
    for &s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(())
}
