//! Transcripts per conversation, written from `conversation.turn` events: PII-redacted when
//! `redact_pii` is on, each user utterance with its sentiment and intent; part of GDPR export and
//! deletion (by the user id the turn names).

use super::Event;
use crate::auth::Principal;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use utoipa::ToSchema;

/// Longest utterance stored.
const MAX_UTTERANCE_CHARS: usize = 8_000;

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TranscriptLine {
    /// The conversation.
    pub conversation_id: String,
    /// The agent.
    pub agent_id: String,
    /// The person (user id or room identity), if known.
    pub user_id: Option<String>,
    /// Turn number within the conversation.
    pub turn: i64,
    /// `user` or `assistant`.
    pub role: String,
    /// What was said (redacted when enabled).
    pub text: String,
    /// Sentiment of a user line (JSON).
    #[schema(value_type = Object)]
    pub sentiment: Option<Value>,
    /// Intent of a user line (JSON).
    #[schema(value_type = Object)]
    pub intent: Option<Value>,
    /// Unix milliseconds.
    pub at: i64,
}

/// A conversation's transcript.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Transcript {
    /// The conversation.
    pub conversation_id: String,
    /// Lines in order.
    pub lines: Vec<TranscriptLine>,
}

fn text_field(data: &Value, key: &str) -> String {
    data.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(MAX_UTTERANCE_CHARS)
        .collect()
}

/// Validates a turn event, redacts and enriches it in place, and stores its transcript lines.
pub(crate) async fn record_turn(state: &AppState, event: &mut Event) -> Result<(), ApiError> {
    let data = &event.data;
    let conversation = data
        .get("conversation_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("conversation.turn needs data.conversation_id"))?
        .to_string();
    check_name("conversation_id", &conversation)?;
    let agent = data
        .get("agent")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("conversation.turn needs data.agent"))?
        .to_string();
    check_name("agent", &agent)?;
    let user_id = data
        .get("user_id")
        .or_else(|| data.get("identity"))
        .and_then(Value::as_str)
        .map(String::from);
    let turn = data.get("turn").and_then(Value::as_i64).unwrap_or(0);
    let redact = |t: String| {
        if state.config.redact_pii {
            crate::redact::redact_pii(&t)
        } else {
            t
        }
    };
    let user_text = redact(text_field(data, "user_text"));
    let agent_text = redact(text_field(data, "agent_text"));
    let analysis = crate::intel::analyze(state, Some(&agent), &user_text).await;
    let sentiment = serde_json::to_value(&analysis.sentiment).map_err(ApiError::internal)?;
    let intent = serde_json::to_value(&analysis.intent).map_err(ApiError::internal)?;
    if let Value::Object(map) = &mut event.data {
        map.insert("user_text".into(), Value::String(user_text.clone()));
        map.insert("agent_text".into(), Value::String(agent_text.clone()));
        map.insert("sentiment".into(), sentiment.clone());
        map.insert("intent".into(), intent.clone());
    }
    let mut tx = state.db.pool.begin().await?;
    for (role, text) in [("user", &user_text), ("assistant", &agent_text)] {
        if text.is_empty() {
            continue;
        }
        let (s, i) = if role == "user" {
            (Some(sentiment.to_string()), Some(intent.to_string()))
        } else {
            (None, None)
        };
        sqlx::query("INSERT INTO transcripts (id, conversation_id, agent_id, user_id, turn, role, text, sentiment, intent, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(uuid::Uuid::now_v7().simple().to_string())
            .bind(&conversation)
            .bind(&agent)
            .bind(user_id.clone())
            .bind(turn)
            .bind(role)
            .bind(text.as_str())
            .bind(s)
            .bind(i)
            .bind(event.at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

const LINE_COLUMNS: &str =
    "conversation_id, agent_id, user_id, turn, role, text, sentiment, intent, at";

fn row_to_line(r: &sqlx::any::AnyRow) -> Result<TranscriptLine, ApiError> {
    let json = |i: usize| -> Result<Option<Value>, ApiError> {
        Ok(r.try_get::<Option<String>, _>(i)?
            .and_then(|s| serde_json::from_str(&s).ok()))
    };
    Ok(TranscriptLine {
        conversation_id: r.try_get(0)?,
        agent_id: r.try_get(1)?,
        user_id: r.try_get(2)?,
        turn: r.try_get(3)?,
        role: r.try_get(4)?,
        text: r.try_get(5)?,
        sentiment: json(6)?,
        intent: json(7)?,
        at: r.try_get(8)?,
    })
}

/// Every transcript line of a user (GDPR export).
pub async fn lines_of_user(
    state: &AppState,
    user_id: &str,
) -> Result<Vec<TranscriptLine>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LINE_COLUMNS} FROM transcripts WHERE user_id = $1 ORDER BY at, id"
    )))
    .bind(user_id)
    .fetch_all(&state.db.pool)
    .await?
    .iter()
    .map(row_to_line)
    .collect()
}

/// A conversation's transcript (the agent's own key, a grant on `transcripts`, or developer/admin).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/transcript", tag = "events", security(("bearer" = [])),
    params(("conversation_id" = String, Path)),
    responses((status = 200, body = Transcript), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_transcript(
    State(state): State<AppState>,
    principal: Principal,
    Path(conversation_id): Path<String>,
) -> Result<Json<Transcript>, ApiError> {
    check_name("conversation_id", &conversation_id)?;
    let lines: Vec<TranscriptLine> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LINE_COLUMNS} FROM transcripts WHERE conversation_id = $1 ORDER BY at, id"
    )))
    .bind(&conversation_id)
    .fetch_all(&state.db.pool)
    .await?
    .iter()
    .map(row_to_line)
    .collect::<Result<_, _>>()?;
    let agent = lines
        .first()
        .map(|l| l.agent_id.clone())
        .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    state
        .authorize_agent(&principal, &agent, "transcripts", Access::Read, "db:read")
        .await?;
    Ok(Json(Transcript {
        conversation_id,
        lines,
    }))
}
