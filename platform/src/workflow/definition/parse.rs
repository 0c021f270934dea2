//! Parsing a definition's JSON and checking its fields: step kinds, ids, retry and timeouts,
//! references between steps and triggers; the graph checks are in `graph`.

use super::graph::{check_templates, find_cycle};
use super::{Action, Compensation, Definition, KINDS, OnResume, Retry, Step, Trigger};
use crate::workflow::{MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_TIMEOUT_MS, MAX_TRIGGERS};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

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
                crate::workflow::Cron::parse(cron)?;
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
