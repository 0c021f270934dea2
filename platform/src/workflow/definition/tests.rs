//! Unit tests of parsing, validation and checks.

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
