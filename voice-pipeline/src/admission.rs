//! Admission control: how many agent sessions this machine carries, and whether one more fits
//! without pushing the running ones past their latency budget. A session is refused (never
//! half-served) when the count is at capacity, or when a model's queue already holds more
//! critical-path work than the budget allows. Rooms without agents never ask.
//!
//! ```
//! use std::time::Duration;
//! use dartmouth_voice::admission::Admission;
//!
//! let admission = Admission::new(1, Duration::from_millis(800), Vec::new());
//! let first = admission.try_admit().expect("room for one");
//! assert!(admission.try_admit().is_err(), "at capacity");
//! drop(first);
//! assert!(admission.try_admit().is_ok(), "the slot came back");
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::{counter, gauge};

use crate::scheduler::SchedulerLoad;

/// Gauge: agent sessions the machine is configured (or measured) to carry.
pub const AGENT_CAPACITY: &str = "dartmouth_agent_capacity";
/// Gauge: agent sessions running.
pub const AGENT_SESSIONS: &str = "dartmouth_agent_sessions";
/// Counter: agent sessions refused, label `reason` (`capacity`, `saturated`).
pub const AGENT_SESSIONS_REFUSED_TOTAL: &str = "dartmouth_agent_sessions_refused_total";

/// How long a model's queued critical work may keep a new session waiting before new sessions
/// are refused (a turn's whole voice-to-voice budget is about a second).
pub const DEFAULT_ADMISSION_BUDGET: Duration = Duration::from_millis(1_500);

/// Agent sessions per CPU core the embedded models carry by default. Measured with
/// `dartmouth bench load` on a 2-core machine: people talk a few seconds in ten, so sessions
/// share the models well; past this the slowest caller of a burst waits over two seconds.
pub const DEFAULT_SESSIONS_PER_CORE: usize = 3;

/// The default capacity for this machine: [`DEFAULT_SESSIONS_PER_CORE`] per core.
pub fn default_capacity() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    DEFAULT_SESSIONS_PER_CORE * cores
}

/// Where a model's load can be read (a provider's scheduler).
pub type LoadSource = Arc<dyn Fn() -> Option<SchedulerLoad> + Send + Sync>;

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// As many sessions run as the machine carries.
    #[error("the gateway is at its capacity of {capacity} agent sessions; try again shortly")]
    AtCapacity {
        /// The capacity.
        capacity: usize,
    },
    /// A model is saturated: its critical work already waits longer than the budget.
    #[error("the {model} model is saturated ({wait_ms} ms of queued work); try again shortly")]
    Saturated {
        /// Which model.
        model: String,
        /// Its estimated critical-path wait.
        wait_ms: u64,
    },
}

/// One model's load, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLoad {
    /// The model (scheduler) name.
    pub model: String,
    /// Its load.
    pub load: SchedulerLoad,
}

/// What [`Admission::state`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionState {
    /// Sessions the machine carries.
    pub capacity: usize,
    /// Sessions running.
    pub active: usize,
    /// Whether a new session would be admitted now.
    pub accepting: bool,
    /// Each model's queue.
    pub models: Vec<ModelLoad>,
}

/// The machine's capacity for agent sessions.
pub struct Admission {
    capacity: usize,
    budget: Duration,
    active: Arc<AtomicUsize>,
    models: Vec<(String, LoadSource)>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("capacity", &self.capacity)
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Holds one admitted session's place; dropping it gives the place back.
#[derive(Debug)]
pub struct AdmissionGuard(Arc<AtomicUsize>);

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        let left = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
        gauge!(AGENT_SESSIONS).set(left as f64);
    }
}

impl Admission {
    /// At most `capacity` sessions, and none while a model's critical work waits longer than
    /// `budget`; `models` are the named load sources to watch.
    pub fn new(capacity: usize, budget: Duration, models: Vec<(String, LoadSource)>) -> Self {
        gauge!(AGENT_CAPACITY).set(capacity as f64);
        Self {
            capacity,
            budget,
            active: Arc::new(AtomicUsize::new(0)),
            models,
        }
    }

    /// A place for one more session, or why not.
    pub fn try_admit(&self) -> Result<AdmissionGuard, Refusal> {
        if let Some((model, load)) = self.saturated() {
            counter!(AGENT_SESSIONS_REFUSED_TOTAL, "reason" => "saturated").increment(1);
            return Err(Refusal::Saturated {
                model,
                wait_ms: load.critical_wait.as_millis() as u64,
            });
        }
        let admitted = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        match admitted {
            Ok(previous) => {
                gauge!(AGENT_SESSIONS).set((previous + 1) as f64);
                Ok(AdmissionGuard(self.active.clone()))
            }
            Err(_) => {
                counter!(AGENT_SESSIONS_REFUSED_TOTAL, "reason" => "capacity").increment(1);
                Err(Refusal::AtCapacity {
                    capacity: self.capacity,
                })
            }
        }
    }

    /// Capacity, sessions running, and each model's queue.
    pub fn state(&self) -> AdmissionState {
        let active = self.active.load(Ordering::Relaxed);
        let models: Vec<ModelLoad> = self
            .models
            .iter()
            .filter_map(|(model, source)| {
                source().map(|load| ModelLoad {
                    model: model.clone(),
                    load,
                })
            })
            .collect();
        let saturated = models.iter().any(|m| m.load.critical_wait > self.budget);
        AdmissionState {
            capacity: self.capacity,
            active,
            accepting: active < self.capacity && !saturated,
            models,
        }
    }

    fn saturated(&self) -> Option<(String, SchedulerLoad)> {
        self.models.iter().find_map(|(model, source)| {
            source()
                .filter(|load| load.critical_wait > self.budget)
                .map(|load| (model.clone(), load))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturated_model_refuses_new_sessions_until_its_queue_drains() {
        let wait = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let reading = wait.clone();
        let source: LoadSource = Arc::new(move || {
            Some(SchedulerLoad {
                critical_wait: *reading.lock().unwrap(),
                ..SchedulerLoad::default()
            })
        });
        let admission = Admission::new(8, Duration::from_millis(500), vec![("stt".into(), source)]);
        let _a = admission.try_admit().unwrap();
        *wait.lock().unwrap() = Duration::from_secs(2);
        assert!(matches!(
            admission.try_admit(),
            Err(Refusal::Saturated { ref model, wait_ms: 2_000 }) if model == "stt"
        ));
        assert!(!admission.state().accepting);
        *wait.lock().unwrap() = Duration::from_millis(100);
        assert!(admission.try_admit().is_ok());
        assert_eq!(
            admission.state().active,
            1,
            "the dropped guard gave its place back"
        );
    }
}
