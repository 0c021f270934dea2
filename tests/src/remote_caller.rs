//! The load generator of `dartmouth bench remote`: a lean caller on the project's WebRTC stack
//! (str0m, DTLS-SRTP, Opus over UDP on loopback, joined over the WebSocket protocol) made cheap
//! enough that hundreds share two cores with the gateway. Its questions are Opus-encoded once
//! per benchmark and replayed packet by packet; what it hears is decoded only until the answer
//! has been audible for [`AUDIBLE_FRAMES`] frames, after that packets are only counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dartmouth_media::{OpusDecoder, OpusEncoder, level_dbov};
use dartmouth_signaling::proto::{
    AgentListen, AgentOutput, ClientMessage, PROTOCOL_VERSION, ServerMessage, TurnLatency,
};
use futures_util::{SinkExt, StreamExt};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{FRAME, SPEECH_RMS};

/// Audible frames decoded per answer before the caller stops decoding it.
pub const AUDIBLE_FRAMES: usize = 10;
/// Longest a caller waits for an answer to finish before it counts the question as lost.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// A clip encoded once: one Opus packet and its level (dBov, 127 = silence) per 20 ms frame.
#[derive(Debug)]
pub struct EncodedClip {
    /// The packets, in order.
    pub packets: Vec<(Vec<u8>, u8)>,
    /// Frame holding the clip's last voiced sample, and the sample's offset into it.
    pub last_voiced: (usize, usize),
}

impl EncodedClip {
    /// Encodes 48 kHz mono `pcm` (padded to whole frames) with a fresh encoder.
    pub fn encode(pcm: &[i16]) -> Result<Self, String> {
        let mut encoder = OpusEncoder::new(48_000, 1).map_err(|e| e.to_string())?;
        let mut packet = [0u8; 1500];
        let mut packets = Vec::new();
        for chunk in pcm.chunks(FRAME) {
            let mut frame = [0i16; FRAME];
            frame[..chunk.len()].copy_from_slice(chunk);
            let n = encoder
                .encode(&frame, &mut packet)
                .map_err(|e| e.to_string())?;
            packets.push((packet[..n].to_vec(), level_dbov(&frame)));
        }
        let last = pcm
            .iter()
            .rposition(|s| s.unsigned_abs() > 300)
            .unwrap_or(0);
        Ok(Self {
            packets,
            last_voiced: (last / FRAME, last % FRAME),
        })
    }
}

/// What one caller does.
#[derive(Debug, Clone)]
pub struct CallerPlan {
    /// Its questions, asked in turn (round robin).
    pub questions: Vec<Arc<EncodedClip>>,
    /// The packet it sends when quiet (encoded silence).
    pub silence: Arc<Vec<u8>>,
    /// Wait after `ask` turns true before the first question.
    pub start_delay: Duration,
    /// Pause after each answer before the next question, cycled.
    pub think: Vec<Duration>,
}

/// One question and its answer.
#[derive(Debug, Clone, Default)]
pub struct RemoteTurn {
    /// End of the question's speech → first audible answer frame at the caller.
    pub v2v: Option<Duration>,
    /// Agent audio packets received for the answer.
    pub answer_frames: usize,
    /// Audible frames among the decoded ones (decoding stops at [`AUDIBLE_FRAMES`]).
    pub audible_frames: usize,
    /// The gateway's record of the turn.
    pub latency: Option<TurnLatency>,
    /// Why the question went unanswered.
    pub failure: Option<String>,
}

/// One caller's outcome.
#[derive(Debug, Default)]
pub struct CallerResult {
    /// Its questions, in order.
    pub turns: Vec<RemoteTurn>,
    /// Why the call itself failed (join, media).
    pub error: Option<String>,
}

/// Signals from the benchmark to its callers.
#[derive(Debug, Clone)]
pub struct CallerSignals {
    /// Counted up once the caller's media is connected.
    pub connected: Arc<AtomicUsize>,
    /// Questions may be asked while true.
    pub ask: watch::Receiver<bool>,
    /// The call ends when true (after the answer in progress, bounded by [`ANSWER_LIMIT`]).
    pub hang_up: watch::Receiver<bool>,
}

enum Phase {
    /// Quiet until this instant (before the first question or thinking).
    Quiet(Instant),
    /// Sending question `clip` from packet `next`.
    Asking { clip: usize, next: usize },
    /// The question ended at `speech_end`; the answer is awaited.
    Waiting { speech_end: Instant },
}

/// Joins through `ws_url` with `token` and follows `plan` until hung up.
pub async fn run_caller(
    ws_url: String,
    token: String,
    plan: CallerPlan,
    mut signals: CallerSignals,
) -> CallerResult {
    let mut result = CallerResult::default();
    if let Err(e) = call(&ws_url, token, &plan, &mut signals, &mut result).await {
        result.error = Some(e);
    }
    result
}

async fn call(
    ws_url: &str,
    token: String,
    plan: &CallerPlan,
    signals: &mut CallerSignals,
    result: &mut CallerResult,
) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().ok_or("no offer")?;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    let join = ClientMessage::Join {
        v: PROTOCOL_VERSION,
        token,
        sdp: offer.to_sdp_string(),
        agent: None,
        output: AgentOutput::Audio,
        listen: AgentListen::Me,
        metadata: None,
    };
    let join = serde_json::to_string(&join).map_err(|e| e.to_string())?;
    ws.send(Message::Text(join.into()))
        .await
        .map_err(|e| e.to_string())?;
    let answer = loop {
        let next = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no answer to join within 60 s".to_string())?;
        let Some(Ok(Message::Text(text))) = next else {
            return Err("the connection closed before joining".into());
        };
        match serde_json::from_str::<ServerMessage>(text.as_str()).map_err(|e| e.to_string())? {
            ServerMessage::Joined { sdp, .. } => break sdp,
            ServerMessage::Error { code, message } => return Err(format!("{code:?}: {message}")),
            _ => {}
        }
    };
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;

    let mut decoder = OpusDecoder::new(48_000, 1).map_err(|e| e.to_string())?;
    let mut pcm = [0i16; FRAME];
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut pt = None;
    let mut sent: u64 = 0;
    let mut asked: usize = 0;
    let mut phase = Phase::Quiet(Instant::now() + Duration::from_secs(3600));
    let mut armed = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let joined_by = Instant::now() + Duration::from_secs(60);
    loop {
        let wake = loop {
            match rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => break at,
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => {
                    connected = true;
                    signals.connected.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::MediaData(data)) => {
                    if let (Phase::Waiting { speech_end }, Some(turn)) =
                        (&phase, result.turns.last_mut())
                    {
                        turn.answer_frames += 1;
                        if turn.audible_frames < AUDIBLE_FRAMES
                            && decoder.decode(&data.data, &mut pcm).unwrap_or(0) == FRAME
                            && crate::rms(&pcm) > SPEECH_RMS
                        {
                            turn.audible_frames += 1;
                            if turn.v2v.is_none() {
                                turn.v2v =
                                    Some(Instant::now().saturating_duration_since(*speech_end));
                            }
                        }
                    }
                }
                Output::Event(_) => {}
            }
        };
        if !connected && Instant::now() > joined_by {
            return Err("media did not connect within 60 s".into());
        }
        // Hang up between questions; a question being asked is finished and its answer
        // awaited (bounded).
        let hang_up = *signals.hang_up.borrow();
        match phase {
            Phase::Quiet(_) if hang_up => break,
            Phase::Waiting { speech_end } if hang_up && speech_end.elapsed() > ANSWER_LIMIT => {
                if let Some(turn) = result.turns.last_mut() {
                    turn.failure
                        .get_or_insert_with(|| "no answer by hang-up".into());
                }
                break;
            }
            _ => {}
        }
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, from) = received.map_err(|e| e.to_string())?;
                if let Ok(receive) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            message = ws.next() => {
                let Some(Ok(message)) = message else {
                    return Err("the gateway closed the connection".into());
                };
                let Message::Text(text) = message else { continue };
                let Ok(message) = serde_json::from_str::<ServerMessage>(text.as_str()) else {
                    continue;
                };
                let Phase::Waiting { .. } = phase else { continue };
                let Some(turn) = result.turns.last_mut() else { continue };
                let done = match message {
                    ServerMessage::Latency { latency, .. } => {
                        turn.latency = Some(latency);
                        true
                    }
                    ServerMessage::Error { code, message } => {
                        turn.failure = Some(format!("{code:?}: {message}"));
                        true
                    }
                    _ => false,
                };
                if done {
                    let think = plan.think[asked % plan.think.len().max(1)];
                    phase = Phase::Quiet(Instant::now() + think);
                }
            }
            _ = signals.ask.changed(), if !armed => {
                if *signals.ask.borrow() {
                    armed = true;
                    phase = Phase::Quiet(Instant::now() + plan.start_delay);
                }
            }
            _ = ticker.tick() => {
                if !connected {
                    continue;
                }
                let now = Instant::now();
                if let Phase::Waiting { speech_end } = phase
                    && now.saturating_duration_since(speech_end) > ANSWER_LIMIT
                {
                    if let Some(turn) = result.turns.last_mut() {
                        turn.failure.get_or_insert_with(|| "no answer within 30 s".into());
                    }
                    phase = Phase::Quiet(now);
                }
                if let Phase::Quiet(until) = phase
                    && armed
                    && now >= until
                    && *signals.ask.borrow()
                    && !plan.questions.is_empty()
                {
                    phase = Phase::Asking { clip: asked % plan.questions.len(), next: 0 };
                    asked += 1;
                }
                let (packet, level, ends_question) = match &mut phase {
                    Phase::Asking { clip, next } => {
                        let question = &plan.questions[*clip];
                        let (packet, level) = &question.packets[*next];
                        let ends = (*next == question.last_voiced.0)
                            .then(|| question.last_voiced.1 as f64 / 48_000.0);
                        *next += 1;
                        (packet, *level, ends)
                    }
                    _ => (&*plan.silence, 127, None),
                };
                if let Some(into) = ends_question {
                    result.turns.push(RemoteTurn::default());
                    // A fresh decoder per answer: the last one skipped the previous answer's tail.
                    decoder = OpusDecoder::new(48_000, 1).map_err(|e| e.to_string())?;
                    phase = Phase::Waiting { speech_end: now + Duration::from_secs_f64(into) };
                }
                let Some(writer) = rtc.writer(mid) else { continue };
                let pt = *pt.get_or_insert_with(|| writer.payload_params().next().map(|p| p.pt()));
                let Some(pt) = pt else { return Err("no Opus payload type".into()) };
                let time = MediaTime::new(sent * FRAME as u64, Frequency::FORTY_EIGHT_KHZ);
                sent += 1;
                writer
                    .audio_level(-(level as i8), level < 127)
                    .write(pt, now, time, packet.clone())
                    .map_err(|e| e.to_string())?;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
    let leave = serde_json::to_string(&ClientMessage::Leave).unwrap_or_default();
    let _ = ws.send(Message::Text(leave.into())).await;
    let _ = ws.close(None).await;
    Ok(())
}

/// An Opus packet of 20 ms of silence (the steady-state one, after the encoder settled).
pub fn silence_packet() -> Result<Vec<u8>, String> {
    let clip = EncodedClip::encode(&[0i16; FRAME * 4])?;
    clip.packets
        .last()
        .map(|(p, _)| p.clone())
        .ok_or_else(|| "no packet".into())
}
