//! The scheduler's queue as plain data: which job runs next, which waits, which is shed. Time is
//! an input, so every policy here is tested without threads or models.
//!
//! Policy:
//! - the most urgent class runs first ([`Priority`], read at pop time: a job's priority may be
//!   raised while it waits);
//! - within a class, sessions take turns: the session served least recently goes next, and a
//!   session's own jobs run in the order they came;
//! - cancelled jobs leave the queue without running;
//! - opportunistic jobs that waited longer than [`QueuePolicy::stale_after`] are shed (an interim
//!   transcript that old is no longer interim);
//! - when the queue is full, a new job takes the place of the oldest job of a less urgent class
//!   (or of an older opportunistic one); if there is none, the new job is refused. Critical work
//!   is never shed, only refused when the queue is full of critical work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::job::{JobTag, Priority, SessionId};
use crate::provider::CancellationToken;

/// Limits of one queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueuePolicy {
    /// Jobs waiting at most (all classes together).
    pub capacity: usize,
    /// Opportunistic jobs older than this are shed instead of run.
    pub stale_after: Duration,
}

/// Jobs one model's queue holds by default: far more than the sessions admission control lets
/// in can have waiting (each has at most a few), so only a runaway fills it.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Default [`QueuePolicy::stale_after`].
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2);
/// Sessions whose last-served stamp is kept before absent ones are forgotten.
const SERVED_MEMORY: usize = 1_024;

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_QUEUE_CAPACITY,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

/// A job waiting in the queue.
#[derive(Debug)]
pub struct Queued<J> {
    /// What it is for.
    pub tag: JobTag,
    /// Cancelling it removes the job before it runs (and stops it while it runs).
    pub cancel: CancellationToken,
    /// When it was queued.
    pub enqueued: Instant,
    seq: u64,
    /// The work itself.
    pub job: J,
}

/// Why a job left the queue without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its cancellation token was cancelled.
    Cancelled,
    /// Shed to make room for more urgent work, or too old to be useful.
    Shed,
    /// Refused at the door: the queue is full of work at least as urgent.
    Refused,
}

/// What [`JobQueue::pop`] gives: the job to run, if any, and the jobs that left without running.
pub type Popped<J> = (Option<Queued<J>>, Vec<(Queued<J>, Dropped)>);

/// The queue.
#[derive(Debug)]
pub struct JobQueue<J> {
    policy: QueuePolicy,
    entries: Vec<Queued<J>>,
    next_seq: u64,
    served: HashMap<SessionId, u64>,
    serve_clock: u64,
}

impl<J> JobQueue<J> {
    /// An empty queue.
    pub fn new(policy: QueuePolicy) -> Self {
        Self {
            policy,
            entries: Vec::with_capacity(policy.capacity.min(DEFAULT_QUEUE_CAPACITY)),
            next_seq: 0,
            served: HashMap::new(),
            serve_clock: 0,
        }
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Jobs waiting in `priority`'s class (by their priority now).
    pub fn depth(&self, priority: Priority) -> usize {
        self.entries
            .iter()
            .filter(|e| e.tag.priority.get() == priority)
            .count()
    }

    /// Queues a job. Returns the jobs that left the queue because of it: the new job itself
    /// (`Refused`) when there is no room, or a less urgent job it displaced (`Shed`).
    pub fn push(
        &mut self,
        now: Instant,
        tag: JobTag,
        cancel: CancellationToken,
        job: J,
    ) -> Vec<(Queued<J>, Dropped)> {
        let mut dropped = Vec::new();
        let entry = Queued {
            tag,
            cancel,
            enqueued: now,
            seq: self.next_seq,
            job,
        };
        self.next_seq += 1;
        if self.entries.len() >= self.policy.capacity {
            // Cancelled jobs make room first.
            dropped.extend(self.remove_where(|e| e.cancel.is_cancelled(), Dropped::Cancelled));
        }
        if self.entries.len() >= self.policy.capacity {
            let incoming = entry.tag.priority.get();
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    let p = e.tag.priority.get();
                    p > incoming || (p == incoming && p == Priority::Opportunistic)
                })
                .max_by_key(|(_, e)| (e.tag.priority.get(), std::cmp::Reverse(e.seq)))
                .map(|(i, _)| i);
            match victim {
                Some(i) => dropped.push((self.entries.swap_remove(i), Dropped::Shed)),
                None => {
                    dropped.push((entry, Dropped::Refused));
                    return dropped;
                }
            }
        }
        self.entries.push(entry);
        dropped
    }

    /// The job to run now, and the jobs that left without running (cancelled, or stale
    /// opportunistic work).
    pub fn pop(&mut self, now: Instant) -> Popped<J> {
        let stale_after = self.policy.stale_after;
        let mut dropped = self.remove_where(|e| e.cancel.is_cancelled(), Dropped::Cancelled);
        dropped.extend(self.remove_where(
            |e| {
                e.tag.priority.get() == Priority::Opportunistic
                    && now.saturating_duration_since(e.enqueued) > stale_after
            },
            Dropped::Shed,
        ));
        let Some(best) = self.entries.iter().map(|e| e.tag.priority.get()).min() else {
            return (None, dropped);
        };
        let served = &self.served;
        let chosen = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.tag.priority.get() == best)
            .min_by_key(|(_, e)| (served.get(&e.tag.session).copied().unwrap_or(0), e.seq))
            .map(|(i, _)| i)
            .expect("a job of the best class exists");
        // `remove`, not `swap_remove`: the order of the rest does not matter (seq decides), but
        // keeping it makes the queue easy to read in a debugger.
        let job = self.entries.remove(chosen);
        self.serve_clock += 1;
        self.served.insert(job.tag.session, self.serve_clock);
        if self.served.len() > SERVED_MEMORY {
            let waiting: Vec<SessionId> = self.entries.iter().map(|e| e.tag.session).collect();
            self.served.retain(|s, _| waiting.contains(s));
        }
        (Some(job), dropped)
    }

    /// Removes every job (stopping).
    pub fn drain(&mut self) -> Vec<Queued<J>> {
        std::mem::take(&mut self.entries)
    }

    fn remove_where(
        &mut self,
        mut condition: impl FnMut(&Queued<J>) -> bool,
        reason: Dropped,
    ) -> Vec<(Queued<J>, Dropped)> {
        let mut removed = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            if condition(&self.entries[i]) {
                removed.push((self.entries.remove(i), reason));
            } else {
                i += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::TurnId;
    use crate::job::SharedPriority;

    fn tag(session: u64, priority: Priority) -> JobTag {
        JobTag::new(SessionId(session), TurnId(1), priority)
    }

    fn queue(capacity: usize) -> JobQueue<&'static str> {
        JobQueue::new(QueuePolicy {
            capacity,
            stale_after: Duration::from_secs(2),
        })
    }

    fn order(queue: &mut JobQueue<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop(now).0.map(|q| q.job)).collect()
    }

    #[test]
    fn final_jobs_overtake_queued_interim_jobs() {
        let now = Instant::now();
        let mut q = queue(16);
        q.push(
            now,
            tag(1, Priority::Opportunistic),
            CancellationToken::new(),
            "interim 1",
        );
        q.push(
            now,
            tag(2, Priority::Opportunistic),
            CancellationToken::new(),
            "interim 2",
        );
        q.push(
            now,
            tag(3, Priority::Speculative),
            CancellationToken::new(),
            "pause 3",
        );
        q.push(
            now,
            tag(4, Priority::Critical),
            CancellationToken::new(),
            "final 4",
        );
        assert_eq!(
            order(&mut q, now),
            ["final 4", "pause 3", "interim 1", "interim 2"]
        );
    }

    #[test]
    fn two_sessions_at_equal_priority_alternate() {
        let now = Instant::now();
        let mut q = queue(16);
        for job in ["a1", "a2", "a3"] {
            q.push(
                now,
                tag(1, Priority::Critical),
                CancellationToken::new(),
                job,
            );
        }
        for job in ["b1", "b2"] {
            q.push(
                now,
                tag(2, Priority::Critical),
                CancellationToken::new(),
                job,
            );
        }
        assert_eq!(order(&mut q, now), ["a1", "b1", "a2", "b2", "a3"]);
    }

    #[test]
    fn a_session_that_was_served_waits_behind_one_that_was_not() {
        let now = Instant::now();
        let mut q = queue(16);
        q.push(
            now,
            tag(1, Priority::Critical),
            CancellationToken::new(),
            "a1",
        );
        assert_eq!(q.pop(now).0.unwrap().job, "a1");
        q.push(
            now,
            tag(1, Priority::Critical),
            CancellationToken::new(),
            "a2",
        );
        q.push(
            now,
            tag(2, Priority::Critical),
            CancellationToken::new(),
            "b1",
        );
        assert_eq!(order(&mut q, now), ["b1", "a2"]);
    }

    #[test]
    fn cancelled_jobs_never_run() {
        let now = Instant::now();
        let mut q = queue(16);
        let cancel = CancellationToken::new();
        q.push(now, tag(1, Priority::Critical), cancel.clone(), "cancelled");
        q.push(
            now,
            tag(2, Priority::Critical),
            CancellationToken::new(),
            "kept",
        );
        cancel.cancel();
        let (next, dropped) = q.pop(now);
        assert_eq!(next.unwrap().job, "kept");
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].1, Dropped::Cancelled);
    }

    #[test]
    fn under_overload_interim_work_is_shed_and_no_final_job_is_dropped() {
        let now = Instant::now();
        let mut q = queue(4);
        let mut shed = 0;
        for session in 0..4 {
            let out = q.push(
                now,
                tag(session, Priority::Opportunistic),
                CancellationToken::new(),
                "interim",
            );
            assert!(out.is_empty());
        }
        for session in 10..14 {
            let out = q.push(
                now,
                tag(session, Priority::Critical),
                CancellationToken::new(),
                "final",
            );
            assert!(
                out.iter()
                    .all(|(q, why)| q.job == "interim" && *why == Dropped::Shed)
            );
            shed += out.len();
        }
        assert_eq!(shed, 4, "each final displaced an interim");
        // Full of critical work: another interim is refused, and so is a fifth final.
        let out = q.push(
            now,
            tag(20, Priority::Opportunistic),
            CancellationToken::new(),
            "late interim",
        );
        assert_eq!(out[0].1, Dropped::Refused);
        let out = q.push(
            now,
            tag(21, Priority::Critical),
            CancellationToken::new(),
            "fifth final",
        );
        assert_eq!(out[0].1, Dropped::Refused);
        assert_eq!(order(&mut q, now), ["final"; 4]);
    }

    #[test]
    fn a_newer_interim_displaces_an_older_one_when_full() {
        let now = Instant::now();
        let mut q = queue(2);
        q.push(
            now,
            tag(1, Priority::Opportunistic),
            CancellationToken::new(),
            "old",
        );
        q.push(
            now,
            tag(2, Priority::Critical),
            CancellationToken::new(),
            "final",
        );
        let out = q.push(
            now,
            tag(3, Priority::Opportunistic),
            CancellationToken::new(),
            "new",
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.job, out[0].1), ("old", Dropped::Shed));
        assert_eq!(order(&mut q, now), ["final", "new"]);
    }

    #[test]
    fn stale_interim_work_is_shed_instead_of_run() {
        let start = Instant::now();
        let mut q = queue(16);
        q.push(
            start,
            tag(1, Priority::Opportunistic),
            CancellationToken::new(),
            "stale",
        );
        q.push(
            start,
            tag(1, Priority::Speculative),
            CancellationToken::new(),
            "pause",
        );
        let later = start + Duration::from_secs(3);
        let (next, dropped) = q.pop(later);
        assert_eq!(
            next.unwrap().job,
            "pause",
            "speculative work does not go stale"
        );
        assert_eq!((dropped[0].0.job, dropped[0].1), ("stale", Dropped::Shed));
    }

    #[test]
    fn a_raised_priority_counts_while_the_job_waits() {
        let now = Instant::now();
        let mut q = queue(16);
        let held = SharedPriority::new(Priority::Speculative);
        q.push(
            now,
            tag(1, Priority::Critical),
            CancellationToken::new(),
            "other final",
        );
        q.push(
            now,
            JobTag::with_shared(SessionId(2), TurnId(5), &held),
            CancellationToken::new(),
            "held answer",
        );
        q.push(
            now,
            tag(3, Priority::Critical),
            CancellationToken::new(),
            "third final",
        );
        assert_eq!(q.depth(Priority::Speculative), 1);
        held.set(Priority::Critical);
        assert_eq!(q.depth(Priority::Critical), 3);
        assert_eq!(
            order(&mut q, now),
            ["other final", "held answer", "third final"]
        );
    }
}
