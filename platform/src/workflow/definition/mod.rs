//! Workflow definitions: the parsed form (steps, actions, triggers, retry) and its canonical JSON.
//! Parsing and the field checks live in `parse`, the graph checks (a DAG without cycles,
//! templates that read only what a step depends on) in `graph`.
//!
//! ```json
//! {"name": "order-flow", "description": "…",
//!  "triggers": [{"type": "event", "topic": "order.created"}, {"type": "schedule", "cron": "*/15 * * * *"}],
//!  "steps": [
//!    {"id": "reserve", "type": "http", "method": "POST", "url": "https://stock.example/reserve",
//!     "body": {"order": "{{input.data.order}}"}, "retry": {"max_attempts": 3, "backoff_ms": 200},
//!     "timeout_ms": 5000, "compensate": {"type": "http", "method": "POST", "url": "https://stock.example/release"}},
//!    {"id": "big", "type": "condition", "depends_on": ["reserve"],
//!     "check": {"left": "{{input.data.amount}}", "op": "gt", "right": 100}, "then": ["review"], "else": ["auto"]},
//!    {"id": "review", "type": "agent", "agent": "reviewer", "body": {"order": "{{input.data.order}}"}},
//!    {"id": "auto", "type": "llm", "prompt": "Thank the customer for order {{input.data.order}}"},
//!    {"id": "paid", "type": "wait_event", "topic": "payment.confirmed", "match": {"order": "{{input.data.order}}"}},
//!    {"id": "done", "type": "join", "depends_on": ["review", "auto", "paid"]}]}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

mod graph;
mod parse;
#[cfg(test)]
mod tests;

pub use parse::{parse, parse_with_limit};

/// The step kinds.
pub const KINDS: [&str; 6] = ["http", "agent", "llm", "wait_event", "condition", "join"];

/// A parsed, valid definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// What it is for.
    pub description: String,
    /// What starts it besides the API.
    pub triggers: Vec<Trigger>,
    /// The steps, in the order written.
    pub steps: Vec<Step>,
    /// Per step: the indexes of the steps it waits for (`depends_on` and branch conditions).
    pub(crate) needs: Vec<Vec<usize>>,
    /// Per step: the conditions whose branch it is in, and which branch (`true`: `then`).
    pub(crate) branches: Vec<Vec<(usize, bool)>>,
    index: HashMap<String, usize>,
}

/// What starts a run besides `POST /v1/workflows/{name}/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An event whose topic matches `topic` (a pattern: `*` one segment, `>` the rest); the
    /// event is the run's input.
    Event {
        /// The topic pattern.
        topic: String,
    },
    /// A cron schedule (UTC); the input is `{"scheduled_at": <unix ms>, "cron": "…"}`.
    Schedule {
        /// Five-field cron expression.
        cron: String,
    },
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the definition: 1-64 of letters, digits, `_` or `-`.
    pub id: String,
    /// Steps that must finish first.
    pub depends_on: Vec<String>,
    /// What it does.
    pub action: Action,
    /// Attempts and back-off.
    pub retry: Retry,
    /// Timeout of each attempt in ms (default `default_timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// What to do with an attempt a stopped sidecar interrupted.
    pub on_resume: OnResume,
    /// What undoes it when a later step fails.
    pub compensate: Option<Compensation>,
    /// Free text.
    pub description: Option<String>,
}

/// The action that undoes a completed step.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensation {
    /// What it does (http, agent, llm).
    pub action: Action,
    /// Attempts and back-off.
    pub retry: Retry,
    /// Timeout of each attempt in ms.
    pub timeout_ms: Option<u64>,
}

/// Attempts and back-off of a step: attempt n waits `backoff_ms * 2^(n-2)` (at most
/// `max_backoff_ms`) after attempt n-1 failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, 1-20 (default 1: no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt, in ms (default 1000).
    pub backoff_ms: u64,
    /// Longest wait between attempts, in ms (default 60 000).
    pub max_backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 1,
            backoff_ms: 1000,
            max_backoff_ms: 60_000,
        }
    }
}

impl Retry {
    /// The wait (ms) after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: i64) -> u64 {
        let doublings = (attempt - 1).clamp(0, 30) as u32;
        self.backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms)
    }
}

/// What an interrupted attempt (found `running` when a run resumes) becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnResume {
    /// Run it again with the same idempotency key (the target deduplicates).
    #[default]
    Retry,
    /// Fail the step (the target cannot deduplicate); the run compensates.
    Fail,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Call an HTTP endpoint.
    Http(HttpCall),
    /// Send a message to a registered agent and wait for its reply.
    Agent(AgentCall),
    /// Prompt the platform's chat model.
    Llm(Prompt),
    /// Wait for an event on the bus.
    WaitEvent(WaitEvent),
    /// Branch on a previous step's output.
    Condition(Condition),
    /// Wait for every dependency; the output is theirs, by step id.
    Join(Join),
}

/// An HTTP call; its output is `{"status", "body"}` (the body parsed as JSON when it is).
/// Sent with `Idempotency-Key`; a 2xx answer succeeds, 408/429/5xx and transport errors are
/// retried, other statuses fail at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// GET, POST, PUT, PATCH, DELETE or HEAD (default POST).
    #[serde(default = "default_method")]
    pub method: String,
    /// http(s) URL (templates allowed).
    pub url: String,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body (templates allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

fn default_method() -> String {
    "POST".into()
}

/// A message to a registered agent (as `POST /v1/messages`); the message id is derived from the
/// step's idempotency key. The output is the reply's body (`{"id"}` without waiting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCall {
    /// The agent's registered name (templates allowed).
    pub agent: String,
    /// The message body, a JSON object (templates allowed).
    pub body: Value,
    /// Wait for the reply (default true; the step's timeout bounds the wait).
    #[serde(default = "yes")]
    pub wait_reply: bool,
}

fn yes() -> bool {
    true
}

/// A prompt to the chat model (the provider chain of `/v1/chat/completions`, booked to the
/// workflow owner's agent). The output is `{"text", "model", "provider"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// The user message (templates allowed).
    pub prompt: String,
    /// A system message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The model name (default `default`: the chain decides).
    #[serde(default = "default_model")]
    pub model: String,
    /// Longest answer in tokens (default the platform's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
}

fn default_model() -> String {
    "default".into()
}

/// Waits for an event whose topic matches and whose data has every `match` field equal; the
/// output is the event. Events published since the step started count, across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitEvent {
    /// Topic pattern.
    pub topic: String,
    /// Top-level fields of the event's data and their values (templates allowed).
    #[serde(default, rename = "match", skip_serializing_if = "Map::is_empty")]
    pub filter: Map<String, Value>,
}

/// Checks a value and runs the `then` steps or the `else` steps (the others are skipped). The
/// output is `{"result": bool}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The test.
    pub check: Check,
    /// Steps that run when it holds.
    #[serde(default)]
    pub then: Vec<String>,
    /// Steps that run when it does not.
    #[serde(default, rename = "else")]
    pub otherwise: Vec<String>,
}

/// `left op right`; `left` is usually a template (a missing path reads as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The value tested.
    pub left: Value,
    /// The comparison.
    pub op: Op,
    /// What it is compared with (unused by `exists` and `truthy`).
    #[serde(default)]
    pub right: Value,
}

/// Comparisons of a [`Check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (numbers by value).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than (numbers, or strings in byte order).
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// `left` is not null.
    Exists,
    /// `left` is not null, false, 0, "" or empty.
    Truthy,
    /// `left` (a string or list) contains `right`.
    Contains,
}

/// A join has no parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {}

impl Check {
    /// Evaluates the check on rendered values.
    pub fn eval(&self, left: &Value) -> bool {
        let number = |v: &Value| v.as_f64();
        let ordering = || match (left, &self.right) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => number(left)?.partial_cmp(&number(&self.right)?),
        };
        let equal = || match (number(left), number(&self.right)) {
            (Some(a), Some(b)) => a == b,
            _ => *left == self.right,
        };
        use std::cmp::Ordering::*;
        match self.op {
            Op::Eq => equal(),
            Op::Ne => !equal(),
            Op::Gt => ordering() == Some(Greater),
            Op::Ge => matches!(ordering(), Some(Greater | Equal)),
            Op::Lt => ordering() == Some(Less),
            Op::Le => matches!(ordering(), Some(Less | Equal)),
            Op::Exists => !left.is_null(),
            Op::Truthy => match left {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
            },
            Op::Contains => match (left, &self.right) {
                (Value::String(s), Value::String(part)) => s.contains(part.as_str()),
                (Value::Array(items), v) => items.contains(v),
                _ => false,
            },
        }
    }
}

impl Definition {
    /// The index of step `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The canonical JSON form (what is stored and served).
    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self.steps.iter().map(step_json).collect();
        json!({"description": self.description, "triggers": self.triggers, "steps": steps})
    }
}

fn action_json(action: &Action, retry: &Retry, timeout_ms: Option<u64>) -> Map<String, Value> {
    let mut map = match serde_json::to_value(action) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    map.insert("retry".into(), json!(retry));
    if let Some(t) = timeout_ms {
        map.insert("timeout_ms".into(), json!(t));
    }
    map
}

fn step_json(step: &Step) -> Value {
    let mut map = action_json(&step.action, &step.retry, step.timeout_ms);
    map.insert("id".into(), json!(step.id));
    map.insert("depends_on".into(), json!(step.depends_on));
    map.insert("on_resume".into(), json!(step.on_resume));
    if let Some(c) = &step.compensate {
        map.insert(
            "compensate".into(),
            Value::Object(action_json(&c.action, &c.retry, c.timeout_ms)),
        );
    }
    if let Some(d) = &step.description {
        map.insert("description".into(), json!(d));
    }
    Value::Object(map)
}
