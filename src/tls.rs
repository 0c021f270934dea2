//! HTTPS/WSS for the gateway and the platform sidecar: a rustls listener for axum, certificates
//! from PEM files or a self-signed development certificate made with rcgen.
//!
//! Handshakes run in their own tasks (bounded in number and time), so a client that opens a TCP
//! connection and never finishes its handshake holds up nobody else's.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the HTTP server to take them.
const READY_CAPACITY: usize = 64;
/// Directory under `$DARTMOUTH_HOME` of the self-signed development certificate.
const SELF_SIGNED_DIR: &str = "tls";

/// Where a TLS certificate and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A rustls server configuration (HTTP/1.1, which WebSockets need) from PEM files.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the TLS private key {}", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The self-signed development certificate under `home`, made on first use (and again when a
/// name it must cover is missing from it): valid for `localhost`, loopback, this host's name and
/// `extra_names` (e.g. the listen address, the public IP).
pub fn self_signed(home: &Path, extra_names: &[String]) -> anyhow::Result<TlsFiles> {
    let dir = home.join(SELF_SIGNED_DIR);
    let files = TlsFiles {
        cert: dir.join("self-signed.crt"),
        key: dir.join("self-signed.key"),
    };
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    for name in extra_names {
        let name = name.trim();
        let unspecified = name.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if !name.is_empty() && !unspecified && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    let names_file = dir.join("self-signed.names");
    let recorded = std::fs::read_to_string(&names_file).unwrap_or_default();
    let covered = names.iter().all(|n| recorded.lines().any(|l| l == n));
    if covered && files.cert.is_file() && files.key.is_file() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(names.clone())
        .context("generating a self-signed certificate")?;
    crate::write_secret_file(&dir, "self-signed.key", &made.signing_key.serialize_pem())?;
    std::fs::write(&files.cert, made.cert.pem())
        .with_context(|| format!("writing {}", files.cert.display()))?;
    std::fs::write(&names_file, names.join("\n"))?;
    tracing::info!(cert = %files.cert.display(), names = ?names, "made a self-signed development certificate");
    Ok(files)
}

/// An axum listener that serves TLS: it accepts TCP connections and hands over the ones whose
/// handshake completed.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_CAPACITY);
        let accept_task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), ready_tx));
        Ok(Self {
            local,
            ready,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a TLS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_loads() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let home = std::env::temp_dir().join(format!("dartmouth-tls-{}", std::process::id()));
        let files = self_signed(&home, &["192.0.2.10".into(), "0.0.0.0".into()]).unwrap();
        let first = std::fs::read(&files.cert).unwrap();
        assert!(server_config(&files).is_ok());
        let again = self_signed(&home, &["192.0.2.10".into()]).unwrap();
        assert_eq!(std::fs::read(&again.cert).unwrap(), first, "reused");
        let wider = self_signed(&home, &["192.0.2.11".into()]).unwrap();
        assert_ne!(
            std::fs::read(&wider.cert).unwrap(),
            first,
            "remade for a new name"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is private");
        }
        let bad = TlsFiles {
            cert: files.key.clone(),
            key: files.key.clone(),
        };
        let err = server_config(&bad).unwrap_err();
        assert!(format!("{err:#}").contains("certificate"), "{err:#}");
        let _ = std::fs::remove_dir_all(home);
    }
}
