//! Sentiment and intent per utterance. Sentiment: a lexicon scorer with negation and
//! intensifiers (no model, microseconds). Intent: each agent declares intents with a few example
//! phrases; an utterance gets the intent of its nearest example in MiniLM embedding space.

use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::{Access, AppState};
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Below this similarity to its nearest example an utterance has no intent.
pub const INTENT_MIN_SIMILARITY: f32 = 0.45;
/// Most intents per agent, and examples per intent.
const MAX_INTENTS: usize = 64;
const MAX_EXAMPLES: usize = 32;

/// Word weights in [-3, 3]; a small general-purpose English lexicon.
const LEXICON: &[(&str, f32)] = &[
    ("good", 1.9),
    ("great", 3.0),
    ("excellent", 3.0),
    ("amazing", 2.8),
    ("awesome", 2.8),
    ("wonderful", 2.7),
    ("fantastic", 2.9),
    ("love", 3.0),
    ("loved", 2.9),
    ("like", 1.3),
    ("nice", 1.8),
    ("happy", 2.7),
    ("glad", 2.0),
    ("thanks", 1.9),
    ("thank", 1.6),
    ("helpful", 1.9),
    ("perfect", 2.7),
    ("pleased", 2.0),
    ("fine", 0.8),
    ("best", 2.5),
    ("better", 1.5),
    ("easy", 1.4),
    ("fast", 1.0),
    ("quick", 1.0),
    ("enjoy", 2.2),
    ("enjoyed", 2.2),
    ("satisfied", 1.8),
    ("appreciate", 2.0),
    ("brilliant", 2.8),
    ("cool", 1.3),
    ("works", 1.0),
    ("solved", 1.7),
    ("fixed", 1.5),
    ("yes", 0.6),
    ("welcome", 1.5),
    ("bad", -2.5),
    ("terrible", -3.0),
    ("awful", -3.0),
    ("horrible", -3.0),
    ("hate", -3.0),
    ("hated", -3.0),
    ("angry", -2.7),
    ("annoyed", -2.2),
    ("annoying", -2.3),
    ("upset", -2.3),
    ("sad", -2.1),
    ("unhappy", -2.4),
    ("disappointed", -2.4),
    ("disappointing", -2.4),
    ("frustrated", -2.4),
    ("frustrating", -2.4),
    ("worst", -3.0),
    ("worse", -2.1),
    ("broken", -2.0),
    ("problem", -1.4),
    ("problems", -1.4),
    ("issue", -1.0),
    ("wrong", -1.8),
    ("slow", -1.5),
    ("useless", -2.6),
    ("fail", -2.1),
    ("failed", -2.2),
    ("failure", -2.3),
    ("error", -1.5),
    ("poor", -2.0),
    ("never", -0.5),
    ("cancel", -1.0),
    ("refund", -1.0),
    ("complaint", -1.8),
    ("rude", -2.5),
    ("late", -1.3),
    ("missing", -1.4),
    ("lost", -1.5),
    ("scam", -3.0),
    ("ridiculous", -2.2),
    ("confused", -1.3),
    ("confusing", -1.6),
    ("unacceptable", -2.8),
    ("furious", -3.0),
    ("ugh", -1.5),
    ("sorry", -0.5),
];
const NEGATORS: &[&str] = &[
    "not", "no", "never", "don't", "dont", "isn't", "isnt", "wasn't", "doesn't", "didn't", "can't",
    "cannot", "won't", "nothing", "hardly",
];
const INTENSIFIERS: &[(&str, f32)] = &[
    ("very", 1.5),
    ("really", 1.4),
    ("so", 1.3),
    ("extremely", 1.8),
    ("totally", 1.5),
    ("absolutely", 1.6),
    ("quite", 1.2),
    ("super", 1.5),
];

/// Sentiment of an utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sentiment {
    /// In [-1, 1]; negative below -0.05, positive above 0.05.
    pub score: f32,
    /// `positive`, `neutral` or `negative`.
    pub label: String,
}

/// Scores `text` with the lexicon (negation flips the next three words, intensifiers scale).
pub fn sentiment(text: &str) -> Sentiment {
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let mut sum = 0.0f32;
    for (i, word) in words.iter().enumerate() {
        let Some(&(_, weight)) = LEXICON.iter().find(|(w, _)| w == word) else {
            continue;
        };
        let before = &words[i.saturating_sub(3)..i];
        let negated = before.iter().any(|w| NEGATORS.contains(&w.as_str()));
        let boost = i
            .checked_sub(1)
            .and_then(|j| INTENSIFIERS.iter().find(|(w, _)| *w == words[j]))
            .map_or(1.0, |(_, b)| *b);
        sum += weight * boost * if negated { -0.75 } else { 1.0 };
    }
    let score = sum / (sum * sum + 15.0).sqrt();
    let label = if score > 0.05 {
        "positive"
    } else if score < -0.05 {
        "negative"
    } else {
        "neutral"
    };
    Sentiment {
        score,
        label: label.into(),
    }
}

/// One intent an agent recognises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    /// Its name, e.g. `order_status`.
    pub name: String,
    /// A few example phrases.
    pub examples: Vec<String>,
}

/// An agent's intents.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentSet {
    /// The intents.
    pub intents: Vec<IntentSpec>,
}

/// The intent found for an utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntentMatch {
    /// Intent name.
    pub name: String,
    /// Cosine similarity to the nearest example.
    pub confidence: f32,
    /// That example.
    pub example: String,
}

/// Embedded examples of one agent: (intent, example, vector).
pub(crate) type IntentIndex = Vec<(String, String, Vec<f32>)>;

/// Sentiment and intent of one utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Analysis {
    /// Sentiment.
    pub sentiment: Sentiment,
    /// Intent, when one is near enough (and the agent declared intents).
    pub intent: Option<IntentMatch>,
}

/// Analyses `text` for `agent` (intent only with embeddings on and intents declared).
pub async fn analyze(state: &AppState, agent: Option<&str>, text: &str) -> Analysis {
    let intent = match agent {
        Some(agent) => classify(state, agent, text).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "intent detection failed");
            None
        }),
        None => None,
    };
    Analysis {
        sentiment: sentiment(text),
        intent,
    }
}

async fn index_of(
    state: &AppState,
    agent: &str,
) -> Result<Option<std::sync::Arc<IntentIndex>>, ApiError> {
    if let Some(index) = state.intents.read().map_err(ApiError::internal)?.get(agent) {
        return Ok(Some(index.clone()));
    }
    let row = sqlx::query("SELECT body FROM agent_intents WHERE agent_id = $1")
        .bind(agent)
        .fetch_optional(&state.db.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let set: IntentSet =
        serde_json::from_str(&row.try_get::<String, _>(0)?).map_err(ApiError::internal)?;
    let index = std::sync::Arc::new(embed_set(state, &set).await?);
    state
        .intents
        .write()
        .map_err(ApiError::internal)?
        .insert(agent.to_string(), index.clone());
    Ok(Some(index))
}

async fn embed_set(state: &AppState, set: &IntentSet) -> Result<IntentIndex, ApiError> {
    let embedder = state.embedder()?;
    let pairs: Vec<(String, String)> = set
        .intents
        .iter()
        .flat_map(|i| i.examples.iter().map(|e| (i.name.clone(), e.clone())))
        .collect();
    let vectors = embedder
        .embed(pairs.iter().map(|(_, e)| e.clone()).collect())
        .await?;
    Ok(pairs
        .into_iter()
        .zip(vectors)
        .map(|((name, example), v)| (name, example, v))
        .collect())
}

/// The nearest declared intent of `agent` for `text`, if near enough.
pub async fn classify(
    state: &AppState,
    agent: &str,
    text: &str,
) -> Result<Option<IntentMatch>, ApiError> {
    if state.embedder.is_none() || text.trim().is_empty() {
        return Ok(None);
    }
    let Some(index) = index_of(state, agent).await? else {
        return Ok(None);
    };
    let query = state.embedder()?.embed_one(text).await?;
    Ok(nearest(&index, &query))
}

fn nearest(index: &IntentIndex, query: &[f32]) -> Option<IntentMatch> {
    index
        .iter()
        .map(|(name, example, v)| (name, example, crate::embed::dot(v, query)))
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .filter(|(_, _, score)| *score >= INTENT_MIN_SIMILARITY)
        .map(|(name, example, confidence)| IntentMatch {
            name: name.clone(),
            confidence,
            example: example.clone(),
        })
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_intents, put_intents))
        .routes(routes!(analyze_route))
}

/// An agent's declared intents.
#[utoipa::path(get, path = "/v1/agents/{agent_id}/intents", tag = "intel", security(("bearer" = [])),
    params(("agent_id" = String, Path)),
    responses((status = 200, body = IntentSet), (status = 403, body = ErrorBody)))]
async fn get_intents(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
) -> Result<Json<IntentSet>, ApiError> {
    check_name("agent_id", &agent_id)?;
    state
        .authorize_agent(&principal, &agent_id, "intents", Access::Read, "db:read")
        .await?;
    let row = sqlx::query("SELECT body FROM agent_intents WHERE agent_id = $1")
        .bind(&agent_id)
        .fetch_optional(&state.db.pool)
        .await?;
    Ok(Json(match row {
        Some(r) => serde_json::from_str(&r.try_get::<String, _>(0)?).map_err(ApiError::internal)?,
        None => IntentSet::default(),
    }))
}

/// Declare (replace) an agent's intents; their examples are embedded now.
#[utoipa::path(put, path = "/v1/agents/{agent_id}/intents", tag = "intel", security(("bearer" = [])),
    params(("agent_id" = String, Path)), request_body = IntentSet,
    responses((status = 200, body = IntentSet), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn put_intents(
    State(state): State<AppState>,
    principal: Principal,
    Path(agent_id): Path<String>,
    Json(set): Json<IntentSet>,
) -> Result<Json<IntentSet>, ApiError> {
    check_name("agent_id", &agent_id)?;
    state
        .authorize_agent(&principal, &agent_id, "intents", Access::Write, "db:write")
        .await?;
    if set.intents.len() > MAX_INTENTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_INTENTS} intents"
        )));
    }
    for intent in &set.intents {
        check_name("intent name", &intent.name)?;
        if intent.examples.is_empty() || intent.examples.len() > MAX_EXAMPLES {
            return Err(ApiError::bad_request(format!(
                "intent {:?} needs 1-{MAX_EXAMPLES} examples",
                intent.name
            )));
        }
        if intent
            .examples
            .iter()
            .any(|e| e.trim().is_empty() || e.len() > 500)
        {
            return Err(ApiError::bad_request("examples must be 1-500 characters"));
        }
    }
    let index = embed_set(&state, &set).await?;
    let body = serde_json::to_string(&set).map_err(ApiError::internal)?;
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM agent_intents WHERE agent_id = $1")
        .bind(&agent_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO agent_intents (agent_id, body, updated_at) VALUES ($1, $2, $3)")
        .bind(&agent_id)
        .bind(body)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state
        .intents
        .write()
        .map_err(ApiError::internal)?
        .insert(agent_id, std::sync::Arc::new(index));
    Ok(Json(set))
}

/// Text to analyse.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// The utterance.
    pub text: String,
    /// The agent whose intents apply.
    pub agent_id: Option<String>,
}

/// Sentiment and intent of an utterance.
#[utoipa::path(post, path = "/v1/intel/analyze", tag = "intel", security(("bearer" = [])),
    request_body = AnalyzeRequest,
    responses((status = 200, body = Analysis), (status = 400, body = ErrorBody)))]
async fn analyze_route(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<AnalyzeRequest>,
) -> Result<Json<Analysis>, ApiError> {
    state.authorize(&principal, Permission::AgentData).await?;
    if request.text.len() > 10_000 {
        return Err(ApiError::bad_request("text: at most 10000 bytes"));
    }
    if let Some(agent) = &request.agent_id {
        check_name("agent_id", agent)?;
    }
    Ok(Json(
        analyze(&state, request.agent_id.as_deref(), &request.text).await,
    ))
}

/// Cache of embedded intents per agent.
pub(crate) type IntentCache = std::sync::RwLock<HashMap<String, std::sync::Arc<IntentIndex>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_scores_polarity_negation_and_intensity() {
        assert_eq!(sentiment("This is great, thanks a lot!").label, "positive");
        assert_eq!(sentiment("This is terrible and broken.").label, "negative");
        assert_eq!(sentiment("The meeting is at ten.").label, "neutral");
        assert_eq!(sentiment("This is not good at all").label, "negative");
        assert!(sentiment("very good").score > sentiment("good").score);
    }

    #[test]
    fn nearest_example_wins_above_the_threshold() {
        let index: IntentIndex = vec![
            ("a".into(), "x".into(), vec![1.0, 0.0]),
            ("b".into(), "y".into(), vec![0.0, 1.0]),
        ];
        assert_eq!(nearest(&index, &[0.2, 0.98]).unwrap().name, "b");
        assert!(nearest(&index, &[-1.0, 0.0]).is_none());
    }
}
