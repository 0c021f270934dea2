//! The scheduler's thread with fake models: ordering, cancellation inside a job, shedding,
//! panics and shutdown. Steps are driven by channels, so nothing depends on timing.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use super::*;
use crate::frame::TurnId;
use crate::job::SessionId;

const WAIT: Duration = Duration::from_secs(10);

fn tag(session: u64, priority: Priority) -> JobTag {
    JobTag::new(SessionId(session), TurnId(1), priority)
}

/// A model whose jobs run step by step, one step per message on `steps`.
struct Stepper {
    steps: Receiver<()>,
}

fn stepper() -> (ModelScheduler<Stepper>, Sender<()>) {
    let (step_tx, steps) = channel();
    let scheduler = ModelScheduler::spawn("stepper", QueuePolicy::default(), move || {
        Ok::<_, ()>(Stepper { steps })
    })
    .unwrap();
    (scheduler, step_tx)
}

/// Submits a job that records `name` in `log` when it starts and, each step, until cancelled
/// or `steps` steps are done.
fn submit_steps(
    scheduler: &ModelScheduler<Stepper>,
    tag: JobTag,
    cancel: CancellationToken,
    name: &'static str,
    steps: usize,
    log: &Sender<String>,
) {
    let log = log.clone();
    let refused_log = log.clone();
    scheduler.submit(
        tag,
        cancel,
        move |model, ctx| {
            log.send(format!("{name} start")).unwrap();
            for step in 0..steps {
                if ctx.is_cancelled() {
                    log.send(format!("{name} stopped at {step}")).unwrap();
                    return;
                }
                model.steps.recv_timeout(WAIT).unwrap();
            }
            log.send(format!("{name} done")).unwrap();
        },
        move |error| {
            refused_log
                .send(format!("{name} refused: {error}"))
                .unwrap()
        },
    );
}

fn next(log: &Receiver<String>) -> String {
    log.recv_timeout(WAIT).expect("the scheduler reports")
}

#[test]
fn final_jobs_overtake_queued_interim_jobs_on_the_model_thread() {
    let (scheduler, steps) = stepper();
    let (log_tx, log) = channel();
    // Occupy the model so the next jobs queue up.
    submit_steps(
        &scheduler,
        tag(9, Priority::Critical),
        CancellationToken::new(),
        "busy",
        1,
        &log_tx,
    );
    assert_eq!(next(&log), "busy start");
    submit_steps(
        &scheduler,
        tag(1, Priority::Opportunistic),
        CancellationToken::new(),
        "interim",
        0,
        &log_tx,
    );
    submit_steps(
        &scheduler,
        tag(2, Priority::Critical),
        CancellationToken::new(),
        "final",
        0,
        &log_tx,
    );
    assert_eq!(scheduler.load().queued, [1, 0, 1]);
    steps.send(()).unwrap();
    let order: Vec<String> = (0..5).map(|_| next(&log)).collect();
    assert_eq!(
        order,
        [
            "busy done",
            "final start",
            "final done",
            "interim start",
            "interim done"
        ]
    );
}

#[test]
fn a_cancelled_job_frees_the_model_within_one_step() {
    let (scheduler, steps) = stepper();
    let (log_tx, log) = channel();
    let cancel = CancellationToken::new();
    submit_steps(
        &scheduler,
        tag(1, Priority::Critical),
        cancel.clone(),
        "long",
        1_000,
        &log_tx,
    );
    submit_steps(
        &scheduler,
        tag(2, Priority::Critical),
        CancellationToken::new(),
        "next",
        0,
        &log_tx,
    );
    assert_eq!(next(&log), "long start");
    steps.send(()).unwrap();
    steps.send(()).unwrap();
    cancel.cancel();
    // The step in progress completes; the job sees the cancellation before the one after.
    steps.send(()).unwrap();
    let stopped = next(&log);
    assert!(stopped.starts_with("long stopped at"), "{stopped}");
    let at: usize = stopped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        at <= 3,
        "stopped within one step of the cancellation: {stopped}"
    );
    assert_eq!(next(&log), "next start");
}

#[test]
fn a_job_cancelled_while_queued_never_runs_and_says_so() {
    let (scheduler, steps) = stepper();
    let (log_tx, log) = channel();
    submit_steps(
        &scheduler,
        tag(9, Priority::Critical),
        CancellationToken::new(),
        "busy",
        1,
        &log_tx,
    );
    assert_eq!(next(&log), "busy start");
    let cancel = CancellationToken::new();
    submit_steps(
        &scheduler,
        tag(1, Priority::Critical),
        cancel.clone(),
        "gone",
        0,
        &log_tx,
    );
    cancel.cancel();
    steps.send(()).unwrap();
    assert_eq!(next(&log), "busy done");
    assert!(next(&log).starts_with("gone refused: stepper: cancelled"));
}

#[test]
fn under_overload_interim_work_is_shed_with_a_reason_and_finals_all_run() {
    let (step_tx, steps) = channel();
    let scheduler = ModelScheduler::spawn(
        "small",
        QueuePolicy {
            capacity: 3,
            stale_after: Duration::from_secs(60),
        },
        move || Ok::<_, ()>(Stepper { steps }),
    )
    .unwrap();
    let (log_tx, log) = channel();
    submit_steps(
        &scheduler,
        tag(9, Priority::Critical),
        CancellationToken::new(),
        "busy",
        1,
        &log_tx,
    );
    assert_eq!(next(&log), "busy start");
    for session in 1..=3 {
        submit_steps(
            &scheduler,
            tag(session, Priority::Opportunistic),
            CancellationToken::new(),
            "interim",
            0,
            &log_tx,
        );
    }
    for session in 4..=6 {
        submit_steps(
            &scheduler,
            tag(session, Priority::Critical),
            CancellationToken::new(),
            "final",
            0,
            &log_tx,
        );
    }
    for _ in 0..3 {
        let line = next(&log);
        assert!(
            line.starts_with("interim refused:") && line.contains("shed"),
            "{line}"
        );
    }
    step_tx.send(()).unwrap();
    let rest: Vec<String> = (0..7).map(|_| next(&log)).collect();
    assert_eq!(rest[0], "busy done");
    assert_eq!(rest.iter().filter(|l| *l == "final done").count(), 3);
    assert!(log.try_recv().is_err(), "no interim ran");
}

#[test]
fn a_panicking_job_does_not_kill_the_model_and_stopping_refuses_the_rest() {
    let scheduler =
        ModelScheduler::spawn("panicky", QueuePolicy::default(), || Ok::<_, ()>(7u8)).unwrap();
    scheduler.submit(
        tag(1, Priority::Critical),
        CancellationToken::new(),
        |_, _| panic!("boom"),
        |_| {},
    );
    let (tx, rx) = channel();
    scheduler.submit(
        tag(1, Priority::Critical),
        CancellationToken::new(),
        move |m, _| tx.send(*m).unwrap(),
        |_| {},
    );
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 7);

    let err =
        ModelScheduler::<u8>::spawn("bad", QueuePolicy::default(), || Err::<u8, _>("no file"))
            .unwrap_err();
    assert!(matches!(err, SchedulerError::Load("no file")));
}

#[test]
fn stopping_refuses_waiting_jobs() {
    let (scheduler, steps) = stepper();
    let (log_tx, log) = channel();
    submit_steps(
        &scheduler,
        tag(9, Priority::Critical),
        CancellationToken::new(),
        "busy",
        1,
        &log_tx,
    );
    assert_eq!(next(&log), "busy start");
    submit_steps(
        &scheduler,
        tag(1, Priority::Critical),
        CancellationToken::new(),
        "waiting",
        0,
        &log_tx,
    );
    let stopper = std::thread::spawn(move || drop(scheduler));
    assert!(next(&log).starts_with("waiting refused: stepper: worker stopped"));
    steps.send(()).unwrap();
    stopper.join().unwrap();
}

#[test]
fn a_job_that_yields_goes_on_after_other_sessions_work() {
    let scheduler =
        ModelScheduler::spawn("slicer", QueuePolicy::default(), || Ok::<_, ()>(())).unwrap();
    let (gate_tx, gate) = channel::<()>();
    let (log_tx, log) = channel::<String>();
    // Hold the model so everything below queues up first.
    let gate = std::sync::Mutex::new(gate);
    scheduler.submit(
        tag(9, Priority::Critical),
        CancellationToken::new(),
        move |_, _| gate.lock().unwrap().recv_timeout(WAIT).unwrap(),
        |_| {},
    );
    fn slice(log: Sender<String>, left: usize) -> impl FnOnce(&mut (), &JobContext<'_, ()>) + Send {
        move |_, ctx| {
            log.send(format!("a slice {left}")).unwrap();
            if left > 1 {
                ctx.requeue(Priority::Speculative, slice(log, left - 1));
            }
        }
    }
    scheduler.submit(
        tag(1, Priority::Critical),
        CancellationToken::new(),
        slice(log_tx.clone(), 3),
        |_| {},
    );
    let b = log_tx.clone();
    scheduler.submit(
        tag(2, Priority::Critical),
        CancellationToken::new(),
        move |_, _| b.send("b first chunk".into()).unwrap(),
        |_| {},
    );
    let c = log_tx.clone();
    scheduler.submit(
        tag(3, Priority::Speculative),
        CancellationToken::new(),
        move |_, _| c.send("c speculative".into()).unwrap(),
        |_| {},
    );
    gate_tx.send(()).unwrap();
    let order: Vec<String> = (0..5).map(|_| next(&log)).collect();
    assert_eq!(
        order,
        [
            "a slice 3",
            "b first chunk",
            "c speculative",
            "a slice 2",
            "a slice 1"
        ],
        "the rest of a's answer waits behind b's critical work and takes turns with c"
    );
}
