//! Templates in step parameters: `{{input.order.id}}`, `{{steps.fetch.output.body.items.0}}`,
//! `{{run.id}}`, `{{workflow.name}}`. A string that is one template alone becomes the JSON value
//! it names; templates inside longer text are replaced by the value's text.

use serde_json::Value;

/// Roots a template may start with.
const ROOTS: [&str; 4] = ["input", "steps", "run", "workflow"];

/// The paths (dot-separated, without braces) of every template in `value`.
pub fn references(value: &Value) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

fn collect(value: &Value, out: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::String(text) => {
            for path in paths(text)? {
                let root = path.split('.').next().unwrap_or_default();
                if !ROOTS.contains(&root) {
                    return Err(format!(
                        "template {{{{{path}}}}}: starts with one of input, steps, run, workflow"
                    ));
                }
                if root == "steps" {
                    let mut parts = path.split('.');
                    parts.next();
                    let (Some(_), Some("output")) = (parts.next(), parts.next()) else {
                        return Err(format!(
                            "template {{{{{path}}}}}: steps.<step id>.output[.field…]"
                        ));
                    };
                }
                out.push(path);
            }
        }
        Value::Array(items) => items.iter().try_for_each(|v| collect(v, out))?,
        Value::Object(map) => map.values().try_for_each(|v| collect(v, out))?,
        _ => {}
    }
    Ok(())
}

/// The template paths in one string.
fn paths(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        let path = after[..close].trim();
        if path.is_empty()
            || !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!("template {{{{{path}}}}}: a dotted path"));
        }
        out.push(path.to_string());
        rest = &after[close + 2..];
    }
    Ok(out)
}

/// The step a `steps.<id>…` path reads, if it reads one.
pub fn step_of(path: &str) -> Option<&str> {
    let mut parts = path.split('.');
    (parts.next() == Some("steps"))
        .then(|| parts.next())
        .flatten()
}

/// The value at `path` in `context`; `None` when some part is missing.
pub fn lookup<'a>(context: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(context, |node, part| match node {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// `value` with every template replaced from `context`. A missing path is an error, unless
/// `lenient` (then it is `null`).
pub fn render(value: &Value, context: &Value, lenient: bool) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => render_text(text, context, lenient)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render(v, context, lenient))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render(v, context, lenient)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn resolve(path: &str, context: &Value, lenient: bool) -> Result<Value, String> {
    match lookup(context, path) {
        Some(v) => Ok(v.clone()),
        None if lenient => Ok(Value::Null),
        None => Err(format!("template {{{{{path}}}}}: nothing there")),
    }
}

fn render_text(text: &str, context: &Value, lenient: bool) -> Result<Value, String> {
    let trimmed = text.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .filter(|inner| !inner.contains("{{") && !inner.contains("}}"))
    {
        return resolve(inner.trim(), context, lenient);
    }
    if !text.contains("{{") {
        return Ok(Value::String(text.to_string()));
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        match resolve(after[..close].trim(), context, lenient)? {
            Value::String(s) => out.push_str(&s),
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_templates_keep_their_type_and_inline_ones_become_text() {
        let context = json!({"input": {"n": 3, "name": "ada"}, "steps": {"a": {"output": {"items": [{"id": "x"}]}}}});
        assert_eq!(
            render(&json!("{{ input.n }}"), &context, false).unwrap(),
            json!(3)
        );
        assert_eq!(
            render(
                &json!({"u": "/users/{{input.name}}/{{steps.a.output.items.0.id}}"}),
                &context,
                false
            )
            .unwrap(),
            json!({"u": "/users/ada/x"})
        );
        assert!(render(&json!("{{input.missing}}"), &context, false).is_err());
        assert_eq!(
            render(&json!("{{input.missing}}"), &context, true).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn references_are_checked() {
        assert_eq!(
            references(&json!(["{{steps.a.output.x}}", {"k": "{{input}}"}])).unwrap(),
            vec!["steps.a.output.x", "input"]
        );
        assert!(references(&json!("{{env.HOME}}")).is_err());
        assert!(references(&json!("{{steps.a}}")).is_err());
        assert!(references(&json!("{{input")).is_err());
        assert_eq!(step_of("steps.a.output"), Some("a"));
        assert_eq!(step_of("input.a"), None);
    }
}
