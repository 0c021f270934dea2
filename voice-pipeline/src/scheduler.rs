//! One scheduler per model kind: the model lives on its own OS thread (inference never runs in an
//! async task) and every session's jobs wait in one queue ordered by [`JobTag`]: the critical
//! path of a turn first, speculative work next, interim work last, sessions taking turns within
//! a class (see [`queue`] for the policy). Jobs get a [`JobContext`] whose cancellation they
//! check inside their decoding loops, so a cancelled job frees the model within one step.
//!
//! Nothing is lost silently: a job that leaves without running (cancelled, shed, refused) has its
//! `refused` callback called with the reason, so its stream reports it.
//!
//! ```
//! use dartmouth_voice::job::{JobTag, Priority, SessionId};
//! use dartmouth_voice::frame::TurnId;
//! use dartmouth_voice::provider::CancellationToken;
//! use dartmouth_voice::scheduler::{ModelScheduler, QueuePolicy};
//!
//! let scheduler =
//!     ModelScheduler::spawn("doubler", QueuePolicy::default(), || Ok::<_, ()>(2u32)).unwrap();
//! let (tx, rx) = std::sync::mpsc::channel();
//! let tag = JobTag::new(SessionId(1), TurnId(1), Priority::Critical);
//! scheduler.submit(tag, CancellationToken::new(), move |model, _ctx| tx.send(*model * 21).unwrap(), |_| {});
//! assert_eq!(rx.recv().unwrap(), 42);
//! ```

pub mod queue;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};

use crate::job::{JobTag, Priority};
use crate::provider::{CancellationToken, ProviderError};
pub use queue::{DEFAULT_QUEUE_CAPACITY, Dropped, JobQueue, QueuePolicy};

/// Gauge: jobs waiting, labels `model`, `class`.
pub const MODEL_QUEUE_DEPTH: &str = "dartmouth_model_queue_depth";
/// Histogram: seconds a job waited before it ran, labels `model`, `class`.
pub const MODEL_QUEUE_WAIT_SECONDS: &str = "dartmouth_model_queue_wait_seconds";
/// Counter: jobs that left without running, labels `model`, `class`, `reason`.
pub const MODEL_JOBS_DROPPED_TOTAL: &str = "dartmouth_model_jobs_dropped_total";
/// Counter: milliseconds the model spent running jobs, label `model` (its utilisation).
pub const MODEL_BUSY_MS_TOTAL: &str = "dartmouth_model_busy_milliseconds_total";

/// What a running job may look at: what it is for, whether it should stop, and a way to yield
/// the model and go on later.
pub struct JobContext<'a, M> {
    /// What the job is for.
    pub tag: &'a JobTag,
    cancel: &'a CancellationToken,
    continuation: std::cell::RefCell<Option<(Priority, RunFn<M>)>>,
}

impl<M> JobContext<'_, M> {
    /// Whether the job was cancelled: check it between decoding steps and stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Yields the model when this run returns: `rest` goes back in the queue at `priority`
    /// (same session and turn, same cancellation, same refusal report), so other sessions' work
    /// runs in between. A long answer is generated in slices this way.
    pub fn requeue(
        &self,
        priority: Priority,
        rest: impl FnOnce(&mut M, &JobContext<'_, M>) + Send + 'static,
    ) {
        *self.continuation.borrow_mut() = Some((priority, Box::new(rest)));
    }
}

type RunFn<M> = Box<dyn FnOnce(&mut M, &JobContext<'_, M>) + Send>;
type RefuseFn = Box<dyn FnOnce(ProviderError) + Send>;

struct Job<M> {
    run: RunFn<M>,
    refused: RefuseFn,
}

/// How loaded a model is, for admission control.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SchedulerLoad {
    /// Jobs waiting per class, most urgent first.
    pub queued: [usize; 3],
    /// Whether a job is running.
    pub busy: bool,
    /// Estimated time before a critical job queued now would start.
    pub critical_wait: Duration,
    /// Average run time of recent jobs, per class.
    pub typical_run: [Duration; 3],
}

/// Exponentially weighted moving average of job run times per class.
#[derive(Debug, Clone, Copy, Default)]
struct RunTimes([Option<Duration>; 3]);

impl RunTimes {
    const WEIGHT: f64 = 0.2;

    fn record(&mut self, priority: Priority, took: Duration) {
        let slot = &mut self.0[priority as usize];
        *slot = Some(match *slot {
            None => took,
            Some(avg) => avg.mul_f64(1.0 - Self::WEIGHT) + took.mul_f64(Self::WEIGHT),
        });
    }

    fn of(&self, priority: Priority) -> Duration {
        self.0[priority as usize].unwrap_or_default()
    }
}

struct State<M> {
    queue: JobQueue<Job<M>>,
    stopping: bool,
    /// The running job's class and start.
    running: Option<(Priority, Instant)>,
    run_times: RunTimes,
}

struct Shared<M> {
    name: String,
    state: Mutex<State<M>>,
    wake: Condvar,
}

impl<M> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped(&self, jobs: Vec<(queue::Queued<Job<M>>, Dropped)>) {
        for (queued, why) in jobs {
            let class = queued.tag.priority.get();
            let reason = match why {
                Dropped::Cancelled => "cancelled",
                Dropped::Shed => "shed",
                Dropped::Refused => "refused",
            };
            counter!(MODEL_JOBS_DROPPED_TOTAL, "model" => self.name.clone(), "class" => class.as_str(), "reason" => reason)
                .increment(1);
            let error = match why {
                Dropped::Cancelled => ProviderError::Cancelled {
                    provider: self.name.clone(),
                },
                Dropped::Shed => ProviderError::Overloaded {
                    provider: self.name.clone(),
                    message: format!("{} work shed under load", class.as_str()),
                },
                Dropped::Refused => ProviderError::Overloaded {
                    provider: self.name.clone(),
                    message: "the model's queue is full".into(),
                },
            };
            (queued.job.refused)(error);
        }
    }

    fn queue(&self, tag: JobTag, cancel: CancellationToken, job: Job<M>) {
        let dropped = {
            let mut state = self.lock();
            if state.stopping {
                drop(state);
                (job.refused)(ProviderError::WorkerStopped {
                    provider: self.name.clone(),
                });
                return;
            }
            let dropped = state.queue.push(Instant::now(), tag, cancel, job);
            self.report_depths(&state.queue);
            dropped
        };
        self.wake.notify_one();
        self.dropped(dropped);
    }

    fn report_depths(&self, queue: &JobQueue<Job<M>>) {
        for class in Priority::ALL {
            gauge!(MODEL_QUEUE_DEPTH, "model" => self.name.clone(), "class" => class.as_str())
                .set(queue.depth(class) as f64);
        }
    }
}

/// A model on its own thread behind a priority queue shared by every session.
pub struct ModelScheduler<M> {
    shared: Arc<Shared<M>>,
    thread: Option<JoinHandle<()>>,
}

impl<M> std::fmt::Debug for ModelScheduler<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelScheduler")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<M: 'static> ModelScheduler<M> {
    /// Starts a thread named `name`, loads the model on it with `load`, and returns once loading
    /// finished (with its error, if any).
    pub fn spawn<E: Send + 'static>(
        name: impl Into<String>,
        policy: QueuePolicy,
        load: impl FnOnce() -> Result<M, E> + Send + 'static,
    ) -> Result<Self, SchedulerError<E>> {
        let name = name.into();
        let shared = Arc::new(Shared {
            name: name.clone(),
            state: Mutex::new(State {
                queue: JobQueue::new(policy),
                stopping: false,
                running: None,
                run_times: RunTimes::default(),
            }),
            wake: Condvar::new(),
        });
        let (loaded_tx, loaded_rx) = std::sync::mpsc::sync_channel::<Result<(), E>>(1);
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(load, &for_thread, loaded_tx))
            .map_err(SchedulerError::Spawn)?;
        match loaded_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                shared,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(SchedulerError::Load(error))
            }
            Err(_) => {
                let _ = thread.join();
                Err(SchedulerError::Panicked)
            }
        }
    }

    /// The scheduler's name (its thread name, the `model` label of its metrics).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Queues `run` for the job `tag` describes. If it leaves the queue without running
    /// (cancelled, shed, refused — possibly right away), `refused` is called with the reason
    /// instead; exactly one of the two is called, unless the process stops first.
    pub fn submit(
        &self,
        tag: JobTag,
        cancel: CancellationToken,
        run: impl FnOnce(&mut M, &JobContext<'_, M>) + Send + 'static,
        refused: impl FnOnce(ProviderError) + Send + 'static,
    ) {
        let job = Job {
            run: Box::new(run),
            refused: Box::new(refused),
        };
        self.shared.queue(tag, cancel, job);
    }

    /// How loaded the model is now.
    pub fn load(&self) -> SchedulerLoad {
        let state = self.shared.lock();
        let queued = Priority::ALL.map(|p| state.queue.depth(p));
        let typical_run = Priority::ALL.map(|p| state.run_times.of(p));
        let remaining = state.running.map_or(Duration::ZERO, |(class, since)| {
            state.run_times.of(class).saturating_sub(since.elapsed())
        });
        SchedulerLoad {
            queued,
            busy: state.running.is_some(),
            critical_wait: remaining + typical_run[0] * queued[0] as u32,
            typical_run,
        }
    }
}

impl<M> Drop for ModelScheduler<M> {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.queue.drain()
        };
        self.shared.wake.notify_all();
        for queued in waiting {
            (queued.job.refused)(ProviderError::WorkerStopped {
                provider: self.shared.name.clone(),
            });
        }
        // The job in progress finishes (or notices its cancellation) first.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<M, E>(
    load: impl FnOnce() -> Result<M, E>,
    shared: &Shared<M>,
    loaded: std::sync::mpsc::SyncSender<Result<(), E>>,
) {
    let mut model = match load() {
        Ok(model) => {
            let _ = loaded.send(Ok(()));
            model
        }
        Err(error) => {
            let _ = loaded.send(Err(error));
            return;
        }
    };
    loop {
        let (next, dropped) = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    return;
                }
                let (next, dropped) = state.queue.pop(Instant::now());
                if next.is_some() || !dropped.is_empty() {
                    if let Some(job) = &next {
                        state.running = Some((job.tag.priority.get(), Instant::now()));
                    }
                    shared.report_depths(&state.queue);
                    break (next, dropped);
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        shared.dropped(dropped);
        let Some(queued) = next else {
            continue;
        };
        let class = queued.tag.priority.get();
        let started = Instant::now();
        histogram!(MODEL_QUEUE_WAIT_SECONDS, "model" => shared.name.clone(), "class" => class.as_str())
            .record(started.saturating_duration_since(queued.enqueued).as_secs_f64());
        let context = JobContext {
            tag: &queued.tag,
            cancel: &queued.cancel,
            continuation: std::cell::RefCell::new(None),
        };
        let Job { run, refused } = queued.job;
        // A panicking job must not take the shared model down with it.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut model, &context)));
        if outcome.is_err() {
            tracing::error!(model = %shared.name, "model job panicked");
        }
        let continuation = context.continuation.into_inner();
        let took = started.elapsed();
        counter!(MODEL_BUSY_MS_TOTAL, "model" => shared.name.clone())
            .increment(took.as_millis() as u64);
        let mut state = shared.lock();
        state.running = None;
        // Cancelled jobs end early: their time says nothing about the next job's.
        if !queued.cancel.is_cancelled() {
            state.run_times.record(class, took);
        }
        drop(state);
        if let Some((priority, rest)) = continuation {
            let tag = JobTag::new(queued.tag.session, queued.tag.turn, priority);
            shared.queue(tag, queued.cancel, Job { run: rest, refused });
        }
    }
}

/// Why a scheduler did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError<E> {
    /// The OS refused the thread.
    #[error("starting the model thread: {0}")]
    Spawn(std::io::Error),
    /// The model failed to load.
    #[error("loading the model: {0}")]
    Load(E),
    /// Loading panicked.
    #[error("the model thread panicked while loading")]
    Panicked,
}

#[cfg(test)]
mod tests;
