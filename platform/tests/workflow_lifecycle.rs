//! Ending workflows on request, on both databases: a cancelled run stops its in-flight step and
//! undoes its completed steps newest first, once each even when the sidecar stops during the
//! undoing; a deleted workflow's unfinished runs are cancelled that way and then every version,
//! run and step is gone; a user's export holds the workflows they own and erasing the user
//! deletes them.

mod common;
mod workflow_support;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use dartmouth_platform::Extras;
use serde_json::{Value, json};
use sqlx::Row;
use std::time::{Duration, Instant};
use workflow_support::{Target, define, http, rebuild, step, target, tweak, wait_run};

/// Step `id` calling `/effect/<path>`, undone by a call to `/effect/<undo>`.
fn undoable(id: &str, base: &str, path: &str, deps: &[&str], undo: &str) -> Value {
    let mut step = http(id, base, path, deps);
    step["compensate"] = json!({"type": "http", "url": format!("{base}/effect/{undo}"),
                                "body": {"undo": format!("{{{{steps.{id}.output.body.step}}}}")}});
    step
}

async fn start(env: &Env, name: &str, input: Value) -> String {
    let (status, run) = env
        .call(
            Method::POST,
            &format!("/v1/workflows/{name}/runs"),
            Some(&env.admin_token),
            Some(json!({"input": input})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    run["id"].as_str().unwrap().to_string()
}

async fn cancel(env: &Env, name: &str, id: &str) -> (StatusCode, Value) {
    env.call(
        Method::POST,
        &format!("/v1/workflows/{name}/runs/{id}/cancel"),
        Some(&env.admin_token),
        None,
    )
    .await
}

fn over(run: &Value) -> bool {
    !["running", "compensating", "cancelling"].contains(&run["status"].as_str().unwrap())
}

/// The stored `workflow.run.finished` events of run `id`.
async fn finished_events(env: &Env, id: &str) -> Vec<Value> {
    let (status, page) = env
        .call(
            Method::GET,
            "/v1/events?topic=workflow.run.finished&limit=100",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["run"] == id)
        .cloned()
        .collect()
}

/// Waits until `what` holds of the target (10 s at most).
async fn until(target: &Target, what: &str, holds: impl Fn(&Target) -> bool) {
    let start = Instant::now();
    while !holds(target) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never: {what}; calls {:?}",
            target.order()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_cancelled_run_stops_its_step_and_undoes_the_completed_ones_newest_first(
    backend: Backend,
) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    let (target, base, server) = target().await;
    let (status, body) = define(
        &env,
        json!({"name": "order", "steps": [
            undoable("a", &base, "a", &[], "undo-a"),
            undoable("b", &base, "b", &["a"], "undo-b"),
            undoable("c", &base, "c", &["b"], "undo-c"),
            undoable("d", &base, "stall-d", &["c"], "undo-d"),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = start(&env, "order", json!({})).await;
    let key = |step: &str| format!("{id}:{step}");
    wait_run(&env, "order", &id, |r| step(r, "d")["status"] == "running").await;
    until(&target, "d is called", |t| t.hits(&key("d")) == 1).await;

    let (status, run) = cancel(&env, "order", &id).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert!(
        ["cancelling", "cancelled"].contains(&run["status"].as_str().unwrap()),
        "{run:#}"
    );
    assert_eq!(step(&run, "d")["status"], "cancelled", "{run:#}");
    let run = wait_run(&env, "order", &id, over).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert!(
        run["error"].as_str().unwrap().contains("cancelled by"),
        "{run:#}"
    );
    assert_eq!(
        target.order(),
        ["a", "b", "c", "stall-d", "undo-c", "undo-b", "undo-a"],
        "{run:#}"
    );
    for undo in ["a", "b", "c"] {
        let row = step(&run, &format!("compensate:{undo}"));
        assert_eq!(row["status"], "succeeded", "{run:#}");
        assert_eq!(target.hits(&key(&format!("compensate:{undo}"))), 1);
        assert_eq!(target.effects(&format!("undo-{undo}")), 1);
    }
    assert!(
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["step"] != "compensate:d"),
        "the step in flight did not complete, so nothing undoes it: {run:#}"
    );
    // The call in flight was dropped, not left to finish, and never made again.
    until(&target, "the stalled call is abandoned", |t| {
        t.abandoned() == ["stall-d"]
    })
    .await;
    assert_eq!(target.hits(&key("d")), 1);
    let events = finished_events(&env, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["status"], "cancelled");

    // A finished run cannot be cancelled; unknown runs and workflows are 404.
    let (status, body) = cancel(&env, "order", &id).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict".into())
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("already cancelled"), "{message}");
    let (status, body) = define(
        &env,
        json!({"name": "quick", "steps": [{"id": "only", "type": "join"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let quick = start(&env, "quick", json!({})).await;
    wait_run(&env, "quick", &quick, over).await;
    let (status, body) = cancel(&env, "quick", &quick).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("already succeeded"), "{message}");
    let (status, body) = cancel(&env, "order", "no-such-run").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-run")
    );
    let (status, _) = cancel(&env, "nowhere", &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.abort();
}

async fn compensations_of_a_cancelled_run_happen_once_across_a_restart(backend: Backend) {
    let Some(mut env) = Env::with(backend, tweak).await else {
        return;
    };
    let (target, base, server) = target().await;
    let (status, body) = define(
        &env,
        json!({"name": "saga", "steps": [
            undoable("a", &base, "a", &[], "undo-a"),
            undoable("b", &base, "b", &["a"], "hang-undo-b"),
            undoable("c", &base, "stall-c", &["b"], "undo-c"),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = start(&env, "saga", json!({})).await;
    let key = |step: &str| format!("{id}:{step}");
    until(&target, "c is called", |t| t.hits(&key("c")) == 1).await;
    let (status, run) = cancel(&env, "saga", &id).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    // Undoing b hangs: the sidecar is dropped in the middle of the compensation.
    until(&target, "b's undo is called", |t| {
        t.hits(&key("compensate:b")) == 1
    })
    .await;
    env.app = axum::Router::new();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = rebuild(&env, Extras::default).await;
    env.app = dartmouth_platform::router(state).unwrap();

    let run = wait_run(&env, "saga", &id, over).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(
        target.order(),
        ["a", "b", "stall-c", "hang-undo-b", "hang-undo-b", "undo-a"],
        "{run:#}"
    );
    let undo_b = step(&run, "compensate:b");
    assert_eq!(
        (undo_b["attempts"].clone(), undo_b["interruptions"].clone()),
        (json!(2), json!(1)),
        "{run:#}"
    );
    // Sent twice with one key, so applied once; a's undo was never interrupted.
    assert_eq!(target.effects("hang-undo-b"), 1);
    assert_eq!(target.effects("undo-a"), 1);
    assert_eq!(target.hits(&key("compensate:a")), 1);
    assert_eq!(finished_events(&env, &id).await.len(), 1);
    server.abort();
}

/// Rows left in a workflow table.
async fn rows(db: &dartmouth_platform::db::Db, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn deleting_a_workflow_cancels_its_runs_then_removes_everything(backend: Backend) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    let (target, base, server) = target().await;
    let second = http("second", &base, "{{input.second}}", &["first"]);
    let definition = json!({"name": "doomed",
        "triggers": [{"type": "schedule", "cron": "0 3 * * *"}],
        "steps": [undoable("first", &base, "first", &[], "undo-first"), second]});
    for version in [1, 2] {
        let (status, body) = define(&env, definition.clone()).await;
        assert_eq!(
            (status, body["version"].clone()),
            (StatusCode::CREATED, json!(version))
        );
    }
    let done = start(&env, "doomed", json!({"second": "second"})).await;
    wait_run(&env, "doomed", &done, over).await;
    let stuck = start(&env, "doomed", json!({"second": "stall-second"})).await;
    wait_run(&env, "doomed", &stuck, |r| {
        step(r, "second")["status"] == "running"
    })
    .await;
    let db = env.db().await;
    assert_eq!(rows(&db, "workflow_schedules").await, 1);

    // Only the owner (or an admin) deletes; unknown names are 404.
    let other = env.agent_key("other", None).await;
    let (status, body) = env
        .call(Method::DELETE, "/v1/workflows/doomed", Some(&other), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let (status, body) = env
        .call(
            Method::DELETE,
            "/v1/workflows/nothing-here",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, report) = env
        .call(
            Method::DELETE,
            "/v1/workflows/doomed",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert!(
        [StatusCode::OK, StatusCode::ACCEPTED].contains(&status),
        "{status} {report}"
    );
    assert_eq!(report["name"], "doomed");
    assert_eq!(report["versions"], 2);
    assert_eq!(report["cancelled_runs"], 1);
    // The name is gone at once; the cancelled run undoes its first step, then its rows go.
    let (status, _) = env
        .call(
            Method::GET,
            "/v1/workflows/doomed",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = env
        .call(Method::GET, "/v1/workflows", Some(&env.admin_token), None)
        .await;
    assert_eq!(list["workflows"], json!([]), "{list}");
    let start = Instant::now();
    while rows(&db, "workflow_definitions").await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the deleted workflow's rows stay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for table in ["workflow_runs", "workflow_steps", "workflow_schedules"] {
        assert_eq!(rows(&db, table).await, 0, "{table}");
    }
    assert_eq!(target.hits(&format!("{stuck}:compensate:first")), 1);
    assert_eq!(target.hits(&format!("{done}:compensate:first")), 0);
    assert_eq!(target.effects("undo-first"), 1);
    let events = finished_events(&env, &stuck).await;
    assert_eq!(
        (
            events.len(),
            events[0]["data"]["status"].clone(),
            events[0]["data"]["workflow"].clone()
        ),
        (1, json!("cancelled"), json!("doomed")),
        "{events:?}"
    );
    // The name can be used again, from version 1.
    let (status, body) = define(&env, definition).await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::CREATED, json!(1)),
        "{body}"
    );
    server.abort();
}

async fn a_users_export_holds_their_workflows_and_erasure_deletes_them(backend: Backend) {
    let Some(env) = Env::with(backend, tweak).await else {
        return;
    };
    let (user_id, token) = env.user("developer").await;
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/workflows",
            Some(&token),
            Some(json!({"name": "mine", "steps": [{"id": "only", "type": "join"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, run) = env
        .call(
            Method::POST,
            "/v1/workflows/mine/runs",
            Some(&token),
            Some(json!({"input": {"n": 7}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    wait_run(&env, "mine", &id, over).await;
    let (status, _) = define(
        &env,
        json!({"name": "theirs", "steps": [{"id": "only", "type": "join"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, export) = env
        .call(
            Method::GET,
            &format!("/v1/users/{user_id}/export"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let workflows = export["workflows"].as_array().unwrap();
    assert_eq!(workflows.len(), 1, "{export:#}");
    assert_eq!(workflows[0]["name"], "mine");
    assert_eq!(
        workflows[0]["versions"][0]["owner"],
        format!("user:{user_id}")
    );
    assert_eq!(workflows[0]["runs"][0]["id"], id.as_str());
    assert_eq!(workflows[0]["runs"][0]["input"]["n"], 7);
    assert_eq!(workflows[0]["runs"][0]["steps"][0]["status"], "succeeded");

    let (status, report) = env
        .call(
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["workflows"], 1, "{report}");
    let (status, _) = env
        .call(
            Method::GET,
            "/v1/workflows/mine",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env
        .call(
            Method::GET,
            "/v1/workflows/theirs",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let db = env.db().await;
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM workflow_runs WHERE id = $1")
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(rows(&db, "workflow_definitions").await, 1);
}

on_both_backends!(
    a_cancelled_run_stops_its_step_and_undoes_the_completed_ones_newest_first,
    compensations_of_a_cancelled_run_happen_once_across_a_restart,
    deleting_a_workflow_cancels_its_runs_then_removes_everything,
    a_users_export_holds_their_workflows_and_erasure_deletes_them,
);
