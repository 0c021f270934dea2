//! `dartmouth bench turns`: end-of-turn decisions on a corpus the benchmark makes itself, in
//! the shape of LiveKit's eot-bench. Complete utterances (questions, statements, commands) and
//! utterances with a mid-sentence pause of 0.3–1.5 s (before a number, after "and", while
//! thinking) are spoken by espeak-ng at 130/160/190 words per minute and by the Piper voice at
//! two paces, plus the LibriVox sentences of pocketsphinx-testdata. Each goes through the real
//! listening chain (Silero VAD, the end-of-turn detector, Smart Turn) in media time; the model's
//! verdicts and the speculative transcripts (Moonshine) arrive as late as they took to compute,
//! plus a listening tick. For each setting it reports the false cut-offs (the turn ended before
//! the person finished) and the latency from the true end of speech to the decision.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use dartmouth_models::ModelStore;
use dartmouth_voice::frame::{AudioFrame, f32_to_i16, i16_to_f32};
use dartmouth_voice::ingest::{IngestEvent, Listener, MODEL_RATE};
use dartmouth_voice::listening::LISTEN_TICK;
use dartmouth_voice::resample::resample_all;
use dartmouth_voice::stt::moonshine::MoonshineStt;
use dartmouth_voice::tts::piper::PiperTts;
use dartmouth_voice::turn::{Eagerness, SmartTurn, TranscriptForm, TurnConfig, TurnEndReason};
use dartmouth_voice::vad::{SileroVad, VadConfig, VadStream};

use crate::stats::percentile;

/// Where pocketsphinx-testdata keeps its LibriVox sentences.
const LIBRIVOX_DIR: &str = "/usr/share/pocketsphinx/test/data/librivox";
/// Silence before each utterance and after it (the detector decides within it).
const LEAD: Duration = Duration::from_millis(500);
const TAIL: Duration = Duration::from_millis(3_000);
/// Samples per fed frame (20 ms at 16 kHz).
const FRAME: usize = 320;
/// Microphone noise floor added to every utterance (about -66 dBFS), so silence is not digital.
const NOISE: f32 = 0.0005;

/// What to run.
#[derive(Debug, Clone)]
pub struct TurnsBenchOptions {
    /// Complete utterances per synthetic voice (as many again, plus two, with a pause).
    pub per_voice: usize,
    /// Seed of the texts, the pauses and the noise.
    pub seed: u64,
}

impl Default for TurnsBenchOptions {
    fn default() -> Self {
        Self {
            per_voice: 21,
            seed: 7,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum TurnsBenchError {
    /// A model or a tool was missing or failed.
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> TurnsBenchError + '_ {
    move |e| TurnsBenchError::Setup(format!("{what}: {e}"))
}

/// One utterance of the corpus.
struct Utterance {
    voice: String,
    /// 16 kHz, lead silence, speech (and the pause), tail silence.
    audio: Vec<f32>,
    /// The true end of speech.
    end: Duration,
    /// Whether a mid-sentence pause is in it.
    paused: bool,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

const PLACES: &[&str] = &[
    "pharmacy",
    "library",
    "post office",
    "bakery",
    "museum",
    "bank",
];
const DAYS: &[&str] = &["Monday", "Tuesday", "Friday", "Sunday", "the holiday"];
const CITIES: &[&str] = &["Denver", "Lisbon", "Osaka", "Nairobi", "Glasgow", "Quebec"];
const THINGS: &[&str] = &[
    "appointment",
    "reservation",
    "delivery",
    "subscription",
    "booking",
];
const DEVICES: &[&str] = &["heater", "lamp", "fan", "television", "dishwasher"];
const ROOMS: &[&str] = &["kitchen", "bedroom", "hallway", "garage", "office"];
const NAMES: &[&str] = &["Maria", "Tom", "Priya", "Oliver", "Chen", "Fatima"];
const FOODS: &[&str] = &["mushroom soup", "veggie burger", "pad thai", "lentil curry"];
const MONTHS: &[&str] = &["March", "June", "October", "December"];
const DIGITS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// A complete utterance: a question, a statement or a command (two free slots each).
fn complete_text(rng: &mut Rng) -> String {
    match rng.next() % 10 {
        0 => format!(
            "What time does the {} open on {}?",
            rng.pick(PLACES),
            rng.pick(DAYS)
        ),
        1 => format!(
            "How long does it take to drive from {} to {}?",
            rng.pick(CITIES),
            rng.pick(CITIES)
        ),
        2 => format!(
            "Can you check the weather in {} for {}?",
            rng.pick(CITIES),
            rng.pick(DAYS)
        ),
        3 => format!(
            "Is there a {} close to the {}?",
            rng.pick(PLACES),
            rng.pick(ROOMS)
        ),
        4 => format!(
            "Please cancel my {} for {}.",
            rng.pick(THINGS),
            rng.pick(DAYS)
        ),
        5 => format!(
            "I need to move my {} to {}.",
            rng.pick(THINGS),
            rng.pick(MONTHS)
        ),
        6 => format!(
            "Remind me to call {} on {}.",
            rng.pick(NAMES),
            rng.pick(DAYS)
        ),
        7 => format!(
            "Turn off the {} in the {}.",
            rng.pick(DEVICES),
            rng.pick(ROOMS)
        ),
        8 => format!(
            "Send a message to {} about the {}.",
            rng.pick(NAMES),
            rng.pick(THINGS)
        ),
        _ => format!(
            "Why does {} get so cold in {}?",
            rng.pick(CITIES),
            rng.pick(MONTHS)
        ),
    }
}

/// An utterance with a pause in it: the words before, and after.
fn paused_text(rng: &mut Rng) -> (String, String) {
    let digits = |rng: &mut Rng, n: usize| {
        (0..n)
            .map(|_| rng.pick(DIGITS))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match rng.next() % 6 {
        0 => (
            "My account number is".to_string(),
            format!("{}.", digits(rng, 4)),
        ),
        1 => (
            format!("My phone number is {}", digits(rng, 3)),
            format!("{}.", digits(rng, 4)),
        ),
        2 => (
            format!("I would like to visit {} and", rng.pick(CITIES)),
            format!("{} in {}.", rng.pick(CITIES), rng.pick(MONTHS)),
        ),
        3 => (
            "I would like to order the".to_string(),
            format!("{} with extra bread.", rng.pick(FOODS)),
        ),
        4 => (
            "Could you book me a flight to".to_string(),
            format!("{} on {}?", rng.pick(CITIES), rng.pick(DAYS)),
        ),
        _ => (
            "The problem is that my".to_string(),
            format!("{} keeps turning itself off.", rng.pick(DEVICES)),
        ),
    }
}

/// The speech of `samples` without the silence around it (amplitude above 2 % of the peak).
fn trim(samples: &[f32]) -> &[f32] {
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let loud = |s: &f32| s.abs() > peak * 0.02;
    let start = samples.iter().position(loud).unwrap_or(0);
    let end = samples.iter().rposition(loud).map_or(start, |i| i + 1);
    &samples[start..end]
}

fn samples(duration: Duration) -> usize {
    (duration.as_secs_f64() * f64::from(MODEL_RATE)) as usize
}

fn time(samples: usize) -> Duration {
    Duration::from_secs_f64(samples as f64 / f64::from(MODEL_RATE))
}

/// Lead silence, the parts with `pause` between them, tail silence, and a noise floor.
fn assemble(voice: &str, parts: &[Vec<f32>], pause: Duration, rng: &mut Rng) -> Utterance {
    let mut audio = vec![0.0; samples(LEAD)];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            audio.resize(audio.len() + samples(pause), 0.0);
        }
        audio.extend_from_slice(trim(part));
    }
    let end = time(audio.len());
    audio.resize(audio.len() + samples(TAIL), 0.0);
    for sample in &mut audio {
        *sample += (rng.unit() * 2.0 - 1.0) * NOISE;
    }
    Utterance {
        voice: voice.to_string(),
        audio,
        end,
        paused: parts.len() > 1,
    }
}

/// Speaks a text to 16 kHz audio.
type Speaker<'a> = dyn FnMut(&str) -> Result<Vec<f32>, TurnsBenchError> + 'a;

/// espeak-ng at `wpm`, 16 kHz.
fn espeak(text: &str, wpm: u32, dir: &Path) -> Result<Vec<f32>, TurnsBenchError> {
    let path = dir.join("utterance.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", &wpm.to_string(), "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .map_err(setup("espeak-ng (make setup installs it)"))?;
    if !status.success() {
        return Err(TurnsBenchError::Setup(format!(
            "espeak-ng failed on {text:?}"
        )));
    }
    read_wav(&path)
}

/// A WAV file as 16 kHz mono.
fn read_wav(path: &Path) -> Result<Vec<f32>, TurnsBenchError> {
    let mut reader = hound::WavReader::open(path).map_err(setup("reading a WAV"))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let all: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.map(i16_to_f32))
        .collect::<Result<_, _>>()
        .map_err(setup("reading a WAV"))?;
    let mono: Vec<f32> = all.chunks(channels).map(|c| c[0]).collect();
    resample_all(&mono, spec.sample_rate, MODEL_RATE).map_err(setup("resampling"))
}

/// The whole corpus: per synthetic voice `per_voice` complete utterances and `per_voice + 2`
/// paused ones, then the LibriVox sentences.
fn corpus(
    store: &ModelStore,
    options: &TurnsBenchOptions,
) -> Result<Vec<Utterance>, TurnsBenchError> {
    let mut rng = Rng(options.seed.max(1));
    let dir = std::env::temp_dir().join(format!("dartmouth-bench-turns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(setup("a temporary directory"))?;
    let mut piper = PiperTts::load(store).map_err(setup("loading Piper"))?;
    let piper_rate = piper.sample_rate();
    let mut voices: Vec<(String, Box<Speaker<'static>>)> = Vec::new();
    for wpm in [130, 160, 190] {
        let dir = dir.clone();
        voices.push((
            format!("espeak-ng {wpm} wpm"),
            Box::new(move |text| espeak(text, wpm, &dir)),
        ));
    }
    let mut out = Vec::new();
    for (name, speak) in &mut voices {
        add_voice(&mut out, name, speak.as_mut(), options, &mut rng)?;
    }
    for scale in [1.0f32, 1.3] {
        piper.set_length_scale(scale);
        let mut speak = |text: &str| -> Result<Vec<f32>, TurnsBenchError> {
            let pcm = piper.synthesize(text).map_err(setup("Piper"))?;
            let pcm: Vec<f32> = pcm.into_iter().map(i16_to_f32).collect();
            resample_all(&pcm, piper_rate, MODEL_RATE).map_err(setup("resampling"))
        };
        add_voice(
            &mut out,
            &format!("piper x{scale}"),
            &mut speak,
            options,
            &mut rng,
        )?;
    }
    if let Ok(entries) = std::fs::read_dir(LIBRIVOX_DIR) {
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        paths.sort();
        for path in paths {
            let audio = read_wav(&path)?;
            out.push(assemble("librivox", &[audio], Duration::ZERO, &mut rng));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

fn add_voice(
    out: &mut Vec<Utterance>,
    voice: &str,
    speak: &mut Speaker<'_>,
    options: &TurnsBenchOptions,
    rng: &mut Rng,
) -> Result<(), TurnsBenchError> {
    for _ in 0..options.per_voice {
        let text = complete_text(rng);
        let audio = speak(&text)?;
        out.push(assemble(voice, &[audio], Duration::ZERO, rng));
    }
    for _ in 0..options.per_voice + 2 {
        let (before, after) = paused_text(rng);
        let pause = Duration::from_secs_f32(0.3 + 1.2 * rng.unit());
        let parts = [speak(&before)?, speak(&after)?];
        out.push(assemble(voice, &parts, pause, rng));
    }
    Ok(())
}

/// The models, and what they answered (the same question gets the same answer and cost).
struct Judges {
    vad: SileroVad,
    turn: SmartTurn,
    stt: MoonshineStt,
    /// Per utterance: the VAD's probability of each chunk.
    vad_cache: Vec<Vec<f32>>,
    /// (utterance, samples asked about) → probability and compute time.
    turn_cache: HashMap<(usize, usize), (f32, Duration)>,
    /// (utterance, samples transcribed) → the transcript's form and compute time.
    stt_cache: HashMap<(usize, usize), (TranscriptForm, Duration)>,
}

/// How one utterance ended.
struct Outcome {
    /// The decision's time, if the detector decided.
    decided: Option<Duration>,
    reason: Option<TurnEndReason>,
}

impl Judges {
    /// Runs utterance `index` through a listener with `config`; `transcripts`: whether
    /// speculative transcripts inform the detector.
    fn run(
        &mut self,
        index: usize,
        utterance: &Utterance,
        config: TurnConfig,
        transcripts: bool,
    ) -> Result<Outcome, TurnsBenchError> {
        let mut listener = Listener::new(VadConfig::default(), config);
        let mut stream = VadStream::default();
        let mut chunk = 0;
        let mut verdicts: Vec<(Duration, u64, f32)> = Vec::new();
        let mut hints: Vec<(Duration, Duration, TranscriptForm)> = Vec::new();
        let mut pcm = [0i16; FRAME];
        let mut first = None;
        let fresh = self.vad_cache.len() <= index;
        if fresh {
            self.vad_cache.push(Vec::new());
        }
        for block in utterance.audio.chunks(FRAME) {
            for (out, s) in pcm.iter_mut().zip(block) {
                *out = f32_to_i16(*s);
            }
            let frame = AudioFrame::new(&pcm[..block.len()], MODEL_RATE, 1, Duration::ZERO)
                .map_err(setup("a frame"))?;
            listener.push(&frame).map_err(setup("listening"))?;
            while listener.vad_input().is_some() {
                let probability = if fresh {
                    let (_, samples) = listener.vad_input().expect("checked");
                    let samples = samples.to_vec();
                    let mut out = [0.0];
                    let batch: &mut [(&mut VadStream, &[f32])] = &mut [(&mut stream, &samples)];
                    self.vad
                        .run_batch(batch, &mut out)
                        .map_err(setup("the VAD"))?;
                    self.vad_cache[index].push(out[0]);
                    out[0]
                } else {
                    self.vad_cache[index][chunk]
                };
                chunk += 1;
                listener.on_probability(probability);
                let now = listener.now();
                if let Some(request) = listener.take_verdict_request() {
                    let key = (index, request.audio.len());
                    let (p, took) = match self.turn_cache.get(&key) {
                        Some(cached) => *cached,
                        None => {
                            let started = Instant::now();
                            let p = self
                                .turn
                                .predict(&request.audio)
                                .map_err(setup("Smart Turn"))?;
                            let answer = (p, started.elapsed());
                            self.turn_cache.insert(key, answer);
                            answer
                        }
                    };
                    verdicts.push((now + took + LISTEN_TICK, request.id, p));
                }
                for (_, id, p) in take_due(&mut verdicts, now) {
                    listener.on_verdict(id, Ok(p));
                }
                for (_, at, form) in take_due(&mut hints, now) {
                    listener.on_transcript(at, form);
                }
                while let Some(event) = listener.poll() {
                    match event {
                        IngestEvent::PauseStarted { at, audio } if transcripts => {
                            let key = (index, audio.len());
                            let (form, took) = match self.stt_cache.get(&key) {
                                Some(cached) => *cached,
                                None => {
                                    let started = Instant::now();
                                    let text =
                                        self.stt.transcribe(&audio).map_err(setup("Moonshine"))?;
                                    let answer = (TranscriptForm::of(&text), started.elapsed());
                                    if std::env::var_os("DARTMOUTH_BENCH_DEBUG").is_some() {
                                        eprintln!(
                                            "{} #{index} pause at {at:?}: {text:?} → {:?} in {:?}",
                                            utterance.voice, answer.0, answer.1
                                        );
                                    }
                                    self.stt_cache.insert(key, answer);
                                    answer
                                }
                            };
                            hints.push((now + took + LISTEN_TICK, at, form));
                        }
                        IngestEvent::TurnEnded(end) if first.is_none() => {
                            if std::env::var_os("DARTMOUTH_BENCH_DEBUG").is_some() {
                                eprintln!(
                                    "{} #{index}: ended {:?} after speech end {:?} (true end {:?}), {:?}",
                                    utterance.voice,
                                    end.decided_at,
                                    end.speech_end,
                                    utterance.end,
                                    end.signals
                                );
                            }
                            first = Some((end.decided_at, end.reason));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(Outcome {
            decided: first.map(|(at, _)| at),
            reason: first.map(|(_, reason)| reason),
        })
    }
}

/// Removes and returns the entries of `queue` due at `now`, oldest first.
fn take_due<A: Copy, B: Copy>(
    queue: &mut Vec<(Duration, A, B)>,
    now: Duration,
) -> Vec<(Duration, A, B)> {
    let due: Vec<_> = queue
        .iter()
        .copied()
        .filter(|(at, ..)| *at <= now)
        .collect();
    queue.retain(|(at, ..)| *at > now);
    due
}

/// One setting's results.
struct SettingResult {
    name: String,
    cut_offs: usize,
    latencies: Vec<Duration>,
    undecided: usize,
    /// (voice, paused, cut off, latency) per utterance.
    per_utterance: Vec<(String, bool, bool, Option<Duration>)>,
    reasons: HashMap<&'static str, usize>,
}

impl SettingResult {
    fn cut_off_rate(&self) -> f64 {
        self.cut_offs as f64 / self.per_utterance.len().max(1) as f64
    }

    fn p50(&self) -> Option<Duration> {
        percentile(&self.latencies, 50.0)
    }
}

/// A setting between two presets (`t` from 0, `a`, to 1, `b`).
fn between(a: TurnConfig, b: TurnConfig, t: f32) -> TurnConfig {
    let f = |x: f32, y: f32| x + (y - x) * t;
    let u = |x: u32, y: u32| (x as f32 + (y as f32 - x as f32) * t).round() as u32;
    TurnConfig {
        judge_after_ms: u(a.judge_after_ms, b.judge_after_ms),
        complete_threshold: f(a.complete_threshold, b.complete_threshold),
        final_threshold: f(a.final_threshold, b.final_threshold),
        question_silence_ms: u(a.question_silence_ms, b.question_silence_ms),
        statement_silence_ms: u(a.statement_silence_ms, b.statement_silence_ms),
        max_silence_ms: u(a.max_silence_ms, b.max_silence_ms),
        ..a
    }
}

/// The settings measured: the eagerness curve, a 300 ms budget, and the detector as it was
/// before this benchmark (one verdict at the VAD's end, a fixed threshold, no transcript).
fn settings() -> Vec<(String, TurnConfig, bool)> {
    let [high, normal, low] =
        [Eagerness::High, Eagerness::Normal, Eagerness::Low].map(TurnConfig::with_eagerness);
    let budget = TurnConfig {
        question_silence_ms: 300,
        statement_silence_ms: 300,
        max_silence_ms: 300,
        ..normal
    };
    let before = TurnConfig {
        judge_after_ms: 320,
        transcript_wait_ms: 0,
        final_threshold: normal.complete_threshold,
        reask_every_ms: u32::MAX / 2,
        question_silence_ms: normal.max_silence_ms,
        statement_silence_ms: normal.max_silence_ms,
        ..normal
    };
    vec![
        ("high".into(), high, true),
        ("high-normal".into(), between(high, normal, 0.5), true),
        ("normal".into(), normal, true),
        ("normal-low".into(), between(normal, low, 0.5), true),
        ("low".into(), low, true),
        (
            "normal, audio only".into(),
            normal.without_transcripts(),
            false,
        ),
        (
            "normal, verdicts not waiting for words".into(),
            normal.without_transcripts(),
            true,
        ),
        ("300 ms budget".into(), budget, true),
        ("before (one verdict, 0.5)".into(), before, false),
    ]
}

fn reason_name(reason: Option<TurnEndReason>) -> &'static str {
    match reason {
        Some(TurnEndReason::Complete { .. }) => "model",
        Some(TurnEndReason::TranscriptComplete) => "transcript",
        Some(TurnEndReason::SilenceTimeout) => "silence",
        Some(TurnEndReason::MaxDuration) => "max duration",
        _ => "undecided",
    }
}

/// Runs the benchmark and returns its report (Markdown).
pub fn run(store: &ModelStore, options: &TurnsBenchOptions) -> Result<String, TurnsBenchError> {
    let started = Instant::now();
    let utterances = corpus(store, options)?;
    let mut judges = Judges {
        vad: SileroVad::load(store).map_err(setup("loading Silero VAD"))?,
        turn: SmartTurn::load(store).map_err(setup("loading Smart Turn"))?,
        stt: MoonshineStt::load(store).map_err(setup("loading Moonshine"))?,
        vad_cache: Vec::new(),
        turn_cache: HashMap::new(),
        stt_cache: HashMap::new(),
    };
    let mut results = Vec::new();
    for (name, config, transcripts) in settings() {
        let mut result = SettingResult {
            name,
            cut_offs: 0,
            latencies: Vec::new(),
            undecided: 0,
            per_utterance: Vec::new(),
            reasons: HashMap::new(),
        };
        for (index, utterance) in utterances.iter().enumerate() {
            let outcome = judges.run(index, utterance, config, transcripts)?;
            *result
                .reasons
                .entry(reason_name(outcome.reason))
                .or_default() += 1;
            let (cut, latency) = match outcome.decided {
                Some(at) if at < utterance.end => (true, None),
                Some(at) => (false, Some(at - utterance.end)),
                None => (false, None),
            };
            result.cut_offs += usize::from(cut);
            result.undecided += usize::from(outcome.decided.is_none());
            result.latencies.extend(latency);
            result
                .per_utterance
                .push((utterance.voice.clone(), utterance.paused, cut, latency));
        }
        results.push(result);
    }
    Ok(report(&utterances, &results, started.elapsed()))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0))
}

fn report(utterances: &[Utterance], results: &[SettingResult], took: Duration) -> String {
    let paused = utterances.iter().filter(|u| u.paused).count();
    let mut out = format!(
        "## End of turn: {} utterances ({} with a mid-sentence pause of 0.3-1.5 s), {:.0} s\n\n\
         Latency: the true end of speech to the decision (ms), over utterances not cut off.\n\n\
         | setting | false cut-offs | p50 | p95 | p99 | undecided | decided by |\n\
         |---|---|---|---|---|---|---|\n",
        utterances.len(),
        paused,
        took.as_secs_f64()
    );
    for r in results {
        let mut reasons: Vec<_> = r.reasons.iter().collect();
        reasons.sort();
        let reasons: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!(
            "| {} | {:.1} % ({}) | {} | {} | {} | {} | {} |\n",
            r.name,
            100.0 * r.cut_off_rate(),
            r.cut_offs,
            ms(r.p50()),
            ms(percentile(&r.latencies, 95.0)),
            ms(percentile(&r.latencies, 99.0)),
            r.undecided,
            reasons.join(", ")
        );
    }
    let curve: Vec<&SettingResult> = results.iter().take(5).collect();
    let at_five = curve
        .iter()
        .filter(|r| r.cut_off_rate() <= 0.05)
        .filter_map(|r| r.p50().map(|p| (p, &r.name)))
        .min();
    out += &match at_five {
        Some((p50, name)) => format!(
            "\nLatency at <= 5 % false cut-offs: p50 {} ms ({name}).\n",
            ms(Some(p50))
        ),
        None => "\nNo setting of the curve stays at or under 5 % false cut-offs.\n".into(),
    };
    if let Some(budget) = results.iter().find(|r| r.name.starts_with("300 ms")) {
        out += &format!(
            "False cut-offs at a 300 ms budget: {:.1} %.\n",
            100.0 * budget.cut_off_rate()
        );
    }
    if let Some(normal) = results.iter().find(|r| r.name == "normal") {
        out += "\nPer voice at `normal` (false cut-offs of the complete and of the paused utterances):\n\n\
                | voice | n | cut-offs, complete | cut-offs, paused | p50 | p95 |\n|---|---|---|---|---|---|\n";
        let mut voices: Vec<&str> = utterances.iter().map(|u| u.voice.as_str()).collect();
        voices.dedup();
        let rate = |rows: &[&(String, bool, bool, Option<Duration>)], paused: bool| {
            let kind: Vec<_> = rows.iter().filter(|r| r.1 == paused).collect();
            let cut = kind.iter().filter(|r| r.2).count();
            format!("{cut}/{}", kind.len())
        };
        for voice in voices {
            let rows: Vec<_> = normal
                .per_utterance
                .iter()
                .filter(|(v, ..)| v == voice)
                .collect();
            let latencies: Vec<Duration> = rows.iter().filter_map(|r| r.3).collect();
            out += &format!(
                "| {voice} | {} | {} | {} | {} | {} |\n",
                rows.len(),
                rate(&rows, false),
                rate(&rows, true),
                ms(percentile(&latencies, 50.0)),
                ms(percentile(&latencies, 95.0)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_texts_are_reproducible_and_varied() {
        let texts = |seed| {
            let mut rng = Rng(seed);
            (0..40).map(|_| complete_text(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(texts(7), texts(7));
        assert_ne!(texts(7), texts(8));
        let distinct: std::collections::HashSet<_> = texts(7).into_iter().collect();
        assert!(distinct.len() >= 30, "{} distinct of 40", distinct.len());
    }

    #[test]
    fn trimming_keeps_only_the_speech() {
        let mut audio = vec![0.0; 100];
        audio.extend([0.5, -0.4, 0.3]);
        audio.extend(vec![0.001; 50]);
        assert_eq!(trim(&audio), &[0.5, -0.4, 0.3]);
        assert!(trim(&[0.0; 10]).is_empty());
    }

    #[test]
    fn the_assembled_end_of_speech_is_where_the_last_part_ends() {
        let mut rng = Rng(1);
        let part = vec![0.5; 16_000];
        let u = assemble(
            "v",
            &[part.clone(), part],
            Duration::from_millis(700),
            &mut rng,
        );
        assert!(u.paused);
        assert_eq!(u.end, LEAD + Duration::from_millis(2_700));
        assert_eq!(u.audio.len(), samples(u.end + TAIL));
    }
}
