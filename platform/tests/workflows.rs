//! Workflows on both databases: a five-step run with a parallel branch and a step that fails
//! twice survives its sidecar being dropped mid-run (a new one on the same database resumes it,
//! and every step's effect happens once, by idempotency key); cron triggers fire at the right
//! virtual times; an event starts a run that branches and waits for a second event; bad
//! definitions are refused with the reason; a failure compensates completed steps newest first.

mod common;
mod workflow_support;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use dartmouth_platform::workflow::cron::utc_ms;
use dartmouth_platform::workflow::{Clock, ManualClock};
use dartmouth_platform::{AppState, Extras};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use workflow_support::{define, http, rebuild, run_of, step, target, tweak, wait_run};

async fn a_run_resumes_after_its_sidecar_is_dropped_and_every_effect_happens_once(
    backend: Backend,
) {
    let Some(mut env) = Env::with(backend, tweak).await else {
        return;
    };
    let (target, base, server) = target().await;
    let mut flaky = http("flaky", &base, "flaky", &["start"]);
    flaky["retry"] = json!({"max_attempts": 4, "backoff_ms": 20});
    let mut finish = http("finish", &base, "finish", &["pack"]);
    finish["body"] =
        json!({"packed": "{{steps.pack.output.body.step}}", "order": "{{input.order}}"});
    let (status, version) = define(
        &env,
        json!({"name": "fulfil", "steps": [
            http("start", &base, "start", &[]),
            flaky,
            http("hang", &base, "hang", &["start"]),
            http("pack", &base, "pack", &["flaky", "hang"]),
            finish,
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    assert_eq!(version["version"], 1);
    let (status, run) = env
        .call(
            Method::POST,
            "/v1/workflows/fulfil/runs",
            Some(&env.admin_token),
            Some(json!({"input": {"order": 42}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let key = |step: &str| format!("{id}:{step}");

    // The parallel branch: flaky fails twice and succeeds while hang's call is in flight.
    let run = wait_run(&env, "fulfil", &id, |run| {
        step(run, "flaky")["status"] == "succeeded" && step(run, "hang")["status"] == "running"
    })
    .await;
    assert_eq!(step(&run, "flaky")["attempts"], 3, "{run:#}");
    assert_eq!(step(&run, "pack")["status"], "pending");
    assert_eq!(target.hits(&key("hang")), 1);

    // Killed: the sidecar's state goes away mid-step.
    env.app = axum::Router::new();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = rebuild(&env, Extras::default).await;
    env.app = dartmouth_platform::router(state).unwrap();

    let run = wait_run(&env, "fulfil", &id, |run| run["status"] != "running").await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let hang = step(&run, "hang");
    assert_eq!(
        (hang["attempts"].clone(), hang["interruptions"].clone()),
        (json!(2), json!(1))
    );
    for (name, hits) in [
        ("start", 1),
        ("flaky", 3),
        ("hang", 2),
        ("pack", 1),
        ("finish", 1),
    ] {
        assert_eq!(target.hits(&key(name)), hits, "hits of {name}");
        assert_eq!(target.effects(name), 1, "effects of {name}");
        assert_eq!(step(&run, name)["idempotency_key"], key(name));
    }
    assert_eq!(run["output"]["finish"]["body"]["step"], "finish", "{run:#}");

    // Every transition was announced on the bus (and stored).
    for (topic, at_least) in [
        ("workflow.run.started", 1),
        ("workflow.step.finished", 5),
        ("workflow.run.finished", 1),
    ] {
        let (status, page) = env
            .call(
                Method::GET,
                &format!("/v1/events?topic={topic}&limit=100"),
                Some(&env.admin_token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let ours = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["run"] == id.as_str())
            .count();
        assert!(ours >= at_least, "{topic}: {page}");
    }
    server.abort();
}

/// Waits until the schedules were evaluated at the clock's time.
async fn settle(state: &AppState, clock: &ManualClock) {
    let start = Instant::now();
    while state.workflows.schedules_checked_at() < clock.now() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "schedules not evaluated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn scheduled(env: &Env) -> Vec<i64> {
    let (status, page) = env
        .call(
            Method::GET,
            "/v1/workflows/tick/runs",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut ticks: Vec<i64> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["trigger"], "schedule");
            r["input"]["scheduled_at"].as_i64().unwrap()
        })
        .collect();
    ticks.sort();
    ticks
}

async fn cron_fires_at_the_right_virtual_times(backend: Backend) {
    let Some(mut env) = Env::with(backend, tweak).await else {
        return;
    };
    let clock = ManualClock::new(utc_ms(2026, 1, 1, 0, 0) + 30_000);
    env.app = axum::Router::new();
    let manual = clock.clone();
    let state = rebuild(&env, || Extras {
        workflow_clock: Some(Clock::Manual(manual.clone())),
        ..Extras::default()
    })
    .await;
    env.app = dartmouth_platform::router(state.clone()).unwrap();
    let (status, body) = define(
        &env,
        json!({"name": "tick", "triggers": [{"type": "schedule", "cron": "*/15 * * * *"}],
               "steps": [{"id": "noop", "type": "join"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let at = |h: u32, m: u32| utc_ms(2026, 1, 1, h, m);

    clock.set(at(0, 14) + 59_999);
    settle(&state, &clock).await;
    assert!(scheduled(&env).await.is_empty());
    clock.set(at(0, 15));
    settle(&state, &clock).await;
    assert_eq!(scheduled(&env).await, vec![at(0, 15)]);
    clock.set(at(0, 29));
    settle(&state, &clock).await;
    assert_eq!(scheduled(&env).await, vec![at(0, 15)]);
    clock.set(at(0, 30) + 10_000);
    settle(&state, &clock).await;
    assert_eq!(scheduled(&env).await, vec![at(0, 15), at(0, 30)]);
    // An hour without a pass: the missed ticks coalesce into one run, the latest.
    clock.set(at(1, 20));
    settle(&state, &clock).await;
    assert_eq!(scheduled(&env).await, vec![at(0, 15), at(0, 30), at(1, 15)]);
    // Runs of schedules are ordinary runs.
    let (_, page) = env
        .call(
            Method::GET,
            "/v1/workflows/tick/runs",
            Some(&env.admin_token),
            None,
        )
        .await;
    let first = page["runs"][0]["id"].as_str().unwrap().to_string();
    let run = wait_run(&env, "tick", &first, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
}

async fn publish(env: &Env, topic: &str, data: Value) {
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/events",
            Some(&env.admin_token),
            Some(json!({"topic": topic, "data": data})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn an_event_starts_a_run_that_branches_and_waits_for_another_event(backend: Backend) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    let (target, base, server) = target().await;
    let mut review = http("review", &base, "review", &[]);
    review["body"] = json!({"order": "{{input.data.order}}"});
    let (status, body) = define(
        &env,
        json!({"name": "on-order", "triggers": [{"type": "event", "topic": "order.created"}], "steps": [
            {"id": "big", "type": "condition", "check": {"left": "{{input.data.amount}}", "op": "gt", "right": 100},
             "then": ["review"], "else": ["thank"]},
            review,
            http("thank", &base, "thank", &[]),
            {"id": "paid", "type": "wait_event", "topic": "payment.confirmed", "match": {"order": "{{input.data.order}}"},
             "depends_on": ["big"], "timeout_ms": 20000},
            {"id": "done", "type": "join", "depends_on": ["review", "thank", "paid"]},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    publish(&env, "order.updated", json!({"order": "A1"})).await;
    publish(&env, "order.created", json!({"order": "A1", "amount": 250})).await;
    let start = Instant::now();
    let id = loop {
        let (_, page) = env
            .call(
                Method::GET,
                "/v1/workflows/on-order/runs",
                Some(&env.admin_token),
                None,
            )
            .await;
        if let Some(run) = page["runs"].as_array().and_then(|r| r.first()) {
            assert_eq!(page["runs"].as_array().unwrap().len(), 1, "{page}");
            assert_eq!(run["trigger"], "event");
            assert_eq!(run["input"]["topic"], "order.created");
            break run["id"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no run started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run = wait_run(&env, "on-order", &id, |r| {
        step(r, "review")["status"] == "succeeded"
    })
    .await;
    assert_eq!(step(&run, "thank")["status"], "skipped");
    assert_eq!(step(&run, "big")["output"]["result"], true);
    publish(&env, "payment.confirmed", json!({"order": "B2"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(run_of(&env, "on-order", &id).await["status"], "running");
    publish(
        &env,
        "payment.confirmed",
        json!({"order": "A1", "amount": 250}),
    )
    .await;
    let run = wait_run(&env, "on-order", &id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        run["output"]["done"]["paid"]["data"]["order"], "A1",
        "{run:#}"
    );
    assert_eq!(target.effects("review"), 1);
    assert_eq!(target.effects("thank"), 0);
    server.abort();
}

async fn bad_definitions_are_refused_with_the_reason(backend: Backend) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    let url = "http://example.com/x";
    let cases = [
        (
            json!([{"id": "a", "type": "http", "url": url, "depends_on": ["c"]},
                   {"id": "b", "type": "http", "url": url, "depends_on": ["a"]},
                   {"id": "c", "type": "http", "url": url, "depends_on": ["b"]}]),
            json!([]),
            "cycle",
        ),
        (
            json!([{"id": "a", "type": "teleport"}]),
            json!([]),
            "unknown step type \"teleport\"",
        ),
        (
            json!([{"id": "a", "type": "http", "url": url, "depends_on": ["ghost"]}]),
            json!([]),
            "depends on \"ghost\", which is not a step",
        ),
        (
            json!([{"id": "a", "type": "join"}]),
            json!([{"type": "schedule", "cron": "61 * * * *"}]),
            "minute",
        ),
        (
            json!([{"id": "a", "type": "join"}]),
            json!([{"type": "event", "topic": "Order.Created"}]),
            "pattern",
        ),
    ];
    for (steps, triggers, why) in cases {
        let (status, body) = define(
            &env,
            json!({"name": "bad", "steps": steps, "triggers": triggers}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {body}");
        assert_eq!(error_code(&body), "unprocessable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
    }
    let (status, body) = define(
        &env,
        json!({"name": "a b", "steps": [{"id": "a", "type": "join"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = define(&env, json!({"name": "x", "stepz": []})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing was stored; unknown workflows and runs are 404.
    let (_, list) = env
        .call(Method::GET, "/v1/workflows", Some(&env.admin_token), None)
        .await;
    assert_eq!(list["workflows"], json!([]));
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/workflows/bad/runs",
            Some(&env.admin_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Versions: each POST adds one; runs pin the version they start with.
    let one = json!({"name": "versioned", "steps": [{"id": "a", "type": "join"}]});
    assert_eq!(define(&env, one.clone()).await.1["version"], 1);
    let mut two = one.clone();
    two["steps"] =
        json!([{"id": "a", "type": "join"}, {"id": "b", "type": "join", "depends_on": ["a"]}]);
    assert_eq!(define(&env, two).await.1["version"], 2);
    let (status, run) = env
        .call(
            Method::POST,
            "/v1/workflows/versioned/runs",
            Some(&env.admin_token),
            Some(json!({"version": 1, "idempotency_key": "k1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(
        (
            run["version"].clone(),
            run["steps"].as_array().unwrap().len()
        ),
        (json!(1), 1)
    );
    let (status, again) = env
        .call(
            Method::POST,
            "/v1/workflows/versioned/runs",
            Some(&env.admin_token),
            Some(json!({"version": 1, "idempotency_key": "k1"})),
        )
        .await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &run["id"]));
    let (_, versions) = env
        .call(
            Method::GET,
            "/v1/workflows/versioned/versions",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let (status, _) = env
        .call(
            Method::GET,
            "/v1/workflows/versioned/versions/3",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another agent may not read or run it; an end user may not use workflows at all.
    let agent = env.agent_key("other", None).await;
    let (status, _) = env
        .call(Method::GET, "/v1/workflows/versioned", Some(&agent), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, user) = env.user("user").await;
    let (status, _) = env
        .call(Method::GET, "/v1/workflows", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn a_failure_compensates_completed_steps_in_reverse(backend: Backend) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    let (target, base, server) = target().await;
    let mut a = http("a", &base, "a", &[]);
    a["compensate"] = json!({"type": "http", "url": format!("{base}/effect/undo-a"), "body": {"undo": "{{steps.a.output.body.step}}"}});
    let mut b = http("b", &base, "b", &["a"]);
    b["compensate"] = json!({"type": "http", "url": format!("{base}/effect/undo-b")});
    let mut c = http("c", &base, "broken", &["b"]);
    c["retry"] = json!({"max_attempts": 2, "backoff_ms": 10});
    let (status, body) = define(
        &env,
        json!({"name": "saga", "steps": [a, b, c, http("d", &base, "d", &["c"])]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, run) = env
        .call(
            Method::POST,
            "/v1/workflows/saga/runs",
            Some(&env.admin_token),
            Some(json!({})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let run = wait_run(&env, "saga", &id, |r| {
        !["running", "compensating"].contains(&r["status"].as_str().unwrap())
    })
    .await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"].as_str().unwrap().contains("step c failed"),
        "{run:#}"
    );
    assert_eq!(
        target.order(),
        ["a", "b", "broken", "broken", "undo-b", "undo-a"],
        "{run:#}"
    );
    assert_eq!(step(&run, "c")["attempts"], 2);
    assert_eq!(step(&run, "d")["status"], "cancelled");
    for undo in ["compensate:a", "compensate:b"] {
        assert_eq!(step(&run, undo)["status"], "succeeded", "{run:#}");
    }
    assert!(
        step(&run, "compensate:b")["seq"].as_i64() < step(&run, "compensate:a")["seq"].as_i64()
    );
    server.abort();
}

/// Not a limit, a measurement: steps per second through the engine (join steps, so the cost is
/// the engine's own: two guarded updates, re-reading the run, one event per step).
async fn throughput_of_the_engine_is_measured(backend: Backend) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    const RUNS: usize = 10;
    const WIDTH: usize = 4;
    let mut steps = vec![json!({"id": "s0", "type": "join"})];
    for i in 0..WIDTH {
        steps.push(json!({"id": format!("p{i}"), "type": "join", "depends_on": ["s0"]}));
    }
    let all: Vec<String> = (0..WIDTH).map(|i| format!("p{i}")).collect();
    steps.push(json!({"id": "end", "type": "join", "depends_on": all}));
    let per_run = steps.len();
    let (status, body) = define(&env, json!({"name": "bench", "steps": steps})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        let (_, run) = env
            .call(
                Method::POST,
                "/v1/workflows/bench/runs",
                Some(&env.admin_token),
                Some(json!({})),
            )
            .await;
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let run = wait_run(&env, "bench", id, |r| r["status"] != "running").await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "workflow engine on {backend:?}: {} steps in {elapsed:.2} s = {:.0} steps/s ({RUNS} runs of {per_run} steps, {WIDTH} in parallel)",
        RUNS * per_run,
        (RUNS * per_run) as f64 / elapsed
    );
}

on_both_backends!(
    throughput_of_the_engine_is_measured,
    a_run_resumes_after_its_sidecar_is_dropped_and_every_effect_happens_once,
    cron_fires_at_the_right_virtual_times,
    an_event_starts_a_run_that_branches_and_waits_for_another_event,
    bad_definitions_are_refused_with_the_reason,
    a_failure_compensates_completed_steps_in_reverse,
);
