//! A real WebRTC client (str0m, Opus, UDP on loopback) that joins over the WebSocket protocol,
//! speaks a clip in real time, and records what it hears with arrival times: the measuring end
//! of the end-to-end tests and of `dartmouth bench webrtc`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dartmouth_media::{OpusDecoder, OpusEncoder};
use dartmouth_signaling::proto::{AgentOutput, ClientMessage, PROTOCOL_VERSION, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

/// Samples per 20 ms frame at 48 kHz.
const FRAME: usize = 960;
/// A received frame louder than this (RMS, full scale 1.0) counts as agent speech.
pub const SPEECH_RMS: f64 = 0.01;

/// What to do during a call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Agent to ask for (`None`: the room's default).
    pub agent: Option<String>,
    /// What the client says (48 kHz mono), starting once media connects.
    pub speech: Vec<i16>,
    /// A second utterance and how long after the agent's answer becomes audible to start it
    /// (talking over the agent: barge-in).
    pub interjection: Option<(Duration, Vec<i16>)>,
    /// Longest the call lasts after media connects.
    pub limit: Duration,
    /// End the call this long after the agent's first answer audio stops (None: run to `limit`).
    pub hang_up_after_answer: Option<Duration>,
    /// Vanish (no leave, sockets dropped) this long after media connects.
    pub vanish_after: Option<Duration>,
    /// A typed message sent once media connects (client-side STT).
    pub typed: Option<String>,
    /// Spoken or text-only answers (client-side TTS).
    pub output: AgentOutput,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            agent: None,
            speech: Vec::new(),
            interjection: None,
            limit: Duration::from_secs(60),
            hang_up_after_answer: Some(Duration::from_millis(1500)),
            vanish_after: None,
            typed: None,
            output: AgentOutput::Audio,
        }
    }
}

/// What a call produced.
#[derive(Debug, Default)]
pub struct Call {
    /// Everything heard, 48 kHz mono, in arrival order.
    pub heard: Vec<i16>,
    /// Arrival time (since media connected) of each 20 ms frame of `heard`.
    pub arrivals: Vec<Duration>,
    /// When the clip's last voiced sample was sent (since media connected).
    pub speech_end: Duration,
    /// Server messages, in order.
    pub messages: Vec<ServerMessage>,
    /// Time from connect (WebSocket open) to media connected.
    pub connect_time: Duration,
}

impl Call {
    /// Voice-to-voice latency as the client measures it: end of its speech → first audible frame.
    pub fn first_answer_latency(&self) -> Option<Duration> {
        self.arrivals
            .iter()
            .zip(self.heard.chunks(FRAME))
            .find(|(at, frame)| **at > self.speech_end && crate::rms(frame) > SPEECH_RMS)
            .map(|(at, _)| *at - self.speech_end)
    }

    /// The agent's first final transcript (its first answer as text).
    pub fn agent_answer(&self) -> Option<String> {
        self.messages.iter().find_map(|m| match m {
            ServerMessage::Transcript {
                speaker: dartmouth_signaling::proto::Speaker::Agent,
                text,
                is_final: true,
                ..
            } => Some(text.clone()),
            _ => None,
        })
    }

    /// The user's final transcripts.
    pub fn user_transcripts(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Transcript {
                    speaker: dartmouth_signaling::proto::Speaker::User,
                    text,
                    is_final: true,
                    ..
                } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The client.
pub struct RtcClient;

struct Media {
    socket: UdpSocket,
    local: SocketAddr,
    rtc: Rtc,
    mid: Mid,
    connected: bool,
}

impl RtcClient {
    /// Joins through `ws_url` with `token`, speaks, listens, and returns what happened.
    pub async fn call(ws_url: String, token: String, options: CallOptions) -> Result<Call, String> {
        let opened = Instant::now();
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().ok_or("no offer")?;
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        let join = ClientMessage::Join {
            v: PROTOCOL_VERSION,
            token,
            sdp: offer.to_sdp_string(),
            agent: options.agent.clone(),
            output: options.output,
        };
        ws.send(Message::Text(serde_json::to_string(&join).unwrap().into()))
            .await
            .map_err(|e| e.to_string())?;
        let mut call = Call::default();
        let answer = loop {
            let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .map_err(|_| "no answer to join within 30 s".to_string())?;
            let Some(Ok(Message::Text(text))) = next else {
                return Err("the connection closed before joining".into());
            };
            let message: ServerMessage =
                serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
            match message {
                ServerMessage::Joined { sdp, .. } => break sdp,
                ServerMessage::Error { code, message } => {
                    return Err(format!("{code:?}: {message}"));
                }
                other => call.messages.push(other),
            }
        };
        accept(&mut rtc, pending, &answer)?;
        let mut media = Media {
            socket,
            local,
            rtc,
            mid,
            connected: false,
        };
        let result = media.run(&mut ws, &options, &mut call, opened).await;
        if options.vanish_after.is_none() {
            let leave = serde_json::to_string(&ClientMessage::Leave).unwrap();
            let _ = ws.send(Message::Text(leave.into())).await;
            let _ = ws.close(None).await;
        }
        result.map(|()| call)
    }
}

fn accept(rtc: &mut Rtc, pending: SdpPendingOffer, answer: &str) -> Result<(), String> {
    let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Media {
    async fn run(
        &mut self,
        ws: &mut Ws,
        options: &CallOptions,
        call: &mut Call,
        opened: Instant,
    ) -> Result<(), String> {
        let mut encoder = OpusEncoder::new(48_000, 1).map_err(|e| e.to_string())?;
        let mut decoder = OpusDecoder::new(48_000, 1).map_err(|e| e.to_string())?;
        let mut pcm = [0i16; FRAME];
        let mut packet = [0u8; 1500];
        let mut buf = vec![0u8; 2048];
        let mut connected_at: Option<Instant> = None;
        let mut sent_frames: u64 = 0;
        let last_voiced = options
            .speech
            .iter()
            .rposition(|s| s.unsigned_abs() > 300)
            .unwrap_or(0);
        call.speech_end = Duration::from_secs_f64(last_voiced as f64 / 48_000.0);
        let mut answer_ended: Option<Instant> = None;
        let mut answer_audible: Option<u64> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let hard_limit = Instant::now() + options.limit + Duration::from_secs(20);
        loop {
            let wake = self.drain(&mut decoder, &mut pcm, call, connected_at)?;
            let now = Instant::now();
            if now > hard_limit {
                return Err("media did not connect in time".into());
            }
            if let Some(at) = connected_at {
                let elapsed = now - at;
                if elapsed > options.limit {
                    return Ok(());
                }
                if options.vanish_after.is_some_and(|v| elapsed > v) {
                    return Ok(());
                }
                if let (Some(ended), Some(grace)) = (answer_ended, options.hang_up_after_answer)
                    && now - ended > grace
                {
                    return Ok(());
                }
            }
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, from) = received.map_err(|e| e.to_string())?;
                    if let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, &buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), receive));
                    }
                }
                message = ws.next() => {
                    if let Some(Ok(Message::Text(text))) = message
                        && let Ok(message) = serde_json::from_str::<ServerMessage>(text.as_str())
                    {
                        call.messages.push(message);
                    }
                }
                _ = ticker.tick() => {
                    if connected_at.is_none() && self.connected {
                        connected_at = Some(Instant::now());
                        call.connect_time = opened.elapsed();
                        if let Some(text) = &options.typed {
                            let typed = ClientMessage::Text { text: text.clone() };
                            let typed = serde_json::to_string(&typed).unwrap_or_default();
                            ws.send(Message::Text(typed.into())).await.map_err(|e| e.to_string())?;
                        }
                    }
                    if connected_at.is_some() {
                        if answer_audible.is_none() && call.first_answer_latency().is_some() {
                            answer_audible = Some(sent_frames);
                        }
                        let frame = next_frame(options, sent_frames, answer_audible);
                        let n = encoder.encode(&frame, &mut packet).map_err(|e| e.to_string())?;
                        let writer = self.rtc.writer(self.mid).ok_or("no writer")?;
                        let pt = writer.payload_params().next().ok_or("no codec")?.pt();
                        let time = MediaTime::new(sent_frames * FRAME as u64, Frequency::FORTY_EIGHT_KHZ);
                        writer.write(pt, Instant::now(), time, packet[..n].to_vec()).map_err(|e| e.to_string())?;
                        sent_frames += 1;
                        if answer_ended.is_none() && answer_finished(call, options.interjection.is_some()) {
                            answer_ended = Some(Instant::now());
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    }

    /// Sends what str0m wants sent and records what arrived; returns when to wake next.
    fn drain(
        &mut self,
        decoder: &mut OpusDecoder,
        pcm: &mut [i16; FRAME],
        call: &mut Call,
        connected_at: Option<Instant>,
    ) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(data)) => {
                    let n = decoder.decode(&data.data, pcm).unwrap_or(0);
                    if n == FRAME {
                        call.heard.extend_from_slice(&pcm[..]);
                        let at = connected_at.map_or(Duration::ZERO, |c| c.elapsed());
                        call.arrivals.push(at);
                    }
                }
                Output::Event(_) => {}
            }
        }
    }
}

/// Frame `index` of what the client says: the clip, then silence, then the interjection once
/// the answer has been audible for its delay (`answer_audible`: the frame index it became so).
fn next_frame(options: &CallOptions, index: u64, answer_audible: Option<u64>) -> [i16; FRAME] {
    let mut frame = [0i16; FRAME];
    let start = index as usize * FRAME;
    if start < options.speech.len() {
        let end = (start + FRAME).min(options.speech.len());
        frame[..end - start].copy_from_slice(&options.speech[start..end]);
    } else if let (Some((delay, clip)), Some(audible)) = (&options.interjection, answer_audible) {
        let begin = audible + delay.as_millis() as u64 / 20;
        if index >= begin {
            let offset = (index - begin) as usize * FRAME;
            if offset < clip.len() {
                let end = (offset + FRAME).min(clip.len());
                frame[..end - offset].copy_from_slice(&clip[offset..end]);
            }
        }
    }
    frame
}

/// Whether the call heard what it came for: the first answer finished (Latency), or with an
/// interjection, the answer to the interjection after an interruption.
fn answer_finished(call: &Call, interjected: bool) -> bool {
    let latencies = call
        .messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Latency { .. }))
        .count();
    let interrupted = call
        .messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Interrupted { .. }));
    if interjected {
        interrupted && latencies >= 2
    } else {
        latencies >= 1
    }
}
