//! What a run's driver does next: [`decide`] is a pure function of the definition, the steps'
//! stored states, the attempts in flight and `now`, so every scheduling rule (dependencies,
//! joins, branches, back-off, parallelism, compensation order) is tested without a database.

use super::definition::Definition;
use super::store::StepState;
use std::collections::{HashMap, HashSet};

/// What a driver does next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Move {
    /// Skip step `i` (a branch not taken, or nothing upstream ran).
    Skip(usize),
    /// Start an attempt of step `i`.
    Start(usize),
    /// A step failed for good: compensate these steps, in this order.
    Compensate(Vec<usize>),
    /// Start an attempt of the compensation of step `i`.
    StartCompensation(usize),
    /// The run is over.
    Finish {
        status: &'static str,
        error: Option<String>,
    },
}

/// The decision and when to look again at the latest (a retry coming due).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Plan {
    pub moves: Vec<Move>,
    pub wake_at: Option<i64>,
}

fn settled(status: &str) -> bool {
    matches!(status, "succeeded" | "skipped")
}

/// The compensation row name of step `id`.
pub(crate) fn compensation_of(id: &str) -> String {
    format!("compensate:{id}")
}

/// Decides the next moves of a run from its stored state; `inflight` are the steps (or
/// compensation rows) with an attempt in progress here.
pub(crate) fn decide(
    def: &Definition,
    run_status: &str,
    steps: &HashMap<String, StepState>,
    inflight: &HashSet<String>,
    now: i64,
    max_parallel: usize,
) -> Plan {
    let mut plan = Plan::default();
    let status = |i: usize| {
        steps
            .get(&def.steps[i].id)
            .map_or("pending", |s| s.status.as_str())
    };
    let wake = |at: i64, plan: &mut Plan| {
        plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
    };
    // Undoing completed steps, one at a time in row order: after a failure the run then fails,
    // after a cancel it is cancelled.
    if let Some(ends) = match run_status {
        "compensating" => Some("failed"),
        "cancelling" => Some("cancelled"),
        _ => None,
    } {
        let mut rows: Vec<&StepState> = steps
            .values()
            .filter(|s| s.step.starts_with("compensate:"))
            .collect();
        rows.sort_by_key(|s| s.seq);
        let next = rows
            .iter()
            .find(|s| !matches!(s.status.as_str(), "succeeded" | "failed" | "cancelled"));
        match next {
            None => plan.moves.push(Move::Finish {
                status: ends,
                error: None,
            }),
            Some(row) if inflight.contains(&row.step) => {}
            Some(row) if row.next_attempt_at.is_some_and(|t| t > now) => {
                wake(row.next_attempt_at.unwrap_or(now), &mut plan)
            }
            Some(row) => {
                let id = row.step.trim_start_matches("compensate:");
                if let Some(i) = def.position(id) {
                    plan.moves.push(Move::StartCompensation(i));
                }
            }
        }
        return plan;
    }
    let failed = (0..def.steps.len()).find(|&i| status(i) == "failed");
    if let Some(failed) = failed {
        if inflight.is_empty() {
            let mut done: Vec<(i64, usize)> = (0..def.steps.len())
                .filter(|&i| status(i) == "succeeded" && def.steps[i].compensate.is_some())
                .map(|i| (steps.get(&def.steps[i].id).map_or(0, |s| s.seq), i))
                .collect();
            done.sort_unstable();
            done.reverse();
            let error = format!(
                "step {} failed: {}",
                def.steps[failed].id,
                steps
                    .get(&def.steps[failed].id)
                    .and_then(|s| s.error.clone())
                    .unwrap_or_default()
            );
            if done.is_empty() {
                plan.moves.push(Move::Finish {
                    status: "failed",
                    error: Some(error),
                });
            } else {
                plan.moves
                    .push(Move::Compensate(done.into_iter().map(|(_, i)| i).collect()));
            }
        }
        return plan;
    }
    let mut running = inflight.len();
    let mut skipped_now = HashSet::new();
    for (i, step) in def.steps.iter().enumerate() {
        if status(i) != "pending" || inflight.contains(&step.id) {
            continue;
        }
        if !def.needs[i]
            .iter()
            .all(|&d| settled(status(d)) || skipped_now.contains(&d))
        {
            continue;
        }
        let off_branch = def.branches[i].iter().any(|&(c, taken)| {
            skipped_now.contains(&c)
                || status(c) == "skipped"
                || steps
                    .get(&def.steps[c].id)
                    .and_then(|s| s.output.as_ref())
                    .and_then(|o| o["result"].as_bool())
                    != Some(taken)
        });
        let nothing_upstream = !def.needs[i].is_empty()
            && def.needs[i]
                .iter()
                .all(|&d| status(d) == "skipped" || skipped_now.contains(&d));
        if off_branch || nothing_upstream {
            skipped_now.insert(i);
            plan.moves.push(Move::Skip(i));
            continue;
        }
        let due = steps.get(&step.id).and_then(|s| s.next_attempt_at);
        if let Some(at) = due.filter(|&at| at > now) {
            wake(at, &mut plan);
            continue;
        }
        if running >= max_parallel {
            continue;
        }
        running += 1;
        plan.moves.push(Move::Start(i));
    }
    let all_done = (0..def.steps.len()).all(|i| settled(status(i)) || skipped_now.contains(&i));
    if all_done && inflight.is_empty() {
        plan.moves.push(Move::Finish {
            status: "succeeded",
            error: None,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(step: &str, status: &str, seq: i64) -> (String, StepState) {
        (
            step.to_string(),
            StepState {
                step: step.into(),
                status: status.into(),
                attempts: 1,
                interruptions: 0,
                idempotency_key: format!("r:{step}"),
                output: (status == "succeeded").then(|| json!({"result": true})),
                error: None,
                next_attempt_at: None,
                started_at: None,
                finished_at: None,
                seq,
            },
        )
    }

    fn def() -> Definition {
        super::super::definition::parse(&json!({"steps": [
            {"id": "a", "type": "join", "compensate": {"type": "http", "url": "http://x/undo-a"}},
            {"id": "b", "type": "join", "depends_on": ["a"], "compensate": {"type": "http", "url": "http://x/undo-b"}},
            {"id": "c", "type": "join", "depends_on": ["a"]},
            {"id": "d", "type": "join", "depends_on": ["b", "c"]},
        ]}))
        .unwrap()
    }

    #[test]
    fn independent_steps_start_together_and_a_join_waits_for_all() {
        let def = def();
        let none = HashSet::new();
        let steps: HashMap<_, _> = [row("a", "succeeded", 1)].into_iter().collect();
        let plan = decide(&def, "running", &steps, &none, 0, 8);
        assert_eq!(plan.moves, vec![Move::Start(1), Move::Start(2)]);
        let steps: HashMap<_, _> = [
            row("a", "succeeded", 1),
            row("b", "succeeded", 2),
            row("c", "running", 0),
        ]
        .into_iter()
        .collect();
        let inflight: HashSet<String> = ["c".to_string()].into();
        assert!(
            decide(&def, "running", &steps, &inflight, 0, 8)
                .moves
                .is_empty()
        );
        let plan = decide(&def, "running", &steps, &none, 0, 1);
        assert!(
            plan.moves.is_empty(),
            "c is still running elsewhere: {plan:?}"
        );
    }

    #[test]
    fn a_failure_compensates_completed_steps_newest_first() {
        let def = def();
        let none = HashSet::new();
        let mut steps: HashMap<_, _> = [
            row("a", "succeeded", 1),
            row("b", "succeeded", 2),
            row("c", "failed", 0),
        ]
        .into_iter()
        .collect();
        let plan = decide(&def, "running", &steps, &none, 0, 8);
        assert_eq!(plan.moves, vec![Move::Compensate(vec![1, 0])]);
        steps.extend([
            row("compensate:b", "pending", 3),
            row("compensate:a", "pending", 4),
        ]);
        let plan = decide(&def, "compensating", &steps, &none, 0, 8);
        assert_eq!(plan.moves, vec![Move::StartCompensation(1)]);
        steps.extend([row("compensate:b", "succeeded", 3)]);
        let plan = decide(&def, "compensating", &steps, &none, 0, 8);
        assert_eq!(plan.moves, vec![Move::StartCompensation(0)]);
    }

    #[test]
    fn a_cancelled_run_undoes_its_rows_in_order_then_ends_cancelled() {
        let def = def();
        let none = HashSet::new();
        let mut steps: HashMap<_, _> = [
            row("a", "succeeded", 1),
            row("b", "succeeded", 2),
            row("c", "cancelled", 0),
            row("compensate:b", "pending", 3),
            row("compensate:a", "pending", 4),
        ]
        .into_iter()
        .collect();
        let plan = decide(&def, "cancelling", &steps, &none, 0, 8);
        assert_eq!(plan.moves, vec![Move::StartCompensation(1)]);
        let busy: HashSet<String> = ["compensate:b".to_string()].into();
        assert!(
            decide(&def, "cancelling", &steps, &busy, 0, 8)
                .moves
                .is_empty()
        );
        steps.extend([
            row("compensate:b", "succeeded", 3),
            row("compensate:a", "failed", 4),
        ]);
        let plan = decide(&def, "cancelling", &steps, &none, 0, 8);
        assert_eq!(
            plan.moves,
            vec![Move::Finish {
                status: "cancelled",
                error: None
            }]
        );
        steps.retain(|id, _| !id.starts_with("compensate:"));
        let plan = decide(&def, "cancelling", &steps, &none, 0, 8);
        assert_eq!(plan.moves.len(), 1, "nothing to undo: it ends at once");
    }

    #[test]
    fn retries_wait_for_their_back_off() {
        let def = def();
        let mut steps: HashMap<_, _> = [row("a", "pending", 0)].into_iter().collect();
        steps.get_mut("a").unwrap().next_attempt_at = Some(500);
        let plan = decide(&def, "running", &steps, &HashSet::new(), 100, 8);
        assert_eq!((plan.moves.len(), plan.wake_at), (0, Some(500)));
        let plan = decide(&def, "running", &steps, &HashSet::new(), 500, 8);
        assert_eq!(plan.moves, vec![Move::Start(0)]);
    }
}
