//! An answer in progress: booked and cached when done, answered whole or streamed as
//! server-sent events with the output filter seeing it a sentence at a time.

use super::cache::CachedAnswer;
use super::chat::Caller;
use super::fallback::Started;
use super::types::{tool_calls_json, usage_json};
use super::{ChatChunk, ChatRequest, ToolCall, Usage};
use crate::cost::UsageRecord;
use crate::error::ApiError;
use crate::state::AppState;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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

/// The server-sent-events response over a stream of chunks, ended by `[DONE]`.
pub(super) fn sse(rx: mpsc::Receiver<Value>) -> Response {
    use tokio_stream::StreamExt;
    let events = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|chunk| Ok::<_, std::convert::Infallible>(SseEvent::default().data(chunk.to_string())))
        .chain(tokio_stream::once(Ok(SseEvent::default().data("[DONE]"))));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The response envelope's fixed parts.
pub(super) struct Reply {
    pub(super) id: String,
    pub(super) created: i64,
    pub(super) model: String,
}

impl Reply {
    pub(super) fn whole(&self, a: &CachedAnswer) -> Value {
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

    pub(super) fn stream_chunks(&self, a: &CachedAnswer, include_usage: bool) -> Vec<Value> {
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
pub(super) struct Job {
    pub(super) state: AppState,
    pub(super) caller: Caller,
    pub(super) request: ChatRequest,
    pub(super) key: Option<String>,
    pub(super) started: Started,
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

    pub(super) async fn whole(mut self) -> Result<CachedAnswer, ApiError> {
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
    pub(super) async fn stream(
        mut self,
        reply: Reply,
        tx: mpsc::Sender<Value>,
        include_usage: bool,
    ) {
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
