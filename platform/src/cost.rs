//! LLM economics: token and cost accounting per agent, user, provider and model from the price
//! table (`ai.prices`), usage reports, and per-agent budgets with alerts at thresholds (events
//! `agent.budget.alert`, audited) and a hard stop (402) once the period's spend reaches the limit.

use crate::ai::{Price, Usage};
use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::events::{Event, publish};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Topic of budget alerts.
pub const TOPIC_BUDGET_ALERT: &str = "agent.budget.alert";
/// Agent name usage is booked to when the caller names none.
pub const UNATTRIBUTED: &str = "unattributed";

/// Cost in micro-dollars of `usage` at `price` (per million tokens).
pub fn cost_micros(price: Price, usage: Usage) -> i64 {
    (usage.prompt_tokens as f64 * price.input_per_million
        + usage.completion_tokens as f64 * price.output_per_million)
        .round() as i64
}

/// One LLM call to book.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// Agent (or [`UNATTRIBUTED`]).
    pub agent: String,
    /// User id ("" when none).
    pub user: String,
    /// Provider that answered.
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Tokens.
    pub usage: Usage,
    /// Served from the cache (costs nothing).
    pub cached: bool,
}

fn period_start(period: &str, now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    let day_start = now_ms - now_ms.rem_euclid(DAY);
    match period {
        "month" => {
            // Days since the epoch → civil date (Howard Hinnant's algorithm), back to day 1.
            let days = day_start / DAY;
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day_of_month = doy - (153 * mp + 2) / 5 + 1;
            day_start - (day_of_month - 1) * DAY
        }
        _ => day_start,
    }
}

/// An agent's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Spending limit per period in US dollars.
    pub limit_usd: f64,
    /// `day` or `month`.
    pub period: String,
    /// Alert when spend crosses these percentages of the limit (default 50, 80, 100).
    #[serde(default = "default_alerts")]
    pub alert_percents: Vec<u32>,
}

fn default_alerts() -> Vec<u32> {
    vec![50, 80, 100]
}

/// A budget and its spend so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetStatus {
    /// The budget.
    pub budget: Budget,
    /// Spent this period, US dollars.
    pub spent_usd: f64,
    /// Unix ms the period started.
    pub period_start: i64,
    /// Whether calls are refused until the period ends.
    pub exhausted: bool,
}

async fn spent_since(state: &AppState, agent: &str, since: i64) -> Result<i64, ApiError> {
    Ok(sqlx::query(
        "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM ai_usage WHERE agent_id = $1 AND at >= $2",
    )
    .bind(agent)
    .bind(since)
    .fetch_one(&state.db.pool)
    .await?
    .try_get::<i64, _>(0)?)
}

async fn load_budget(
    state: &AppState,
    agent: &str,
) -> Result<Option<(Budget, String, i64)>, ApiError> {
    let row = sqlx::query("SELECT limit_micros, period, alert_percents, alerted, period_start FROM ai_budgets WHERE agent_id = $1")
        .bind(agent)
        .fetch_optional(&state.db.pool)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let percents: String = r.try_get(2)?;
    Ok(Some((
        Budget {
            limit_usd: r.try_get::<i64, _>(0)? as f64 / 1e6,
            period: r.try_get(1)?,
            alert_percents: percents.split(',').filter_map(|p| p.parse().ok()).collect(),
        },
        r.try_get(3)?,
        r.try_get(4)?,
    )))
}

/// Refuses a call when `agent`'s budget for this period is used up (402, audited).
pub async fn check_budget(state: &AppState, agent: &str, actor: &str) -> Result<(), ApiError> {
    let Some((budget, _, _)) = load_budget(state, agent).await? else {
        return Ok(());
    };
    let start = period_start(&budget.period, now_ms());
    let spent = spent_since(state, agent, start).await?;
    let limit = (budget.limit_usd * 1e6).round() as i64;
    if spent >= limit {
        state
            .audit(
                actor,
                "ai.budget_exceeded",
                &format!("agent:{agent}"),
                "denied",
                &format!("spent {spent} of {limit} micro-USD"),
            )
            .await;
        return Err(ApiError::budget_exceeded(format!(
            "agent {agent:?} has used its {} budget of ${:.4} (spent ${:.4}); calls resume next {}",
            budget.period,
            budget.limit_usd,
            spent as f64 / 1e6,
            budget.period
        )));
    }
    Ok(())
}

/// Books a call and raises budget alerts it crosses.
pub async fn record(state: &AppState, record: UsageRecord) -> Result<i64, ApiError> {
    let price = state
        .config
        .ai
        .prices
        .get(&record.model)
        .copied()
        .unwrap_or_default();
    let cost = if record.cached {
        0
    } else {
        cost_micros(price, record.usage)
    };
    let now = now_ms();
    sqlx::query("INSERT INTO ai_usage (id, at, agent_id, user_id, provider, model, prompt_tokens, completion_tokens, cost_micros, cached) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(uuid::Uuid::now_v7().simple().to_string())
        .bind(now)
        .bind(&record.agent)
        .bind(&record.user)
        .bind(&record.provider)
        .bind(&record.model)
        .bind(record.usage.prompt_tokens as i64)
        .bind(record.usage.completion_tokens as i64)
        .bind(cost)
        .bind(i64::from(record.cached))
        .execute(&state.db.pool)
        .await?;
    if cost > 0 {
        alert_if_crossed(state, &record.agent, now).await?;
    }
    Ok(cost)
}

async fn alert_if_crossed(state: &AppState, agent: &str, now: i64) -> Result<(), ApiError> {
    let Some((budget, alerted, stored_start)) = load_budget(state, agent).await? else {
        return Ok(());
    };
    let start = period_start(&budget.period, now);
    let mut alerted: Vec<u32> = if stored_start == start {
        alerted.split(',').filter_map(|p| p.parse().ok()).collect()
    } else {
        Vec::new()
    };
    let spent = spent_since(state, agent, start).await?;
    let limit = (budget.limit_usd * 1e6).round().max(1.0) as i64;
    let percent = spent.saturating_mul(100) / limit;
    let crossed: Vec<u32> = budget
        .alert_percents
        .iter()
        .copied()
        .filter(|p| i64::from(*p) <= percent && !alerted.contains(p))
        .collect();
    if crossed.is_empty() && stored_start == start {
        return Ok(());
    }
    alerted.extend(&crossed);
    let list: Vec<String> = alerted.iter().map(u32::to_string).collect();
    sqlx::query("UPDATE ai_budgets SET alerted = $1, period_start = $2 WHERE agent_id = $3")
        .bind(list.join(","))
        .bind(start)
        .bind(agent)
        .execute(&state.db.pool)
        .await?;
    for p in crossed {
        let data = serde_json::json!({
            "agent": agent, "percent": p, "spent_usd": spent as f64 / 1e6,
            "limit_usd": budget.limit_usd, "period": budget.period,
        });
        state
            .audit(
                "platform",
                "ai.budget_alert",
                &format!("agent:{agent}"),
                "ok",
                &format!("{p}% of the {} budget", budget.period),
            )
            .await;
        publish(state, Event::new(TOPIC_BUDGET_ALERT, "platform", data)).await?;
    }
    Ok(())
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_budget, put_budget))
        .routes(routes!(usage_report))
}

/// Set an agent's budget (developer/admin).
#[utoipa::path(put, path = "/v1/agents/{agent_id}/budget", tag = "costs", security(("bearer" = [])),
    params(("agent_id" = String, Path)), request_body = Budget,
    responses((status = 200, body = BudgetStatus), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_budget(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
    Json(budget): Json<Budget>,
) -> Result<Json<BudgetStatus>, ApiError> {
    state.authorize(&principal, Permission::ManageCosts).await?;
    check_name("agent_id", &agent_id)?;
    if !(budget.limit_usd.is_finite() && budget.limit_usd >= 0.0 && budget.limit_usd < 1e9) {
        return Err(ApiError::bad_request(
            "limit_usd must be a number from 0 to 1e9",
        ));
    }
    if !matches!(budget.period.as_str(), "day" | "month") {
        return Err(ApiError::bad_request("period must be day or month"));
    }
    if budget.alert_percents.len() > 10
        || budget.alert_percents.iter().any(|p| *p == 0 || *p > 1000)
    {
        return Err(ApiError::bad_request(
            "alert_percents: up to 10 values in 1-1000",
        ));
    }
    let percents: Vec<String> = budget.alert_percents.iter().map(u32::to_string).collect();
    let start = period_start(&budget.period, now_ms());
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM ai_budgets WHERE agent_id = $1")
        .bind(&agent_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO ai_budgets (agent_id, limit_micros, period, alert_percents, alerted, period_start) VALUES ($1, $2, $3, $4, '', $5)")
        .bind(&agent_id)
        .bind((budget.limit_usd * 1e6).round() as i64)
        .bind(&budget.period)
        .bind(percents.join(","))
        .bind(start)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "ai.budget_set",
            &format!("agent:{agent_id}"),
            "ok",
            &format!("${} per {}", budget.limit_usd, budget.period),
        )
        .await;
    status(&state, &agent_id).await.map(Json)
}

async fn status(state: &AppState, agent: &str) -> Result<BudgetStatus, ApiError> {
    let (budget, _, _) = load_budget(state, agent)
        .await?
        .ok_or_else(|| ApiError::not_found("this agent has no budget"))?;
    let start = period_start(&budget.period, now_ms());
    let spent = spent_since(state, agent, start).await?;
    Ok(BudgetStatus {
        exhausted: spent >= (budget.limit_usd * 1e6).round() as i64,
        spent_usd: spent as f64 / 1e6,
        period_start: start,
        budget,
    })
}

/// An agent's budget and spend this period.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/budget", tag = "costs", security(("bearer" = [])),
    params(("agent_id" = String, Path)),
    responses((status = 200, body = BudgetStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_budget(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
) -> Result<Json<BudgetStatus>, ApiError> {
    check_name("agent_id", &agent_id)?;
    state
        .authorize_agent(&principal, &agent_id, "costs", Access::Read, "ai")
        .await?;
    status(&state, &agent_id).await.map(Json)
}

/// How to group a usage report.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// `agent` (default), `user`, `provider` or `model`.
    pub group_by: Option<String>,
    /// From (unix ms, default 0).
    pub since: Option<i64>,
    /// Until (unix ms, default now).
    pub until: Option<i64>,
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// The group's key (agent, user, provider or model).
    pub key: String,
    /// Calls.
    pub requests: i64,
    /// Calls served from the cache.
    pub cached: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

/// Token and cost totals grouped by agent, user, provider or model (developer/admin).
#[utoipa::path(get, path = "/v1/ai/usage", tag = "costs", security(("bearer" = [])),
    params(UsageQuery),
    responses((status = 200, body = Vec<UsageRow>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn usage_report(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Vec<UsageRow>>, ApiError> {
    state.authorize(&principal, Permission::ManageCosts).await?;
    let column = match query.group_by.as_deref().unwrap_or("agent") {
        "agent" => "agent_id",
        "user" => "user_id",
        "provider" => "provider",
        "model" => "model",
        _ => {
            return Err(ApiError::bad_request(
                "group_by: agent, user, provider or model",
            ));
        }
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {column}, COUNT(*), CAST(COALESCE(SUM(cached), 0) AS BIGINT), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM ai_usage WHERE at >= $1 AND at <= $2 GROUP BY {column} ORDER BY {column}"
    )))
    .bind(query.since.unwrap_or(0))
    .bind(query.until.unwrap_or(i64::MAX))
    .fetch_all(&state.db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UsageRow {
                key: r.try_get(0)?,
                requests: r.try_get(1)?,
                cached: r.try_get(2)?,
                prompt_tokens: r.try_get(3)?,
                completion_tokens: r.try_get(4)?,
                cost_usd: r.try_get::<i64, _>(5)? as f64 / 1e6,
            })
        })
        .collect::<Result<_, ApiError>>()
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_price_table() {
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.60,
        };
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
        };
        assert_eq!(cost_micros(price, usage), 450_000);
        assert_eq!(cost_micros(Price::default(), usage), 0);
    }

    #[test]
    fn periods_start_at_midnight_and_on_the_first() {
        // 2026-12-04T21:07:34Z
        let now = 1_796_418_454_000;
        assert_eq!(period_start("day", now), 1_796_342_400_000);
        // 2026-12-01T00:00:00Z
        assert_eq!(period_start("month", now), 1_796_083_200_000);
    }
}
