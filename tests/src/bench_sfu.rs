//! `dartmouth bench sfu`: a load generator of native WebRTC clients (str0m, real ICE and
//! DTLS-SRTP over loopback UDP) that fills R rooms with P publishers and S subscribers each and
//! measures the SFU: forwarded packets per second and per CPU-second of the media thread,
//! publisher-to-subscriber delay p50/p99, loss, and memory per subscriber, stage by stage until
//! the machine saturates.
//!
//! The media driver runs on a thread of its own so its CPU time is read exactly
//! (`/proc/self/task/<tid>/stat`); the clients run on the other threads of the process.
//! Publishers send 80-byte payloads every 20 ms (Opus-sized; the first 8 bytes carry the send
//! time, which the SFU forwards untouched, as it never decodes).
//!
//! Unless told not to, the same stages then run against Janus's VideoRoom
//! ([`crate::bench_janus`]) and the report ends with the ratio of forwarded packets per
//! CPU-second.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dartmouth_media::driver::{self, NOTICE_CAPACITY};
use dartmouth_media::{MediaConfig, MediaHandle, PeerNotice};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Payload bytes per packet (a 32 kbit/s Opus frame).
const PAYLOAD: usize = 80;

/// Options of the SFU benchmark.
#[derive(Debug, Clone)]
pub struct SfuBenchOptions {
    /// Room counts, one stage each (stops early once the machine saturates).
    pub rooms: Vec<usize>,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room (each hears every publisher: up to 3 slots).
    pub subscribers: usize,
    /// Measured seconds per stage (after a warm-up).
    pub seconds: u64,
    /// Also run the same stages against Janus's VideoRoom (in a network namespace) and report
    /// the ratio of forwarded packets per CPU-second.
    pub janus: bool,
}

impl Default for SfuBenchOptions {
    fn default() -> Self {
        Self {
            rooms: vec![1, 4, 10, 20, 40, 80],
            publishers: 2,
            subscribers: 8,
            seconds: 10,
            janus: true,
        }
    }
}

/// One stage's figures.
#[derive(Debug, Clone, Default)]
pub struct StageResult {
    /// Rooms.
    pub rooms: usize,
    /// WebRTC peers.
    pub peers: usize,
    /// Packets the SFU wrote to subscribers, per second.
    pub forwarded_per_sec: f64,
    /// Media thread CPU, fraction of one core.
    pub cpu: f64,
    /// Forwarded packets per CPU-second of the media thread.
    pub per_cpu_second: f64,
    /// Publisher write → subscriber receive, milliseconds.
    pub delay_p50: f64,
    /// 99th percentile of the same.
    pub delay_p99: f64,
    /// Fraction of expected packets not received.
    pub loss: f64,
    /// Process RSS growth per subscriber, KiB (both ends of the connection live in this process).
    pub kib_per_subscriber: f64,
    /// Our media thread's timer wakes per second (0 for Janus).
    pub timer_wakes_per_sec: f64,
    /// Peers our core polled per forwarded packet (0 for Janus).
    pub polls_per_packet: f64,
}

/// Runs every stage and returns the report.
pub async fn run_sfu(options: SfuBenchOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SFU: {} publishers + {} subscribers per room, {} s per stage, loopback, real DTLS-SRTP",
        options.publishers, options.subscribers, options.seconds
    );
    let _ = writeln!(
        out,
        "| rooms | peers | forwarded pkt/s | media CPU (core) | pkt per CPU-s | delay p50 ms | delay p99 ms | loss | RSS/subscriber KiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut ours = Vec::new();
    let mut work = String::new();
    for rooms in options.rooms.clone() {
        match run_stage(&options, rooms).await {
            Ok(r) => {
                let _ = writeln!(out, "{}", table_row(&r));
                let _ = writeln!(
                    work,
                    "{} rooms: {:.0} timer wakes/s, {:.2} peer polls per forwarded packet",
                    r.rooms, r.timer_wakes_per_sec, r.polls_per_packet
                );
                ours.push(r.clone());
                if r.loss > 0.05 || r.cpu > 0.9 {
                    let _ = writeln!(out, "(saturated: stopping)");
                    break;
                }
            }
            Err(e) => {
                let _ = writeln!(out, "| {rooms} | failed: {e} |");
                break;
            }
        }
    }
    let _ = write!(out, "\nOur media thread's work:\n{work}");
    if options.janus {
        out.push_str(&crate::bench_janus::compare(&options, &ours).await);
    }
    out
}

/// One row of a stage table (the columns of [`run_sfu`]'s header).
pub(crate) fn table_row(r: &StageResult) -> String {
    format!(
        "| {} | {} | {:.0} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} % | {:.0} |",
        r.rooms,
        r.peers,
        r.forwarded_per_sec,
        r.cpu,
        r.per_cpu_second,
        r.delay_p50,
        r.delay_p99,
        r.loss * 100.0,
        r.kib_per_subscriber
    )
}

/// What the clients of one stage measured.
#[derive(Default)]
pub(crate) struct Tally {
    /// Packets publishers wrote during the measured window.
    pub(crate) sent: u64,
    /// Packets subscribers received during the measured window.
    pub(crate) received: u64,
    /// Send-to-receive delay of every received packet, microseconds.
    pub(crate) delays_us: Vec<u32>,
}

impl Tally {
    /// Delay p50 and p99 in milliseconds, and the fraction of `expected` packets not received.
    pub(crate) fn summary(&mut self, expected: f64) -> (f64, f64, f64) {
        self.delays_us.sort_unstable();
        let pick = |q: f64| {
            if self.delays_us.is_empty() {
                return f64::NAN;
            }
            let i = ((self.delays_us.len() - 1) as f64 * q).round() as usize;
            f64::from(self.delays_us[i]) / 1000.0
        };
        let loss = if expected > 0.0 {
            (1.0 - self.received as f64 / expected).max(0.0)
        } else {
            1.0
        };
        (pick(0.5), pick(0.99), loss)
    }
}

async fn run_stage(options: &SfuBenchOptions, rooms: usize) -> Result<StageResult, String> {
    let rss_before = crate::bench::rss_kib().unwrap_or(0);
    let (media, media_driver) =
        driver::bind_with("127.0.0.1:0".parse().unwrap(), None, MediaConfig::default())
            .await
            .map_err(|e| e.to_string())?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("sfu-media".into())
        .spawn(move || {
            let _ = tid_tx.send(thread_stat_path());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(media_driver.run());
        })
        .map_err(|e| e.to_string())?;
    let stat_path = tid_rx.recv().map_err(|e| e.to_string())?;
    let (stop, stopped) = watch::channel(false);
    let (measuring, measure) = watch::channel(false);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (connected_tx, mut connected_rx) = mpsc::channel(4096);
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for room in 0..rooms {
        let room = format!("bench-{room}");
        for i in 0..options.publishers + options.subscribers {
            let publisher = i < options.publishers;
            let client = BenchClient::join(&media, &room, publisher).await?;
            tasks.push(tokio::spawn(client.run(
                epoch,
                stopped.clone(),
                measure.clone(),
                tally.clone(),
                connected_tx.clone(),
            )));
        }
    }
    let peers = tasks.len();
    let connected = await_connected(&mut connected_rx, 0, peers, Duration::from_secs(60)).await;
    // A handful of handshakes lost on a saturated machine do not void the stage: the missing
    // peers count as loss.
    if connected * 100 < peers * 98 {
        let _ = stop.send(true);
        return Err(format!("only {connected} of {peers} peers connected"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_during = crate::bench::rss_kib().unwrap_or(0);
    let cpu_start = thread_cpu(&stat_path);
    let forwarded_start = media.counters_now().await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let _ = measuring.send(true);
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let _ = measuring.send(false);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu(&stat_path) - cpu_start;
    let forwarded_end = media.counters_now().await.map_err(|e| e.to_string())?;
    // Packets in flight at the end of the window still arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    drop(media);
    let _ = thread.join();
    let forwarded = (forwarded_end.forwarded - forwarded_start.forwarded) as f64;
    let wakes = (forwarded_end.timer_wakes - forwarded_start.timer_wakes) as f64;
    let polls = (forwarded_end.peer_polls - forwarded_start.peer_polls) as f64;
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    // Each subscriber hears up to three publishers (its slots).
    let heard = (3.0 / options.publishers.max(1) as f64).min(1.0);
    let expected = tally.sent as f64 * options.subscribers as f64 * heard;
    let (delay_p50, delay_p99, loss) = tally.summary(expected);
    let subscribers = (rooms * options.subscribers).max(1);
    Ok(StageResult {
        rooms,
        peers,
        forwarded_per_sec: forwarded / elapsed,
        cpu: cpu / elapsed,
        per_cpu_second: if cpu > 0.0 { forwarded / cpu } else { f64::NAN },
        delay_p50,
        delay_p99,
        loss,
        kib_per_subscriber: rss_during.saturating_sub(rss_before) as f64 / subscribers as f64,
        timer_wakes_per_sec: wakes / elapsed,
        polls_per_packet: if forwarded > 0.0 {
            polls / forwarded
        } else {
            f64::NAN
        },
    })
}

/// `/proc/self/task/<tid>/stat` of the calling thread.
fn thread_stat_path() -> String {
    let link = std::fs::read_link("/proc/thread-self").unwrap_or_default();
    format!("/proc/{}/stat", link.display())
}

/// Counts peers' "connected" notices on `notices`, starting from `already`, until `target` peers
/// are up or `within` has passed; returns how many are up.
pub(crate) async fn await_connected(
    notices: &mut mpsc::Receiver<()>,
    already: usize,
    target: usize,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    let mut connected = already;
    while connected < target && Instant::now() < deadline {
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(1), notices.recv()).await {
            connected += 1;
        }
    }
    connected
}

/// User + system CPU seconds of a thread (or, given `/proc/<pid>/stat`, of all threads of a
/// process).
pub(crate) fn thread_cpu(stat_path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// One load-generator peer.
pub(crate) struct BenchClient {
    socket: UdpSocket,
    local: SocketAddr,
    rtc: Rtc,
    mid: Mid,
    publisher: bool,
    /// Held so the driver's notices have somewhere to go (never read: bounded, dropped).
    _notices: Option<mpsc::Receiver<PeerNotice>>,
}

/// A str0m peer with Opus only, the codec every benchmark client speaks.
pub(crate) fn bench_rtc() -> Rtc {
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now())
}

impl BenchClient {
    /// A client negotiated elsewhere (for another SFU): `mid` is the one it publishes on.
    pub(crate) fn new(
        socket: UdpSocket,
        rtc: Rtc,
        mid: Mid,
        publisher: bool,
    ) -> Result<Self, String> {
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        Ok(Self {
            socket,
            local,
            rtc,
            mid,
            publisher,
            _notices: None,
        })
    }

    async fn join(media: &MediaHandle, room: &str, publisher: bool) -> Result<Self, String> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = bench_rtc();
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
        let mut change = rtc.sdp_api();
        let mid = if publisher {
            change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None)
        } else {
            let first = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            for _ in 1..3 {
                change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            }
            first
        };
        let (offer, pending) = change.apply().ok_or("no offer")?;
        let (notice_tx, notices) = mpsc::channel(NOTICE_CAPACITY);
        let (_, answer) = media
            .add_peer(room, &offer.to_sdp_string(), false, notice_tx)
            .await
            .map_err(|e| e.to_string())?;
        let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            socket,
            local,
            rtc,
            mid,
            publisher,
            _notices: Some(notices),
        })
    }

    /// Sends (a publisher) or receives (a subscriber) until `stopped`, counting while `measure`.
    pub(crate) async fn run(
        mut self,
        epoch: Instant,
        mut stopped: watch::Receiver<bool>,
        measure: watch::Receiver<bool>,
        tally: Arc<Mutex<Tally>>,
        connected: mpsc::Sender<()>,
    ) {
        let mut buf = vec![0u8; 2048];
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let mut frame: u64 = 0;
        let mut mine = Tally::default();
        let mut announced = false;
        loop {
            let wake = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(Event::Connected)) if !announced => {
                        announced = true;
                        let _ = connected.try_send(());
                    }
                    Ok(Output::Event(Event::MediaData(data))) => {
                        if *measure.borrow() && data.data.len() >= 8 {
                            let sent =
                                u64::from_le_bytes(data.data[..8].try_into().unwrap_or([0; 8]));
                            let now = epoch.elapsed().as_micros() as u64;
                            mine.received += 1;
                            mine.delays_us
                                .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                        }
                    }
                    Ok(Output::Event(_)) => {}
                    Err(_) => break Instant::now() + Duration::from_millis(20),
                }
            };
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received
                        && let Ok(r) = Receive::new(Protocol::Udp, from, self.local, &buf[..n])
                    {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
                    }
                }
                _ = ticker.tick(), if self.publisher && announced => {
                    let mut payload = [0x5Au8; PAYLOAD];
                    let now = epoch.elapsed().as_micros() as u64;
                    payload[..8].copy_from_slice(&now.to_le_bytes());
                    let pt = self
                        .rtc
                        .writer(self.mid)
                        .and_then(|w| w.payload_params().next().map(|p| p.pt()));
                    if let (Some(pt), Some(writer)) = (pt, self.rtc.writer(self.mid)) {
                        let time = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
                        if writer
                            .audio_level(-30, true)
                            .write(pt, Instant::now(), time, payload.to_vec())
                            .is_ok()
                            && *measure.borrow()
                        {
                            mine.sent += 1;
                        }
                    }
                    frame += 1;
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
                _ = stopped.changed() => break,
            }
        }
        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.sent += mine.sent;
        tally.received += mine.received;
        tally.delays_us.append(&mut mine.delays_us);
    }
}
