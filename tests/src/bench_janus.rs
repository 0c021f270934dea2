//! The SFU benchmark's comparison with Janus (issue #13): the same stages (R rooms × P
//! publishers × S subscribers, 80-byte payloads every 20 ms carrying their send time) from the
//! same str0m clients, against Janus's VideoRoom plugin, which forwards without mixing as our SFU
//! does. Janus runs in a network namespace with a veth pair ([`lab`]): its ICE (libnice) ignores
//! loopback. Its CPU is that of the whole process (all threads, `/proc/<pid>/stat`); forwarded
//! packets are those the subscribers received.

mod lab;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::bench_sfu::{
    BenchClient, SfuBenchOptions, StageResult, Tally, await_connected, bench_rtc, thread_cpu,
};
use lab::JanusLab;

/// Runs Janus through the stages our SFU completed and returns its table and the ratios (or one
/// line saying why the comparison is skipped).
pub async fn compare(options: &SfuBenchOptions, ours: &[StageResult]) -> String {
    let mut out = String::new();
    if let Some(why) = unavailable() {
        let _ = writeln!(out, "\nJanus comparison SKIPPED: {why}");
        return out;
    }
    let mut theirs = Vec::new();
    let mut table = String::new();
    for stage in ours {
        match run_janus_stage(options, stage.rooms).await {
            Ok(r) => {
                let _ = writeln!(table, "{}", crate::bench_sfu::table_row(&r));
                let saturated = r.loss > 0.05;
                theirs.push(r);
                if saturated {
                    let _ = writeln!(table, "(Janus saturated: stopping)");
                    break;
                }
            }
            Err(e) => {
                let _ = writeln!(table, "| {} | failed: {e} |", stage.rooms);
                break;
            }
        }
    }
    let _ = writeln!(
        out,
        "\nJanus {} VideoRoom, same load, in a network namespace over a veth; CPU = the whole janus process; forwarded = received by subscribers",
        janus_version()
    );
    let _ = writeln!(
        out,
        "| rooms | peers | forwarded pkt/s | janus CPU (core) | pkt per CPU-s | delay p50 ms | delay p99 ms | loss | janus RSS/subscriber KiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    out.push_str(&table);
    for (mine, janus) in ours.iter().zip(&theirs) {
        let _ = writeln!(
            out,
            "{} rooms: Dartmouth/Janus forwarded packets per CPU-second = {:.1}× ({:.0} / {:.0})",
            mine.rooms,
            mine.per_cpu_second / janus.per_cpu_second,
            mine.per_cpu_second,
            janus.per_cpu_second
        );
    }
    out
}

/// Why the comparison cannot run here (no `janus`, or not root: no network namespaces), if it
/// cannot.
pub fn unavailable() -> Option<String> {
    lab::unavailable()
}

fn janus_version() -> String {
    std::process::Command::new("janus")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            // `janus --version` prints "Janus version: 1102 (1.1.2)" (and exits with 1).
            let text = String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned();
            text.lines().find_map(|l| {
                l.split_once('(')
                    .map(|(_, v)| v.trim_end_matches(')').to_string())
            })
        })
        .unwrap_or_default()
}

/// One stage against a fresh Janus: every room created, its publishers joined and then its
/// subscribers (each subscribed to every publisher of its room), then measured as
/// [`crate::bench_sfu::run_sfu`] measures our SFU.
pub async fn run_janus_stage(
    options: &SfuBenchOptions,
    rooms: usize,
) -> Result<StageResult, String> {
    let lab = JanusLab::start().await?;
    let rss_before = lab.rss_kib().unwrap_or(0);
    let api = Janus::connect(lab.api_url()).await?;
    let (stop, stopped) = watch::channel(false);
    let poller = tokio::spawn(api.clone().poll_events(stopped.clone()));
    let result = drive_stage(options, rooms, &lab, &api, &stop, stopped).await;
    let _ = stop.send(true);
    let _ = api.request(None, json!({"janus": "destroy"})).await;
    poller.abort();
    result.map(|mut r| {
        let subscribers = (rooms * options.subscribers).max(1) as f64;
        r.kib_per_subscriber = r.kib_per_subscriber.max(rss_before as f64) - rss_before as f64;
        r.kib_per_subscriber /= subscribers;
        r
    })
}

async fn drive_stage(
    options: &SfuBenchOptions,
    rooms: usize,
    lab: &JanusLab,
    api: &Janus,
    stop: &watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
) -> Result<StageResult, String> {
    let (measuring, measure) = watch::channel(false);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (connected_tx, mut connected_rx) = mpsc::channel(4096);
    let epoch = Instant::now();
    let control = api.attach().await?;
    // Each client runs as soon as it has joined: Janus's ICE agent gives up on a peer that does
    // not answer its checks for long.
    let mut tasks = Vec::new();
    let mut spawn = |client: BenchClient| {
        tasks.push(tokio::spawn(client.run(
            epoch,
            stopped.clone(),
            measure.clone(),
            tally.clone(),
            connected_tx.clone(),
        )));
    };
    let feeds = |room: u64| -> Vec<u64> {
        (1..=options.publishers as u64)
            .map(|i| room * 1000 + i)
            .collect()
    };
    for room in 1..=rooms as u64 {
        let created = api
            .message(
                control,
                json!({
                    "request": "create", "room": room, "publishers": options.publishers + 1,
                    "audiocodec": "opus", "is_private": true, "notify_joining": false,
                }),
                None,
            )
            .await?;
        if created["plugindata"]["data"]["videoroom"] != "created" {
            return Err(format!("creating room {room}: {created}"));
        }
        for feed in feeds(room) {
            spawn(join_publisher(api, lab, room, feed).await?);
        }
    }
    // Janus lists a feed only once its publisher's connection is up.
    let publishers = rooms * options.publishers;
    let mut connected =
        await_connected(&mut connected_rx, 0, publishers, Duration::from_secs(30)).await;
    if connected < publishers {
        return Err(format!(
            "only {connected} of {publishers} publishers connected to Janus ({})",
            lab.log_tail()
        ));
    }
    for room in 1..=rooms as u64 {
        for _ in 0..options.subscribers {
            spawn(join_subscriber(api, lab, room, &feeds(room)).await?);
        }
    }
    let peers = tasks.len();
    connected = await_connected(&mut connected_rx, connected, peers, Duration::from_secs(60)).await;
    if connected * 100 < peers * 98 {
        let _ = stop.send(true);
        return Err(format!(
            "only {connected} of {peers} peers connected to Janus ({})",
            lab.log_tail()
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_during = lab.rss_kib().unwrap_or(0);
    let stat = lab.stat_path();
    let cpu_start = thread_cpu(&stat);
    let started = Instant::now();
    let _ = measuring.send(true);
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let _ = measuring.send(false);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu(&stat) - cpu_start;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    // Every subscriber hears every publisher of its room.
    let expected = tally.sent as f64 * options.subscribers as f64;
    let (delay_p50, delay_p99, loss) = tally.summary(expected);
    let received = tally.received as f64;
    Ok(StageResult {
        rooms,
        peers,
        forwarded_per_sec: received / elapsed,
        cpu: cpu / elapsed,
        per_cpu_second: if cpu > 0.0 { received / cpu } else { f64::NAN },
        delay_p50,
        delay_p99,
        loss,
        // Absolute here; made per subscriber (less the idle Janus) by the caller.
        kib_per_subscriber: rss_during as f64,
        ..StageResult::default()
    })
}

/// A UDP socket on the veth's host end, with its host candidate added to `rtc`.
async fn client_socket(lab: &JanusLab) -> Result<(UdpSocket, str0m::Rtc), String> {
    let socket = UdpSocket::bind(SocketAddr::from((lab.host_ip, 0)))
        .await
        .map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = bench_rtc();
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    Ok((socket, rtc))
}

/// A publisher: str0m's send-only audio offer in a `joinandconfigure`, Janus's answer applied.
async fn join_publisher(
    api: &Janus,
    lab: &JanusLab,
    room: u64,
    feed: u64,
) -> Result<BenchClient, String> {
    let (socket, mut rtc) = client_socket(lab).await?;
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().ok_or("no offer")?;
    let handle = api.attach().await?;
    let body = json!({
        "request": "joinandconfigure", "room": room, "ptype": "publisher", "id": feed,
        "display": format!("p{feed}"), "audio": true,
    });
    let jsep = json!({"type": "offer", "sdp": offer.to_sdp_string()});
    let event = api.message_jsep(handle, body, jsep).await?;
    let sdp = event["jsep"]["sdp"]
        .as_str()
        .ok_or("no answer from Janus")?;
    let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    BenchClient::new(socket, rtc, mid, true)
}

/// A subscriber to every feed of its room: Janus offers, str0m answers in a `start`.
async fn join_subscriber(
    api: &Janus,
    lab: &JanusLab,
    room: u64,
    feeds: &[u64],
) -> Result<BenchClient, String> {
    let (socket, mut rtc) = client_socket(lab).await?;
    let handle = api.attach().await?;
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    let body = json!({"request": "join", "room": room, "ptype": "subscriber", "streams": streams});
    // A feed whose publisher has just connected may not be listed yet ("No such feed"): retry
    // for a few seconds.
    let mut attempts = 0;
    let event = loop {
        match api.message_event(handle, body.clone(), None, true).await {
            Err(e) if e.contains("No such feed") && attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => break other?,
        }
    };
    let sdp = event["jsep"]["sdp"].as_str().ok_or("no offer from Janus")?;
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| e.to_string())?;
    let jsep = json!({"type": "answer", "sdp": answer.to_sdp_string()});
    api.message_event(handle, json!({"request": "start"}), Some(jsep), false)
        .await?;
    BenchClient::new(socket, rtc, Mid::from("0"), false)
}

/// One Janus session over the HTTP API; events (long-polled) are handed to the handle they are
/// for. The long poll also keeps the session alive.
#[derive(Clone)]
struct Janus {
    http: reqwest::Client,
    session_url: String,
    transactions: Arc<AtomicU64>,
    waiters: Arc<Mutex<std::collections::HashMap<u64, mpsc::UnboundedSender<Value>>>>,
}

impl Janus {
    async fn connect(base: String) -> Result<Self, String> {
        let mut janus = Self {
            http: reqwest::Client::new(),
            session_url: base,
            transactions: Arc::new(AtomicU64::new(1)),
            waiters: Arc::default(),
        };
        let created = janus.request(None, json!({"janus": "create"})).await?;
        let id = created["data"]["id"].as_u64().ok_or("no session id")?;
        janus.session_url = format!("{}/{id}", janus.session_url);
        Ok(janus)
    }

    /// POSTs `body` (with a fresh transaction) to the session, or to one of its handles.
    async fn request(&self, handle: Option<u64>, mut body: Value) -> Result<Value, String> {
        let transaction = self.transactions.fetch_add(1, Ordering::Relaxed);
        body["transaction"] = json!(transaction.to_string());
        let url = match handle {
            Some(h) => format!("{}/{h}", self.session_url),
            None => self.session_url.clone(),
        };
        let reply: Value = self
            .http
            .post(url)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("Janus HTTP: {e}"))?
            .json()
            .await
            .map_err(|e| format!("Janus HTTP: {e}"))?;
        if reply["janus"] == "error" {
            return Err(format!("Janus: {}", reply["error"]));
        }
        Ok(reply)
    }

    /// Attaches a VideoRoom handle.
    async fn attach(&self) -> Result<u64, String> {
        let attached = self
            .request(
                None,
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        let handle = attached["data"]["id"].as_u64().ok_or("no handle id")?;
        Ok(handle)
    }

    /// A synchronous plugin request (answered in the reply itself).
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, String> {
        let mut message = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        self.request(Some(handle), message).await
    }

    /// A publisher's offer, then (trickle done: its candidates are in the SDP) the event with
    /// Janus's answer.
    async fn message_jsep(&self, handle: u64, body: Value, jsep: Value) -> Result<Value, String> {
        let event = self.message_event(handle, body, Some(jsep), true).await;
        let _ = self
            .request(
                Some(handle),
                json!({"janus": "trickle", "candidate": {"completed": true}}),
            )
            .await;
        event
    }

    /// An asynchronous plugin request: waits (at most 15 s) for the handle's event that answers
    /// it (one carrying a JSEP if `want_jsep`).
    async fn message_event(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
        want_jsep: bool,
    ) -> Result<Value, String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle, tx);
        let result = async {
            self.message(handle, body, jsep).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let event = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .map_err(|_| "no event from Janus within 15 s".to_string())?
                    .ok_or("event poller stopped")?;
                let data = &event["plugindata"]["data"];
                if data.get("error").is_some() {
                    return Err(format!("Janus: {data}"));
                }
                if event["janus"] == "event" && (!want_jsep || event["jsep"].is_object()) {
                    return Ok(event);
                }
            }
        }
        .await;
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&handle);
        result
    }

    /// Long-polls the session's events until `stopped`, handing each to its handle's waiter.
    async fn poll_events(self, mut stopped: watch::Receiver<bool>) {
        let url = format!("{}?maxev=50", self.session_url);
        while !*stopped.borrow() {
            let poll = self.http.get(&url).timeout(Duration::from_secs(40)).send();
            let reply = tokio::select! {
                reply = poll => reply,
                _ = stopped.changed() => break,
            };
            let events = match reply {
                Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let events = match events {
                Value::Array(list) => list,
                one => vec![one],
            };
            let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for event in events {
                if let Some(waiter) = event["sender"].as_u64().and_then(|s| waiters.get(&s)) {
                    let _ = waiter.send(event);
                }
            }
        }
    }
}
