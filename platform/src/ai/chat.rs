//! `POST /v1/chat/completions`: routing through the provider chain, the cache, cost booking,
//! budgets and the content filter, answered whole or streamed as server-sent events.

use super::cache::{self, CachedAnswer};
use super::types::{ChatCompletionRequest, parse_message, tool_calls_json, usage_json};
use super::{ChatBackend, ChatChunk, ChatRequest, EMBEDDED, ToolCall, Usage};
use crate::auth::{Permission, Principal};
use crate::cost::{UNATTRIBUTED, UsageRecord};
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest answer a request may ask for.
const MAX_TOKENS_LIMIT: usize = 8192;
/// Most messages in one request.
const MAX_MESSAGES: usize = 512;
/// How long the embedded model may take to its first token before the next provider answers.
const EMBEDDED_FIRST_TOKEN: Duration = Duration::from_secs(60);
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

/// A provider the request may go to, with the model it would use.
#[derive(Clone)]
enum Target {
    Embedded(Arc<dyn ChatBackend>),
    Remote(super::remote::Remote, String),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Embedded(_) => EMBEDDED.into(),
            Target::Remote(r, _) => r.config.name.clone(),
        }
    }
    fn model(&self) -> String {
        match self {
            Target::Embedded(b) => b.model().into(),
            Target::Remote(_, m) => m.clone(),
        }
    }
    fn first_token_timeout(&self) -> Duration {
        match self {
            Target::Embedded(_) => EMBEDDED_FIRST_TOKEN,
            Target::Remote(r, _) => Duration::from_secs(r.config.first_token_timeout_secs.max(1)),
        }
    }
    fn start(
        &self,
        mut request: ChatRequest,
        cancel: CancellationToken,
    ) -> mpsc::Receiver<ChatChunk> {
        request.model = self.model();
        match self {
            Target::Embedded(b) => b.chat(request, cancel),
            Target::Remote(r, _) => r.chat(request, cancel),
        }
    }
}

/// The providers to try for `model`, in order: those that serve it, then the chain.
fn targets(state: &AppState, model: &str, images: bool) -> Vec<Target> {
    let ai = &state.ai;
    let mut out: Vec<Target> = Vec::new();
    for remote in ai.remotes.values() {
        if remote.config.models.iter().any(|m| m == model) {
            out.push(Target::Remote(remote.clone(), model.to_string()));
        }
    }
    for name in &state.config.ai.chain {
        if out.iter().any(|t| &t.name() == name) {
            continue;
        }
        if name == EMBEDDED {
            if let Some(b) = &ai.backends.chat {
                out.push(Target::Embedded(b.clone()));
            }
        } else if let Some(remote) = ai.remotes.get(name) {
            let m = if remote.config.models.iter().any(|m| m == model)
                || remote.config.default_model.is_empty()
            {
                model.to_string()
            } else {
                remote.config.default_model.clone()
            };
            out.push(Target::Remote(remote.clone(), m));
        }
    }
    if images {
        out.retain(|t| matches!(t, Target::Remote(r, _) if r.config.vision));
    }
    out
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

/// An answer being produced: its provider, model and remaining chunks.
struct Started {
    provider: String,
    model: String,
    first: ChatChunk,
    rest: mpsc::Receiver<ChatChunk>,
    cancel: CancellationToken,
}

/// Tries each target until one produces a first piece in time.
async fn start(state: &AppState, request: &ChatRequest, images: bool) -> Result<Started, ApiError> {
    let targets = targets(state, &request.model, images);
    if targets.is_empty() {
        return Err(if images {
            ApiError::bad_request(
                "no configured provider accepts images (set vision = true on one)",
            )
        } else {
            ApiError::unavailable(
                "no chat model is available (embedded model not loaded, no provider configured)",
            )
        });
    }
    let mut failures = Vec::new();
    for target in targets {
        let cancel = CancellationToken::new();
        let mut rx = target.start(request.clone(), cancel.clone());
        match tokio::time::timeout(target.first_token_timeout(), rx.recv()).await {
            Ok(Some(ChatChunk::Error(e))) => failures.push(e),
            Ok(Some(first)) => {
                return Ok(Started {
                    provider: target.name(),
                    model: target.model(),
                    first,
                    rest: rx,
                    cancel,
                });
            }
            Ok(None) => failures.push(format!("{}: ended without an answer", target.name())),
            Err(_) => {
                cancel.cancel();
                failures.push(format!(
                    "{}: no first token in {:?}",
                    target.name(),
                    target.first_token_timeout()
                ));
            }
        }
        tracing::warn!(provider = %target.name(), error = ?failures.last(), "chat provider failed; trying the next");
    }
    Err(ApiError::bad_gateway(format!(
        "every provider failed: {}",
        failures.join("; ")
    )))
}

fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Fills in token counts a provider did not report (about four characters a token).
fn complete_usage(mut usage: Usage, request: &ChatRequest, answer: &str) -> Usage {
    if usage.prompt_tokens == 0 {
        usage.prompt_tokens = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum();
    }
    if usage.completion_tokens == 0 {
        usage.completion_tokens = estimate_tokens(answer);
    }
    usage
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

fn sse(rx: mpsc::Receiver<Value>) -> Response {
    use tokio_stream::StreamExt;
    let events = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|chunk| Ok::<_, std::convert::Infallible>(SseEvent::default().data(chunk.to_string())))
        .chain(tokio_stream::once(Ok(SseEvent::default().data("[DONE]"))));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The response envelope's fixed parts.
struct Reply {
    id: String,
    created: i64,
    model: String,
}

impl Reply {
    fn whole(&self, a: &CachedAnswer) -> Value {
        let mut message = json!({"role": "assistant", "content": a.text});
        if !a.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&a.tool_calls);
            if a.text.is_empty() {
                message["content"] = Value::Null;
            }
        }
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": a.finish_reason, "logprobs": null}],
            "usage": usage_json(a.usage),
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    }

    fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(usage),
        })
    }

    fn stream_chunks(&self, a: &CachedAnswer, include_usage: bool) -> Vec<Value> {
        let mut out = vec![self.chunk(json!({"role": "assistant", "content": a.text}), None)];
        if !a.tool_calls.is_empty() {
            out.push(self.chunk(json!({"tool_calls": tool_calls_json(&a.tool_calls)}), None));
        }
        out.push(self.chunk(json!({}), Some(&a.finish_reason)));
        if include_usage {
            out.push(self.usage_chunk(a.usage));
        }
        out
    }
}

/// One answer in progress.
struct Job {
    state: AppState,
    caller: Caller,
    request: ChatRequest,
    key: Option<String>,
    started: Started,
}

impl Job {
    /// Books the answer, and caches it if it is whole and clean.
    async fn finish(&self, answer: &CachedAnswer, clean: bool) -> Result<(), ApiError> {
        crate::cost::record(
            &self.state,
            UsageRecord {
                agent: self.caller.agent.clone(),
                user: self.caller.user.clone(),
                provider: answer.provider.clone(),
                model: answer.model.clone(),
                usage: answer.usage,
                cached: false,
            },
        )
        .await?;
        if clean && let Some(key) = &self.key {
            let ttl = Duration::from_secs(self.state.config.ai.cache_ttl_secs);
            self.state
                .ai
                .cache
                .put(key.clone(), answer.clone(), ttl, Instant::now());
        }
        Ok(())
    }

    async fn whole(mut self) -> Result<CachedAnswer, ApiError> {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        let mut next = Some(self.started.first.clone());
        let (usage, finish) = loop {
            let chunk = match next.take() {
                Some(first) => Some(first),
                None => self.started.rest.recv().await,
            };
            match chunk {
                Some(ChatChunk::Text(t)) => text.push_str(&t),
                Some(ChatChunk::ToolCall(c)) => tool_calls.push(c),
                Some(ChatChunk::Done {
                    usage,
                    finish_reason,
                }) => break (usage, finish_reason),
                Some(ChatChunk::Error(e)) => {
                    return Err(ApiError::bad_gateway(format!(
                        "the provider failed mid-answer: {e}"
                    )));
                }
                None => return Err(ApiError::bad_gateway("the provider stopped mid-answer")),
            }
        };
        let mut answer = CachedAnswer {
            usage: complete_usage(usage, &self.request, &text),
            text,
            tool_calls,
            finish_reason: if finish.is_empty() {
                "stop".into()
            } else {
                finish
            },
            provider: self.started.provider.clone(),
            model: self.started.model.clone(),
        };
        let mut clean = true;
        if self.state.filter.enabled() && !answer.text.is_empty() {
            let verdict = self
                .state
                .filter
                .screen(&self.state, &self.caller.actor, "output", &answer.text)
                .await?;
            clean = verdict.matches.is_empty();
            if verdict.blocked {
                answer.text.clear();
                answer.finish_reason = "content_filter".into();
            } else {
                answer.text = verdict.text;
            }
        }
        self.finish(&answer, clean).await?;
        Ok(answer)
    }

    /// Streams the answer; the output filter sees it a sentence at a time.
    async fn stream(mut self, reply: Reply, tx: mpsc::Sender<Value>, include_usage: bool) {
        let cancel = self.started.cancel.clone();
        let _stop_on_drop = cancel.clone().drop_guard();
        let mut sent_role = false;
        let mut pending = String::new();
        let mut answer = String::new();
        let mut tool_calls: Vec<ToolCall> = Vec::new();
        let mut clean = true;
        let mut next = Some(self.started.first.clone());
        let (usage, mut finish) = loop {
            let chunk = match next.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    _ = tx.closed() => return,
                    c = self.started.rest.recv() => c,
                },
            };
            match chunk {
                Some(ChatChunk::Text(t)) => {
                    pending.push_str(&t);
                    let cut = pending.rfind(['.', '!', '?', '\n']).map(|i| i + 1);
                    let filtering = self.state.filter.enabled();
                    let ready: String = match (filtering, cut) {
                        (false, _) => std::mem::take(&mut pending),
                        (true, Some(cut)) => pending.drain(..cut).collect(),
                        (true, None) => continue,
                    };
                    match self
                        .emit(&reply, &tx, &mut sent_role, ready, &mut answer, &mut clean)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => break (Usage::default(), "content_filter".to_string()),
                        Err(()) => return,
                    }
                }
                Some(ChatChunk::ToolCall(c)) => tool_calls.push(c),
                Some(ChatChunk::Done {
                    usage,
                    finish_reason,
                }) => break (usage, finish_reason),
                Some(ChatChunk::Error(e)) => {
                    tracing::warn!(error = %e, "chat provider failed mid-stream");
                    break (Usage::default(), "error".to_string());
                }
                None => break (Usage::default(), "error".to_string()),
            }
        };
        if finish != "content_filter" && !pending.is_empty() {
            let rest = std::mem::take(&mut pending);
            match self
                .emit(&reply, &tx, &mut sent_role, rest, &mut answer, &mut clean)
                .await
            {
                Ok(true) => {}
                Ok(false) => finish = "content_filter".into(),
                Err(()) => return,
            }
        }
        if !tool_calls.is_empty() {
            let _ = tx
                .send(reply.chunk(json!({"tool_calls": tool_calls_json(&tool_calls)}), None))
                .await;
        }
        let finish = if finish.is_empty() {
            "stop".to_string()
        } else {
            finish
        };
        let usage = complete_usage(usage, &self.request, &answer);
        let _ = tx.send(reply.chunk(json!({}), Some(&finish))).await;
        if include_usage {
            let _ = tx.send(reply.usage_chunk(usage)).await;
        }
        let whole = CachedAnswer {
            text: answer,
            tool_calls,
            finish_reason: finish.clone(),
            usage,
            provider: self.started.provider.clone(),
            model: self.started.model.clone(),
        };
        let cacheable = clean && finish != "error" && finish != "content_filter";
        if let Err(e) = self.finish(&whole, cacheable).await {
            tracing::error!(error = %e, "booking a streamed answer failed");
        }
    }

    /// Filters and sends a piece; `Ok(false)` when the filter blocked it, `Err` when the client left.
    async fn emit(
        &self,
        reply: &Reply,
        tx: &mpsc::Sender<Value>,
        sent_role: &mut bool,
        mut piece: String,
        answer: &mut String,
        clean: &mut bool,
    ) -> Result<bool, ()> {
        if piece.is_empty() {
            return Ok(true);
        }
        if self.state.filter.enabled() {
            match self
                .state
                .filter
                .screen(&self.state, &self.caller.actor, "output", &piece)
                .await
            {
                Ok(v) if v.blocked => return Ok(false),
                Ok(v) => {
                    *clean &= v.matches.is_empty();
                    piece = v.text;
                }
                Err(e) => tracing::warn!(error = %e, "output filter failed"),
            }
        }
        let delta = if *sent_role {
            json!({"content": piece})
        } else {
            *sent_role = true;
            json!({"role": "assistant", "content": piece})
        };
        answer.push_str(&piece);
        tx.send(reply.chunk(delta, None)).await.map_err(|_| ())?;
        Ok(true)
    }
}
