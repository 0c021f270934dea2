//! Starting runs without an API call: cron schedules (evaluated against the engine's clock, one
//! firing per tick across sidecars, missed ticks coalescing into one run) and event triggers
//! (every event on the bus whose topic matches a workflow's pattern starts one run, once per
//! event id).

use super::definition::Trigger;
use super::supervisor::start_run;
use super::{Cron, store};
use crate::error::ApiError;
use crate::events::topic_matches;
use crate::state::{AppState, WeakState};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest wait between passes over the schedules (cron has minute resolution).
const SCHEDULE_POLL: Duration = Duration::from_secs(1);
/// How long event triggers loaded from the database are used before they are read again
/// (definitions stored by another sidecar).
const TRIGGER_REFRESH: Duration = Duration::from_secs(5);

/// Fires due schedule ticks until the state is dropped.
pub(crate) async fn schedules(weak: WeakState, cancel: CancellationToken) {
    let (clock, mut changes, poll) = {
        let Some(state) = weak.upgrade() else { return };
        let clock = state.workflows.clock().clone();
        let changes = clock.changes();
        let poll = Duration::from_millis(state.config.workflows.poll_ms.max(10)).min(SCHEDULE_POLL);
        (clock, changes, poll)
    };
    loop {
        let now = clock.now();
        {
            let Some(state) = weak.upgrade() else { return };
            if let Err(e) = fire_due(&state, now).await {
                tracing::warn!(error = %e, "workflow schedules pass failed");
            }
            state
                .workflows
                .schedules_checked_at
                .store(now, Ordering::Release);
        }
        match changes.as_mut() {
            Some(moved) => tokio::select! {
                _ = cancel.cancelled() => return,
                _ = moved.changed() => {}
                _ = tokio::time::sleep(poll) => {}
            },
            None => tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            },
        }
    }
}

/// Starts one run for each schedule due at clock time `now`.
async fn fire_due(state: &AppState, now: i64) -> Result<(), ApiError> {
    for (workflow, text, next_at) in store::due_schedules(&state.db, now).await? {
        let cron = match Cron::parse(&text) {
            Ok(cron) => cron,
            Err(e) => {
                tracing::warn!(workflow, error = %e, "unreadable stored schedule");
                continue;
            }
        };
        let tick = cron.latest_between(next_at, now).unwrap_or(next_at);
        let next = cron.next_after(now).unwrap_or(i64::MAX);
        if !store::advance_schedule(&state.db, &workflow, &text, next_at, next).await? {
            continue;
        }
        let input = json!({"scheduled_at": tick, "cron": text});
        let dedup = format!("schedule:{text}:{tick}");
        match start_run(state, &workflow, None, "schedule", input, Some(dedup)).await {
            Ok((run, _)) => tracing::info!(workflow, run, tick, "schedule started a workflow run"),
            Err(e) => tracing::warn!(workflow, error = %e, "schedule could not start a run"),
        }
    }
    Ok(())
}

/// The event triggers of the latest versions: (workflow, topic pattern).
async fn load_triggers(state: &AppState) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for version in store::list_latest(&state.db, None).await? {
        let triggers: Vec<Trigger> =
            serde_json::from_value(version.definition["triggers"].clone()).unwrap_or_default();
        for trigger in triggers {
            if let Trigger::Event { topic } = trigger {
                out.push((version.name.clone(), topic));
            }
        }
    }
    Ok(out)
}

/// Starts runs for matching events until the state is dropped. Events published while no
/// sidecar listens do not start runs.
pub(crate) async fn events(weak: WeakState, cancel: CancellationToken) {
    let subscription = match weak.upgrade() {
        Some(state) => state.events.subscribe(">").await,
        None => return,
    };
    let mut subscription = match subscription {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "workflow event triggers cannot subscribe; they are off");
            return;
        }
    };
    let mut triggers: Vec<(String, String)> = Vec::new();
    let mut loaded = Instant::now();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = subscription.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let Some(state) = weak.upgrade() else { return };
        let dirty = state.workflows.triggers_dirty.swap(false, Ordering::AcqRel);
        if dirty || loaded.elapsed() > TRIGGER_REFRESH {
            match load_triggers(&state).await {
                Ok(t) => {
                    triggers = t;
                    loaded = Instant::now();
                }
                Err(e) => {
                    state
                        .workflows
                        .triggers_dirty
                        .store(true, Ordering::Release);
                    tracing::warn!(error = %e, "loading workflow triggers failed");
                }
            }
        }
        for (workflow, pattern) in &triggers {
            // A workflow's own events never start it again.
            let own = event.topic.starts_with("workflow.")
                && event.data["workflow"].as_str() == Some(workflow.as_str());
            if own || !topic_matches(pattern, &event.topic) {
                continue;
            }
            let dedup = format!("event:{}", event.id);
            match start_run(&state, workflow, None, "event", json!(event), Some(dedup)).await {
                Ok((run, true)) => {
                    tracing::info!(workflow, run, topic = %event.topic, "event started a workflow run")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(workflow, error = %e, "event could not start a run"),
            }
        }
    }
}
