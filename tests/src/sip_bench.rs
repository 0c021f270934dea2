//! `dartmouth bench sip`: the SIP bridge under sipp load on loopback.
//!
//! 1. Call setup (INVITE → 200 OK, measured by sipp per call) at rising call rates.
//! 2. Concurrent calls with media: each sipp call streams µ-law speech (`rtp_stream`, looped)
//!    into an echo room (agents off: the audio goes through latching, the jitter buffer, G.711
//!    decode and encode and back); CPU per call from the process's CPU time, and the share of
//!    20 ms ticks that ran a frame late (a late packet at the phone).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dartmouth_signaling::agent::NoAgents;
use dartmouth_signaling::sip::{DialRule, SipSettings};

use crate::TestGateway;
use crate::sip::{free_udp_port, start_bridge};

/// Options of the SIP benchmark.
#[derive(Debug, Clone)]
pub struct SipBenchOptions {
    /// Call rates (calls per second) of the setup-time runs.
    pub rates: Vec<u32>,
    /// Concurrent call counts of the media runs.
    pub concurrency: Vec<u32>,
    /// How long each media run holds its calls.
    pub hold: Duration,
}

impl Default for SipBenchOptions {
    fn default() -> Self {
        Self {
            rates: vec![10, 50, 100, 200],
            concurrency: vec![50, 200, 500],
            hold: Duration::from_secs(20),
        }
    }
}

fn scenario(media: bool, hold_ms: u64) -> String {
    let (sdp_port, stream) = if media {
        (
            "[rtpstream_audio_port]",
            "<nop><action><exec rtp_stream=\"speech.ulaw,-1,0\"/></action></nop>\n",
        )
    } else {
        ("[media_port]", "")
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench">
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [media_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio {sdp_port} RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="200" rtd="true"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
{stream}<pause milliseconds="{hold_ms}"/>
<send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200"/>
<ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000"/>
</scenario>
"#
    )
}

/// Runs sipp in `dir`; returns the response times (ms) it logged and its success count.
async fn sipp(
    dir: &Path,
    xml: &str,
    target: std::net::SocketAddr,
    args: &[String],
) -> (Vec<f64>, u64, u64) {
    let name = format!("bench-{}.xml", free_udp_port());
    let _ = std::fs::write(dir.join(&name), xml);
    let port = free_udp_port().to_string();
    let output = tokio::process::Command::new("sipp")
        .arg(target.to_string())
        .args([
            "-sf",
            &name,
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-mi",
            "127.0.0.1",
        ])
        .args([
            "-nostdin",
            "-trace_rtt",
            "-rtt_freq",
            "1",
            "-trace_stat",
            "-fd",
            "1",
        ])
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await;
    let mut times = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        if file.ends_with("_rtt.csv") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            times.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok()),
            );
        }
        if file.ends_with(".csv") && !file.ends_with("_rtt.csv") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
            if let Some(last) = text.lines().last() {
                let values: Vec<&str> = last.split(';').collect();
                let pick = |name: &str| {
                    header
                        .iter()
                        .position(|h| *h == name)
                        .and_then(|i| values.get(i)?.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                ok = pick("SuccessfulCall(C)");
                failed = pick("FailedCall(C)");
            }
        }
        if file.ends_with(".csv") || file.ends_with(".log") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if output.is_err() {
        failed += 1;
    }
    (times, ok, failed)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = text
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs the benchmark and returns its report.
pub async fn run(options: SipBenchOptions) -> String {
    let mut report = String::new();
    let dir = std::env::temp_dir().join(format!("dartmouth-sip-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // A µ-law speech file for rtp_stream.
    let Some(speech) = crate::sip::speak_at(
        "The quick brown fox jumps over the lazy dog, again and again.",
        8_000,
    ) else {
        return "espeak-ng is required for the SIP benchmark".into();
    };
    let ulaw: Vec<u8> = speech
        .iter()
        .map(|s| dartmouth_media::ulaw_encode(*s))
        .collect();
    let _ = std::fs::write(dir.join("speech.ulaw"), ulaw);

    let gateway = TestGateway::start(Arc::new(NoAgents)).await;
    let settings = SipSettings {
        max_calls: 2_000,
        dial_plan: vec![DialRule {
            agent: "echo".into(),
            ..DialRule::default()
        }],
        ..SipSettings::default()
    };
    let mut settings = settings;
    settings.rtp_port_max = 17_998;
    let bridge = start_bridge(&gateway, settings, 16_000).await;
    let target = bridge.local_addr();

    let _ = writeln!(
        report,
        "## SIP call setup (INVITE → 200 OK at sipp; echo room, no media)\n"
    );
    let _ = writeln!(
        report,
        "| calls/s | calls | ok | failed | p50 ms | p95 ms | p99 ms |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|");
    for rate in &options.rates {
        let calls = rate * 5;
        let args = vec![
            "-r".into(),
            rate.to_string(),
            "-m".into(),
            calls.to_string(),
            "-l".into(),
            (rate * 3).to_string(),
            "-timeout".into(),
            "60s".into(),
        ];
        let (mut times, ok, failed) = sipp(&dir, &scenario(false, 500), target, &args).await;
        times.sort_by(|a, b| a.total_cmp(b));
        let _ = writeln!(
            report,
            "| {rate} | {calls} | {ok} | {failed} | {:.1} | {:.1} | {:.1} |",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 0.99)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let _ = writeln!(
        report,
        "\n## Concurrent calls with media (G.711 RTP looped through an echo room)\n"
    );
    let _ = writeln!(
        report,
        "| calls | ok | failed | CPU % of one core | CPU ms/s per call | late ticks % | frames in | concealed |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|---|");
    for n in &options.concurrency {
        let before = bridge.handle().totals();
        let hold_ms = options.hold.as_millis() as u64;
        let args = vec![
            "-r".into(),
            "50".into(),
            "-m".into(),
            n.to_string(),
            "-l".into(),
            n.to_string(),
            "-timeout".into(),
            format!("{}s", options.hold.as_secs() + 60),
        ];
        let xml = scenario(true, hold_ms);
        let run = sipp(&dir, &xml, target, &args);
        // CPU over the window in which every call is up: after ramp-up, before the first BYE.
        let ramp = Duration::from_millis(u64::from(*n) * 1000 / 50 + 1_000);
        let measure = async {
            tokio::time::sleep(ramp).await;
            let (c0, t0) = (cpu_seconds(), Instant::now());
            let window = options
                .hold
                .saturating_sub(ramp)
                .max(Duration::from_secs(2))
                .min(Duration::from_secs(10));
            tokio::time::sleep(window).await;
            (cpu_seconds() - c0) / t0.elapsed().as_secs_f64()
        };
        let ((_, ok, failed), cpu) = tokio::join!(run, measure);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = bridge.handle().totals();
        let ticks = after.ticks - before.ticks;
        let late = after.late_ticks - before.late_ticks;
        let _ = writeln!(
            report,
            "| {n} | {ok} | {failed} | {:.0} | {:.2} | {:.2} | {} | {} |",
            cpu * 100.0,
            cpu * 1000.0 / f64::from(*n),
            100.0 * late as f64 / ticks.max(1) as f64,
            after.frames_in - before.frames_in,
            after.concealed - before.concealed
        );
    }
    let _ = writeln!(
        report,
        "\nCPU is the whole process (bridge + media) while every call streams; sipp runs beside it \
         on the same cores. First agent audio after answer: see the outbound test (`sip_outbound`)."
    );
    bridge.stop().await;
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    report
}
