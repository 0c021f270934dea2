//! The AI endpoints against OpenAI-compatible and Anthropic test doubles (the real client code is
//! what runs): answers whole and streamed, the fallback chain, the cache, costs and budgets, the
//! content filter, embeddings and moderations with the real MiniLM, and bad input.

mod common;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use common::{Backend, Env, error_code};
use dartmouth_platform::PlatformConfig;
use dartmouth_platform::ai::{Price, ProviderConfig};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// How a test double answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Answer,
    Fail,
    Hang,
}

struct Double {
    mode: Mutex<Mode>,
    answer: String,
    requests: AtomicU32,
    last: Mutex<Value>,
}

fn sse(events: Vec<String>) -> axum::response::Response {
    let body: String = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn openai_double(
    State(d): State<Arc<Double>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    d.requests.fetch_add(1, Ordering::SeqCst);
    *d.last.lock().unwrap() = body.clone();
    let mode = *d.mode.lock().unwrap();
    match mode {
        Mode::Fail => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
        }
        Mode::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        Mode::Answer => {}
    }
    assert_eq!(body["stream"], true);
    let chunk = |delta: Value, finish: Value| {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).to_string()
    };
    let words: Vec<String> = d.answer.split_inclusive(' ').map(String::from).collect();
    let mut events = vec![chunk(json!({"role": "assistant"}), Value::Null)];
    events.extend(
        words
            .iter()
            .map(|w| chunk(json!({"content": w}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    events.push(
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).to_string(),
    );
    events.push("[DONE]".into());
    sse(events)
}

async fn anthropic_double(
    State(d): State<Arc<Double>>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    d.requests.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers["x-api-key"], "anthropic-test-key");
    assert!(headers.contains_key("anthropic-version"));
    *d.last.lock().unwrap() = body;
    let events = vec![
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 12}}}).to_string(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string(),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d.answer}}).to_string(),
        json!({"type": "content_block_stop", "index": 0}).to_string(),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}).to_string(),
        json!({"type": "message_stop"}).to_string(),
    ];
    sse(events)
}

async fn start_double(answer: &str, anthropic: bool) -> (Arc<Double>, String) {
    let d = Arc::new(Double {
        mode: Mutex::new(Mode::Answer),
        answer: answer.into(),
        requests: AtomicU32::new(0),
        last: Mutex::new(Value::Null),
    });
    let app = if anthropic {
        axum::Router::new().route("/v1/messages", axum::routing::post(anthropic_double))
    } else {
        axum::Router::new().route("/v1/chat/completions", axum::routing::post(openai_double))
    }
    .with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (d, base)
}

fn provider(name: &str, kind: &str, base: &str, models: &[&str]) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: kind.into(),
        base_url: if kind == "openai" {
            format!("{base}/v1")
        } else {
            base.into()
        },
        api_key_env: String::new(),
        models: models.iter().map(|m| m.to_string()).collect(),
        default_model: models.first().map(|m| m.to_string()).unwrap_or_default(),
        vision: false,
        first_token_timeout_secs: 1,
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}], "max_tokens": 32})
}

async fn post(env: &Env, path: &str, body: Value, agent: Option<&str>) -> (StatusCode, Value) {
    let request = axum::http::Request::post(path)
        .header("authorization", format!("Bearer {}", env.admin_token))
        .header("content-type", "application/json");
    let request = match agent {
        Some(a) => request.header("x-dartmouth-agent", a),
        None => request,
    };
    let response = tower::ServiceExt::oneshot(
        env.app.clone(),
        request
            .body(axum::body::Body::from(body.to_string()))
            .unwrap(),
    )
    .await
    .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// The text of a streamed answer (and whether the stream ended with [DONE]).
fn streamed_text(body: &Value) -> (String, bool, Option<Value>) {
    let raw = body.as_str().expect("an SSE body");
    let mut text = String::new();
    let mut usage = None;
    for data in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            return (text, true, usage);
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(t) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    (text, false, usage)
}

fn with_providers(
    providers: Vec<ProviderConfig>,
    chain: &[&str],
) -> impl FnOnce(&mut PlatformConfig) {
    move |c| {
        c.ai.providers = providers;
        c.ai.chain = chain.iter().map(|s| s.to_string()).collect();
        c.ai.prices.insert(
            "mock-gpt".into(),
            Price {
                input_per_million: 1.0,
                output_per_million: 2.0,
            },
        );
    }
}

async fn answers_whole_and_streamed_with_cache_and_costs(backend: Backend) {
    let (double, base) = start_double("Paris is the capital of France.", false).await;
    let Some(env) = Env::with(
        backend,
        with_providers(
            vec![provider("mock", "openai", &base, &["mock-gpt"])],
            &["mock"],
        ),
    )
    .await
    else {
        return;
    };
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "Capital of France?"),
        Some("geo"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Paris is the capital of France."
    );
    assert_eq!(body["usage"]["total_tokens"], 15);
    assert_eq!(
        double.last.lock().unwrap()["messages"][0]["content"],
        "Be brief."
    );
    // The same question again (whitespace differs): a cache hit, the provider is not asked.
    let (_, again) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "  Capital of   France? "),
        Some("geo"),
    )
    .await;
    assert_eq!(
        again["choices"][0]["message"]["content"],
        "Paris is the capital of France."
    );
    assert_eq!(double.requests.load(Ordering::SeqCst), 1);
    // Streamed, with usage.
    let mut streamed = chat("mock-gpt", "Capital of Spain?");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = post(&env, "/v1/chat/completions", streamed, Some("geo")).await;
    assert_eq!(status, StatusCode::OK);
    let (text, done, usage) = streamed_text(&body);
    assert_eq!(text, "Paris is the capital of France.");
    assert!(done, "the stream ends with [DONE]");
    assert_eq!(usage.unwrap()["completion_tokens"], 5);
    // Costs: two paid calls of 10 + 5 tokens at $1 / $2 per million = 20 micro-dollars each.
    let (status, rows) = env
        .call(
            Method::GET,
            "/v1/ai/usage?group_by=agent",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let geo = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "geo")
        .unwrap();
    assert_eq!(geo["requests"], 3);
    assert_eq!(geo["cached"], 1);
    assert!(
        (geo["cost_usd"].as_f64().unwrap() - 0.00004).abs() < 1e-9,
        "{geo}"
    );
    let (_, by_provider) = env
        .call(
            Method::GET,
            "/v1/ai/usage?group_by=provider",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(by_provider[0]["key"], "mock");
    let (_, metrics, _) = env
        .send(Method::GET, "/metrics", None, None, Vec::new())
        .await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("dartmouth_platform_llm_cache_hits_total 1"),
        "{metrics}"
    );
}

async fn the_fallback_chain_skips_failing_and_silent_providers(backend: Backend) {
    let (first, base1) = start_double("from the first", false).await;
    let (_, base2) = start_double("Bonjour from Anthropic.", true).await;
    // SAFETY: set before the providers are built; no other thread reads this variable.
    unsafe { std::env::set_var("DARTMOUTH_TEST_ANTHROPIC_KEY", "anthropic-test-key") };
    let mut claude = provider("claude", "anthropic", &base2, &["claude-test"]);
    claude.api_key_env = "DARTMOUTH_TEST_ANTHROPIC_KEY".into();
    let Some(env) = Env::with(
        backend,
        with_providers(
            vec![provider("primary", "openai", &base1, &["mock-gpt"]), claude],
            &["primary", "claude"],
        ),
    )
    .await
    else {
        return;
    };
    *first.mode.lock().unwrap() = Mode::Fail;
    let (status, body) = post(&env, "/v1/chat/completions", chat("mock-gpt", "one"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Bonjour from Anthropic."
    );
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    *first.mode.lock().unwrap() = Mode::Hang;
    let (status, body) = post(&env, "/v1/chat/completions", chat("mock-gpt", "two"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Bonjour from Anthropic."
    );
    // Every provider failing is a clear 502.
    let Some(env) = Env::with(
        backend,
        with_providers(
            vec![provider("primary", "openai", &base1, &["mock-gpt"])],
            &["primary"],
        ),
    )
    .await
    else {
        return;
    };
    *first.mode.lock().unwrap() = Mode::Fail;
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "three"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{body}"
    );
}

async fn budgets_alert_at_thresholds_then_stop(backend: Backend) {
    let (double, base) = start_double("An answer.", false).await;
    let Some(env) = Env::with(
        backend,
        with_providers(
            vec![provider("mock", "openai", &base, &["mock-gpt"])],
            &["mock"],
        ),
    )
    .await
    else {
        return;
    };
    let (status, budget) = env
        .call(
            Method::PUT,
            "/v1/agents/spender/budget",
            Some(&env.admin_token),
            Some(json!({"limit_usd": 0.00003, "period": "day", "alert_percents": [50, 100]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{budget}");
    for question in ["first", "second"] {
        let (status, body) = post(
            &env,
            "/v1/chat/completions",
            chat("mock-gpt", question),
            Some("spender"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "third"),
        Some("spender"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(error_code(&body), "budget_exceeded");
    assert_eq!(
        double.requests.load(Ordering::SeqCst),
        2,
        "the refused call never reached the provider"
    );
    let (_, alerts) = env
        .call(
            Method::GET,
            "/v1/events?topic=agent.budget.alert",
            Some(&env.admin_token),
            None,
        )
        .await;
    let percents: Vec<i64> = alerts["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["percent"].as_i64().unwrap())
        .collect();
    assert_eq!(percents, [50, 100]);
    let (_, status_now) = env
        .call(
            Method::GET,
            "/v1/agents/spender/budget",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status_now["exhausted"], true);
    // Other agents are unaffected.
    let (status, _) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "fourth"),
        Some("frugal"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for bad in [
        json!({"limit_usd": -1, "period": "day"}),
        json!({"limit_usd": 1, "period": "week"}),
    ] {
        let (status, _) = env
            .call(
                Method::PUT,
                "/v1/agents/spender/budget",
                Some(&env.admin_token),
                Some(bad),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

async fn the_content_filter_blocks_redacts_and_flags_with_audit(backend: Backend) {
    let (double, base) = start_double("Your ticket is SECRET-4411. Have a nice day.", false).await;
    let Some(env) = Env::with(backend, |c| {
        with_providers(
            vec![provider("mock", "openai", &base, &["mock-gpt"])],
            &["mock"],
        )(c);
        c.filter.blocklist = vec!["frobnicate".into()];
        c.filter.patterns = vec![dartmouth_platform::filter::PatternRule {
            name: "secret".into(),
            regex: r"SECRET-\d+".into(),
            action: dartmouth_platform::filter::Action::Redact,
        }];
    })
    .await
    else {
        return;
    };
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "Please FROBNICATE the server"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "content_blocked");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocklist")
    );
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "I am going to kill you"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("violence"),
        "{body}"
    );
    assert_eq!(double.requests.load(Ordering::SeqCst), 0);
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        chat("mock-gpt", "Where is my ticket? Mail bob@example.com"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Your ticket is [redacted]. Have a nice day."
    );
    let mut stream = chat("mock-gpt", "And again, streamed?");
    stream["stream"] = json!(true);
    let (_, body) = post(&env, "/v1/chat/completions", stream, None).await;
    assert_eq!(
        streamed_text(&body).0,
        "Your ticket is [redacted]. Have a nice day."
    );
    let (_, audit) = env
        .call(
            Method::GET,
            "/v1/audit?limit=200",
            Some(&env.admin_token),
            None,
        )
        .await;
    let actions: Vec<String> = audit["entries"]
        .as_array()
        .or(audit.as_array())
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap(),
                e["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "filter.block:blocklist",
        "filter.block:violence",
        "filter.flag:pii",
        "filter.redact:secret",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
}

async fn embeddings_moderations_and_bad_input(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (status, body) = post(&env, "/v1/embeddings", json!({"model": "text-embedding-3-small", "input": ["a cat sat on the mat", "a kitten rested on the rug", "quarterly tax filing deadline"]}), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(v[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(
        dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2,
        "similar sentences are nearer"
    );
    let (_, b64) = post(
        &env,
        "/v1/embeddings",
        json!({"model": "m", "input": "hello", "encoding_format": "base64"}),
        None,
    )
    .await;
    assert_eq!(
        b64["data"][0]["embedding"].as_str().unwrap().len(),
        2048,
        "384 floats as base64"
    );
    let (_, moderation) = post(
        &env,
        "/v1/moderations",
        json!({"input": ["I will hurt you badly", "What a lovely morning for a walk"]}),
        None,
    )
    .await;
    assert_eq!(moderation["results"][0]["flagged"], true, "{moderation}");
    assert_eq!(moderation["results"][0]["categories"]["violence"], true);
    assert_eq!(moderation["results"][1]["flagged"], false, "{moderation}");
    for (path, body, status) in [
        (
            "/v1/embeddings",
            json!({"model": "m", "input": [[1, 2, 3]]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/embeddings",
            json!({"model": "m", "input": "x", "dimensions": 1536}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": []}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 7}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            "/v1/audio/speech",
            json!({"model": "tts-1", "input": "hi", "voice": "alloy"}),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let (got, value) = post(&env, path, body.clone(), None).await;
        assert_eq!(got, status, "{path} {body}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let key = env.agent_key("a1", Some(&["db:read"])).await;
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/embeddings",
            Some(&key),
            Some(json!({"model": "m", "input": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key without the ai scope");
}

on_both_backends!(
    answers_whole_and_streamed_with_cache_and_costs,
    the_fallback_chain_skips_failing_and_silent_providers,
    budgets_alert_at_thresholds_then_stop,
    the_content_filter_blocks_redacts_and_flags_with_audit,
    embeddings_moderations_and_bad_input,
);
