//! A chain of language models tried in order until one starts answering.
//!
//! [`FallbackLlm`] asks its first provider; it moves on to the next when, before the first token
//! or tool call, that provider reports an error, ends its stream without answering (including a
//! `Done` with no token), or stays silent past the chain's first-token timeout (its job is then
//! cancelled). Once the first token (or tool call) has been forwarded the chain sticks with that
//! provider: later events, errors included, are forwarded as they come. Just before that first
//! token the chain sends [`LlmEvent::Served`] with the serving provider's name, so turn records
//! can tell which provider answered. When every provider failed, the stream ends with the last
//! provider's error.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use dartmouth_voice::fallback::FallbackLlm;
//! use dartmouth_voice::http::{AnthropicLlm, HttpProviderConfig, OpenAiLlm};
//! use dartmouth_voice::provider::Llm;
//!
//! let primary = OpenAiLlm::new(HttpProviderConfig::new("https://api.openai.com", "gpt-4o-mini"))?;
//! let backup = AnthropicLlm::new(HttpProviderConfig::new("https://api.anthropic.com", "claude-haiku-4-5"))?;
//! let providers: Vec<Arc<dyn Llm>> = vec![Arc::new(primary), Arc::new(backup)];
//! let chain = FallbackLlm::new(providers, Duration::from_millis(1500));
//! # Ok::<(), dartmouth_voice::provider::ProviderError>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tracing::Instrument;

use crate::provider::{
    CancellationToken, EventStream, Llm, LlmEvent, LlmRequest, ProviderError, event_channel,
};

/// Language models tried in order; see the [module docs](self).
#[derive(Clone)]
pub struct FallbackLlm {
    providers: Vec<Arc<dyn Llm>>,
    first_token_timeout: Duration,
}

impl std::fmt::Debug for FallbackLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLlm")
            .field(
                "providers",
                &self.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("first_token_timeout", &self.first_token_timeout)
            .finish()
    }
}

impl FallbackLlm {
    /// A chain over `providers` (first is preferred); each gets `first_token_timeout` to start.
    pub fn new(providers: Vec<Arc<dyn Llm>>, first_token_timeout: Duration) -> Self {
        Self {
            providers,
            first_token_timeout,
        }
    }

    /// The providers, in the order they are tried.
    pub fn providers(&self) -> &[Arc<dyn Llm>] {
        &self.providers
    }

    /// How long each provider gets to send its first token.
    pub fn first_token_timeout(&self) -> Duration {
        self.first_token_timeout
    }
}

impl Llm for FallbackLlm {
    fn name(&self) -> &str {
        "fallback"
    }

    fn read_ahead(&self, request: LlmRequest, cancel: CancellationToken) {
        for provider in &self.providers {
            provider.read_ahead(request.clone(), cancel.clone());
        }
    }

    fn stream(&self, request: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent> {
        let (tx, rx) = event_channel();
        let chain = self.clone();
        tokio::spawn(
            async move { chain.run(request, cancel, tx).await }
                .instrument(tracing::debug_span!("llm_fallback")),
        );
        rx
    }
}

/// How one provider's attempt ended before it answered.
enum Attempt {
    /// It answered; everything was forwarded (or the caller went away).
    Served,
    /// It failed before answering; try the next one.
    Failed(ProviderError),
    /// The chain was cancelled or its stream dropped.
    Stopped,
}

impl FallbackLlm {
    async fn run(self, request: LlmRequest, cancel: CancellationToken, tx: Sender<LlmEvent>) {
        let mut last_error = ProviderError::InvalidRequest {
            provider: "fallback".to_string(),
            message: "no providers configured".to_string(),
        };
        for provider in &self.providers {
            match self
                .attempt(provider.as_ref(), &request, &cancel, &tx)
                .await
            {
                Attempt::Served | Attempt::Stopped => return,
                Attempt::Failed(e) => {
                    tracing::warn!(provider = provider.name(), error = %e, "LLM provider failed, trying the next");
                    last_error = e;
                }
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => {}
            _ = tx.send(LlmEvent::Error(last_error)) => {}
        }
    }

    async fn attempt(
        &self,
        provider: &dyn Llm,
        request: &LlmRequest,
        cancel: &CancellationToken,
        tx: &Sender<LlmEvent>,
    ) -> Attempt {
        let job = cancel.child_token();
        // Cancels this provider's job however the attempt ends (failure, timeout, cancel).
        let _guard = job.clone().drop_guard();
        let mut events = provider.stream(request.clone(), job);
        let deadline = tokio::time::Instant::now() + self.first_token_timeout;
        let mut served_by = provider.name().to_string();

        // Until the first token: anything but an answer moves on to the next provider.
        let first = loop {
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => return Attempt::Stopped,
                () = tx.closed() => return Attempt::Stopped,
                () = tokio::time::sleep_until(deadline) => {
                    return Attempt::Failed(ProviderError::Timeout {
                        provider: provider.name().to_string(),
                        after: self.first_token_timeout,
                    });
                }
                event = events.recv() => event,
            };
            match event {
                Some(LlmEvent::Served { provider: inner }) => served_by = inner,
                Some(event @ (LlmEvent::Token(_) | LlmEvent::ToolCall(_))) => break event,
                Some(LlmEvent::Error(e)) => return Attempt::Failed(e),
                Some(LlmEvent::Done(_)) | None => {
                    return Attempt::Failed(ProviderError::InvalidResponse {
                        provider: provider.name().to_string(),
                        message: "the answer ended without any token".to_string(),
                    });
                }
            }
        };

        // Committed: forward everything from this provider.
        let mut event = LlmEvent::Served {
            provider: served_by,
        };
        let mut queued = Some(first);
        loop {
            let last = matches!(event, LlmEvent::Done(_) | LlmEvent::Error(_));
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Attempt::Stopped,
                sent = tx.send(event) => if sent.is_err() { return Attempt::Stopped },
            }
            if last {
                return Attempt::Served;
            }
            event = match queued.take() {
                Some(event) => event,
                None => tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Attempt::Stopped,
                    () = tx.closed() => return Attempt::Stopped,
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => return Attempt::Served,
                    },
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::LlmUsage;

    /// A provider that replays a script of events, optionally after a delay or never.
    struct Scripted {
        name: &'static str,
        delay: Option<Duration>,
        events: Vec<LlmEvent>,
    }

    impl Llm for Scripted {
        fn name(&self) -> &str {
            self.name
        }

        fn stream(&self, _: LlmRequest, cancel: CancellationToken) -> EventStream<LlmEvent> {
            let (tx, rx) = event_channel();
            let events = self.events.clone();
            let delay = self.delay;
            tokio::spawn(async move {
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return cancel.cancelled().await,
                }
                for e in events {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            });
            rx
        }
    }

    fn scripted(
        name: &'static str,
        delay: Option<Duration>,
        events: Vec<LlmEvent>,
    ) -> Arc<dyn Llm> {
        Arc::new(Scripted {
            name,
            delay,
            events,
        })
    }

    async fn collect(mut rx: EventStream<LlmEvent>) -> Vec<LlmEvent> {
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            out.push(e);
        }
        out
    }

    fn ok_events() -> Vec<LlmEvent> {
        vec![
            LlmEvent::Token("hi".into()),
            LlmEvent::Done(LlmUsage::default()),
        ]
    }

    #[tokio::test]
    async fn skips_failing_empty_and_silent_providers() {
        let zero = Some(Duration::ZERO);
        let chain = FallbackLlm::new(
            vec![
                scripted(
                    "err",
                    zero,
                    vec![LlmEvent::Error(ProviderError::WorkerStopped {
                        provider: "err".into(),
                    })],
                ),
                scripted("empty", zero, vec![LlmEvent::Done(LlmUsage::default())]),
                scripted("silent", None, vec![]),
                scripted("good", zero, ok_events()),
            ],
            Duration::from_millis(100),
        );
        let events = collect(chain.stream(LlmRequest::default(), CancellationToken::new())).await;
        assert_eq!(
            events[0],
            LlmEvent::Served {
                provider: "good".into()
            }
        );
        assert_eq!(&events[1..], &ok_events()[..]);
    }

    #[tokio::test]
    async fn all_failing_reports_the_last_error_and_errors_after_a_token_are_forwarded() {
        let zero = Some(Duration::ZERO);
        let late = ProviderError::WorkerStopped {
            provider: "b".into(),
        };
        let chain = FallbackLlm::new(
            vec![
                scripted(
                    "a",
                    zero,
                    vec![LlmEvent::Token("x".into()), LlmEvent::Error(late.clone())],
                ),
                scripted("b", zero, ok_events()),
            ],
            Duration::from_millis(100),
        );
        let events = collect(chain.stream(LlmRequest::default(), CancellationToken::new())).await;
        assert_eq!(events.last(), Some(&LlmEvent::Error(late)));
        assert_eq!(
            events[0],
            LlmEvent::Served {
                provider: "a".into()
            }
        );

        let none = FallbackLlm::new(vec![scripted("s", None, vec![])], Duration::from_millis(50));
        let events = collect(none.stream(LlmRequest::default(), CancellationToken::new())).await;
        assert!(matches!(
            &events[..],
            [LlmEvent::Error(ProviderError::Timeout { .. })]
        ));
    }
}
