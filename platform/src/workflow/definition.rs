//! Workflow definitions: parsing the JSON form and validating it (step kinds, references, a DAG
//! without cycles, templates that read only what a step depends on, triggers and cron).
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

use super::template;
use super::{MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_TIMEOUT_MS, MAX_TRIGGERS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// The step kinds.
pub const KINDS: [&str; 6] = ["http", "agent", "llm", "wait_event", "condition", "join"];
/// Fields every step may have besides its kind's own.
const COMMON: [&str; 7] = [
    "id",
    "depends_on",
    "retry",
    "timeout_ms",
    "on_resume",
    "compensate",
    "description",
];

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

fn check_id(what: &str, id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {id:?}: 1-64 of letters, digits, _ or -"))
    }
}

fn check_timeout(what: &str, timeout: Option<u64>) -> Result<(), String> {
    match timeout {
        Some(t) if !(1..=MAX_TIMEOUT_MS).contains(&t) => {
            Err(format!("{what}: timeout_ms must be 1-{MAX_TIMEOUT_MS}"))
        }
        _ => Ok(()),
    }
}

fn check_retry(what: &str, retry: &Retry) -> Result<(), String> {
    if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
        return Err(format!(
            "{what}: retry.max_attempts must be 1-{MAX_ATTEMPTS}"
        ));
    }
    if !(1..=MAX_BACKOFF_MS).contains(&retry.backoff_ms)
        || !(1..=MAX_BACKOFF_MS).contains(&retry.max_backoff_ms)
    {
        return Err(format!(
            "{what}: retry.backoff_ms and max_backoff_ms must be 1-{MAX_BACKOFF_MS}"
        ));
    }
    Ok(())
}

/// Parses one action from an object holding `type` and the kind's fields.
fn parse_action(what: &str, fields: Map<String, Value>) -> Result<Action, String> {
    let kind = match fields.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(format!("{what}: type must be a string")),
        None => {
            return Err(format!(
                "{what}: type is required (one of {})",
                KINDS.join(", ")
            ));
        }
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "{what}: unknown step type {kind:?} (expected one of {})",
            KINDS.join(", ")
        ));
    }
    let action: Action = serde_json::from_value(Value::Object(fields))
        .map_err(|e| format!("{what} ({kind}): {e}"))?;
    match &action {
        Action::Http(call) => {
            let method = call.method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
                return Err(format!(
                    "{what}: method {:?} is not an HTTP method we call",
                    call.method
                ));
            }
            if !call.url.contains("{{") {
                let url = reqwest::Url::parse(&call.url)
                    .map_err(|e| format!("{what}: url {:?}: {e}", call.url))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!("{what}: url must be http or https"));
                }
            }
        }
        Action::Agent(call) => {
            if !call.agent.contains("{{") {
                check_id(&format!("{what}: agent"), &call.agent)?;
            }
            if !call.body.is_object() {
                return Err(format!("{what}: body must be a JSON object"));
            }
        }
        Action::Llm(prompt) => {
            if prompt.prompt.trim().is_empty() {
                return Err(format!("{what}: prompt is empty"));
            }
            if prompt.max_tokens.is_some_and(|n| !(1..=8192).contains(&n)) {
                return Err(format!("{what}: max_tokens must be 1-8192"));
            }
        }
        Action::WaitEvent(wait) => {
            crate::events::check_pattern(&wait.topic).map_err(|e| format!("{what}: {e}"))?;
        }
        Action::Condition(_) | Action::Join(_) => {}
    }
    Ok(action)
}

/// Splits an object into the common step fields (`keep`) and the rest (the action's).
fn split(map: &Map<String, Value>, keep: &[&str]) -> (Map<String, Value>, Map<String, Value>) {
    let mut common = Map::new();
    let mut rest = Map::new();
    for (k, v) in map {
        if keep.contains(&k.as_str()) {
            common.insert(k.clone(), v.clone());
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    (common, rest)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepCommon {
    id: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    retry: Retry,
    timeout_ms: Option<u64>,
    #[serde(default)]
    on_resume: OnResume,
    compensate: Option<Map<String, Value>>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompensationCommon {
    #[serde(default)]
    retry: Retry,
    timeout_ms: Option<u64>,
}

fn parse_step(position: usize, value: &Value) -> Result<Step, String> {
    let Value::Object(map) = value else {
        return Err(format!("steps[{position}] must be an object"));
    };
    let label = match map.get("id").and_then(Value::as_str) {
        Some(id) => format!("step {id:?}"),
        None => return Err(format!("steps[{position}]: id is required")),
    };
    let (common, rest) = split(map, &COMMON);
    let common: StepCommon =
        serde_json::from_value(Value::Object(common)).map_err(|e| format!("{label}: {e}"))?;
    check_id("step id", &common.id)?;
    check_retry(&label, &common.retry)?;
    check_timeout(&label, common.timeout_ms)?;
    let action = parse_action(&label, rest)?;
    let compensate = match common.compensate {
        None => None,
        Some(map) => {
            let what = format!("{label} compensate");
            let (c, rest) = split(&map, &["retry", "timeout_ms"]);
            let c: CompensationCommon =
                serde_json::from_value(Value::Object(c)).map_err(|e| format!("{what}: {e}"))?;
            check_retry(&what, &c.retry)?;
            check_timeout(&what, c.timeout_ms)?;
            let action = parse_action(&what, rest)?;
            if !matches!(action, Action::Http(_) | Action::Agent(_) | Action::Llm(_)) {
                return Err(format!("{what}: an http, agent or llm action"));
            }
            Some(Compensation {
                action,
                retry: c.retry,
                timeout_ms: c.timeout_ms,
            })
        }
    };
    Ok(Step {
        id: common.id,
        depends_on: common.depends_on,
        action,
        retry: common.retry,
        timeout_ms: common.timeout_ms,
        on_resume: common.on_resume,
        compensate,
        description: common.description,
    })
}

/// Parses and validates a definition (`{"description", "triggers", "steps"}`; a `name` field is
/// ignored here). Every error names the step and the problem.
pub fn parse(value: &Value) -> Result<Definition, String> {
    parse_with_limit(value, usize::MAX)
}

/// Like [`parse`], with at most `max_steps` steps.
pub fn parse_with_limit(value: &Value, max_steps: usize) -> Result<Definition, String> {
    let Value::Object(map) = value else {
        return Err("a definition is a JSON object".into());
    };
    let description = match map.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("description must be a string".into()),
    };
    let triggers: Vec<Trigger> = match map.get("triggers") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => serde_json::from_value(t.clone()).map_err(|e| format!("triggers: {e}"))?,
    };
    if triggers.len() > MAX_TRIGGERS {
        return Err(format!("at most {MAX_TRIGGERS} triggers"));
    }
    for trigger in &triggers {
        match trigger {
            Trigger::Event { topic } => {
                crate::events::check_pattern(topic).map_err(|e| format!("event trigger: {e}"))?
            }
            Trigger::Schedule { cron } => {
                super::Cron::parse(cron)?;
            }
        }
    }
    let steps = match map.get("steps") {
        Some(Value::Array(steps)) if !steps.is_empty() => steps,
        _ => return Err("steps: a non-empty list of steps".into()),
    };
    if steps.len() > max_steps {
        return Err(format!("{} steps; at most {max_steps}", steps.len()));
    }
    let steps: Vec<Step> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| parse_step(i, s))
        .collect::<Result<_, _>>()?;
    let mut index = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        if index.insert(step.id.clone(), i).is_some() {
            return Err(format!("two steps have the id {:?}", step.id));
        }
    }
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut branches: Vec<Vec<(usize, bool)>> = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for dep in &step.depends_on {
            let &d = index.get(dep).ok_or_else(|| {
                format!("step {:?} depends on {dep:?}, which is not a step", step.id)
            })?;
            if d == i {
                return Err(format!("step {:?} depends on itself", step.id));
            }
            if !needs[i].contains(&d) {
                needs[i].push(d);
            }
        }
        if let Action::Condition(c) = &step.action {
            for (list, taken) in [(&c.then, true), (&c.otherwise, false)] {
                for target in list {
                    let &t = index.get(target).ok_or_else(|| {
                        format!(
                            "condition {:?} branches to {target:?}, which is not a step",
                            step.id
                        )
                    })?;
                    if t == i {
                        return Err(format!("condition {:?} branches to itself", step.id));
                    }
                    if branches[t].iter().any(|(c, _)| *c == i) {
                        return Err(format!(
                            "condition {:?} names {target:?} in both branches",
                            step.id
                        ));
                    }
                    branches[t].push((i, taken));
                    if !needs[t].contains(&i) {
                        needs[t].push(i);
                    }
                }
            }
        }
    }
    let definition = Definition {
        description,
        triggers,
        steps,
        needs,
        branches,
        index,
    };
    if let Some(cycle) = find_cycle(&definition) {
        return Err(format!("the steps form a cycle: {cycle}"));
    }
    check_templates(&definition)?;
    Ok(definition)
}

/// A cycle as `a -> b -> a`, if the dependency graph has one.
fn find_cycle(def: &Definition) -> Option<String> {
    // 0 unvisited, 1 on the current path, 2 done.
    let mut color = vec![0u8; def.steps.len()];
    let mut path: Vec<usize> = Vec::new();
    for root in 0..def.steps.len() {
        if color[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        path.push(root);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&dep) = def.needs[node].get(*next) {
                *next += 1;
                match color[dep] {
                    0 => {
                        color[dep] = 1;
                        path.push(dep);
                        stack.push((dep, 0));
                    }
                    1 => {
                        let start = path.iter().position(|&p| p == dep).unwrap_or(0);
                        // `path` runs from dependents to dependencies; print in run order.
                        let mut names: Vec<&str> = path[start..]
                            .iter()
                            .rev()
                            .map(|&p| def.steps[p].id.as_str())
                            .collect();
                        names.push(def.steps[path[path.len() - 1]].id.as_str());
                        return Some(names.join(" -> "));
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}

/// Every template reads the input, the run, or a step the reading step (transitively) waits for.
fn check_templates(def: &Definition) -> Result<(), String> {
    for (i, step) in def.steps.iter().enumerate() {
        let mut upstream = vec![false; def.steps.len()];
        let mut todo = def.needs[i].clone();
        while let Some(d) = todo.pop() {
            if !std::mem::replace(&mut upstream[d], true) {
                todo.extend(&def.needs[d]);
            }
        }
        let check = |value: &Value, own: bool| -> Result<(), String> {
            let refs =
                template::references(value).map_err(|e| format!("step {:?}: {e}", step.id))?;
            for path in refs {
                let Some(read) = template::step_of(&path) else {
                    continue;
                };
                let ok = match def.position(read) {
                    None => {
                        return Err(format!(
                            "step {:?} reads {{{{{path}}}}}, but there is no step {read:?}",
                            step.id
                        ));
                    }
                    Some(r) => upstream[r] || (own && r == i),
                };
                if !ok {
                    return Err(format!(
                        "step {:?} reads {{{{{path}}}}} but does not depend on {read:?}",
                        step.id
                    ));
                }
            }
            Ok(())
        };
        check(&action_params(&step.action), false)?;
        if let Some(c) = &step.compensate {
            // A compensation may also read the output of the step it undoes.
            check(&action_params(&c.action), true)?;
        }
    }
    Ok(())
}

/// The parts of an action templates may appear in.
fn action_params(action: &Action) -> Value {
    match action {
        Action::Http(c) => json!([c.url, c.headers, c.body]),
        Action::Agent(c) => json!([c.agent, c.body]),
        Action::Llm(p) => json!([p.prompt, p.system]),
        Action::WaitEvent(w) => json!(w.filter),
        Action::Condition(c) => json!([c.check.left, c.check.right]),
        Action::Join(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(id: &str, deps: &[&str]) -> Value {
        json!({"id": id, "type": "http", "url": "http://example.com/x", "depends_on": deps})
    }

    #[test]
    fn a_valid_definition_round_trips() {
        let def = parse(&json!({"steps": [
            http("a", &[]),
            {"id": "c", "type": "condition", "depends_on": ["a"], "check": {"left": "{{steps.a.output.status}}", "op": "eq", "right": 200}, "then": ["b"], "else": ["d"]},
            {"id": "b", "type": "llm", "prompt": "hi {{steps.a.output.body}}"},
            {"id": "d", "type": "join", "retry": {"max_attempts": 3, "backoff_ms": 10}},
        ], "triggers": [{"type": "schedule", "cron": "0 * * * *"}]}))
        .unwrap();
        assert_eq!(def.needs[2], vec![1]);
        assert_eq!(def.branches[3], vec![(1, false)]);
        let again = parse(&def.to_json()).unwrap();
        assert_eq!(again, def);
    }

    #[test]
    fn cycles_are_named() {
        let err = parse(&json!({"steps": [http("a", &["c"]), http("b", &["a"]), http("c", &["b"]), http("d", &[])]}))
            .unwrap_err();
        assert!(err.contains("cycle"), "{err}");
        assert!(
            ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
                .iter()
                .any(|c| err.contains(c)),
            "{err}"
        );
    }

    #[test]
    fn bad_steps_say_what_is_wrong() {
        for (steps, why) in [
            (
                json!([{"id": "a", "type": "teleport"}]),
                "unknown step type \"teleport\"",
            ),
            (
                json!([http("a", &["zz"])]),
                "depends on \"zz\", which is not a step",
            ),
            (json!([http("a", &[]), http("a", &[])]), "two steps"),
            (json!([http("a", &["a"])]), "itself"),
            (json!([{"id": "a", "type": "http"}]), "missing field `url`"),
            (
                json!([{"id": "a", "type": "http", "url": "http://x", "colour": 1}]),
                "colour",
            ),
            (
                json!([http("a", &[]), {"id": "b", "type": "llm", "prompt": "{{steps.a.output}}"}]),
                "does not depend on \"a\"",
            ),
            (
                json!([{"id": "b", "type": "llm", "prompt": "{{steps.q.output}}"}]),
                "no step \"q\"",
            ),
            (
                json!([{"id": "a", "type": "http", "url": "ftp://x"}]),
                "http or https",
            ),
            (
                json!([{"id": "a", "type": "join", "retry": {"max_attempts": 0}}]),
                "max_attempts",
            ),
        ] {
            let err = parse(&json!({"steps": steps})).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
        let err = parse(&json!({"steps": [http("a", &[])], "triggers": [{"type": "schedule", "cron": "99 * * * *"}]}))
            .unwrap_err();
        assert!(err.contains("minute"), "{err}");
    }

    #[test]
    fn checks_compare_like_people_expect() {
        let check = |op: Op, right: Value| Check {
            left: Value::Null,
            op,
            right,
        };
        assert!(check(Op::Eq, json!(200)).eval(&json!(200.0)));
        assert!(check(Op::Gt, json!(100)).eval(&json!(150)));
        assert!(!check(Op::Gt, json!(100)).eval(&json!("150")));
        assert!(check(Op::Contains, json!("b")).eval(&json!("abc")));
        assert!(check(Op::Truthy, Value::Null).eval(&json!([1])));
        assert!(!check(Op::Exists, Value::Null).eval(&Value::Null));
        assert_eq!(
            Retry {
                max_attempts: 5,
                backoff_ms: 100,
                max_backoff_ms: 250
            }
            .backoff(3),
            250
        );
    }
}
