//! The graph checks of a definition: its dependencies form a DAG (a cycle is named), and every
//! template reads only the input, the run, or a step the reading step waits for.

use super::{Action, Definition};
use crate::workflow::template;
use serde_json::{Value, json};

/// A cycle as `a -> b -> a`, if the dependency graph has one.
pub(super) fn find_cycle(def: &Definition) -> Option<String> {
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
pub(super) fn check_templates(def: &Definition) -> Result<(), String> {
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
