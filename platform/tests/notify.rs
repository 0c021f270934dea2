//! Notifications: a templated email reaches a real SMTP server (aiosmtpd); SMS goes through a
//! Twilio-shaped mock (form fields, basic auth) and push through a signed JSON webhook; an
//! opted-out channel is refused and recorded. Bad input: `notify_errors.rs`; integrations:
//! `integrations.rs`.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use common::{Backend, Env, error_code};
use dartmouth_platform::PlatformConfig;
use dartmouth_platform::notify::{PushConfig, SmsConfig, SmtpConfig, SmtpTls};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The real SMTP server: aiosmtpd in the platform venv, printing each message it receives as
/// one JSON line (envelope, parsed headers, decoded body).
const SMTP_SERVER: &str = r#"
import email, email.policy, json, socket, sys
from aiosmtpd.controller import Controller

class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "body": msg.get_content(),
        }), flush=True)
        return "250 Message accepted for delivery"

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print(f"READY {port}", flush=True)
sys.stdin.read()
controller.stop()
"#;

struct SmtpServer {
    child: std::process::Child,
    port: u16,
    messages: std::sync::mpsc::Receiver<Value>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_python() -> std::path::PathBuf {
    let home = std::env::var_os("DARTMOUTH_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/dartmouth")
        });
    home.join("venv-platform/bin/python")
}

/// Makes the venv once per test process (scripts/platform-venv.sh is idempotent); whether its
/// python is there afterwards.
fn ensure_venv() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        if venv_python().exists() {
            return true;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/platform-venv.sh");
        let made = std::process::Command::new("bash")
            .arg(script)
            .status()
            .is_ok_and(|s| s.success());
        made && venv_python().exists()
    })
}

/// Starts aiosmtpd on a free loopback port, or says (visibly) why the test cannot run.
fn start_smtp() -> Option<SmtpServer> {
    let python = venv_python();
    if !ensure_venv() {
        println!(
            "SKIPPED: {} is missing and scripts/platform-venv.sh could not make it, so email is not tested against aiosmtpd",
            python.display()
        );
        return None;
    }
    let mut child = std::process::Command::new(&python)
        .args(["-c", SMTP_SERVER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the venv python starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (tx, messages) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("READY ") {
                let _ = ready_tx.send(port.trim().parse::<u16>().unwrap());
            } else if let Ok(message) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(message);
            }
        }
    });
    let port = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("aiosmtpd starts");
    child.stdin.as_mut().unwrap().flush().unwrap();
    Some(SmtpServer {
        child,
        port,
        messages,
    })
}

fn quiet(config: &mut PlatformConfig) {
    config.embeddings = false;
    config.notify.allow_private_targets = true;
}

fn smtp_on(port: u16) -> impl FnOnce(&mut PlatformConfig) {
    move |config| {
        quiet(config);
        config.notify.smtp = Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            from: "Dartmouth <noreply@example.com>".into(),
            username: None,
            password: None,
            tls: SmtpTls::Off,
        });
    }
}

async fn history(env: &Env, user: &str) -> Vec<Value> {
    let (status, list) = env
        .call(
            Method::GET,
            &format!("/v1/notifications?user_id={user}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

async fn put(env: &Env, path: &str, body: Value) -> (StatusCode, Value) {
    env.call(Method::PUT, path, Some(&env.admin_token), Some(body))
        .await
}

async fn post(env: &Env, path: &str, body: Value) -> (StatusCode, Value) {
    env.call(Method::POST, path, Some(&env.admin_token), Some(body))
        .await
}

async fn templated_email_reaches_a_real_smtp_server(backend: Backend) {
    let Some(smtp) = start_smtp() else { return };
    let Some(env) = Env::with(backend, smtp_on(smtp.port)).await else {
        return;
    };
    let (status, template) = put(
        &env,
        "/v1/notifications/templates/welcome",
        json!({"subject": "Welcome, {{name}}", "body": "Hello {{ name }}, your code is {{code}}.\nGrüße & <b>plain</b> text"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{template}");
    assert_eq!(template["variables"], json!(["name", "code"]));
    let (status, prefs) = put(
        &env,
        "/v1/notifications/preferences/u-ann",
        json!({"channels": ["email"], "email": "ann@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    let (status, sent) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u-ann", "channel": "email", "template": "welcome",
               "variables": {"name": "Ann", "code": "4711"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["channel"], "email");
    let mail = smtp
        .messages
        .recv_timeout(Duration::from_secs(10))
        .expect("the SMTP server received the mail");
    assert_eq!(mail["rcpt_tos"], json!(["ann@example.com"]), "{mail}");
    assert_eq!(mail["mail_from"], "noreply@example.com", "{mail}");
    assert_eq!(mail["to"], "ann@example.com", "{mail}");
    assert_eq!(mail["subject"], "Welcome, Ann", "{mail}");
    assert_eq!(
        mail["body"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "Hello Ann, your code is 4711.\nGrüße & <b>plain</b> text",
        "{mail}"
    );
    // An inline message (no template) works too.
    let (status, sent2) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u-ann", "channel": "email", "subject": "Reminder", "body": "See you at {{time}}", "variables": {"time": "10:00"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent2}");
    let mail = smtp.messages.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(mail["subject"], "Reminder");
    assert_eq!(
        mail["body"].as_str().unwrap().trim_end(),
        "See you at 10:00"
    );
    let list = history(&env, "u-ann").await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], sent["id"]);
    assert!(list.iter().all(|n| n["status"] == "sent"), "{list:?}");
}

async fn an_unreachable_relay_is_recorded_as_failed(backend: Backend) {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(env) = Env::with(backend, smtp_on(port)).await else {
        return;
    };
    put(
        &env,
        "/v1/notifications/preferences/u1",
        json!({"channels": ["email"], "email": "u1@example.com"}),
    )
    .await;
    let (status, body) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u1", "channel": "email", "subject": "Hi", "body": "there"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "upstream_failed");
    let list = history(&env, "u1").await;
    assert_eq!(list.len(), 1);
    // Kept for a retry (notify_retry.rs follows retries to the end).
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["attempts"], 1);
    assert!(!list[0]["detail"].as_str().unwrap().is_empty());
}

/// What the Twilio-shaped and push mocks saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

async fn twilio_messages(
    State(seen): State<Arc<Seen>>,
    axum::extract::Path(sid): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    seen.requests
        .lock()
        .unwrap()
        .push((headers.clone(), body.to_vec()));
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC123:sms-token")
    );
    if sid != "AC123"
        || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": 20003, "message": "Authenticate"})),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("To").map(String::as_str) == Some("+15550000000") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 21211, "message": "The 'To' number is not valid"})),
        );
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"sid": "SM0123456789", "status": "queued", "to": form.get("To")})),
    )
}

async fn push_receiver(
    State(seen): State<Arc<Seen>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    seen.requests.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::ACCEPTED
}

async fn start_mocks() -> (Arc<Seen>, Arc<Seen>, String) {
    let (sms, push) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let app = axum::Router::new()
        .route(
            "/twilio/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(twilio_messages).with_state(sms.clone()),
        )
        .route(
            "/push",
            axum::routing::post(push_receiver).with_state(push.clone()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (sms, push, base)
}

const PUSH_SECRET: &str = "whsec_cHVzaC1zZWNyZXQtZm9yLXRlc3Rz";

fn adapters(base: String) -> impl FnOnce(&mut PlatformConfig) {
    move |config| {
        quiet(config);
        config.notify.sms = Some(SmsConfig {
            base_url: format!("{base}/twilio"),
            account_sid: "AC123".into(),
            auth_token: "sms-token".into(),
            from: "+15557654321".into(),
        });
        config.notify.push = Some(PushConfig {
            url: format!("{base}/push"),
            secret: Some(PUSH_SECRET.into()),
        });
    }
}

async fn sms_and_push_go_through_their_adapters(backend: Backend) {
    let (sms, push, base) = start_mocks().await;
    let Some(env) = Env::with(backend, adapters(base)).await else {
        return;
    };
    put(
        &env,
        "/v1/notifications/templates/code",
        json!({"subject": "Your code", "body": "Code {{code}} for {{name}}"}),
    )
    .await;
    let (status, prefs) = put(
        &env,
        "/v1/notifications/preferences/u2",
        json!({"channels": ["sms", "push"], "phone": "+15551234567", "push_token": "device-token-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    let (status, sent) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u2", "channel": "sms", "template": "code", "variables": {"code": "123456", "name": "Bo"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["status"], "sent");
    assert!(
        sent["detail"].as_str().unwrap().contains("SM0123456789"),
        "{sent}"
    );
    {
        let requests = sms.requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        let (headers, body) = &requests[0];
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/x-www-form-urlencoded"
        );
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        assert_eq!(form["To"], "+15551234567");
        assert_eq!(form["From"], "+15557654321");
        assert_eq!(form["Body"], "Code 123456 for Bo");
    }
    let (status, sent) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u2", "channel": "push", "template": "code", "variables": {"code": "9", "name": "Bo"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    {
        let requests = push.requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        let (headers, body) = &requests[0];
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
        let now = dartmouth_platform::db::now_ms() / 1000;
        dartmouth_platform::webhooks::verify(
            PUSH_SECRET,
            &h("webhook-id"),
            &h("webhook-timestamp"),
            body,
            &h("webhook-signature"),
            now,
        )
        .expect("the push is signed");
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["id"], sent["id"]);
        assert_eq!(payload["user_id"], "u2");
        assert_eq!(payload["token"], "device-token-1");
        assert_eq!(payload["title"], "Your code");
        assert_eq!(payload["body"], "Code 9 for Bo");
    }
    // The provider refuses a number: 502, recorded with its message and kept for a retry.
    put(
        &env,
        "/v1/notifications/preferences/u3",
        json!({"channels": ["sms"], "phone": "+15550000000"}),
    )
    .await;
    let (status, body) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u3", "channel": "sms", "body": "hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let list = history(&env, "u3").await;
    assert_eq!(list[0]["status"], "pending");
    assert!(
        list[0]["detail"].as_str().unwrap().contains("not valid"),
        "{list:?}"
    );
    assert_eq!(history(&env, "u2").await.len(), 2);
}

async fn an_opted_out_channel_is_refused_and_recorded(backend: Backend) {
    let (sms, _push, base) = start_mocks().await;
    let Some(env) = Env::with(backend, adapters(base)).await else {
        return;
    };
    put(
        &env,
        "/v1/notifications/preferences/u4",
        json!({"channels": ["push"], "phone": "+15551234567", "push_token": "t"}),
    )
    .await;
    let (status, body) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "u4", "channel": "sms", "body": "promo"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("opted out"),
        "{body}"
    );
    assert!(sms.requests.lock().unwrap().is_empty(), "nothing was sent");
    let list = history(&env, "u4").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "refused");
    assert_eq!(list[0]["channel"], "sms");
    // A user without preferences: a clear 404, nothing recorded.
    let (status, body) = post(
        &env,
        "/v1/notifications",
        json!({"user_id": "nobody", "channel": "sms", "body": "hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(history(&env, "nobody").await.is_empty());
    // Only roles with the notify permission may send.
    let (_, user_token) = env.user("user").await;
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/notifications",
            Some(&user_token),
            Some(json!({"user_id": "u4", "channel": "push", "body": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

async fn templates_are_listed_replaced_and_deleted(backend: Backend) {
    let Some(env) = Env::with(backend, quiet).await else {
        return;
    };
    let token = Some(env.admin_token.as_str());
    put(&env, "/v1/notifications/templates/b", json!({"body": "v1"})).await;
    put(
        &env,
        "/v1/notifications/templates/a",
        json!({"subject": "s", "body": "{{x}}"}),
    )
    .await;
    let (status, t) = put(
        &env,
        "/v1/notifications/templates/b",
        json!({"body": "v2 {{y}}"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["variables"], json!(["y"]));
    let (_, list) = env
        .call(Method::GET, "/v1/notifications/templates", token, None)
        .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let (_, b) = env
        .call(Method::GET, "/v1/notifications/templates/b", token, None)
        .await;
    assert_eq!(b["body"], "v2 {{y}}");
    let (status, _) = env
        .call(Method::DELETE, "/v1/notifications/templates/b", token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = env
        .call(Method::DELETE, "/v1/notifications/templates/b", token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, prefs) = put(
        &env,
        "/v1/notifications/preferences/u7",
        json!({"channels": [], "email": "u7@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    let (_, got) = env
        .call(Method::GET, "/v1/notifications/preferences/u7", token, None)
        .await;
    assert_eq!(got["preferences"]["email"], "u7@example.com");
    assert_eq!(got["preferences"]["channels"], json!([]));
    // Deleting a user (GDPR) deletes their preferences and history too.
    let (user_id, _) = env.user("user").await;
    let prefs_path = format!("/v1/notifications/preferences/{user_id}");
    put(
        &env,
        &prefs_path,
        json!({"channels": [], "email": "gone@example.com"}),
    )
    .await;
    let (status, _) = env
        .call(Method::DELETE, &format!("/v1/users/{user_id}"), token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env.call(Method::GET, &prefs_path, token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(
    templated_email_reaches_a_real_smtp_server,
    an_unreachable_relay_is_recorded_as_failed,
    sms_and_push_go_through_their_adapters,
    an_opted_out_channel_is_refused_and_recorded,
    templates_are_listed_replaced_and_deleted,
);
