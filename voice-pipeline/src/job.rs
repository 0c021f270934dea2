//! What a model job is for: the session and turn it serves and how urgent it is. Every provider
//! call carries a [`JobTag`]; the embedded models' schedulers order their queues by it, and the
//! HTTP providers ignore it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::frame::TurnId;

/// One conversation (agent session) among all the sessions sharing the models. `SessionId(0)`
/// is work outside any session (a command-line tool, an API request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A session id never handed out before in this process.
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// How urgent a job is. Lower runs first; within a class, sessions take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// On the critical path of a turn someone is waiting for: the final transcript, the answer,
    /// its speech. Never shed.
    #[default]
    Critical = 0,
    /// Likely to be needed: the speculative transcript at a pause, an answer started before the
    /// end of the turn is confirmed.
    Speculative = 1,
    /// Nice to have: interim transcripts, prompt read-ahead. Shed first under load.
    Opportunistic = 2,
}

impl Priority {
    /// Every class, most urgent first.
    pub const ALL: [Priority; 3] = [
        Priority::Critical,
        Priority::Speculative,
        Priority::Opportunistic,
    ];

    /// Short name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Speculative => "speculative",
            Priority::Opportunistic => "opportunistic",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Priority::Critical,
            1 => Priority::Speculative,
            _ => Priority::Opportunistic,
        }
    }
}

/// A priority that can be raised while the job waits: an answer started speculatively becomes
/// critical when the turn it answers is confirmed, and so do its queued jobs.
#[derive(Debug, Clone)]
pub struct SharedPriority(Arc<AtomicU8>);

impl SharedPriority {
    /// Starts at `priority`.
    pub fn new(priority: Priority) -> Self {
        Self(Arc::new(AtomicU8::new(priority as u8)))
    }

    /// The priority now.
    pub fn get(&self) -> Priority {
        Priority::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Changes the priority of every job holding this cell.
    pub fn set(&self, priority: Priority) {
        self.0.store(priority as u8, Ordering::Relaxed);
    }
}

impl Default for SharedPriority {
    fn default() -> Self {
        Self::new(Priority::Critical)
    }
}

impl PartialEq for SharedPriority {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// What a job is for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobTag {
    /// The session it serves.
    pub session: SessionId,
    /// The turn it serves.
    pub turn: TurnId,
    /// How urgent it is (may be raised while it waits).
    pub priority: SharedPriority,
}

impl JobTag {
    /// A tag for `session`'s `turn` at `priority`.
    pub fn new(session: SessionId, turn: TurnId, priority: Priority) -> Self {
        Self {
            session,
            turn,
            priority: SharedPriority::new(priority),
        }
    }

    /// The same session and turn, sharing `priority`'s cell.
    pub fn with_shared(session: SessionId, turn: TurnId, priority: &SharedPriority) -> Self {
        Self {
            session,
            turn,
            priority: priority.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_priority_raises_every_job_holding_it() {
        let cell = SharedPriority::new(Priority::Speculative);
        let a = JobTag::with_shared(SessionId(1), TurnId(2), &cell);
        let b = JobTag::with_shared(SessionId(1), TurnId(2), &cell);
        cell.set(Priority::Critical);
        assert_eq!(a.priority.get(), Priority::Critical);
        assert_eq!(b.priority.get(), Priority::Critical);
        assert!(Priority::Critical < Priority::Opportunistic);
        assert_ne!(SessionId::fresh(), SessionId::fresh());
    }
}
