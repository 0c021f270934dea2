//! A real softphone on the SIP bridge: baresip (Debian `baresip-core`), a SIP stack and RTP
//! endpoint that shares no code with ours or with sipp. It calls in playing a spoken question
//! from a WAV (its `aufile` microphone) and records what it hears (`sndfile`); and the API dials a
//! baresip that answers by itself, whose recording must start with the agent's greeting.
//! Skips (with the reason) when baresip, espeak-ng or the models are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dartmouth_signaling::sip::SipSettings;
use dartmouth_tests::TestGateway;
use dartmouth_tests::gateway::EmbeddedTestAgent;
use dartmouth_tests::sip::{free_udp_port, keep_audio, speak_at, start_bridge, transcribe};
use dartmouth_tests::{read_wav_i16, rms};

/// baresip's modules (Debian's path).
const MODULES: &str = "/usr/lib/baresip/modules";
/// Silence after the question: baresip hangs up when its WAV ends, and the agent needs the time
/// to hear the end of the turn and answer.
const ANSWER_TIME: Duration = Duration::from_secs(12);
/// The longest a baresip run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(40);
/// Level of a 20 ms frame that counts as voice in a recording (RMS of full scale, about -40 dBFS).
const VOICE_RMS: f64 = 0.01;

fn baresip_available() -> bool {
    Path::new(MODULES).join("aufile.so").is_file()
        && Command::new("baresip")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

/// One baresip process with its own configuration directory; killed when dropped.
struct Baresip {
    child: Child,
    dir: PathBuf,
}

impl Baresip {
    /// Starts baresip as `user` on a free loopback port, its microphone playing `source` (8 kHz
    /// mono WAV), answering calls by itself, offering only `codec`; `dial` is called at once.
    fn start(user: &str, source: &[i16], codec: &str, dial: Option<&str>) -> (Self, u16) {
        let port = free_udp_port();
        let dir =
            std::env::temp_dir().join(format!("dartmouth-baresip-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wav = dir.join("source.wav");
        write_wav_8k(&wav, source);
        let config = format!(
            "poll_method poll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             audio_player aubridge,nil\naudio_alert aubridge,nil\naudio_source aufile,{}\n\
             module_path {MODULES}\nmodule stdio.so\nmodule g711.so\nmodule g722.so\n\
             module aufile.so\nmodule aubridge.so\nmodule sndfile.so\nmodule_app account.so\n\
             module_app menu.so\nsnd_path {}\n",
            wav.display(),
            dir.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{user}@127.0.0.1:{port};transport=udp>;regint=0;answermode=auto;audio_codecs={codec}\n"
            ),
        )
        .unwrap();
        let mut command = Command::new("baresip");
        command
            .arg("-f")
            .arg(&dir)
            .arg("-t")
            .arg((RUN_LIMIT.as_secs() + 10).to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.join("log")).unwrap()))
            .stderr(Stdio::null());
        if let Some(target) = dial {
            command.arg("-e").arg(format!("/dial {target}"));
        }
        let child = command.spawn().expect("baresip starts");
        (Self { child, dir }, port)
    }

    /// Waits until baresip's call has ended (it hangs up when its WAV ends, or the other side
    /// did), at most [`RUN_LIMIT`].
    async fn call_ended(&mut self) {
        let deadline = Instant::now() + RUN_LIMIT;
        while Instant::now() < deadline {
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || self.log().contains(" terminated (duration") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("baresip's call ran past {RUN_LIMIT:?}:\n{}", self.log());
    }

    /// What baresip heard, decoded (its `sndfile` dump), and the dump's rate.
    fn heard(&self) -> (Vec<i16>, u32) {
        let dump = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"));
        let Some(dump) = dump else {
            panic!("baresip recorded nothing:\n{}", self.log());
        };
        read_wav_i16(&dump).expect("a readable recording")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_wav_8k(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        wav.write_sample(*s).unwrap();
    }
    wav.finalize().unwrap();
}

/// Where the first voiced 20 ms frame of `pcm` starts.
fn first_voice(pcm: &[i16], rate: u32) -> Option<Duration> {
    let frame = rate as usize / 50;
    pcm.chunks(frame)
        .position(|f| rms(f) > VOICE_RMS)
        .map(|i| Duration::from_millis(i as u64 * 20))
}

/// How much voice `pcm` holds after `from`, in 20 ms frames.
fn voiced_after(pcm: &[i16], rate: u32, from: Duration) -> Duration {
    let frame = rate as usize / 50;
    let skip = (from.as_millis() / 20) as usize;
    let frames = pcm
        .chunks(frame)
        .skip(skip)
        .filter(|f| rms(f) > VOICE_RMS)
        .count();
    Duration::from_millis(frames as u64 * 20)
}

fn silence(duration: Duration) -> Vec<i16> {
    vec![0; (duration.as_millis() * 8) as usize]
}

/// Loads what the test needs, or says why it skips.
fn prerequisites() -> Option<(Arc<EmbeddedTestAgent>, Vec<i16>)> {
    if !baresip_available() {
        eprintln!("SKIPPED: baresip is not installed (Debian baresip-core)");
        return None;
    }
    let Some(question) = speak_at("What is the capital of France?", 8_000) else {
        eprintln!("SKIPPED: espeak-ng is not installed");
        return None;
    };
    let agents = EmbeddedTestAgent::load()?;
    Some((agents, question))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_in_asks_a_question_and_records_the_agents_answer() {
    let Some((agents, question)) = prerequisites() else {
        return;
    };
    let gateway = TestGateway::start(agents).await;
    let bridge = start_bridge(&gateway, SipSettings::default(), 16_700).await;
    let target = format!("sip:agent@{}", bridge.local_addr());
    let speech = [question.clone(), silence(ANSWER_TIME)].concat();
    let (mut phone, _) = Baresip::start("caller", &speech, "PCMU", Some(&target));
    phone.call_ended().await;
    let (heard, rate) = phone.heard();
    keep_audio("baresip-inbound.wav", &heard, rate);
    let words = transcribe(&heard, rate).await;
    eprintln!(
        "baresip heard {:.1} s, first voice at {:?}: {words:?}",
        heard.len() as f64 / f64::from(rate),
        first_voice(&heard, rate)
    );
    // The bridge sends only the agent's voice: a second or more of it after the question is the
    // answer. Of the transcript only something is required: Moonshine on a recording a
    // starved softphone made (baresip's own jitter buffer and playout) can return noise symbols
    // for clear speech.
    let question_end = Duration::from_millis(question.len() as u64 / 8);
    let answer = voiced_after(&heard, rate, question_end);
    assert!(
        answer >= Duration::from_secs(1),
        "the recording holds a spoken answer ({answer:?} of voice after the question)\n{}",
        phone.log()
    );
    assert!(!words.is_empty(), "the answer transcribes to something");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bridge.calls(), 0, "baresip's BYE released the call");
    bridge.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_dials_a_baresip_that_answers_and_hears_the_greeting_first() {
    let Some((agents, _)) = prerequisites() else {
        return;
    };
    let gateway = TestGateway::start(agents).await;
    let bridge = start_bridge(&gateway, SipSettings::default(), 16_800).await;
    let (mut callee, port) = Baresip::start("callee", &silence(ANSWER_TIME), "PCMA", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let token = gateway.token("baresip-out", "backend");
    let created = reqwest::Client::new()
        .post(gateway.url("/api/sip/calls"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "to": format!("sip:callee@127.0.0.1:{port}"), "room": "baresip-out" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202, "{:?}", created.text().await);
    callee.call_ended().await;
    let (heard, rate) = callee.heard();
    keep_audio("baresip-outbound.wav", &heard, rate);
    let greeting_at = first_voice(&heard, rate);
    let words = transcribe(&heard, rate).await;
    // baresip's recording starts when its audio starts, at the answer: the offset of the first
    // voiced frame is the time from the 200 OK to the greeting at this phone (jitter buffer
    // included). A figure to report, not a timed assertion.
    eprintln!("greeting at {greeting_at:?} after the answer: {words:?}");
    assert!(
        greeting_at.is_some(),
        "the callee heard a greeting\n{}",
        callee.log()
    );
    assert!(!words.is_empty(), "the greeting has words");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bridge.calls(), 0, "the callee's BYE released the call");
    bridge.stop().await;
    gateway.stop().await;
}
