//! SIP test harness: a bridge on loopback next to a [`TestGateway`], sipp scenarios written per
//! test, and an RTP phone that speaks a question and records what the bridge sends back.
//!
//! sipp drives the signaling (INVITE, ACK, re-INVITE, INFO, CANCEL, BYE) exactly as a phone or
//! a trunk would; the scenario's SDP names the [`RtpPhone`]'s socket, so the test hears the
//! bridge's RTP and can transcribe it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dartmouth_media::rtp_session::{Received, RtpConfig, RtpSession};
use dartmouth_media::{PhoneCodec, PhoneDecoder, PhoneEncoder};
use dartmouth_signaling::sip::{SipServer, SipSettings};
use tokio::net::UdpSocket;

use crate::TestGateway;

/// Starts a SIP bridge for `gateway` on 127.0.0.1 (random SIP port, RTP ports from `rtp_min`).
pub async fn start_bridge(
    gateway: &TestGateway,
    mut settings: SipSettings,
    rtp_min: u16,
) -> SipServer {
    settings.listen = "127.0.0.1:0".into();
    settings.rtp_port_min = rtp_min;
    settings.rtp_port_max = rtp_min + 98;
    let server = SipServer::start(settings, gateway.gateway.clone())
        .await
        .expect("the SIP bridge starts");
    gateway.gateway.set_sip(Some(server.handle()));
    server
}

/// Whether sipp is installed (Debian `sip-tester`).
pub fn sipp_available() -> bool {
    std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A free UDP port on loopback (bound and released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a sipp run left.
#[derive(Debug)]
pub struct SippRun {
    /// Whether every call of the scenario succeeded.
    pub success: bool,
    /// sipp's standard output and error, and its error log.
    pub output: String,
}

/// Runs the scenario `xml` with sipp against `target` (one call), at most `limit`.
pub async fn run_sipp(xml: &str, target: SocketAddr, extra: &[&str], limit: Duration) -> SippRun {
    let dir = scratch_dir();
    let scenario = dir.join(format!("scenario-{}.xml", free_udp_port()));
    std::fs::write(&scenario, xml).expect("writing the scenario");
    let local_port = free_udp_port().to_string();
    let media_port = free_udp_port().to_string();
    let mut command = tokio::process::Command::new("sipp");
    command
        .arg(target.to_string())
        .args(["-sf", scenario.to_str().unwrap_or_default()])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &local_port,
            "-mi",
            "127.0.0.1",
            "-mp",
            &media_port,
        ])
        .args([
            "-m",
            "1",
            "-l",
            "1",
            "-nostdin",
            "-trace_err",
            "-timeout",
            &format!("{}s", limit.as_secs()),
        ])
        .args(extra)
        .args(if std::env::var_os("SIPP_TRACE").is_some() {
            &["-trace_msg"][..]
        } else {
            &[][..]
        })
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("sipp runs");
    let output =
        tokio::time::timeout(limit + Duration::from_secs(5), child.wait_with_output()).await;
    let (success, mut text) = match output {
        Ok(Ok(out)) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, "sipp did not finish in time".into()),
    };
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.contains("_errors.log") || name.contains("_messages.log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_file(&scenario);
    SippRun {
        success,
        output: text,
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dartmouth-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The SDP a sipp scenario offers: audio at `media` with payload types `pts` (`rtpmap` lines
/// for the dynamic and telephone-event ones) and an optional direction.
pub fn offer_sdp(media: SocketAddr, pts: &[(u8, &str)], direction: &str) -> String {
    let mut sdp = format!(
        "v=0\no=sipp 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 {}\nt=0 0\nm=audio {} RTP/AVP {}\n",
        media.ip(),
        media.port(),
        pts.iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (pt, map) in pts {
        sdp.push_str(&format!("a=rtpmap:{pt} {map}\n"));
    }
    if !direction.is_empty() {
        sdp.push_str(&format!("a={direction}\n"));
    }
    sdp
}

/// One request of a UAC scenario with sipp's keywords for the dialog's headers.
pub fn request(method: &str, cseq: u32, extra_headers: &str, body: &str) -> String {
    // An INVITE that starts a call (the first, or the one answering a digest challenge) has no
    // To tag; everything else is in the dialog.
    let initial = method == "INVITE" && (cseq == 1 || extra_headers.contains("[authentication"));
    let to_tag = if initial { "" } else { "[peer_tag_param]" };
    let content_type = if body.is_empty() {
        String::new()
    } else if method == "INFO" {
        "Content-Type: application/dtmf-relay\n".into()
    } else {
        "Content-Type: application/sdp\n".into()
    };
    // ACK is never retransmitted on a timer (it gets no response).
    let retrans = if method == "ACK" {
        ""
    } else {
        " retrans=\"500\""
    };
    format!(
        "<send{retrans}><![CDATA[\n{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
         Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
         To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}\n\
         Call-ID: [call_id]\nCSeq: {cseq} {method}\nContact: sip:caller@[local_ip]:[local_port]\n\
         Max-Forwards: 70\n{extra_headers}{content_type}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

/// `<recv response="N"/>` (optional when `optional`), with body checks (`regexp`s that must match).
pub fn expect(code: u16, optional: bool, must_contain: &[&str]) -> String {
    let mut actions = String::new();
    let mut names = Vec::new();
    for (i, needle) in must_contain.iter().enumerate() {
        actions.push_str(&format!(
            "<ereg regexp=\"{needle}\" search_in=\"msg\" check_it=\"true\" assign_to=\"m{code}x{i}\"/>"
        ));
        names.push(format!("m{code}x{i}"));
    }
    let optional = if optional { " optional=\"true\"" } else { "" };
    if actions.is_empty() {
        format!("<recv response=\"{code}\"{optional}/>\n")
    } else {
        format!(
            "<recv response=\"{code}\"{optional}><action>{actions}</action></recv>\n<Reference variables=\"{}\"/>\n",
            names.join(",")
        )
    }
}

/// A scenario from its steps.
pub fn scenario(steps: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"dartmouth\">\n{}</scenario>\n",
        steps.concat()
    )
}

/// `<pause/>`.
pub fn pause(ms: u64) -> String {
    format!("<pause milliseconds=\"{ms}\"/>\n")
}

/// The RTP end of a phone: streams a question in `codec` and records what comes back.
pub struct RtpPhone {
    socket: UdpSocket,
    /// Its address (what the scenario's SDP names).
    pub addr: SocketAddr,
}

/// What the phone heard.
#[derive(Debug, Default)]
pub struct Heard {
    /// Decoded audio at the codec's rate.
    pub pcm: Vec<i16>,
    /// When the first packet arrived, relative to the start of listening.
    pub first_packet: Option<Duration>,
    /// When the first voiced frame arrived.
    pub first_voice: Option<Duration>,
    /// Where the bridge's RTP came from.
    pub bridge: Option<SocketAddr>,
    /// Telephone-event digits received.
    pub digits: String,
    /// Packets received.
    pub packets: usize,
    /// When each packet arrived.
    pub arrivals: Vec<Duration>,
}

impl Heard {
    /// The longest silence between two packets, and when it ended.
    pub fn longest_gap(&self) -> (Duration, Duration) {
        self.arrivals
            .windows(2)
            .map(|w| (w[1] - w[0], w[1]))
            .max()
            .unwrap_or_default()
    }
}

impl RtpPhone {
    /// A phone on a random loopback port.
    pub async fn bind() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("RTP socket");
        let addr = socket.local_addr().expect("addr");
        Self { socket, addr }
    }

    /// Waits for the bridge's first packet (at most `limit`), then speaks `speech` (at the
    /// codec's rate) in real time, then keeps listening; `digits` are sent as RFC 4733 events
    /// after the speech. Returns after `listen` in total.
    pub async fn converse(
        &self,
        codec: PhoneCodec,
        pt: u8,
        speech: &[i16],
        digits: &str,
        listen: Duration,
    ) -> Heard {
        let mut heard = Heard::default();
        let mut decoder = PhoneDecoder::new(codec).expect("decoder");
        let mut encoder = PhoneEncoder::new(codec).expect("encoder");
        let placeholder: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut session = RtpSession::new(
            RtpConfig {
                remote: placeholder,
                audio_pt: pt,
                clock_rate: codec.clock_rate(),
                frame_ticks: codec.frame_ticks(),
                dtmf_pt: Some(101),
                cn_pt: Some(13),
            },
            0xfeed,
        );
        let start = Instant::now();
        let frame = codec.frame_samples();
        let mut frames = speech.chunks(frame);
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 2048];
        let mut payload = [0u8; 1500];
        let mut pcm = vec![0i16; 960];
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let mut digits_queued = false;
        while start.elapsed() < listen {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    heard.packets += 1;
                    heard.arrivals.push(start.elapsed());
                    heard.first_packet.get_or_insert(start.elapsed());
                    if heard.bridge.is_none() {
                        heard.bridge = Some(from);
                        session.update(RtpConfig { remote: from, ..*session.config() });
                    }
                    match session.receive(start.elapsed(), from, &buf[..n]) {
                        Received::Audio { payload, .. } => {
                            let samples = decoder.decode(payload, &mut pcm);
                            if crate::rms(&pcm[..samples]) > crate::client::SPEECH_RMS {
                                heard.first_voice.get_or_insert(start.elapsed());
                            }
                            heard.pcm.extend_from_slice(&pcm[..samples]);
                        }
                        Received::Dtmf { digit } => heard.digits.push(digit),
                        _ => {}
                    }
                }
                _ = ticker.tick() => {
                    let Some(bridge) = heard.bridge else { continue };
                    if let Some(chunk) = frames.next() {
                        let mut samples = [0i16; 960];
                        samples[..chunk.len()].copy_from_slice(chunk);
                        let bytes = encoder.encode(&samples[..frame], &mut payload);
                        let n = session.write_audio(&payload[..bytes], &mut out);
                        let _ = self.socket.send_to(&out[..n], bridge).await;
                    } else if !digits_queued && !digits.is_empty() {
                        session.queue_digits(digits);
                        digits_queued = true;
                    } else if session.sending_digits() {
                        let n = session.write_dtmf(&mut out);
                        let _ = self.socket.send_to(&out[..n], bridge).await;
                    } else {
                        let silence = [0i16; 960];
                        let bytes = encoder.encode(&silence[..frame], &mut payload);
                        let n = session.write_audio(&payload[..bytes], &mut out);
                        let _ = self.socket.send_to(&out[..n], bridge).await;
                    }
                }
            }
        }
        heard
    }
}

/// Speech of `text` at `rate` (espeak-ng), or `None` when espeak-ng is missing.
pub fn speak_at(text: &str, rate: u32) -> Option<Vec<i16>> {
    let speech = crate::speak_48k(text)?;
    let floats: Vec<f32> = speech.iter().map(|s| f32::from(*s) / 32768.0).collect();
    let resampled = dartmouth_voice::resample::resample_all(&floats, 48_000, rate).ok()?;
    Some(
        resampled
            .iter()
            .map(|s| dartmouth_voice::frame::f32_to_i16(*s))
            .collect(),
    )
}

/// Transcribes `pcm` at `rate` with the embedded Moonshine.
pub async fn transcribe(pcm: &[i16], rate: u32) -> String {
    use dartmouth_voice::provider::{CancellationToken, Stt, SttEvent, SttRequest};
    let store = dartmouth_models::ModelStore::from_env();
    let Ok(stt) = dartmouth_voice::embedded::MoonshineProvider::load(&store) else {
        return String::new();
    };
    let floats: Vec<f32> = pcm
        .iter()
        .map(|s| f32::from(*s) / 32768.0)
        .chain(std::iter::repeat_n(0.0, rate as usize / 2))
        .collect();
    let Ok(audio) = dartmouth_voice::resample::resample_all(&floats, rate, 16_000) else {
        return String::new();
    };
    let mut words = String::new();
    for piece in audio.chunks(16_000 * 25) {
        let mut stream = stt.transcribe(SttRequest::new(piece), CancellationToken::new());
        while let Some(event) = stream.recv().await {
            if let SttEvent::Final(text) = event {
                words.push_str(text.trim());
                words.push(' ');
            }
        }
    }
    words.trim().to_string()
}

/// Writes `pcm` at `rate` as a WAV when `DARTMOUTH_TEST_AUDIO_DIR` is set (for listening).
pub fn keep_audio(name: &str, pcm: &[i16], rate: u32) {
    let Ok(dir) = std::env::var("DARTMOUTH_TEST_AUDIO_DIR") else {
        return;
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    if let Ok(mut wav) = hound::WavWriter::create(Path::new(&dir).join(name), spec) {
        for s in pcm {
            let _ = wav.write_sample(*s);
        }
        let _ = wav.finalize();
    }
}

/// A response of a UAS scenario to the last request, with a To tag and optional SDP body.
pub fn respond(code: u16, reason: &str, body: &str, extra_headers: &str) -> String {
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\n"
    };
    let retrans = if (200..300).contains(&code) && !body.is_empty() {
        " retrans=\"500\""
    } else {
        ""
    };
    format!(
        "<send{retrans}><![CDATA[\nSIP/2.0 {code} {reason}\n[last_Via:]\n[last_From:]\n\
         [last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n[last_CSeq:]\n\
         Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n{extra_headers}{content_type}\
         Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

/// A response of a UAC scenario to a request the bridge sent in the dialog (REFER, BYE): the
/// request's headers as they came, no body.
pub fn respond_in_dialog(code: u16, reason: &str) -> String {
    format!(
        "<send><![CDATA[\nSIP/2.0 {code} {reason}\n[last_Via:]\n[last_From:]\n[last_To:]\n\
         [last_Call-ID:]\n[last_CSeq:]\nContact: <sip:caller@[local_ip]:[local_port]>\n\
         Content-Length: 0\n\n]]></send>\n"
    )
}

/// A NOTIFY of a UAC scenario reporting the progress of the bridge's REFER (RFC 3515): the
/// transfer's status line (`SIP/2.0 200 OK`) as a `message/sipfrag` body; `terminated` ends the
/// implicit subscription.
pub fn notify_refer(cseq: u32, status_line: &str, terminated: bool) -> String {
    let state = if terminated {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    format!(
        "<send retrans=\"500\"><![CDATA[\nNOTIFY sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
         Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
         To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n\
         Call-ID: [call_id]\nCSeq: {cseq} NOTIFY\nContact: sip:caller@[local_ip]:[local_port]\n\
         Max-Forwards: 70\nEvent: refer\nSubscription-State: {state}\n\
         Content-Type: message/sipfrag\nContent-Length: [len]\n\n{status_line}\n]]></send>\n"
    )
}

/// `<recv request="METHOD"/>` with checks on the message.
pub fn expect_request(method: &str, optional: bool, must_contain: &[&str]) -> String {
    let optional = if optional { " optional=\"true\"" } else { "" };
    if must_contain.is_empty() {
        return format!("<recv request=\"{method}\"{optional}/>\n");
    }
    let mut actions = String::new();
    let mut names = Vec::new();
    for (i, needle) in must_contain.iter().enumerate() {
        let name = format!("r{}x{i}", method.to_lowercase());
        actions.push_str(&format!(
            "<ereg regexp=\"{needle}\" search_in=\"msg\" check_it=\"true\" assign_to=\"{name}\"/>"
        ));
        names.push(name);
    }
    format!(
        "<recv request=\"{method}\"{optional}><action>{actions}</action></recv>\n<Reference variables=\"{}\"/>\n",
        names.join(",")
    )
}

/// Runs a UAS scenario with sipp listening on `port` (one call), at most `limit`.
pub async fn run_sipp_uas(xml: &str, port: u16, limit: Duration) -> SippRun {
    let dir = scratch_dir();
    let scenario = dir.join(format!("uas-{port}.xml"));
    std::fs::write(&scenario, xml).expect("writing the scenario");
    let media_port = free_udp_port().to_string();
    let child = tokio::process::Command::new("sipp")
        .args(["-sf", scenario.to_str().unwrap_or_default()])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &media_port,
        ])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-trace_err",
            "-timeout",
            &format!("{}s", limit.as_secs()),
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp runs");
    let output =
        tokio::time::timeout(limit + Duration::from_secs(5), child.wait_with_output()).await;
    let _ = std::fs::remove_file(&scenario);
    match output {
        Ok(Ok(out)) => SippRun {
            success: out.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        },
        Ok(Err(e)) => SippRun {
            success: false,
            output: e.to_string(),
        },
        Err(_) => SippRun {
            success: false,
            output: "sipp did not finish in time".into(),
        },
    }
}

/// Phone ticks (20 ms) between slips of [`RtpPhone::talk_with_echo`]'s echo path.
pub const ECHO_SLIP_EVERY: u32 = 150;

impl RtpPhone {
    /// A phone that says each `(offset, speech)` of `script` at its offset after the bridge's
    /// first packet, and (with `echo`) returns what it hears at `gain` after `delay` — the way a
    /// speakerphone or a hybrid leaks the far end back. Like a real phone's playout, the echo
    /// path slips now and then: every [`ECHO_SLIP_EVERY`] ticks it takes one packet longer, then
    /// as many ticks later one packet shorter again. Listens for `listen` in total.
    pub async fn talk_with_echo(
        &self,
        codec: PhoneCodec,
        pt: u8,
        script: &[(Duration, Vec<i16>)],
        echo: Option<(f32, Duration)>,
        listen: Duration,
    ) -> Heard {
        let mut heard = Heard::default();
        let mut decoder = PhoneDecoder::new(codec).expect("decoder");
        let mut encoder = PhoneEncoder::new(codec).expect("encoder");
        let placeholder: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let config = RtpConfig {
            remote: placeholder,
            audio_pt: pt,
            clock_rate: codec.clock_rate(),
            frame_ticks: codec.frame_ticks(),
            dtmf_pt: None,
            cn_pt: Some(13),
        };
        let mut session = RtpSession::new(config, 0xbeef);
        let frame = codec.frame_samples();
        let delay_frames = echo.map_or(0, |(_, d)| (d.as_millis() / 20) as usize);
        let mut echo_line: std::collections::VecDeque<Vec<i16>> = std::collections::VecDeque::new();
        let start = Instant::now();
        let mut began: Option<Instant> = None;
        let (mut buf, mut out, mut payload) = ([0u8; 2048], [0u8; 2048], [0u8; 1500]);
        let mut pcm = vec![0i16; 960];
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let mut ticks = 0u32;
        while start.elapsed() < listen {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    heard.packets += 1;
                    if heard.bridge.is_none() {
                        heard.bridge = Some(from);
                        began = Some(Instant::now());
                        session.update(RtpConfig { remote: from, ..config });
                    }
                    if let Received::Audio { payload, .. } = session.receive(start.elapsed(), from, &buf[..n]) {
                        let samples = decoder.decode(payload, &mut pcm);
                        heard.pcm.extend_from_slice(&pcm[..samples]);
                        echo_line.push_back(pcm[..samples].to_vec());
                    }
                }
                _ = ticker.tick() => {
                    let (Some(bridge), Some(began)) = (heard.bridge, began) else { continue };
                    let t = began.elapsed();
                    let mut mix = vec![0f32; frame];
                    for (offset, speech) in script {
                        if t >= *offset {
                            let index = ((t - *offset).as_millis() / 20) as usize * frame;
                            for (m, s) in mix.iter_mut().zip(speech.iter().skip(index)) {
                                *m += f32::from(*s);
                            }
                        }
                    }
                    ticks += 1;
                    let slipped = (ticks / ECHO_SLIP_EVERY) % 2 == 1;
                    if !slipped && ticks.is_multiple_of(ECHO_SLIP_EVERY) {
                        // Slipping back: one packet of echo is dropped.
                        echo_line.pop_front();
                    }
                    let line_delay = delay_frames + usize::from(slipped);
                    if let Some((gain, _)) = echo
                        && echo_line.len() > line_delay
                        && let Some(old) = echo_line.pop_front()
                    {
                        for (m, s) in mix.iter_mut().zip(old) {
                            *m += gain * f32::from(s);
                        }
                    }
                    let samples: Vec<i16> = mix.iter().map(|v| v.clamp(-32768.0, 32767.0) as i16).collect();
                    let bytes = encoder.encode(&samples, &mut payload);
                    let n = session.write_audio(&payload[..bytes], &mut out);
                    let _ = self.socket.send_to(&out[..n], bridge).await;
                }
            }
        }
        heard
    }
}
