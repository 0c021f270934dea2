//! What each step kind does for one attempt: an HTTP call, an agent message, an LLM prompt,
//! waiting for an event, a condition, a join. An attempt answers an output or a [`StepError`]
//! that says whether another attempt may help.

use super::WorkflowConfig;
use super::definition::{Action, AgentCall, HttpCall, Prompt, WaitEvent};
use super::template::render;
use crate::db::Db;
use crate::events::{Event, EventBus, topic_matches};
use crate::state::WeakState;
use crate::webhooks::ssrf;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use sha2::Digest;
use sqlx::Row;
use std::time::Duration;

/// Why an attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepError {
    pub message: String,
    pub retriable: bool,
}

impl StepError {
    pub fn retry(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retriable: true,
        }
    }
    pub fn fatal(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retriable: false,
        }
    }
}

/// Everything an attempt may use; holds the state only weakly.
#[derive(Clone)]
pub(crate) struct Attempt {
    pub weak: WeakState,
    pub db: Db,
    pub http: reqwest::Client,
    pub events: EventBus,
    pub config: WorkflowConfig,
    pub run: String,
    pub workflow: String,
    pub owner: String,
    /// The step's idempotency key.
    pub key: String,
    /// Unix ms the step's first attempt started (events since then satisfy a wait).
    pub since: i64,
}

/// Runs one attempt of `action`; `context` is what templates read, `inputs` the outputs of the
/// steps it waits for.
pub(crate) async fn execute(
    attempt: &Attempt,
    action: &Action,
    context: &Value,
    inputs: Map<String, Value>,
) -> Result<Value, StepError> {
    match action {
        Action::Http(call) => http(attempt, call, context).await,
        Action::Agent(call) => agent(attempt, call, context).await,
        Action::Llm(prompt) => llm(attempt, prompt, context).await,
        Action::WaitEvent(wait) => wait_event(attempt, wait, context).await,
        Action::Condition(condition) => {
            let left = render(&condition.check.left, context, true).map_err(StepError::fatal)?;
            let mut check = condition.check.clone();
            check.right = render(&check.right, context, true).map_err(StepError::fatal)?;
            Ok(json!({"result": check.eval(&left), "left": left}))
        }
        Action::Join(_) => Ok(Value::Object(inputs)),
    }
}

fn text(value: Value, what: &str) -> Result<String, StepError> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(StepError::fatal(format!("{what} is {other}, not text"))),
    }
}

async fn http(attempt: &Attempt, call: &HttpCall, context: &Value) -> Result<Value, StepError> {
    let url = text(
        render(&Value::String(call.url.clone()), context, false).map_err(StepError::fatal)?,
        "url",
    )?;
    let allow = attempt.config.allow_private_targets;
    let parsed = ssrf::check_url(&url, allow)
        .await
        .map_err(|e| StepError::fatal(e.to_string()))?;
    ssrf::check_literal_host(&parsed, allow).map_err(|e| StepError::fatal(e.to_string()))?;
    let method = reqwest::Method::from_bytes(call.method.to_ascii_uppercase().as_bytes())
        .map_err(|e| StepError::fatal(e.to_string()))?;
    let mut request = attempt
        .http
        .request(method, parsed)
        .header("idempotency-key", &attempt.key)
        .header("x-dartmouth-workflow", &attempt.workflow)
        .header("x-dartmouth-run", &attempt.run);
    for (name, value) in &call.headers {
        let value = text(
            render(&Value::String(value.clone()), context, false).map_err(StepError::fatal)?,
            "header",
        )?;
        request = request.header(name.as_str(), value);
    }
    if let Some(body) = &call.body {
        request = request.json(&render(body, context, false).map_err(StepError::fatal)?);
    }
    let response = request
        .send()
        .await
        .map_err(|e| StepError::retry(format!("{url}: {e}")))?;
    let status = response.status().as_u16();
    let limit = attempt.config.max_output_bytes;
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| StepError::retry(format!("{url}: reading the answer: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(StepError::fatal(format!(
                "{url}: the answer is over {limit} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if (200..300).contains(&status) {
        return Ok(json!({"status": status, "body": body}));
    }
    let snippet: String = body.to_string().chars().take(200).collect();
    let message = format!("{url} answered {status}: {snippet}");
    if matches!(status, 408 | 429) || status >= 500 {
        Err(StepError::retry(message))
    } else {
        Err(StepError::fatal(message))
    }
}

/// The agent message id of an idempotency key (stable across attempts and restarts).
fn message_id(key: &str) -> String {
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16])
}

async fn agent(attempt: &Attempt, call: &AgentCall, context: &Value) -> Result<Value, StepError> {
    let to = text(
        render(&Value::String(call.agent.clone()), context, false).map_err(StepError::fatal)?,
        "agent",
    )?;
    crate::documents::check_name("agent", &to).map_err(|e| StepError::fatal(e.to_string()))?;
    let body = render(&call.body, context, false).map_err(StepError::fatal)?;
    let id = message_id(&attempt.key);
    let stored = |row: Option<sqlx::any::AnyRow>| -> Option<Option<Value>> {
        let row = row?;
        let reply: Option<String> = row.try_get(0).ok()?;
        Some(reply.and_then(|r| serde_json::from_str(&r).ok()))
    };
    let lookup = || {
        sqlx::query("SELECT reply FROM agent_messages WHERE id = $1")
            .bind(&id)
            .fetch_optional(&attempt.db.pool)
    };
    let db_error = |e: sqlx::Error| StepError::retry(format!("database: {e}"));
    if let Some(Some(reply)) = stored(lookup().await.map_err(db_error)?) {
        return Ok(reply);
    }
    let mut replies = if call.wait_reply {
        Some(
            attempt
                .events
                .subscribe(&format!("a2a.reply.{id}"))
                .await
                .map_err(|e| StepError::retry(e.to_string()))?,
        )
    } else {
        None
    };
    {
        let state = attempt
            .weak
            .upgrade()
            .ok_or_else(|| StepError::retry("the sidecar is stopping"))?;
        match crate::registry::routes::registered_health(&state, &to).await {
            Ok(Some(crate::registry::Health::Down)) => {
                return Err(StepError::retry(format!("agent {to} has no live instance")));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(StepError::retry(format!(
                    "no agent named {to} is registered"
                )));
            }
            Err(e) => return Err(StepError::retry(e.to_string())),
        }
        let from = format!("workflow:{}", attempt.workflow);
        // The same id on every attempt: an agent that already saw it deduplicates.
        sqlx::query("INSERT INTO agent_messages (id, sender, sender_actor, recipient, body, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING")
            .bind(&id)
            .bind(&from)
            .bind(&attempt.owner)
            .bind(&to)
            .bind(body.to_string())
            .bind(crate::db::now_ms())
            .execute(&attempt.db.pool)
            .await
            .map_err(db_error)?;
        let data = json!({"id": id, "from": from, "to": to, "body": body, "run": attempt.run});
        let topic = format!("a2a.request.{}", to.to_ascii_lowercase());
        crate::events::publish(&state, Event::new(topic, attempt.owner.clone(), data))
            .await
            .map_err(|e| StepError::retry(e.to_string()))?;
    }
    let Some(replies) = replies.as_mut() else {
        return Ok(json!({"id": id}));
    };
    loop {
        // The bus may lag or reconnect: the stored reply has the last word.
        match tokio::time::timeout(Duration::from_millis(500), replies.next()).await {
            Ok(Some(event)) => return Ok(event.data["body"].clone()),
            Ok(None) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(_) => {}
        }
        if let Some(Some(reply)) = stored(lookup().await.map_err(db_error)?) {
            return Ok(reply);
        }
    }
}

async fn llm(attempt: &Attempt, prompt: &Prompt, context: &Value) -> Result<Value, StepError> {
    let user = text(
        render(&Value::String(prompt.prompt.clone()), context, false).map_err(StepError::fatal)?,
        "prompt",
    )?;
    let mut messages = Vec::new();
    let message = |role: &str, content: String| crate::ai::Message {
        role: role.into(),
        content,
        images: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    if let Some(system) = &prompt.system {
        let system =
            render(&Value::String(system.clone()), context, false).map_err(StepError::fatal)?;
        messages.push(message("system", text(system, "system")?));
    }
    messages.push(message("user", user));
    let state = attempt
        .weak
        .upgrade()
        .ok_or_else(|| StepError::retry("the sidecar is stopping"))?;
    let request = crate::ai::ChatRequest {
        model: prompt.model.clone(),
        messages,
        tools: Vec::new(),
        max_tokens: prompt
            .max_tokens
            .unwrap_or(state.config.ai.default_max_tokens),
        temperature: None,
        stop: Vec::new(),
    };
    let agent = attempt
        .owner
        .strip_prefix("agent:")
        .unwrap_or(crate::cost::UNATTRIBUTED)
        .to_string();
    let answer = crate::ai::chat::complete(&state, &agent, &attempt.owner, request)
        .await
        .map_err(|e| {
            let status = e.status().as_u16();
            let message = e.to_string();
            if status == 402 || status == 400 {
                StepError::fatal(message)
            } else {
                StepError::retry(message)
            }
        })?;
    Ok(json!({"text": answer.text, "model": answer.model, "provider": answer.provider}))
}

fn event_fits(event: &Event, wait: &WaitEvent, filter: &Map<String, Value>) -> bool {
    topic_matches(&wait.topic, &event.topic)
        && filter.iter().all(|(k, v)| {
            let found = &event.data[k.as_str()];
            found == v || (found.as_f64().is_some() && found.as_f64() == v.as_f64())
        })
}

/// Most stored events looked through for one that already satisfies a wait.
const WAIT_SCAN: i64 = 1000;

async fn wait_event(
    attempt: &Attempt,
    wait: &WaitEvent,
    context: &Value,
) -> Result<Value, StepError> {
    let filter = match render(&Value::Object(wait.filter.clone()), context, false)
        .map_err(StepError::fatal)?
    {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    // Subscribed first, then the store read: an event in between is seen by one of them.
    let mut live = attempt
        .events
        .subscribe(&wait.topic)
        .await
        .map_err(|e| StepError::retry(e.to_string()))?;
    let rows = sqlx::query(
        "SELECT id, topic, at, source, data FROM events WHERE at >= $1 ORDER BY at, id LIMIT $2",
    )
    .bind(attempt.since)
    .bind(WAIT_SCAN)
    .fetch_all(&attempt.db.pool)
    .await
    .map_err(|e| StepError::retry(format!("database: {e}")))?;
    for row in rows {
        let event = Event {
            id: row.try_get(0).unwrap_or_default(),
            topic: row.try_get(1).unwrap_or_default(),
            at: row.try_get(2).unwrap_or_default(),
            source: row.try_get(3).unwrap_or_default(),
            data: row
                .try_get::<String, _>(4)
                .ok()
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(Value::Null),
        };
        if event_fits(&event, wait, &filter) {
            return Ok(json!(event));
        }
    }
    loop {
        match live.next().await {
            Some(event) if event_fits(&event, wait, &filter) => return Ok(json!(event)),
            Some(_) => {}
            None => return Err(StepError::retry("the event bus closed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_key() {
        assert_eq!(message_id("r1:a"), message_id("r1:a"));
        assert_ne!(message_id("r1:a"), message_id("r1:b"));
        assert_eq!(message_id("r1:a").len(), 32);
    }
}
