//! A real platform sidecar on loopback for the binary's unit tests (cfg(test) only).

use std::time::Duration;

use dartmouth_platform::client::PlatformClient;
use dartmouth_platform::{AppState, Extras, PlatformConfig};

/// A running sidecar: a client holding its service credential; dropping it stops the sidecar
/// and removes its data.
pub struct TestSidecar {
    pub client: PlatformClient,
    stop: tokio::sync::watch::Sender<bool>,
    dir: std::path::PathBuf,
}

impl TestSidecar {
    /// Starts one with its data in a fresh temporary directory; waits (bounded) until it answers.
    pub async fn start(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "dartmouth-{what}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let config = PlatformConfig {
            data_dir: dir.clone(),
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            ..PlatformConfig::default()
        };
        let key = AppState::new_service_key();
        let extras = Extras {
            service_key: Some(key.clone()),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(dartmouth_platform::serve_with(
            config,
            extras,
            listener,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        let client = PlatformClient::new(format!("http://{addr}"))
            .unwrap()
            .with_credential(&key);
        for _ in 0..200 {
            if client.health().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { client, stop, dir }
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
