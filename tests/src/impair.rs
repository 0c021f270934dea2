//! An impaired network for tests and benchmarks, without `netem`: a seeded, deterministic UDP
//! relay between a WebRTC client and the gateway. The client is handed the relay's address as
//! the gateway's ICE candidate; the relay forwards each datagram after applying, per direction,
//! loss (random or bursty Gilbert–Elliott), delay with jitter (which also reorders),
//! duplication and outage windows. The gateway sees the relay as the client (a peer-reflexive
//! candidate), as it would a client behind a NAT.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Datagrams held for later delivery; beyond this the relay drops (a router's queue).
pub const RELAY_QUEUE_CAPACITY: usize = 4_096;
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 2_048;

/// How packets are lost in one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// None lost.
    None,
    /// Each packet lost with this probability.
    Random(f64),
    /// Gilbert–Elliott: a good state that loses nothing and a bad state that loses
    /// `loss_in_bad`; the chain moves good → bad with `enter_bad` and back with `leave_bad`
    /// per packet. The mean loss is `enter_bad / (enter_bad + leave_bad) × loss_in_bad`.
    Bursty {
        /// Per-packet probability of entering the bad state.
        enter_bad: f64,
        /// Per-packet probability of leaving it.
        leave_bad: f64,
        /// Loss probability in the bad state.
        loss_in_bad: f64,
    },
}

/// What one direction of the relay does to packets.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Loss model.
    pub loss: Loss,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]` per packet (packets may overtake each other).
    pub jitter: Duration,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Windows (from the relay's start) in which every packet is lost.
    pub outages: Vec<(Duration, Duration)>,
}

impl Impairment {
    /// Passes everything at once.
    pub fn clean() -> Self {
        Self {
            loss: Loss::None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            outages: Vec::new(),
        }
    }
}

/// A named pair of impairments (client → gateway, gateway → client) and the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairProfile {
    /// Its name in reports.
    pub name: String,
    /// What the client's packets meet.
    pub to_gateway: Impairment,
    /// What the gateway's packets meet.
    pub to_client: Impairment,
    /// Seed of the random choices (the same seed, the same fate for the same packets).
    pub seed: u64,
}

impl ImpairProfile {
    /// The benchmark's profiles: `clean`, `loss5-jitter40` (5 % random loss and 0–40 ms of
    /// jitter each way), `bursty20` (20 % loss in bursts, 30 ± 15 ms), `outage5s` (every
    /// packet lost both ways for 5 s, 3 s after the call starts, else clean).
    pub fn named(name: &str) -> Option<Self> {
        let ms = Duration::from_millis;
        let both = |impairment: Impairment| (impairment.clone(), impairment);
        let (to_gateway, to_client) = match name {
            "clean" => both(Impairment::clean()),
            "loss5-jitter40" => both(Impairment {
                loss: Loss::Random(0.05),
                jitter: ms(40),
                ..Impairment::clean()
            }),
            "bursty20" => both(Impairment {
                // Bad 1/3 of the time (0.05 / (0.05 + 0.1)), losing 60 % there: 20 % in all.
                loss: Loss::Bursty {
                    enter_bad: 0.05,
                    leave_bad: 0.1,
                    loss_in_bad: 0.6,
                },
                delay: ms(15),
                jitter: ms(30),
                ..Impairment::clean()
            }),
            "outage5s" => both(Impairment {
                outages: vec![(ms(3_000), ms(8_000))],
                ..Impairment::clean()
            }),
            _ => return None,
        };
        Some(Self {
            name: name.to_string(),
            to_gateway,
            to_client,
            seed: 1,
        })
    }

    /// The names [`ImpairProfile::named`] knows.
    pub const NAMES: [&'static str; 4] = ["clean", "loss5-jitter40", "bursty20", "outage5s"];

    /// The one-way delay it adds on average (half the jitter plus the fixed delay), for
    /// comparing latencies with a clean link.
    pub fn mean_added_delay(&self) -> Duration {
        let one = |i: &Impairment| i.delay + i.jitter / 2;
        one(&self.to_gateway) + one(&self.to_client)
    }
}

/// The fate of packets in one direction: a deterministic generator and the loss chain's state.
#[derive(Debug)]
pub struct Fate {
    impairment: Impairment,
    rng: u64,
    bad: bool,
}

impl Fate {
    /// Fates drawn from `seed` (never 0).
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Self {
            impairment,
            rng: seed.max(1),
            bad: false,
        }
    }

    /// Uniform in `[0, 1)` (xorshift64*).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The delays after which a packet sent `elapsed` after the relay started is delivered:
    /// none if lost, two if duplicated.
    pub fn deliveries(&mut self, elapsed: Duration) -> Vec<Duration> {
        let lost = match self.impairment.loss {
            Loss::None => false,
            Loss::Random(p) => self.unit() < p,
            Loss::Bursty {
                enter_bad,
                leave_bad,
                loss_in_bad,
            } => {
                let flip = if self.bad { leave_bad } else { enter_bad };
                if self.unit() < flip {
                    self.bad = !self.bad;
                }
                self.bad && self.unit() < loss_in_bad
            }
        };
        let in_outage = self
            .impairment
            .outages
            .iter()
            .any(|(from, to)| (*from..*to).contains(&elapsed));
        if lost || in_outage {
            return Vec::new();
        }
        let copies = if self.unit() < self.impairment.duplicate {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| self.impairment.delay + self.impairment.jitter.mul_f64(self.unit()))
            .collect()
    }
}

/// Counts of what the relay did.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams delivered (duplicates count twice).
    pub delivered: AtomicU64,
    /// Datagrams lost by the impairment or a full queue.
    pub dropped: AtomicU64,
}

/// A running relay; dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    /// Where the client sends (the address to hand it as the gateway's candidate).
    pub addr: SocketAddr,
    /// What it did so far.
    pub counters: Arc<RelayCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A datagram waiting for its delivery time.
struct Pending {
    due: Instant,
    order: u64,
    to_gateway: bool,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

impl Relay {
    /// Starts relaying between clients and `gateway` (both on loopback) under `profile`.
    pub async fn start(gateway: SocketAddr, profile: &ImpairProfile) -> std::io::Result<Self> {
        let client_side = UdpSocket::bind("127.0.0.1:0").await?;
        let gateway_side = UdpSocket::bind("127.0.0.1:0").await?;
        gateway_side.connect(gateway).await?;
        let addr = client_side.local_addr()?;
        let counters = Arc::new(RelayCounters::default());
        let fates = (
            Fate::new(profile.to_gateway.clone(), profile.seed),
            Fate::new(
                profile.to_client.clone(),
                profile.seed.wrapping_mul(31).wrapping_add(7),
            ),
        );
        let task = tokio::spawn(relay(client_side, gateway_side, fates, counters.clone()));
        Ok(Self {
            addr,
            counters,
            task,
        })
    }
}

async fn relay(
    client_side: UdpSocket,
    gateway_side: UdpSocket,
    (mut up, mut down): (Fate, Fate),
    counters: Arc<RelayCounters>,
) {
    let started = Instant::now();
    let mut client: Option<SocketAddr> = None;
    let mut queue: BinaryHeap<Pending> = BinaryHeap::with_capacity(RELAY_QUEUE_CAPACITY);
    let mut order = 0u64;
    let mut from_client = [0u8; MAX_DATAGRAM];
    let mut from_gateway = [0u8; MAX_DATAGRAM];
    let far_future = Duration::from_secs(3_600);
    loop {
        let next_due = queue.peek().map_or(Instant::now() + far_future, |p| p.due);
        let (to_gateway, bytes) = tokio::select! {
            received = client_side.recv_from(&mut from_client) => {
                let Ok((n, from)) = received else { continue };
                client = Some(from);
                (true, from_client[..n].to_vec())
            }
            received = gateway_side.recv(&mut from_gateway) => {
                let Ok(n) = received else { continue };
                (false, from_gateway[..n].to_vec())
            }
            _ = tokio::time::sleep_until(next_due) => {
                let now = Instant::now();
                while queue.peek().is_some_and(|p| p.due <= now) {
                    let packet = queue.pop().expect("peeked");
                    let sent = if packet.to_gateway {
                        gateway_side.send(&packet.bytes).await.is_ok()
                    } else if let Some(client) = client {
                        client_side.send_to(&packet.bytes, client).await.is_ok()
                    } else {
                        false
                    };
                    let counter = if sent { &counters.delivered } else { &counters.dropped };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let fate = if to_gateway { &mut up } else { &mut down };
        let deliveries = fate.deliveries(now - started);
        if deliveries.is_empty() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        for delay in deliveries {
            if queue.len() == RELAY_QUEUE_CAPACITY {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            order += 1;
            queue.push(Pending {
                due: now + delay,
                order,
                to_gateway,
                bytes: bytes.clone(),
            });
        }
    }
}

/// The SDP with every host candidate's address replaced by `relay` (the client then sends to
/// the relay, believing it the gateway). Returns the SDP and the first address replaced.
pub fn route_through(sdp: &str, relay: SocketAddr) -> Option<(String, SocketAddr)> {
    let mut replaced = None;
    let lines: Vec<String> = sdp
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("a=candidate:") else {
                return line.to_string();
            };
            // foundation component transport priority address port typ type …
            let mut fields: Vec<String> = rest.split(' ').map(str::to_string).collect();
            if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") {
                return line.to_string();
            }
            let original = format!("{}:{}", fields[4], fields[5]).parse().ok();
            if replaced.is_none() {
                replaced = original;
            }
            fields[4] = relay.ip().to_string();
            fields[5] = relay.port().to_string();
            format!("a=candidate:{}", fields.join(" "))
        })
        .collect();
    replaced.map(|address| (lines.join("\r\n") + "\r\n", address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_rate(impairment: Impairment, packets: usize) -> f64 {
        let mut fate = Fate::new(impairment, 42);
        let lost = (0..packets)
            .filter(|_| fate.deliveries(Duration::ZERO).is_empty())
            .count();
        lost as f64 / packets as f64
    }

    #[test]
    fn losses_match_their_models_and_are_reproducible() {
        let random = Impairment {
            loss: Loss::Random(0.05),
            ..Impairment::clean()
        };
        let rate = loss_rate(random.clone(), 100_000);
        assert!((0.045..0.055).contains(&rate), "{rate}");
        assert_eq!(
            loss_rate(random, 1_000),
            loss_rate(
                Impairment {
                    loss: Loss::Random(0.05),
                    ..Impairment::clean()
                },
                1_000
            )
        );
        let bursty = ImpairProfile::named("bursty20").unwrap().to_client;
        let rate = loss_rate(bursty.clone(), 100_000);
        assert!((0.17..0.23).contains(&rate), "{rate}");
        // Bursty: losses come in runs far longer than independent losses would give.
        let mut fate = Fate::new(bursty, 3);
        let lost: Vec<bool> = (0..100_000)
            .map(|_| fate.deliveries(Duration::ZERO).is_empty())
            .collect();
        let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count();
        let mean_run = lost.iter().filter(|l| **l).count() as f64 / runs as f64;
        assert!(mean_run > 1.6, "mean loss run {mean_run}");
    }

    #[test]
    fn delays_stay_within_the_jitter_and_outages_lose_everything() {
        let mut fate = Fate::new(
            Impairment {
                delay: Duration::from_millis(10),
                jitter: Duration::from_millis(40),
                outages: vec![(Duration::from_secs(3), Duration::from_secs(8))],
                ..Impairment::clean()
            },
            9,
        );
        for _ in 0..1_000 {
            let delays = fate.deliveries(Duration::from_secs(1));
            assert_eq!(delays.len(), 1);
            assert!((Duration::from_millis(10)..Duration::from_millis(50)).contains(&delays[0]));
        }
        assert!(fate.deliveries(Duration::from_secs(5)).is_empty());
        assert_eq!(fate.deliveries(Duration::from_secs(8)).len(), 1);
    }

    #[test]
    fn the_answers_candidates_point_at_the_relay() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n";
        let relay: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let (rewritten, original) = route_through(sdp, relay).unwrap();
        assert_eq!(original, "127.0.0.1:40000".parse().unwrap());
        assert!(rewritten.contains("127.0.0.1 5555 typ host"), "{rewritten}");
        assert!(!rewritten.contains("40000"));
        assert!(route_through("v=0\r\n", relay).is_none());
    }

    #[tokio::test]
    async fn the_relay_delivers_both_ways_and_counts_its_losses() {
        let gateway = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::start(
            gateway.local_addr().unwrap(),
            &ImpairProfile::named("clean").unwrap(),
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", relay.addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = gateway.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        gateway.send_to(b"pong", from).await.unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.addr));
        assert_eq!(relay.counters.delivered.load(Ordering::Relaxed), 2);
    }
}
