//! Dedicated model threads: a model lives on its own OS thread and takes jobs from a bounded
//! queue, so inference never runs inside an async task and sessions share one loaded model.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::provider::ProviderError;

/// Jobs a model worker queues before refusing more (callers get an error, never block).
pub const MODEL_JOB_CAPACITY: usize = 32;

type Job<M> = Box<dyn FnOnce(&mut M) + Send + 'static>;

/// A model owned by one thread, reached through a bounded job queue.
pub struct ModelWorker<M> {
    name: String,
    jobs: Option<SyncSender<Job<M>>>,
    thread: Option<JoinHandle<()>>,
}

impl<M> std::fmt::Debug for ModelWorker<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelWorker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<M: 'static> ModelWorker<M> {
    /// Starts a thread named `name`, loads the model on it with `load`, and returns once loading
    /// finished (with its error, if any).
    pub fn spawn<E: Send + 'static>(
        name: impl Into<String>,
        load: impl FnOnce() -> Result<M, E> + Send + 'static,
    ) -> Result<Self, WorkerError<E>> {
        let name = name.into();
        let (jobs, queue) = sync_channel::<Job<M>>(MODEL_JOB_CAPACITY);
        let (loaded_tx, loaded_rx) = sync_channel::<Result<(), E>>(1);
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || run(load, queue, loaded_tx))
            .map_err(WorkerError::Spawn)?;
        match loaded_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                name,
                jobs: Some(jobs),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(WorkerError::Load(error))
            }
            Err(_) => {
                let _ = thread.join();
                Err(WorkerError::Panicked)
            }
        }
    }

    /// The worker's name (its thread name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues a job; fails at once when the queue is full or the worker stopped.
    pub fn submit(&self, job: impl FnOnce(&mut M) + Send + 'static) -> Result<(), ProviderError> {
        let Some(jobs) = &self.jobs else {
            return Err(self.stopped());
        };
        match jobs.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ProviderError::Model {
                provider: self.name.clone(),
                message: format!("busy: {MODEL_JOB_CAPACITY} jobs already queued"),
            }),
            Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> ProviderError {
        ProviderError::WorkerStopped {
            provider: self.name.clone(),
        }
    }
}

fn run<M, E>(
    load: impl FnOnce() -> Result<M, E>,
    queue: Receiver<Job<M>>,
    loaded: SyncSender<Result<(), E>>,
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
    while let Ok(job) = queue.recv() {
        // A panicking job must not take the shared model down with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut model)));
        if outcome.is_err() {
            tracing::error!(worker = %std::thread::current().name().unwrap_or("?"), "model job panicked");
        }
    }
}

impl<M> Drop for ModelWorker<M> {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the job in progress.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a worker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError<E> {
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
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_order_on_the_worker_thread() {
        let worker = ModelWorker::spawn("test-worker", || Ok::<_, ()>(Vec::<u32>::new())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            worker
                .submit(move |v: &mut Vec<u32>| {
                    v.push(i);
                    tx.send((v.clone(), std::thread::current().name().map(str::to_string)))
                        .unwrap();
                })
                .unwrap();
        }
        let received: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        let last = received.into_iter().next_back().unwrap();
        assert_eq!(last.0, vec![0, 1, 2]);
        assert_eq!(last.1.as_deref(), Some("test-worker"));
    }

    #[test]
    fn a_load_error_is_returned_and_a_panicking_job_does_not_kill_the_worker() {
        let err = ModelWorker::<u8>::spawn("bad", || Err::<u8, _>("no file")).unwrap_err();
        assert!(matches!(err, WorkerError::Load("no file")));
        let worker = ModelWorker::spawn("panicky", || Ok::<_, ()>(0u8)).unwrap();
        worker.submit(|_| panic!("boom")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        worker.submit(move |m| tx.send(*m).unwrap()).unwrap();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
            0
        );
    }
}
