//! A bounded, drop-oldest queue of audio frames between the media side and a session's
//! listening thread. A slow consumer loses the oldest audio, never blocks the producer.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::frame::AudioFrame;

/// Frames queued before the oldest is dropped: one second of 20 ms frames.
pub const INGEST_FRAME_CAPACITY: usize = 50;

#[derive(Debug, Default)]
struct State {
    /// Frames and the instants they were pushed.
    frames: VecDeque<(AudioFrame, Instant)>,
    dropped: u64,
    closed: bool,
}

/// Drop-oldest frame queue shared by one producer and one consumer thread.
#[derive(Debug)]
pub struct AudioQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl AudioQueue {
    /// A queue of `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::with_capacity(capacity),
                ..State::default()
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues a frame, dropping the oldest when full (counted in
    /// [`crate::metrics::AGENT_DROPPED_FRAMES_TOTAL`]). Returns false once the queue is closed.
    pub fn push(&self, frame: AudioFrame) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return false;
        }
        if state.frames.len() == self.capacity {
            state.frames.pop_front();
            state.dropped += 1;
            crate::metrics::record_dropped_frame();
        }
        state.frames.push_back((frame, Instant::now()));
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Waits up to `timeout` for a frame, returned with the instant it was pushed (its arrival).
    /// `Err(())` once closed and drained.
    #[allow(clippy::result_unit_err)]
    pub fn pop(&self, timeout: Duration) -> Result<Option<(AudioFrame, Instant)>, ()> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.frames.is_empty() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        match state.frames.pop_front() {
            Some(entry) => Ok(Some(entry)),
            None if state.closed => Err(()),
            None => Ok(None),
        }
    }

    /// The oldest frame and its arrival, if one is queued (never waits).
    pub fn try_pop(&self) -> Option<(AudioFrame, Instant)> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .frames
            .pop_front()
    }

    /// Whether the queue was closed and everything in it was taken.
    pub fn is_closed_and_empty(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.closed && state.frames.is_empty()
    }

    /// Frames dropped because the consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }

    /// Stops the queue: pushes fail, the consumer drains what is left and then sees the end.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: i16) -> AudioFrame {
        AudioFrame::new(&[n; 320], 16_000, 1, Duration::ZERO).unwrap()
    }

    #[test]
    fn the_oldest_frame_is_dropped_when_full() {
        let queue = AudioQueue::new(2);
        for n in 1..=3 {
            assert!(queue.push(frame(n)));
        }
        assert_eq!(queue.dropped(), 1);
        assert_eq!(
            queue.pop(Duration::ZERO).unwrap().unwrap().0.samples()[0],
            2
        );
        assert_eq!(
            queue.pop(Duration::ZERO).unwrap().unwrap().0.samples()[0],
            3
        );
        assert_eq!(queue.pop(Duration::from_millis(1)).unwrap(), None);
    }

    #[test]
    fn closing_drains_then_ends() {
        let queue = AudioQueue::new(4);
        queue.push(frame(7));
        queue.close();
        assert!(!queue.push(frame(8)));
        assert!(queue.pop(Duration::ZERO).unwrap().is_some());
        assert!(queue.pop(Duration::ZERO).is_err());
    }
}
