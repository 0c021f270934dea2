//! Seams between a voice agent and the platform around it: where it looks things up
//! ([`Knowledge`], retrieval-augmented grounding) and who hears about its turns
//! ([`AgentObserver`], events, transcripts, analytics). Both are chosen at one point (the agent
//! factory); the runner sees only these traits.

use crate::agent::AgentEvent;
use crate::provider::{CancellationToken, EventStream, ProviderError};

/// A passage retrieved from an agent's knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// The passage's text, as it goes into the prompt.
    pub text: String,
    /// Where it comes from (document title or id, with a position), for citations.
    pub source: String,
    /// Relevance score (higher is better; comparable only within one answer).
    pub score: f32,
}

/// What a retrieval reports.
#[derive(Debug, Clone, PartialEq)]
pub enum KnowledgeEvent {
    /// The passages found (possibly none); the stream ends.
    Passages(Vec<Passage>),
    /// Retrieval failed; the agent answers without grounding.
    Error(ProviderError),
}

/// An agent's knowledge base: passages relevant to what the person asked.
pub trait Knowledge: Send + Sync + 'static {
    /// Short name for logs and turn records.
    fn name(&self) -> &str;
    /// Starts looking up at most `limit` passages for `query` (the person's words); answers on
    /// the stream. Cancelling stops the lookup.
    fn retrieve(
        &self,
        query: String,
        limit: usize,
        cancel: CancellationToken,
    ) -> EventStream<KnowledgeEvent>;
}

/// Hears every event an agent session reports (transcripts, interruptions, turn records), in
/// order, from the session's own task. It must not block: queue the event (bounded, dropping
/// when full) and do the I/O elsewhere.
pub trait AgentObserver: Send + Sync + 'static {
    /// Called once per event, before the session's owner sees it.
    fn on_event(&self, event: &AgentEvent);
}

/// What a tool call reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEvent {
    /// The call's result, for the model (usually JSON text); the stream ends.
    Output(String),
    /// The call failed; the message goes to the model as the result; the stream ends.
    Error(String),
}

/// Functions an agent may call while it answers (in the OpenAI tool shape): send digits on a
/// phone call, transfer it, ask another agent, look something up. The model sees
/// [`AgentTools::specs`]; each call it makes runs through [`AgentTools::call`], and the answer
/// goes on with the result.
pub trait AgentTools: Send + Sync + 'static {
    /// The functions on offer.
    fn specs(&self) -> Vec<crate::provider::ToolSpec>;
    /// Runs one call; answers on the stream. Cancelling stops it.
    fn call(
        &self,
        call: crate::provider::ToolCall,
        cancel: CancellationToken,
    ) -> EventStream<ToolEvent>;
}
