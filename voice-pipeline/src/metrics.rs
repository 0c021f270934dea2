//! Prometheus metrics of the voice pipeline, through the `metrics` facade: the binary installs
//! the exporter (`metrics-exporter-prometheus`); without one, recording is a no-op.
//!
//! Every completed turn records its stage latencies (seconds from the end of the user's speech)
//! as histograms and counts itself in [`TURNS_TOTAL`], labelled `interrupted="true"|"false"`.
//!
//! ```
//! dartmouth_voice::metrics::describe();
//! dartmouth_voice::metrics::record_turn(&dartmouth_voice::agent::TurnRecord::default());
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};

use crate::agent::TurnRecord;

/// Histogram: end of user speech → end-of-turn decision (media time).
pub const TURN_END_OF_TURN_SECONDS: &str = "dartmouth_turn_end_of_turn_seconds";
/// Histogram: end of user speech → final transcript.
pub const TURN_STT_FINAL_SECONDS: &str = "dartmouth_turn_stt_final_seconds";
/// Histogram: end of user speech → first LLM token.
pub const TURN_LLM_FIRST_TOKEN_SECONDS: &str = "dartmouth_turn_llm_first_token_seconds";
/// Histogram: end of user speech → first synthesized audio queued for playback.
pub const TURN_TTS_FIRST_AUDIO_SECONDS: &str = "dartmouth_turn_tts_first_audio_seconds";
/// Histogram: end of user speech → first agent audio frame handed to the media side.
pub const TURN_FIRST_FRAME_OUT_SECONDS: &str = "dartmouth_turn_first_frame_out_seconds";
/// Counter of completed turns, label `interrupted`.
pub const TURNS_TOTAL: &str = "dartmouth_turns_total";
/// Counter of answers started at a pause and dropped because the person went on speaking.
pub const PREEMPTIVE_ANSWERS_DROPPED_TOTAL: &str = "dartmouth_preemptive_answers_dropped_total";
/// Counter of user turns that could not be answered, label `stage` (`stt`, `llm`).
pub const TURNS_FAILED_TOTAL: &str = "dartmouth_turns_failed_total";
/// Counter of user audio frames dropped because an agent's listening thread fell behind.
pub const AGENT_DROPPED_FRAMES_TOTAL: &str = "dartmouth_agent_dropped_frames_total";
/// Counter of agent egress ticks (20 ms frames due) that ran more than a frame late.
pub const EGRESS_DEADLINES_MISSED_TOTAL: &str = "dartmouth_agent_egress_deadlines_missed_total";

/// Egress ticks so far, every agent session of the process.
static EGRESS_TICKS: AtomicU64 = AtomicU64::new(0);
/// Egress ticks that ran more than [`crate::frame::FRAME_DURATION`] after they were due.
static EGRESS_MISSED: AtomicU64 = AtomicU64::new(0);
/// The latest tick's lateness, worst since [`take_egress_worst_lateness`], in microseconds.
static EGRESS_WORST_US: AtomicU64 = AtomicU64::new(0);

/// How the agents' 20 ms egress clocks kept time, summed over every session of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressTiming {
    /// Ticks (frame deadlines) so far.
    pub ticks: u64,
    /// Ticks that ran more than one frame (20 ms) after they were due: that frame reached the
    /// media side after the next one was due (a gap or a burst at the listener).
    pub missed: u64,
}

/// Records one egress tick that was due at `due` and ran at `now`: two relaxed atomic adds and
/// a max, no lock, no allocation (the Prometheus counter is touched only on a miss).
pub fn record_egress_tick(due: std::time::Instant, now: std::time::Instant) {
    let late = now.saturating_duration_since(due);
    EGRESS_TICKS.fetch_add(1, Ordering::Relaxed);
    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
    EGRESS_WORST_US.fetch_max(late_us, Ordering::Relaxed);
    if late > crate::frame::FRAME_DURATION {
        EGRESS_MISSED.fetch_add(1, Ordering::Relaxed);
        counter!(EGRESS_DEADLINES_MISSED_TOTAL).increment(1);
    }
}

/// The egress ticks and missed deadlines so far (take two readings for an interval).
pub fn egress_timing() -> EgressTiming {
    EgressTiming {
        ticks: EGRESS_TICKS.load(Ordering::Relaxed),
        missed: EGRESS_MISSED.load(Ordering::Relaxed),
    }
}

/// The worst egress lateness since the last call (and starts a new interval).
pub fn take_egress_worst_lateness() -> Duration {
    Duration::from_micros(EGRESS_WORST_US.swap(0, Ordering::Relaxed))
}

/// Registers the descriptions and units of every metric above with the installed recorder
/// (call once after installing it; harmless without one).
pub fn describe() {
    let histograms = [
        (
            TURN_END_OF_TURN_SECONDS,
            "End of user speech to the end-of-turn decision",
        ),
        (
            TURN_STT_FINAL_SECONDS,
            "End of user speech to the final transcript",
        ),
        (
            TURN_LLM_FIRST_TOKEN_SECONDS,
            "End of user speech to the first LLM token",
        ),
        (
            TURN_TTS_FIRST_AUDIO_SECONDS,
            "End of user speech to the first synthesized audio",
        ),
        (
            TURN_FIRST_FRAME_OUT_SECONDS,
            "End of user speech to the first agent audio frame sent",
        ),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_counter!(
        TURNS_TOTAL,
        Unit::Count,
        "Agent turns completed, by whether the person barged in"
    );
    describe_counter!(
        PREEMPTIVE_ANSWERS_DROPPED_TOTAL,
        Unit::Count,
        "Answers started at a pause and dropped because the person went on speaking"
    );
    describe_counter!(
        AGENT_DROPPED_FRAMES_TOTAL,
        Unit::Count,
        "User audio frames dropped because an agent's listening fell behind"
    );
    describe_counter!(
        EGRESS_DEADLINES_MISSED_TOTAL,
        Unit::Count,
        "Agent audio frames handed to the media side more than one 20 ms frame after they were due"
    );
    describe_counter!(
        TURNS_FAILED_TOTAL,
        Unit::Count,
        "User turns that could not be answered (the person was told), by stage"
    );
    use crate::{admission, listening, scheduler};
    describe_gauge!(
        scheduler::MODEL_QUEUE_DEPTH,
        Unit::Count,
        "Model jobs waiting, by model and priority class"
    );
    describe_histogram!(
        scheduler::MODEL_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time a model job waited before it ran, by model and class"
    );
    describe_counter!(
        scheduler::MODEL_JOBS_DROPPED_TOTAL,
        Unit::Count,
        "Model jobs that left the queue without running, by model, class and reason"
    );
    describe_counter!(
        scheduler::MODEL_BUSY_MS_TOTAL,
        Unit::Milliseconds,
        "Time each model spent running jobs"
    );
    describe_gauge!(
        listening::LISTEN_SESSIONS,
        Unit::Count,
        "Sessions the listening service serves"
    );
    describe_histogram!(
        listening::LISTEN_TICK_SECONDS,
        Unit::Seconds,
        "Compute per 20 ms listening tick (batched VAD for every session)"
    );
    describe_histogram!(
        listening::LISTEN_VERDICT_SECONDS,
        Unit::Seconds,
        "End-of-turn question to answer (batched Smart Turn)"
    );
    describe_gauge!(
        admission::AGENT_CAPACITY,
        Unit::Count,
        "Agent sessions the machine carries"
    );
    describe_gauge!(
        admission::AGENT_SESSIONS,
        Unit::Count,
        "Agent sessions running"
    );
    describe_counter!(
        admission::AGENT_SESSIONS_REFUSED_TOTAL,
        Unit::Count,
        "Agent sessions refused, by reason (capacity, saturated)"
    );
}

/// Records one completed turn: each latency it has, and the turn count.
pub fn record_turn(record: &TurnRecord) {
    let observe = |name: &'static str, value: Option<Duration>| {
        if let Some(value) = value {
            histogram!(name).record(value.as_secs_f64());
        }
    };
    observe(
        TURN_END_OF_TURN_SECONDS,
        record.reason.map(|_| record.end_of_turn),
    );
    observe(TURN_STT_FINAL_SECONDS, record.stt_final);
    observe(TURN_LLM_FIRST_TOKEN_SECONDS, record.llm_first_token);
    observe(TURN_TTS_FIRST_AUDIO_SECONDS, record.tts_first_audio);
    observe(TURN_FIRST_FRAME_OUT_SECONDS, record.first_frame_out);
    let interrupted = if record.interrupted { "true" } else { "false" };
    counter!(TURNS_TOTAL, "interrupted" => interrupted).increment(1);
}

/// Counts one preemptive answer dropped (the LLM work it cost was wasted).
pub fn record_preemptive_answer_dropped() {
    counter!(PREEMPTIVE_ANSWERS_DROPPED_TOTAL).increment(1);
}

/// Counts one user turn that could not be answered, failing at `stage`.
pub fn record_turn_failed(stage: &'static str) {
    counter!(TURNS_FAILED_TOTAL, "stage" => stage).increment(1);
}

/// Counts one user audio frame dropped by an agent's listening queue.
pub fn record_dropped_frame() {
    counter!(AGENT_DROPPED_FRAMES_TOTAL).increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString};

    use super::*;
    use crate::frame::TurnId;

    /// Records which metrics were touched, as `name{label=value}`.
    #[derive(Default)]
    struct Touched(Mutex<Vec<String>>);

    impl Touched {
        fn note(&self, key: &Key) {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            self.0.lock().unwrap().push(name);
        }
    }

    impl Recorder for Touched {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.note(key);
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.note(key);
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.note(key);
            Histogram::noop()
        }
    }

    #[test]
    fn a_turn_records_each_latency_it_has_and_counts_itself() {
        let touched = Touched::default();
        let ms = Duration::from_millis;
        let record = TurnRecord {
            turn: TurnId(1),
            reason: Some(crate::turn::TurnEndReason::SilenceTimeout),
            end_of_turn: ms(350),
            stt_final: Some(ms(500)),
            llm_first_token: Some(ms(800)),
            tts_first_audio: None,
            first_frame_out: Some(ms(1_100)),
            interrupted: true,
            ..TurnRecord::default()
        };
        metrics::with_local_recorder(&touched, || {
            record_turn(&record);
            record_dropped_frame();
        });
        let touched = touched.0.into_inner().unwrap();
        assert_eq!(
            touched,
            [
                "dartmouth_turn_end_of_turn_seconds{}",
                "dartmouth_turn_stt_final_seconds{}",
                "dartmouth_turn_llm_first_token_seconds{}",
                "dartmouth_turn_first_frame_out_seconds{}",
                "dartmouth_turns_total{interrupted=true}",
                "dartmouth_agent_dropped_frames_total{}",
            ]
        );
    }
}
