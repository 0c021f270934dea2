//! The listening service: many sessions on one VAD and one end-of-turn model, each hearing only
//! its own audio, with the end-of-turn model asked off the VAD thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dartmouth_models::ModelStore;
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION};
use dartmouth_voice::ingest::IngestEvent;
use dartmouth_voice::listening::{Heard, ListenConfig, ListeningService};
use dartmouth_voice::turn::{TurnEndReason, TurnError, TurnModel};
use dartmouth_voice::vad::SileroVad;
use tokio::sync::mpsc;

const LIBRIVOX: &str =
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";

/// Says "complete" with a fixed probability, counting the utterances it judged and the calls.
struct Fixed {
    probability: f32,
    judged: &'static AtomicUsize,
    calls: &'static AtomicUsize,
}

impl TurnModel for Fixed {
    fn predict(&mut self, _audio: &[f32]) -> Result<f32, TurnError> {
        self.judged.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.probability)
    }

    fn predict_batch(&mut self, utterances: &[&[f32]], out: &mut Vec<Result<f32, TurnError>>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.judged.fetch_add(utterances.len(), Ordering::Relaxed);
        out.extend(utterances.iter().map(|_| Ok(self.probability)));
    }
}

fn clip() -> Vec<i16> {
    let reader = hound::WavReader::open(LIBRIVOX).expect("pocketsphinx-testdata is installed");
    reader.into_samples::<i16>().map(Result::unwrap).collect()
}

fn frames(samples: &[i16]) -> Vec<AudioFrame> {
    samples
        .chunks(320)
        .enumerate()
        .map(|(i, chunk)| {
            let mut padded = [0i16; 320];
            padded[..chunk.len()].copy_from_slice(chunk);
            AudioFrame::new(&padded, 16_000, 1, FRAME_DURATION * i as u32).unwrap()
        })
        .collect()
}

fn service(
    probability: f32,
    judged: &'static AtomicUsize,
    calls: &'static AtomicUsize,
) -> ListeningService {
    let vad = SileroVad::load(&ModelStore::from_env()).expect("models provisioned");
    ListeningService::with_models(
        vad,
        Box::new(Fixed {
            probability,
            judged,
            calls,
        }),
    )
    .unwrap()
}

/// Everything a session heard until its channel closed.
async fn collect(mut events: mpsc::Receiver<Heard>) -> Vec<IngestEvent> {
    let mut out = Vec::new();
    while let Ok(Some(heard)) = tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
        out.push(heard.event);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_hears_only_its_own_speech_and_its_turn_ends_on_the_models_verdict() {
    static JUDGED: AtomicUsize = AtomicUsize::new(0);
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let listening = service(0.9, &JUDGED, &CALLS);
    let mut speech = vec![0i16; 8_000];
    speech.extend(clip());
    speech.extend(vec![0i16; 32_000]);
    let silence = vec![0i16; speech.len()];

    let (speaker_tx, speaker_rx) = mpsc::channel(64);
    let (quiet_tx, quiet_rx) = mpsc::channel(64);
    let (errors_tx, mut errors) = mpsc::channel(16);
    let speaker = listening.open(quiet_config(), speaker_tx, errors_tx.clone());
    let quiet = listening.open(quiet_config(), quiet_tx, errors_tx);
    let heard_speaker = tokio::spawn(collect(speaker_rx));
    let heard_quiet = tokio::spawn(collect(quiet_rx));
    // Five frames per 20 ms tick: five times real time, well inside the one-second queue.
    let (a, b) = (frames(&speech), frames(&silence));
    for (group_a, group_b) in a.chunks(5).zip(b.chunks(5)) {
        for (fa, fb) in group_a.iter().zip(group_b) {
            speaker.push(*fa);
            quiet.push(*fb);
        }
        tokio::time::sleep(FRAME_DURATION).await;
    }
    speaker.finish();
    quiet.finish();
    let speaker_events = heard_speaker.await.unwrap();
    let quiet_events = heard_quiet.await.unwrap();
    assert!(
        quiet_events.is_empty(),
        "silence is heard as nothing: {quiet_events:?}"
    );
    assert!(matches!(
        speaker_events.first(),
        Some(IngestEvent::VoiceOnset { .. })
    ));
    assert!(
        speaker_events
            .iter()
            .any(|e| matches!(e, IngestEvent::SpeechStarted { .. }))
    );
    let ends: Vec<_> = speaker_events
        .iter()
        .filter_map(|e| match e {
            IngestEvent::TurnEnded(end) => Some(end),
            _ => None,
        })
        .collect();
    assert!(!ends.is_empty(), "{speaker_events:?}");
    assert!(
        ends.iter()
            .all(|end| matches!(end.reason, TurnEndReason::Complete { .. })),
        "the model's verdict ended each turn: {ends:?}"
    );
    assert!(JUDGED.load(Ordering::Relaxed) >= ends.len());
    assert!(errors.try_recv().is_err(), "no listening errors");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        listening.stats().sessions,
        0,
        "finished sessions leave the service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_confident_verdict_silence_ends_the_turn_and_dropping_a_handle_leaves() {
    static JUDGED: AtomicUsize = AtomicUsize::new(0);
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let listening = service(0.1, &JUDGED, &CALLS);
    let (tx, rx) = mpsc::channel(64);
    let (errors_tx, _errors) = mpsc::channel(16);
    let handle = listening.open(quiet_config(), tx, errors_tx);
    let mut speech = clip();
    speech.extend(vec![0i16; 40_000]);
    for group in frames(&speech).chunks(5) {
        for frame in group {
            handle.push(*frame);
        }
        tokio::time::sleep(FRAME_DURATION).await;
    }
    handle.finish();
    let events = collect(rx).await;
    let reasons: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            IngestEvent::TurnEnded(end) => Some(end.reason),
            _ => None,
        })
        .collect();
    assert!(
        reasons.contains(&TurnEndReason::SilenceTimeout),
        "{events:?}"
    );

    let (tx, _rx) = mpsc::channel(64);
    let (errors_tx, _errors) = mpsc::channel(16);
    let second = listening.open(quiet_config(), tx, errors_tx);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(listening.stats().sessions, 1);
    drop(second);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(listening.stats().sessions, 0);
}

/// Listening settings for sessions nobody transcribes (no transcript to wait for).
fn quiet_config() -> ListenConfig {
    let mut config = ListenConfig::default();
    config.turn = config.turn.without_transcripts();
    config
}
