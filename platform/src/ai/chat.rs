//! `POST /v1/chat/completions`: routing through the provider chain, the cache, cost booking,
//! budgets and the content filter, answered whole or streamed as server-sent events.

use super::ChatRequest;
use super::answer::{Job, Reply, sse};
use super::cache::{self, CachedAnswer};
use super::fallback::start;
use super::types::{ChatCompletionRequest, parse_message};
use crate::auth::{Permission, Principal};
use crate::cost::{UNATTRIBUTED, UsageRecord};
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::time::Instant;
use tokio::sync::mpsc;

/// Longest answer a request may ask for.
const MAX_TOKENS_LIMIT: usize = 8192;
/// Most messages in one request.
const MAX_MESSAGES: usize = 512;
/// Header naming the agent a user- or developer-credential call is booked to.
pub const AGENT_HEADER: &str = "x-dartmouth-agent";

/// Who is calling and who pays.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub actor: String,
    pub agent: String,
    pub user: String,
}

/// Resolves the caller of an AI endpoint (permission `ai`, scope `ai` for keys).
pub(crate) async fn caller(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    state.authorize(principal, Permission::Ai).await?;
    if !principal.has_scope("ai") {
        return Err(ApiError::forbidden("API key lacks the `ai` scope"));
    }
    let named = headers
        .get(AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let agent = match (&principal.agent_id, named) {
        (Some(own), _) => own.clone(),
        (None, Some(named)) => {
            crate::documents::check_name(AGENT_HEADER, &named)?;
            named
        }
        (None, None) => UNATTRIBUTED.into(),
    };
    Ok(Caller {
        actor: principal.actor(),
        agent,
        user: principal.user_id().unwrap_or_default().to_string(),
    })
}

fn parse(state: &AppState, body: &ChatCompletionRequest) -> Result<ChatRequest, ApiError> {
    if body.messages.is_empty() || body.messages.len() > MAX_MESSAGES {
        return Err(ApiError::bad_request(format!("messages: 1-{MAX_MESSAGES}")));
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only n = 1 is supported"));
    }
    if body.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(ApiError::bad_request("temperature must be between 0 and 2"));
    }
    let max_tokens = body
        .max_completion_tokens
        .or(body.max_tokens)
        .unwrap_or(state.config.ai.default_max_tokens);
    if !(1..=MAX_TOKENS_LIMIT).contains(&max_tokens) {
        return Err(ApiError::bad_request(format!(
            "max_tokens must be 1-{MAX_TOKENS_LIMIT}"
        )));
    }
    if body.tools.iter().any(|t| {
        t.pointer("/function/name")
            .and_then(Value::as_str)
            .is_none()
    }) {
        return Err(ApiError::bad_request(
            "each tool needs {\"type\":\"function\",\"function\":{\"name\",…}}",
        ));
    }
    let stop = match &body.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .take(4)
            .collect(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "stop must be a string or a list of strings",
            ));
        }
    };
    Ok(ChatRequest {
        model: body.model.clone(),
        messages: body
            .messages
            .iter()
            .map(parse_message)
            .collect::<Result<_, _>>()?,
        tools: body.tools.clone(),
        max_tokens,
        temperature: body.temperature,
        stop,
    })
}

/// Create a chat completion (OpenAI-compatible; `stream: true` answers with server-sent events).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "ai", security(("bearer" = [])),
    request_body = ChatCompletionRequest,
    responses((status = 200, content_type = "application/json", body = Object), (status = 400, body = ErrorBody),
        (status = 402, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(body): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &principal, &headers).await?;
    let mut request = parse(&state, &body)?;
    crate::cost::check_budget(&state, &caller.agent, &caller.actor).await?;
    if state.filter.enabled()
        && let Some(last) = request.messages.iter_mut().rev().find(|m| m.role == "user")
    {
        let verdict = state
            .filter
            .screen(&state, &caller.actor, "input", &last.content)
            .await?;
        if verdict.blocked {
            return Err(ApiError::content_blocked(format!(
                "the message was refused by the content filter ({})",
                verdict
                    .matches
                    .iter()
                    .filter(|m| m.action == crate::filter::Action::Block)
                    .map(|m| m.rule.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        last.content = verdict.text;
    }
    let include_usage = body
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let key = cache::key(&request, &body.model).filter(|_| state.config.ai.cache_ttl_secs > 0);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = crate::db::now_ms() / 1000;
    if let Some(hit) = key
        .as_ref()
        .and_then(|k| state.ai.cache.get(k, Instant::now()))
    {
        crate::cost::record(
            &state,
            UsageRecord {
                agent: caller.agent.clone(),
                user: caller.user.clone(),
                provider: hit.provider.clone(),
                model: hit.model.clone(),
                usage: hit.usage,
                cached: true,
            },
        )
        .await?;
        let reply = Reply {
            id,
            created,
            model: hit.model.clone(),
        };
        return Ok(if body.stream {
            let (tx, rx) = mpsc::channel(8);
            let chunks = reply.stream_chunks(&hit, include_usage);
            tokio::spawn(async move {
                for c in chunks {
                    if tx.send(c).await.is_err() {
                        break;
                    }
                }
            });
            sse(rx)
        } else {
            Json(reply.whole(&hit)).into_response()
        });
    }
    let images = request.messages.iter().any(|m| !m.images.is_empty());
    let started = start(&state, &request, images).await?;
    let reply = Reply {
        id,
        created,
        model: started.model.clone(),
    };
    let job = Job {
        state: state.clone(),
        caller,
        request,
        key,
        started,
    };
    if body.stream {
        let (tx, rx) = mpsc::channel(super::CHAT_STREAM_CAPACITY);
        tokio::spawn(job.stream(reply, tx, include_usage));
        Ok(sse(rx))
    } else {
        let answer = job.whole().await?;
        Ok(Json(reply.whole(&answer)).into_response())
    }
}

/// One whole answer for the platform's own callers (workflow steps), booked to `agent`: the
/// budget, provider chain, cache, cost booking and output filter of the endpoint.
pub(crate) async fn complete(
    state: &AppState,
    agent: &str,
    actor: &str,
    request: ChatRequest,
) -> Result<CachedAnswer, ApiError> {
    crate::cost::check_budget(state, agent, actor).await?;
    let key = cache::key(&request, &request.model).filter(|_| state.config.ai.cache_ttl_secs > 0);
    if let Some(hit) = key
        .as_ref()
        .and_then(|k| state.ai.cache.get(k, Instant::now()))
    {
        crate::cost::record(
            state,
            UsageRecord {
                agent: agent.into(),
                user: String::new(),
                provider: hit.provider.clone(),
                model: hit.model.clone(),
                usage: hit.usage,
                cached: true,
            },
        )
        .await?;
        return Ok(hit);
    }
    let started = start(state, &request, false).await?;
    let caller = Caller {
        actor: actor.into(),
        agent: agent.into(),
        user: String::new(),
    };
    Job {
        state: state.clone(),
        caller,
        request,
        key,
        started,
    }
    .whole()
    .await
}
