//! One listening service for every agent session: a session's listening state is data (a
//! [`Listener`]: resampler, VAD recurrent state, utterance buffer), and two threads serve them
//! all with one copy of each model:
//!
//! - the **VAD thread** wakes every [`LISTEN_TICK`], takes each session's new audio, and runs
//!   Silero VAD on the next chunk of every session in one batched call (repeating while chunks
//!   are left), so its cost grows with the audio, not with model copies or threads;
//! - the **end-of-turn thread** answers the detectors' questions, all waiting ones in one
//!   batched Smart Turn call, so a slow prediction never holds up voice activity detection
//!   (barge-in keeps reacting while a turn's end is judged).
//!
//! Events go to each session's runner through its bounded channel without ever blocking the
//! thread: what does not fit waits in the session's own bounded backlog.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dartmouth_models::ModelStore;
use metrics::{gauge, histogram};
use tokio::sync::mpsc;

use crate::agent::AgentEvent;
use crate::audio_queue::{AudioQueue, INGEST_FRAME_CAPACITY};
use crate::frame::AudioFrame;
use crate::ingest::{IngestEvent, Listener};
use crate::turn::{SmartTurn, TranscriptForm, TurnConfig, TurnError, TurnModel, VerdictRequest};
use crate::vad::{SileroVad, VadBatch, VadConfig, VadError, VadStream};

/// How often the VAD thread takes new audio (one media frame).
pub const LISTEN_TICK: Duration = Duration::from_millis(20);
/// End-of-turn questions waiting for the model before more are answered with "unknown" (the
/// detectors then fall back to silence timing).
pub const VERDICT_QUEUE_CAPACITY: usize = 256;
/// Most questions answered in one batched end-of-turn call.
pub const MAX_VERDICT_BATCH: usize = 16;
/// Events one session's runner may fall behind by before the oldest are dropped.
pub const LISTEN_BACKLOG_CAPACITY: usize = 64;
/// Registrations and departures waiting for the VAD thread.
const COMMAND_CAPACITY: usize = 1_024;

/// Gauge: sessions the listening service serves.
pub const LISTEN_SESSIONS: &str = "dartmouth_listen_sessions";
/// Histogram: seconds of compute per VAD tick (all sessions).
pub const LISTEN_TICK_SECONDS: &str = "dartmouth_listen_tick_seconds";
/// Histogram: seconds from an end-of-turn question to its answer.
pub const LISTEN_VERDICT_SECONDS: &str = "dartmouth_listen_verdict_seconds";

/// A listening event and the arrival of the audio that caused it: the wall-clock anchor for the
/// media times in the event, which include any lag of the listening threads behind the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    /// The event.
    pub event: IngestEvent,
    /// When the newest audio behind it arrived.
    pub arrived: Instant,
}

/// The listening settings of one session.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ListenConfig {
    /// Voice activity thresholds.
    pub vad: VadConfig,
    /// End-of-turn timing.
    pub turn: TurnConfig,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The VAD model failed to load.
    #[error(transparent)]
    Vad(#[from] VadError),
    /// The end-of-turn model failed to load.
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// The OS refused a thread.
    #[error("starting a listening thread: {0}")]
    Spawn(std::io::Error),
}

/// How much the service is doing.
#[derive(Debug, Default)]
struct Stats {
    sessions: AtomicU64,
    ticks: AtomicU64,
    /// Microseconds spent in VAD ticks.
    vad_busy_us: AtomicU64,
    /// Microseconds spent answering end-of-turn questions.
    verdict_busy_us: AtomicU64,
}

/// What [`ListeningService::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ListenStats {
    /// Sessions served now.
    pub sessions: u64,
    /// VAD ticks so far.
    pub ticks: u64,
    /// Time the VAD thread spent working (not sleeping).
    pub vad_busy: Duration,
    /// Time the end-of-turn thread spent working.
    pub verdict_busy: Duration,
}

/// The listening threads and their models, shared by every session.
pub struct ListeningService {
    commands: SyncSender<Command>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ListeningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListeningService")
            .field("sessions", &self.stats.sessions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

enum Command {
    Open(Box<Slot>),
    Close(u64),
    /// A transcript form for a session's pause: (session, pause time, form).
    Transcript(u64, Duration, TranscriptForm),
}

/// One session as the VAD thread holds it.
struct Slot {
    id: u64,
    listener: Listener,
    queue: Arc<AudioQueue>,
    events: mpsc::Sender<Heard>,
    errors: mpsc::Sender<AgentEvent>,
    backlog: VecDeque<Heard>,
    /// Arrival of the newest frame taken from the queue.
    arrived: Instant,
    last_error: Option<String>,
}

impl Slot {
    fn report_error(&mut self, message: String) {
        // Once per kind of failure, not once per frame.
        if self.last_error.as_deref() != Some(message.as_str()) {
            let _ = self
                .errors
                .try_send(AgentEvent::Error(format!("listening: {message}")));
            self.last_error = Some(message);
        }
    }

    /// Moves the listener's events to the runner, keeping what does not fit.
    fn deliver(&mut self) {
        while let Some(event) = self.listener.poll() {
            if self.backlog.len() == LISTEN_BACKLOG_CAPACITY {
                self.backlog.pop_front();
            }
            self.backlog.push_back(Heard {
                event,
                arrived: self.arrived,
            });
        }
        while let Some(heard) = self.backlog.pop_front() {
            match self.events.try_send(heard) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(heard)) => {
                    self.backlog.push_front(heard);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    break;
                }
            }
        }
    }

    /// The queue is closed and drained, and everything was delivered: the session is over.
    fn finished(&self) -> bool {
        self.backlog.is_empty() && (self.queue.is_closed_and_empty() || self.events.is_closed())
    }
}

/// A session's place in the service: push its audio here. Dropping it ends the session's
/// listening.
#[derive(Debug)]
pub struct ListenerHandle {
    id: u64,
    queue: Arc<AudioQueue>,
    commands: SyncSender<Command>,
}

impl ListenerHandle {
    /// Queues one frame of the person's audio (never blocks; the oldest audio is dropped if
    /// listening falls a second behind).
    pub fn push(&self, frame: AudioFrame) {
        self.queue.push(frame);
    }

    /// Ends the input: audio already pushed is still processed and its events delivered, then
    /// the session's event channel closes.
    pub fn finish(&self) {
        self.queue.close();
    }

    /// Frames dropped because listening fell behind.
    pub fn dropped_frames(&self) -> u64 {
        self.queue.dropped()
    }

    /// Where to tell the session's end-of-turn detector what a pause's transcript reads like.
    pub fn transcript_hints(&self) -> TranscriptHints {
        TranscriptHints {
            id: self.id,
            commands: self.commands.clone(),
        }
    }
}

/// Tells one session's end-of-turn detector what its pauses' speculative transcripts read like.
#[derive(Debug, Clone)]
pub struct TranscriptHints {
    id: u64,
    commands: SyncSender<Command>,
}

impl TranscriptHints {
    /// The speech before the pause that began at `pause_at` (media time) reads as `form`.
    /// Never blocks; dropped if the listening thread is swamped (the turn then ends on the
    /// model and silence alone).
    pub fn send(&self, pause_at: Duration, form: TranscriptForm) {
        let _ = self
            .commands
            .try_send(Command::Transcript(self.id, pause_at, form));
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.queue.close();
        let _ = self.commands.try_send(Command::Close(self.id));
    }
}

impl ListeningService {
    /// Loads Silero VAD and Smart Turn once and starts the two threads.
    pub fn start(store: &ModelStore) -> Result<Self, ListenError> {
        let vad = SileroVad::load(store)?;
        let turn = SmartTurn::load(store)?;
        Self::with_models(vad, Box::new(turn))
    }

    /// Starts the threads on given models (tests give a scripted end-of-turn model).
    pub fn with_models(
        vad: SileroVad,
        turn_model: Box<dyn TurnModel + Send>,
    ) -> Result<Self, ListenError> {
        let (commands, command_rx) = sync_channel(COMMAND_CAPACITY);
        let (verdict_tx, verdict_rx) = sync_channel(VERDICT_QUEUE_CAPACITY);
        let (answer_tx, answer_rx) = sync_channel(VERDICT_QUEUE_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let vad_thread = {
            let vad_loop = VadLoop {
                vad,
                slots: Vec::new(),
                active: Vec::new(),
                probabilities: Vec::new(),
                commands: command_rx,
                verdicts: verdict_tx,
                answers: answer_rx,
                stop: stop.clone(),
                stats: stats.clone(),
            };
            std::thread::Builder::new()
                .name("listen-vad".into())
                .spawn(move || vad_loop.run())
                .map_err(ListenError::Spawn)?
        };
        let verdict_thread = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("listen-turn".into())
                .spawn(move || answer_verdicts(turn_model, &verdict_rx, &answer_tx, &stats))
                .map_err(ListenError::Spawn)?
        };
        Ok(Self {
            commands,
            stop,
            stats,
            threads: Mutex::new(vec![vad_thread, verdict_thread]),
            next_id: AtomicU64::new(1),
        })
    }

    /// Registers a session: its events go to `events` (errors, once per kind, to `errors`).
    pub fn open(
        &self,
        config: ListenConfig,
        events: mpsc::Sender<Heard>,
        errors: mpsc::Sender<AgentEvent>,
    ) -> ListenerHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(AudioQueue::new(INGEST_FRAME_CAPACITY));
        let slot = Slot {
            id,
            listener: Listener::new(config.vad, config.turn),
            queue: queue.clone(),
            events,
            errors,
            backlog: VecDeque::new(),
            arrived: Instant::now(),
            last_error: None,
        };
        if self
            .commands
            .try_send(Command::Open(Box::new(slot)))
            .is_err()
        {
            // The thread is gone or swamped: the session hears nothing, and says so.
            queue.close();
        }
        ListenerHandle {
            id,
            queue,
            commands: self.commands.clone(),
        }
    }

    /// Work done so far.
    pub fn stats(&self) -> ListenStats {
        ListenStats {
            sessions: self.stats.sessions.load(Ordering::Relaxed),
            ticks: self.stats.ticks.load(Ordering::Relaxed),
            vad_busy: Duration::from_micros(self.stats.vad_busy_us.load(Ordering::Relaxed)),
            verdict_busy: Duration::from_micros(self.stats.verdict_busy_us.load(Ordering::Relaxed)),
        }
    }
}

impl Drop for ListeningService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

struct VadLoop {
    vad: SileroVad,
    slots: Vec<Slot>,
    /// Indices of the slots in this round's batch (reused).
    active: Vec<usize>,
    /// This round's probabilities (reused).
    probabilities: Vec<f32>,
    commands: Receiver<Command>,
    verdicts: SyncSender<(u64, VerdictRequest, Instant)>,
    answers: Receiver<(u64, u64, Result<f32, TurnError>)>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

/// The slots of one batched VAD round.
struct Round<'a> {
    slots: &'a mut [Slot],
    active: &'a [usize],
}

impl VadBatch for Round<'_> {
    fn streams(&self) -> usize {
        self.active.len()
    }

    fn stream(&mut self, i: usize) -> (&mut VadStream, &[f32]) {
        self.slots[self.active[i]]
            .listener
            .vad_input()
            .expect("active slots have a chunk")
    }
}

impl VadLoop {
    fn run(mut self) {
        let mut next_tick = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if !self.take_commands() {
                break;
            }
            let started = Instant::now();
            self.take_audio();
            self.run_vad();
            self.apply_answers();
            for slot in &mut self.slots {
                slot.deliver();
            }
            self.slots.retain(|slot| !slot.finished());
            self.stats
                .sessions
                .store(self.slots.len() as u64, Ordering::Relaxed);
            let took = started.elapsed();
            self.stats.ticks.fetch_add(1, Ordering::Relaxed);
            self.stats
                .vad_busy_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            if !self.slots.is_empty() {
                histogram!(LISTEN_TICK_SECONDS).record(took.as_secs_f64());
            }
            gauge!(LISTEN_SESSIONS).set(self.slots.len() as f64);
            // Sleep to the next tick, waking early for an end-of-turn answer.
            next_tick += LISTEN_TICK;
            let now = Instant::now();
            if next_tick < now {
                next_tick = now;
            }
            match self.answers.recv_timeout(next_tick - now) {
                Ok(answer) => self.apply_answer(answer),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Registrations and departures; false when the service is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Open(slot)) => self.slots.push(*slot),
                Ok(Command::Close(id)) => self.slots.retain(|s| s.id != id),
                Ok(Command::Transcript(id, at, form)) => {
                    if let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) {
                        slot.listener.on_transcript(at, form);
                        slot.deliver();
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn take_audio(&mut self) {
        for slot in &mut self.slots {
            while let Some((frame, arrived)) = slot.queue.try_pop() {
                slot.arrived = arrived;
                if let Err(e) = slot.listener.push(&frame) {
                    slot.report_error(e.to_string());
                }
            }
        }
    }

    /// Batched VAD rounds while any session has a whole chunk waiting.
    fn run_vad(&mut self) {
        loop {
            self.active.clear();
            for (i, slot) in self.slots.iter_mut().enumerate() {
                if slot.listener.vad_input().is_some() {
                    self.active.push(i);
                }
            }
            if self.active.is_empty() {
                return;
            }
            self.probabilities.resize(self.active.len(), 0.0);
            let mut round = Round {
                slots: &mut self.slots,
                active: &self.active,
            };
            if let Err(e) = self.vad.run_batch(&mut round, &mut self.probabilities) {
                // Skip the chunks rather than spin on them: the sessions hear silence.
                let message = e.to_string();
                for &i in &self.active {
                    self.slots[i].report_error(message.clone());
                    self.slots[i].listener.on_probability(0.0);
                }
                continue;
            }
            for (k, &i) in self.active.iter().enumerate() {
                let slot = &mut self.slots[i];
                slot.listener.on_probability(self.probabilities[k]);
                if let Some(request) = slot.listener.take_verdict_request() {
                    let id = request.id;
                    if self
                        .verdicts
                        .try_send((slot.id, request, Instant::now()))
                        .is_err()
                    {
                        slot.listener.on_verdict(
                            id,
                            Err(TurnError::Inference("end-of-turn queue full".into())),
                        );
                    }
                }
            }
        }
    }

    fn apply_answers(&mut self) {
        while let Ok(answer) = self.answers.try_recv() {
            self.apply_answer(answer);
        }
    }

    fn apply_answer(&mut self, (slot_id, request_id, verdict): (u64, u64, Result<f32, TurnError>)) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.id == slot_id) {
            slot.listener.on_verdict(request_id, verdict);
            slot.deliver();
        }
    }
}

/// The end-of-turn thread: answers every waiting question in one batched call.
fn answer_verdicts(
    mut model: Box<dyn TurnModel + Send>,
    questions: &Receiver<(u64, VerdictRequest, Instant)>,
    answers: &SyncSender<(u64, u64, Result<f32, TurnError>)>,
    stats: &Stats,
) {
    let mut batch: Vec<(u64, VerdictRequest, Instant)> = Vec::with_capacity(MAX_VERDICT_BATCH);
    let mut results: Vec<Result<f32, TurnError>> = Vec::with_capacity(MAX_VERDICT_BATCH);
    while let Ok(first) = questions.recv() {
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_VERDICT_BATCH {
            match questions.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let audio: Vec<&[f32]> = batch.iter().map(|(_, r, _)| r.audio.as_slice()).collect();
        results.clear();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.predict_batch(&audio, &mut results)
        }));
        if outcome.is_err() {
            tracing::error!("end-of-turn model panicked");
            results.clear();
        }
        while results.len() < batch.len() {
            results.push(Err(TurnError::Inference("the model failed".into())));
        }
        stats
            .verdict_busy_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        for ((slot, request, asked), result) in batch.drain(..).zip(results.drain(..)) {
            histogram!(LISTEN_VERDICT_SECONDS).record(asked.elapsed().as_secs_f64());
            if answers.try_send((slot, request.id, result)).is_err() {
                // The VAD thread is gone or far behind; its detectors time out on silence.
                break;
            }
        }
    }
}
