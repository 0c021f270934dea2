//! Keeping the process's resident memory flat over days of calls (glibc malloc).
//!
//! Measured with `dartmouth bench soak` (20 callers for 10 minutes against a capacity of 6, so
//! thousands of joins come and go): after warm-up, resident memory rose in steps of 30–120 MiB,
//! each step when a new thread (a blocking-pool worker starting sessions) first allocated, and
//! none of it came back after every session had ended — 11 % over the run, 9 % with
//! `MALLOC_ARENA_MAX=2`. Nothing was leaked per join (flat between the steps over thousands of
//! refused joins); the allocator kept freed pages: glibc gives each thread an arena of its own
//! (up to 8 per core) and returns a heap's free pages to the system only from its top.
//!
//! So the gateway (a) caps the arenas at two per core, and (b) asks glibc to hand free pages back
//! ([`Trimmer`]) every [`TRIM_EVERY`], off the async runtime.

use std::sync::mpsc;
use std::time::Duration;

/// How often free heap pages are returned to the system.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Caps glibc's malloc arenas at two per core, unless `MALLOC_ARENA_MAX` is set (then glibc
/// already honours it). Call first thing in `main`, before other threads exist.
pub fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = i32::try_from(cores * 2).unwrap_or(i32::MAX).max(2);
        // SAFETY: mallopt only changes allocator parameters; called before other threads run.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Returns free heap pages of every arena to the system now; the bytes it could not return are
/// still counted by the kernel as resident.
pub fn trim_now() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock in turn).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A thread that trims the heap every `every` until dropped.
pub struct Trimmer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trimmer {
    /// Starts trimming every `every`.
    pub fn start(every: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    trim_now();
                }
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What trimming does to resident memory is measured by `dartmouth bench soak` (a whole
    // process over minutes); a unit test's RSS moves with whatever other tests load meanwhile.
    #[test]
    fn the_trimmer_trims_and_stops_when_dropped() {
        let trimmer = Trimmer::start(Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(30));
        assert!(trimmer.thread.as_ref().is_some_and(|t| !t.is_finished()));
        let started = std::time::Instant::now();
        drop(trimmer);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the thread ends at once"
        );
    }
}
