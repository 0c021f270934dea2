//! The real `dartmouth` binary as separate processes: the release binary's path, free loopback
//! ports, a child process killed when dropped, a `dartmouth platform` sidecar with its admin, and
//! waiting for a health URL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Email of the admin every sidecar started here bootstraps.
pub const ADMIN_EMAIL: &str = "admin@example.com";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password";

/// The release binary: `$DARTMOUTH_BIN`, else `$CARGO_TARGET_DIR/release/dartmouth` (relative
/// paths from the workspace root); `None` when it is not built.
pub fn binary() -> Option<PathBuf> {
    let path = match std::env::var_os("DARTMOUTH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or("target".into()))
            .join("release/dartmouth"),
    };
    let path = if path.is_relative() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path)
    } else {
        path
    };
    path.is_file().then_some(path)
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sidecar's configuration file: its data under `home` (kept across restarts), an admin,
/// and `extra` lines of `[platform]` settings (e.g. `room_token_secret = "…"`).
fn sidecar_config(home: &Path, extra: &str) -> PathBuf {
    let path = home.join("platform.toml");
    let data = home.join("platform");
    std::fs::write(
        &path,
        format!(
            "[platform]\ndata_dir = {data:?}\n{extra}\n[platform.bootstrap_admin]\n\
             email = \"{ADMIN_EMAIL}\"\npassword = \"{ADMIN_PASSWORD}\"\n"
        ),
    )
    .unwrap();
    path
}

/// `dartmouth platform` on `port`, its data under `home`.
pub fn sidecar(bin: &Path, home: &Path, port: u16) -> Process {
    sidecar_with(bin, home, port, "")
}

/// Like [`sidecar`], with `extra` lines of `[platform]` settings.
pub fn sidecar_with(bin: &Path, home: &Path, port: u16, extra: &str) -> Process {
    Process(
        Command::new(bin)
            .arg("--config")
            .arg(sidecar_config(home, extra))
            .args(["platform", "--http", &format!("127.0.0.1:{port}")])
            .env("DARTMOUTH_HOME", home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the sidecar"),
    )
}

/// Whether `url` answers a success within `limit` (polled).
pub async fn wait_ok(url: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// An access token of the sidecar's admin.
pub async fn admin_token(client: &reqwest::Client, platform_url: &str) -> String {
    let login: serde_json::Value = client
        .post(format!("{platform_url}/v1/auth/login"))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"]
        .as_str()
        .expect("admin login")
        .to_string()
}

/// A developer API key of the sidecar (all scopes, events included), made by its admin.
pub async fn api_key(client: &reqwest::Client, platform_url: &str) -> String {
    let access = admin_token(client, platform_url).await;
    let key: serde_json::Value = client
        .post(format!("{platform_url}/v1/api-keys"))
        .bearer_auth(access)
        .json(&serde_json::json!({"name": "gateway", "role": "developer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["key"].as_str().expect("an API key").to_string()
}
