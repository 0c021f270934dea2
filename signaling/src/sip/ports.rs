//! RTP ports for SIP legs: one even port per call from the configured range, bound on demand.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use tokio::net::UdpSocket;

/// Hands out RTP sockets from `[min, max]`, round-robin, skipping ports that are in use.
pub struct PortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    next: Mutex<u16>,
}

impl PortPool {
    /// A pool binding on `ip`.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        let min = min + min % 2;
        Self {
            ip,
            min,
            max: max.max(min),
            next: Mutex::new(min),
        }
    }

    /// Binds the next free even port; `None` when every port of the range is taken.
    pub async fn bind(&self) -> Option<(UdpSocket, SocketAddr)> {
        let slots = usize::from((self.max - self.min) / 2 + 1);
        for _ in 0..slots {
            let port = {
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let port = *next;
                *next = if port.saturating_add(2) > self.max {
                    self.min
                } else {
                    port + 2
                };
                port
            };
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(self.ip, port)).await {
                let addr = socket.local_addr().ok()?;
                return Some((socket, addr));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_are_even_distinct_and_run_out() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 16_901, 16_906);
        let a = pool.bind().await.unwrap();
        let b = pool.bind().await.unwrap();
        assert!(a.1.port() % 2 == 0 && b.1.port() % 2 == 0 && a.1 != b.1);
        let c = pool.bind().await.unwrap();
        assert!(
            pool.bind().await.is_none(),
            "three even ports in 16902..=16906"
        );
        drop(c);
        assert!(pool.bind().await.is_some(), "a released port is reused");
    }
}
