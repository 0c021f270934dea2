//! What the workflow test files share: an HTTP target that counts hits per idempotency key and
//! applies each effect once per key, and helpers to define workflows, poll runs and rebuild a
//! sidecar on the same database.
#![allow(dead_code)]

use crate::common::Env;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use dartmouth_platform::{AppState, Extras, PlatformConfig};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A target that counts hits per idempotency key and applies each effect once per key.
#[derive(Default)]
pub struct Target {
    hits: Mutex<HashMap<String, u32>>,
    effects: Mutex<HashMap<String, HashSet<String>>>,
    order: Mutex<Vec<String>>,
    abandoned: Mutex<Vec<String>>,
}

impl Target {
    pub fn hits(&self, key: &str) -> u32 {
        self.hits.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    pub fn effects(&self, name: &str) -> usize {
        self.effects
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, HashSet::len)
    }
    pub fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
    /// Calls whose caller hung up before the answer, by name.
    pub fn abandoned(&self) -> Vec<String> {
        self.abandoned.lock().unwrap().clone()
    }
}

/// Notes a call as abandoned when its handler is dropped before it finishes.
struct Unanswered {
    target: Arc<Target>,
    name: String,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.answered {
            self.target
                .abandoned
                .lock()
                .unwrap()
                .push(self.name.clone());
        }
    }
}

pub async fn effect(
    State(target): State<Arc<Target>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let hits = {
        let mut hits = target.hits.lock().unwrap();
        let n = hits.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    target.order.lock().unwrap().push(name.clone());
    match name.as_str() {
        "flaky" if hits <= 2 => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "try again"})),
            );
        }
        // The first call never answers in time: the sidecar is dropped while it waits.
        hang if hang.starts_with("hang") && hits == 1 => {
            tokio::time::sleep(Duration::from_secs(60)).await
        }
        // Never answers in time (until the caller gives up).
        stall if stall.starts_with("stall") => {
            let mut pending = Unanswered {
                target: target.clone(),
                name: name.clone(),
                answered: false,
            };
            tokio::time::sleep(Duration::from_secs(60)).await;
            pending.answered = true;
        }
        "broken" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": "down"})),
            );
        }
        _ => {}
    }
    target
        .effects
        .lock()
        .unwrap()
        .entry(name.clone())
        .or_default()
        .insert(key);
    (
        StatusCode::OK,
        axum::Json(json!({"step": name, "hits": hits})),
    )
}

pub async fn target() -> (Arc<Target>, String, tokio::task::JoinHandle<()>) {
    let target = Arc::new(Target::default());
    let app = axum::Router::new()
        .route("/effect/{name}", axum::routing::post(effect))
        .with_state(target.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (target, base, server)
}

pub fn tweak(config: &mut PlatformConfig) {
    config.workflows.allow_private_targets = true;
    config.workflows.lease_ms = 300;
    config.workflows.poll_ms = 20;
}

pub async fn define(env: &Env, body: Value) -> (StatusCode, Value) {
    env.call(
        Method::POST,
        "/v1/workflows",
        Some(&env.admin_token),
        Some(body),
    )
    .await
}

pub async fn run_of(env: &Env, name: &str, id: &str) -> Value {
    let (status, run) = env
        .call(
            Method::GET,
            &format!("/v1/workflows/{name}/runs/{id}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run
}

pub fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

/// Polls run `id` until `done` holds (10 s at most).
pub async fn wait_run(env: &Env, name: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let run = run_of(env, name, id).await;
        if done(&run) {
            return run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "run did not get there: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Builds a sidecar on `env`'s database, once the previous one has let go of its files.
pub async fn rebuild(env: &Env, extras: impl Fn() -> Extras) -> AppState {
    let start = Instant::now();
    loop {
        match AppState::build_with(env.config.clone(), extras()).await {
            Ok(state) => return state,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                eprintln!("sidecar not rebuilt yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("sidecar rebuild: {e}"),
        }
    }
}

pub fn http(id: &str, base: &str, path: &str, deps: &[&str]) -> Value {
    json!({"id": id, "type": "http", "method": "POST", "url": format!("{base}/effect/{path}"), "depends_on": deps})
}
