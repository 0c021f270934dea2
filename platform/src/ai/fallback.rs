//! The provider chain of chat completions: which providers a request may go to, in order, and
//! the first one to produce a first piece of answer in time.

use super::{ChatBackend, ChatChunk, ChatRequest, EMBEDDED};
use crate::error::ApiError;
use crate::state::AppState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the embedded model may take to its first token before the next provider answers.
const EMBEDDED_FIRST_TOKEN: Duration = Duration::from_secs(60);

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

/// An answer being produced: its provider, model and remaining chunks.
pub(super) struct Started {
    pub(super) provider: String,
    pub(super) model: String,
    pub(super) first: ChatChunk,
    pub(super) rest: mpsc::Receiver<ChatChunk>,
    pub(super) cancel: CancellationToken,
}

/// Tries each target until one produces a first piece in time.
pub(super) async fn start(
    state: &AppState,
    request: &ChatRequest,
    images: bool,
) -> Result<Started, ApiError> {
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
