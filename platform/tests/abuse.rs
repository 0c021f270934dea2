//! A hostile client against login, over real TCP (so the sidecar sees real peer addresses):
//! random `Authorization` headers and spoofed `X-Forwarded-For` do not lift the login limit;
//! failed logins back off per account across addresses; only a configured proxy is believed.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, test_config};
use dartmouth_platform::{PlatformConfig, RateLimitConfig};
use serde_json::json;

/// Attempts, as in the report: 60 wrong-password logins.
const ATTEMPTS: usize = 60;

struct Sidecar {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    async fn start(tweak: impl FnOnce(&mut PlatformConfig)) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(Backend::Sqlite, dir.path()).unwrap();
        config.rate_limits = RateLimitConfig::default();
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(dartmouth_platform::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Sidecar {
            addr,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn from(&self, source: [u8; 4]) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::from(source)))
            .build()
            .unwrap()
    }

    async fn login(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
        headers: &[(&str, String)],
    ) -> u16 {
        let mut request = client
            .post(format!("http://{}/v1/auth/login", self.addr))
            .json(&json!({ "email": email, "password": password }));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap().status().as_u16()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Counts how many of `statuses` reached the password check (401) and were refused early (429).
fn tally(statuses: &[u16]) -> (usize, usize) {
    let reached = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(reached + limited, statuses.len(), "{statuses:?}");
    (reached, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_authorization_headers_do_not_lift_the_login_limit() {
    let sidecar = Sidecar::start(|_| {}).await;
    let client = sidecar.from([127, 0, 5, 1]);
    let mut statuses = Vec::new();
    for i in 0..ATTEMPTS {
        // A different account each time too, so only the address limit can hold it.
        let header = [("authorization", format!("Bearer {}", random_hex()))];
        let email = format!("sprayed{i}@example.com");
        statuses.push(
            sidecar
                .login(&client, &email, "wrong-password", &header)
                .await,
        );
    }
    let (reached, limited) = tally(&statuses);
    let burst = RateLimitConfig::default().auth_burst as usize;
    assert!(
        reached <= burst,
        "{reached} of {ATTEMPTS} reached the password check"
    );
    assert!(limited >= ATTEMPTS - burst);
    // Another address is not affected.
    let other = sidecar.from([127, 0, 5, 2]);
    assert_eq!(
        sidecar
            .login(&other, ADMIN_EMAIL, ADMIN_PASSWORD, &[])
            .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let sidecar = Sidecar::start(|_| {}).await;
    let client = sidecar.from([127, 0, 6, 1]);
    let mut statuses = Vec::new();
    for i in 0..ATTEMPTS {
        let spoof = [("x-forwarded-for", format!("203.0.113.{}", i % 250))];
        let email = format!("spoofed{i}@example.com");
        statuses.push(
            sidecar
                .login(&client, &email, "wrong-password", &spoof)
                .await,
        );
    }
    let (reached, _) = tally(&statuses);
    assert!(
        reached <= RateLimitConfig::default().auth_burst as usize,
        "{reached} of {ATTEMPTS} reached the password check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_but_not_what_the_client_wrote() {
    let sidecar = Sidecar::start(|c| c.trusted_proxies = vec!["127.0.7.1".into()]).await;
    let proxy = sidecar.from([127, 0, 7, 1]);
    // One client behind the proxy, prepending random addresses of its own: one budget.
    let mut statuses = Vec::new();
    for i in 0..ATTEMPTS / 2 {
        let chain = [(
            "x-forwarded-for",
            format!("198.51.100.{}, 203.0.113.7", i % 250),
        )];
        let email = format!("behind{i}@example.com");
        statuses.push(
            sidecar
                .login(&proxy, &email, "wrong-password", &chain)
                .await,
        );
    }
    let (reached, _) = tally(&statuses);
    assert!(reached <= RateLimitConfig::default().auth_burst as usize);
    // A different client behind the same proxy has its own budget.
    let chain = [("x-forwarded-for", "203.0.113.8".to_string())];
    assert_eq!(
        sidecar
            .login(&proxy, ADMIN_EMAIL, ADMIN_PASSWORD, &chain)
            .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_account_across_addresses() {
    let sidecar = Sidecar::start(|c| {
        c.rate_limits.failures_before_backoff = 3;
        c.rate_limits.backoff_base_ms = 1500;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..20u8 {
        // A fresh address for every guess: only the account's own back-off can hold it.
        let client = sidecar.from([127, 0, 8, 1 + i]);
        statuses.push(
            sidecar
                .login(&client, ADMIN_EMAIL, "wrong-password", &[])
                .await,
        );
    }
    let (reached, limited) = tally(&statuses);
    assert_eq!(
        reached, 3,
        "three free failures, then back-off: {statuses:?}"
    );
    assert_eq!(limited, 17);
    // After the back-off the owner logs in, and that clears the account's failures.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let owner = sidecar.from([127, 0, 8, 200]);
    assert_eq!(
        sidecar
            .login(&owner, ADMIN_EMAIL, ADMIN_PASSWORD, &[])
            .await,
        200
    );
    assert_eq!(
        sidecar
            .login(&owner, ADMIN_EMAIL, "wrong-password", &[])
            .await,
        401,
        "the count started again"
    );
}
