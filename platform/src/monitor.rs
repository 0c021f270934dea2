//! SLA monitoring and alerts. An SLA names an agent, an objective (the share of failed turns, or
//! the 95th percentile of voice-to-voice latency) and a target over a window; it is measured from
//! the turn events the gateway publishes (`conversation.turn`, `conversation.turn_failed`).
//!
//! Burn rate is the measured value over the target. An alert fires when both the whole window
//! and its recent part (a twelfth, at least [`MIN_SHORT_WINDOW_MS`]) burn at 1 or more, so one old
//! burst does not page and a fresh one pages at once; it resolves when the recent part stops
//! burning. Each change is published once, as `alert.firing` or `alert.resolved` — webhooks
//! subscribed to `alert.*` deliver it (signed, retried, deduplicated by event id).

use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::events::{Event, publish};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Topic of a firing alert.
pub const TOPIC_FIRING: &str = "alert.firing";
/// Topic of a resolved alert.
pub const TOPIC_RESOLVED: &str = "alert.resolved";
/// Topic of a turn the agent could not answer (published by the gateway).
pub const TOPIC_TURN_FAILED: &str = "conversation.turn_failed";
/// Topic of an answered turn (published by the gateway).
pub const TOPIC_TURN: &str = "conversation.turn";
/// Shortest recent window.
pub const MIN_SHORT_WINDOW_MS: i64 = 2_000;
/// Longest SLA window.
pub const MAX_WINDOW_SECS: i64 = 24 * 3600;
/// How often SLAs are evaluated.
pub(crate) const EVALUATE_INTERVAL: Duration = Duration::from_millis(500);
/// Most SLAs.
const MAX_SLAS: i64 = 1000;
/// Most turns read per evaluation of one SLA (the newest).
const MAX_WINDOW_TURNS: i64 = 100_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_sla, list_slas))
        .routes(routes!(delete_sla))
}

/// What an SLA measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Failed turns over all turns (target: the largest acceptable share, e.g. 0.02).
    ErrorRate,
    /// 95th percentile of voice-to-voice latency of answered turns, ms (target: the largest
    /// acceptable, e.g. 1200).
    LatencyP95Ms,
}

impl Objective {
    fn as_str(self) -> &'static str {
        match self {
            Objective::ErrorRate => "error_rate",
            Objective::LatencyP95Ms => "latency_p95_ms",
        }
    }

    fn parse(name: &str) -> Option<Objective> {
        match name {
            "error_rate" => Some(Objective::ErrorRate),
            "latency_p95_ms" => Some(Objective::LatencyP95Ms),
            _ => None,
        }
    }
}

/// One turn of the agent, as the monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnSample {
    /// Unix ms.
    pub at: i64,
    /// The turn could not be answered.
    pub failed: bool,
    /// Voice-to-voice latency, ms (answered turns that played audio).
    pub latency_ms: Option<f64>,
}

/// The objective's value over `turns` (`None`: nothing to measure).
pub fn measure(objective: Objective, turns: &[TurnSample]) -> Option<f64> {
    match objective {
        Objective::ErrorRate => (!turns.is_empty())
            .then(|| turns.iter().filter(|t| t.failed).count() as f64 / turns.len() as f64),
        Objective::LatencyP95Ms => {
            let mut latencies: Vec<f64> = turns.iter().filter_map(|t| t.latency_ms).collect();
            if latencies.is_empty() {
                return None;
            }
            latencies.sort_by(f64::total_cmp);
            // Nearest rank.
            let rank = ((latencies.len() as f64) * 0.95).ceil() as usize;
            Some(latencies[rank.clamp(1, latencies.len()) - 1])
        }
    }
}

/// What one evaluation finds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Burn rate over the whole window (`None`: fewer turns than the SLA's minimum).
    pub long_burn: Option<f64>,
    /// Burn rate over the recent part (`None`: no turns there).
    pub short_burn: Option<f64>,
    /// The objective's value over the whole window.
    pub value: Option<f64>,
}

impl Verdict {
    /// Both windows burn: the alert should fire.
    pub fn burning(&self) -> bool {
        self.long_burn.is_some_and(|b| b >= 1.0) && self.short_burn.is_some_and(|b| b >= 1.0)
    }

    /// The recent part does not burn (or saw nothing): a firing alert resolves.
    pub fn cooled(&self) -> bool {
        !self.short_burn.is_some_and(|b| b >= 1.0)
    }
}

/// The SLA's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// What is measured.
    pub objective: Objective,
    /// The largest acceptable value (> 0).
    pub target: f64,
    /// The window, ms.
    pub window_ms: i64,
    /// Fewest turns in the window for a verdict.
    pub min_turns: i64,
}

impl Rule {
    /// The recent part of the window, ms.
    pub fn short_window_ms(&self) -> i64 {
        (self.window_ms / 12)
            .max(MIN_SHORT_WINDOW_MS)
            .min(self.window_ms)
    }

    /// Judges `turns` (any order) at unix ms `now`.
    pub fn evaluate(&self, now: i64, turns: &[TurnSample]) -> Verdict {
        let since = |span: i64| -> Vec<TurnSample> {
            turns
                .iter()
                .filter(|t| t.at > now - span && t.at <= now)
                .copied()
                .collect()
        };
        let long = since(self.window_ms);
        let short = since(self.short_window_ms());
        let burn = |value: Option<f64>| value.map(|v| v / self.target);
        let value = measure(self.objective, &long);
        Verdict {
            long_burn: if (long.len() as i64) < self.min_turns {
                None
            } else {
                burn(value)
            },
            short_burn: burn(measure(self.objective, &short)),
            value,
        }
    }
}

/// A new SLA.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSla {
    /// The agent measured (its name in the turn events).
    pub agent: String,
    /// What is measured.
    pub objective: Objective,
    /// The largest acceptable value: a share (0 – 1) for `error_rate`, ms for `latency_p95_ms`.
    pub target: f64,
    /// The window, 10 s – 24 h.
    pub window_secs: i64,
    /// Fewest turns in the window before it can fire, 1 – 10,000 (default 5).
    #[serde(default = "default_min_turns")]
    pub min_turns: i64,
}

fn default_min_turns() -> i64 {
    5
}

/// An SLA and its alert's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sla {
    /// SLA id.
    pub id: String,
    /// The agent.
    pub agent: String,
    /// What is measured.
    pub objective: Objective,
    /// The largest acceptable value.
    pub target: f64,
    /// The window, s.
    pub window_secs: i64,
    /// Fewest turns for a verdict.
    pub min_turns: i64,
    /// The alert is firing.
    pub firing: bool,
    /// The objective's value over the window at the last evaluation.
    pub value: Option<f64>,
    /// Unix ms of the last change of `firing` (or the creation).
    pub since: i64,
}

fn check_sla(request: &CreateSla) -> Result<Rule, ApiError> {
    check_name("agent", &request.agent)?;
    let target_ok = match request.objective {
        Objective::ErrorRate => request.target > 0.0 && request.target <= 1.0,
        Objective::LatencyP95Ms => request.target > 0.0 && request.target <= 600_000.0,
    };
    if !target_ok {
        return Err(ApiError::bad_request(
            "target: a share in (0, 1] for error_rate, ms in (0, 600000] for latency_p95_ms",
        ));
    }
    if !(10..=MAX_WINDOW_SECS).contains(&request.window_secs) {
        return Err(ApiError::bad_request(format!(
            "window_secs: 10-{MAX_WINDOW_SECS}"
        )));
    }
    if !(1..=10_000).contains(&request.min_turns) {
        return Err(ApiError::bad_request("min_turns: 1-10000"));
    }
    Ok(Rule {
        objective: request.objective,
        target: request.target,
        window_ms: request.window_secs * 1000,
        min_turns: request.min_turns,
    })
}

fn sla_from_row(row: &sqlx::any::AnyRow) -> Result<Sla, ApiError> {
    let objective: String = row.try_get("objective")?;
    let firing: i64 = row.try_get("firing")?;
    Ok(Sla {
        id: row.try_get("id")?,
        agent: row.try_get("agent")?,
        objective: Objective::parse(&objective)
            .ok_or_else(|| ApiError::internal(format!("stored objective {objective}")))?,
        target: row.try_get("target")?,
        window_secs: row.try_get("window_secs")?,
        min_turns: row.try_get("min_turns")?,
        firing: firing != 0,
        value: row.try_get("last_value")?,
        since: row.try_get("since")?,
    })
}

/// The stored columns of an SLA (a macro, so queries stay static strings).
macro_rules! sla_columns {
    () => {
        "id, agent, objective, target, window_secs, min_turns, firing, last_value, since"
    };
}

/// Define an SLA on an agent's turns; its alert fires and resolves as `alert.*` events.
#[utoipa::path(post, path = "/v1/slas", tag = "monitoring", security(("bearer" = [])),
    request_body = CreateSla,
    responses((status = 201, body = Sla), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_sla(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<CreateSla>,
) -> Result<(StatusCode, Json<Sla>), ApiError> {
    state.authorize(&principal, Permission::Monitoring).await?;
    check_sla(&request)?;
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM slas")
        .fetch_one(&state.db.pool)
        .await?
        .try_get(0)?;
    if count >= MAX_SLAS {
        return Err(ApiError::conflict(format!("at most {MAX_SLAS} SLAs")));
    }
    let sla = Sla {
        id: uuid::Uuid::now_v7().simple().to_string(),
        agent: request.agent,
        objective: request.objective,
        target: request.target,
        window_secs: request.window_secs,
        min_turns: request.min_turns,
        firing: false,
        value: None,
        since: now_ms(),
    };
    sqlx::query(concat!(
        "INSERT INTO slas (",
        sla_columns!(),
        ", owner) VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, $7, $8)"
    ))
    .bind(&sla.id)
    .bind(&sla.agent)
    .bind(sla.objective.as_str())
    .bind(sla.target)
    .bind(sla.window_secs)
    .bind(sla.min_turns)
    .bind(sla.since)
    .bind(principal.actor())
    .execute(&state.db.pool)
    .await?;
    state
        .audit(&principal.actor(), "sla.create", &sla.id, "ok", &sla.agent)
        .await;
    Ok((StatusCode::CREATED, Json(sla)))
}

/// SLAs and whether their alerts fire.
#[utoipa::path(get, path = "/v1/slas", tag = "monitoring", security(("bearer" = [])),
    responses((status = 200, body = Vec<Sla>), (status = 403, body = ErrorBody)))]
async fn list_slas(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<Sla>>, ApiError> {
    state.authorize(&principal, Permission::Monitoring).await?;
    let rows = sqlx::query(concat!("SELECT ", sla_columns!(), " FROM slas ORDER BY id"))
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(
        rows.iter().map(sla_from_row).collect::<Result<_, _>>()?,
    ))
}

/// Remove an SLA (a firing alert is not resolved by it).
#[utoipa::path(delete, path = "/v1/slas/{id}", tag = "monitoring", security(("bearer" = [])),
    params(("id" = String, Path, description = "SLA id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_sla(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.authorize(&principal, Permission::Monitoring).await?;
    let removed = sqlx::query("DELETE FROM slas WHERE id = $1")
        .bind(&id)
        .execute(&state.db.pool)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found(format!("no SLA {id}")));
    }
    state
        .audit(&principal.actor(), "sla.delete", &id, "ok", "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent's turns since unix ms `since` (newest [`MAX_WINDOW_TURNS`]).
async fn turns(state: &AppState, agent: &str, since: i64) -> Result<Vec<TurnSample>, ApiError> {
    // The stored JSON is compact, so the agent appears as `"agent":"name"`; matched exactly below.
    let rows = sqlx::query("SELECT topic, at, data FROM events WHERE at > $1 AND (topic = $2 OR topic = $3) AND data LIKE $4 ORDER BY at DESC LIMIT $5")
        .bind(since)
        .bind(TOPIC_TURN)
        .bind(TOPIC_TURN_FAILED)
        .bind(format!("%\"agent\":\"{agent}\"%"))
        .bind(MAX_WINDOW_TURNS)
        .fetch_all(&state.db.pool)
        .await?;
    let mut samples = Vec::with_capacity(rows.len());
    for row in &rows {
        let topic: String = row.try_get("topic")?;
        let data: String = row.try_get("data")?;
        let Ok(data) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if data["agent"] != agent {
            continue;
        }
        samples.push(TurnSample {
            at: row.try_get("at")?,
            failed: topic == TOPIC_TURN_FAILED,
            latency_ms: data["latency_ms"]["first_frame_out"].as_f64(),
        });
    }
    Ok(samples)
}

/// Evaluates every SLA and publishes its alert's change, if any (run every
/// [`EVALUATE_INTERVAL`] by the state).
pub(crate) async fn evaluate_all(state: &AppState) -> Result<(), ApiError> {
    let rows = sqlx::query(concat!("SELECT ", sla_columns!(), " FROM slas"))
        .fetch_all(&state.db.pool)
        .await?;
    for row in &rows {
        let sla = sla_from_row(row)?;
        let rule = Rule {
            objective: sla.objective,
            target: sla.target,
            window_ms: sla.window_secs * 1000,
            min_turns: sla.min_turns,
        };
        let now = now_ms();
        let verdict = rule.evaluate(now, &turns(state, &sla.agent, now - rule.window_ms).await?);
        let firing = if sla.firing {
            !verdict.cooled()
        } else {
            verdict.burning()
        };
        if firing == sla.firing {
            sqlx::query("UPDATE slas SET last_value = $1 WHERE id = $2")
                .bind(verdict.value)
                .bind(&sla.id)
                .execute(&state.db.pool)
                .await?;
            continue;
        }
        // Only the evaluation that flips the stored state announces it (one sidecar per change).
        let flipped = sqlx::query(
            "UPDATE slas SET firing = $1, since = $2, last_value = $3 WHERE id = $4 AND firing = $5",
        )
        .bind(i64::from(firing))
        .bind(now)
        .bind(verdict.value)
        .bind(&sla.id)
        .bind(i64::from(sla.firing))
        .execute(&state.db.pool)
        .await?
        .rows_affected();
        if flipped == 0 {
            continue;
        }
        let topic = if firing { TOPIC_FIRING } else { TOPIC_RESOLVED };
        let data = json!({
            "sla_id": sla.id,
            "agent": sla.agent,
            "objective": sla.objective.as_str(),
            "target": sla.target,
            "value": verdict.value,
            "burn_rate": verdict.long_burn,
            "recent_burn_rate": verdict.short_burn,
            "window_secs": sla.window_secs,
        });
        publish(state, Event::new(topic, "platform", data)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(at: i64, failed: bool, latency_ms: Option<f64>) -> TurnSample {
        TurnSample {
            at,
            failed,
            latency_ms,
        }
    }

    #[test]
    fn measures_error_share_and_nearest_rank_p95() {
        let turns: Vec<TurnSample> = (0..20)
            .map(|i| turn(i, i % 5 == 0, Some(f64::from(i as i32 * 10))))
            .collect();
        assert_eq!(measure(Objective::ErrorRate, &turns), Some(0.2));
        assert_eq!(measure(Objective::LatencyP95Ms, &turns), Some(180.0));
        assert_eq!(measure(Objective::ErrorRate, &[]), None);
        assert_eq!(
            measure(Objective::LatencyP95Ms, &[turn(0, true, None)]),
            None
        );
    }

    fn rule() -> Rule {
        Rule {
            objective: Objective::ErrorRate,
            target: 0.1,
            window_ms: 60_000,
            min_turns: 5,
        }
    }

    #[test]
    fn a_fresh_burst_fires_an_old_one_does_not_and_quiet_resolves() {
        let now = 100_000;
        let fresh: Vec<TurnSample> = (0..6).map(|i| turn(now - i * 100, true, None)).collect();
        let verdict = rule().evaluate(now, &fresh);
        assert!(verdict.burning(), "{verdict:?}");
        // The same burst 30 s ago: the whole window burns, the recent part saw nothing.
        let old: Vec<TurnSample> = fresh
            .iter()
            .map(|t| turn(t.at - 30_000, true, None))
            .collect();
        let verdict = rule().evaluate(now, &old);
        assert!(!verdict.burning(), "{verdict:?}");
        assert!(verdict.cooled());
        // Too few turns never fire.
        assert!(!rule().evaluate(now, &fresh[..3]).burning());
    }

    #[test]
    fn the_recent_window_is_a_twelfth_but_never_under_two_seconds() {
        assert_eq!(rule().short_window_ms(), 5_000);
        let short = Rule {
            window_ms: 10_000,
            ..rule()
        };
        assert_eq!(short.short_window_ms(), MIN_SHORT_WINDOW_MS);
    }
}
