//! An `llm` step end to end, on both databases: its rendered prompt goes through the platform's
//! real chat client to an OpenAI-compatible test double started here, and its answer feeds the
//! template of the HTTP step after it.

mod common;
mod workflow_support;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use common::{Backend, Env};
use dartmouth_platform::PlatformConfig;
use dartmouth_platform::ai::ProviderConfig;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use workflow_support::{define, step, tweak, wait_run};

/// What the double and the receiver were sent.
#[derive(Default)]
struct Seen {
    chats: Mutex<Vec<Value>>,
    posts: Mutex<Vec<Value>>,
}

const ANSWER: &str = "Ship it to Oslo.";

/// A streamed chat completion answering [`ANSWER`], as an OpenAI-compatible server does.
async fn chat(
    State(seen): State<Arc<Seen>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    seen.chats.lock().unwrap().push(body);
    let chunk = |delta: Value, finish: Value| {
        let event = json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {event}\n\n")
    };
    let mut stream = chunk(json!({"role": "assistant"}), Value::Null);
    for word in ANSWER.split_inclusive(' ') {
        stream.push_str(&chunk(json!({"content": word}), Value::Null));
    }
    stream.push_str(&chunk(json!({}), json!("stop")));
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}});
    stream.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], stream).into_response()
}

async fn receive(
    State(seen): State<Arc<Seen>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    seen.posts.lock().unwrap().push(body);
    axum::Json(json!({"ok": true}))
}

async fn serve(seen: Arc<Seen>) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/receive", axum::routing::post(receive))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, server)
}

async fn an_llm_step_prompts_the_model_and_its_answer_feeds_the_next_step(backend: Backend) {
    let seen = Arc::new(Seen::default());
    let (base, server) = serve(seen.clone()).await;
    let provider = ProviderConfig {
        name: "mock".into(),
        kind: "openai".into(),
        base_url: format!("{base}/v1"),
        api_key_env: String::new(),
        models: vec!["mock-gpt".into()],
        default_model: "mock-gpt".into(),
        vision: false,
        first_token_timeout_secs: 5,
    };
    let configure = move |config: &mut PlatformConfig| {
        tweak(config);
        config.ai.providers = vec![provider];
        config.ai.chain = vec!["mock".into()];
    };
    let Some(env) = Env::with(backend, configure).await else {
        server.abort();
        return;
    };
    let (status, body) = define(
        &env,
        json!({"name": "route-order", "steps": [
            {"id": "ask", "type": "llm", "system": "Answer with a city for {{input.customer}}.",
             "prompt": "Where should order {{input.order}} go?", "max_tokens": 20},
            {"id": "tell", "type": "http", "url": format!("{base}/receive"), "depends_on": ["ask"],
             "body": {"order": "{{input.order}}", "route": "{{steps.ask.output.text}}"}},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, run) = env
        .call(
            Method::POST,
            "/v1/workflows/route-order/runs",
            Some(&env.admin_token),
            Some(json!({"input": {"order": 42, "customer": "Ada"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap();
    let run = wait_run(&env, "route-order", id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "succeeded", "{run:#}");

    let chats = seen.chats.lock().unwrap().clone();
    assert_eq!(chats.len(), 1, "{chats:?}");
    let messages = &chats[0]["messages"];
    assert_eq!(messages[0]["role"], "system", "{messages}");
    assert_eq!(messages[0]["content"], "Answer with a city for Ada.");
    assert_eq!(messages[1]["role"], "user");
    assert_eq!(messages[1]["content"], "Where should order 42 go?");
    assert_eq!(chats[0]["model"], "mock-gpt");
    let ask = &step(&run, "ask")["output"];
    assert_eq!(
        (ask["text"].as_str(), ask["provider"].as_str()),
        (Some(ANSWER), Some("mock"))
    );
    let posts = seen.posts.lock().unwrap().clone();
    assert_eq!(posts, [json!({"order": 42, "route": ANSWER})]);
    server.abort();
}

on_both_backends!(an_llm_step_prompts_the_model_and_its_answer_feeds_the_next_step);
