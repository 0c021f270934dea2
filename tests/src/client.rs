//! A real WebRTC client (str0m, Opus, UDP on loopback) that joins over the WebSocket protocol or
//! WHIP/WHEP, speaks a clip in real time, and records what it hears with arrival times: the
//! measuring end of the end-to-end tests, of `dartmouth bench webrtc`, and the media side of
//! `dartmouth talk`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dartmouth_media::{OpusDecoder, OpusEncoder, level_dbov};
use dartmouth_signaling::proto::{
    AgentListen, AgentOutput, ClientMessage, PROTOCOL_VERSION, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::impair::{ImpairProfile, Relay, route_through};
use tokio_tungstenite::tungstenite::Message;

/// Samples per 20 ms frame at 48 kHz.
pub const FRAME: usize = 960;
/// A received frame louder than this (RMS, full scale 1.0) counts as agent speech.
pub const SPEECH_RMS: f64 = 0.01;

/// What to do during a call.
#[derive(Debug)]
pub struct CallOptions {
    /// Agent to ask for (`None`: the room's default).
    pub agent: Option<String>,
    /// What the client says (48 kHz mono), starting once media connects.
    pub speech: Vec<i16>,
    /// More questions, each spoken `think` after the answer to the one before has finished.
    pub follow_ups: Vec<Vec<i16>>,
    /// The pause between an answer's end and the next question.
    pub think: Duration,
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
    /// Whom the agent listens to.
    pub listen: AgentListen,
    /// Metadata announced to the room.
    pub metadata: Option<String>,
    /// End the call once this much audible audio was heard and then 1.5 s of quiet (the
    /// stopping rule for WHEP, which gets no events).
    pub stop_after_voiced: Option<Duration>,
    /// Each server message as it arrives, too (bounded; dropped when full).
    pub events: Option<tokio::sync::mpsc::Sender<ServerMessage>>,
    /// The call ends when this turns `true`.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where the microphone and speaker are (`dartmouth talk` without files); `None`: `speech`
    /// is spoken and what is heard is only recorded.
    pub audio: Option<LiveAudio>,
    /// Media through an impairing relay (loss, jitter, outages) instead of straight to the
    /// gateway.
    pub impair: Option<ImpairProfile>,
}

/// Live audio for the client: 20 ms frames of 48 kHz mono in from a microphone and out to a
/// speaker (bounded queues; the client drops what it cannot place).
#[derive(Debug)]
pub struct LiveAudio {
    /// Microphone frames.
    pub mic: std::sync::mpsc::Receiver<[i16; FRAME]>,
    /// Speaker frames.
    pub speaker: std::sync::mpsc::SyncSender<[i16; FRAME]>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            agent: None,
            speech: Vec::new(),
            follow_ups: Vec::new(),
            think: Duration::from_secs(1),
            interjection: None,
            limit: Duration::from_secs(60),
            hang_up_after_answer: Some(Duration::from_millis(1500)),
            vanish_after: None,
            typed: None,
            output: AgentOutput::Audio,
            listen: AgentListen::Me,
            metadata: None,
            stop_after_voiced: None,
            events: None,
            stop: None,
            audio: None,
            impair: None,
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
    /// Each question asked (the first one and the follow-ups), in order.
    pub questions: Vec<Asked>,
    /// What each receiving line carried, 48 kHz mono, in arrival order (a line switches between
    /// speakers as they come and go).
    pub lines: Vec<Vec<i16>>,
}

/// One question the client asked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Asked {
    /// When its last voiced sample was sent (since media connected).
    pub speech_end: Duration,
    /// How many frames of `heard` had arrived by then: its answer comes after.
    pub heard_from: usize,
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

    /// Voice-to-voice latency of question `index`: the end of its speech to the first audible
    /// frame after it (and before the next question).
    pub fn answer_latency(&self, index: usize) -> Option<Duration> {
        let asked = self.questions.get(index)?;
        let until = self
            .questions
            .get(index + 1)
            .map_or(self.arrivals.len(), |next| next.heard_from);
        self.arrivals[asked.heard_from.min(until)..until]
            .iter()
            .zip(self.heard.chunks(FRAME).skip(asked.heard_from))
            .find(|(at, frame)| **at > asked.speech_end && crate::rms(frame) > SPEECH_RMS)
            .map(|(at, _)| *at - asked.speech_end)
    }

    /// What the client heard after question `index` (until the next one), 48 kHz mono.
    pub fn answer_audio(&self, index: usize) -> &[i16] {
        let Some(asked) = self.questions.get(index) else {
            return &[];
        };
        let until = self
            .questions
            .get(index + 1)
            .map_or(self.arrivals.len(), |next| next.heard_from);
        &self.heard[asked.heard_from * FRAME..until * FRAME]
    }

    /// The agent's final transcripts (its answers as text), in order.
    pub fn agent_answers(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Transcript {
                    speaker: dartmouth_signaling::proto::Speaker::Agent,
                    text,
                    is_final: true,
                    ..
                } => Some(text.clone()),
                _ => None,
            })
            .collect()
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

/// Which side of WHIP/WHEP the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRole {
    /// WHIP, send only (a `sendonly` publisher).
    Publish,
    /// WHIP, send and receive on one line.
    PublishAndListen,
    /// WHEP: receive only.
    Subscribe,
}

struct Media {
    socket: UdpSocket,
    local: SocketAddr,
    rtc: Rtc,
    mid: Mid,
    connected: bool,
    /// One decoder per receiving line.
    decoders: HashMap<Mid, (usize, OpusDecoder)>,
    /// The offer being answered (renegotiation over the WebSocket).
    sends: bool,
}

/// With a profile, starts an impairing relay in front of the gateway named in `answer` and
/// points the answer's candidates at it; the relay runs while the returned handle lives.
async fn through_relay(
    answer: String,
    profile: Option<&ImpairProfile>,
) -> Result<(String, Option<Relay>), String> {
    let Some(profile) = profile else {
        return Ok((answer, None));
    };
    let unspecified = SocketAddr::from(([127, 0, 0, 1], 9));
    let (_, gateway) =
        route_through(&answer, unspecified).ok_or("the answer names no UDP candidate")?;
    let relay = Relay::start(gateway, profile)
        .await
        .map_err(|e| format!("impairment relay: {e}"))?;
    let (answer, _) = route_through(&answer, relay.addr).ok_or("no UDP candidate")?;
    Ok((answer, Some(relay)))
}

fn new_rtc(direction: Direction) -> Result<(Rtc, Mid, SdpPendingOffer, String, UdpSocket), String> {
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
    let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, pending) = change.apply().ok_or("no offer")?;
    Ok((rtc, mid, pending, offer.to_sdp_string(), socket))
}

impl RtcClient {
    /// Joins through `ws_url` with `token`, speaks, listens, and returns what happened.
    pub async fn call(ws_url: String, token: String, options: CallOptions) -> Result<Call, String> {
        let opened = Instant::now();
        let (mut rtc, mid, pending, offer, socket) = new_rtc(Direction::SendRecv)?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        let join = ClientMessage::Join {
            v: PROTOCOL_VERSION,
            token,
            sdp: offer,
            agent: options.agent.clone(),
            output: options.output,
            listen: options.listen,
            metadata: options.metadata.clone(),
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
        let (answer, _relay) = through_relay(answer, options.impair.as_ref()).await?;
        accept(&mut rtc, pending, &answer)?;
        let mut media = Media::new(socket, local, rtc, mid, true);
        let mut options = options;
        let result = media
            .run(Some(&mut ws), &mut options, &mut call, opened)
            .await;
        if options.vanish_after.is_none() {
            let leave = serde_json::to_string(&ClientMessage::Leave).unwrap();
            let _ = ws.send(Message::Text(leave.into())).await;
            let _ = ws.close(None).await;
        }
        result.map(|()| call)
    }

    /// WHIP (`url` = `…/whip/{room}`) or WHEP (`…/whep/{room}`): one POST with the offer, media
    /// until the options say stop, then `DELETE` of the session.
    pub async fn http(
        url: String,
        token: String,
        role: HttpRole,
        mut options: CallOptions,
    ) -> Result<Call, String> {
        let opened = Instant::now();
        let direction = match role {
            HttpRole::Publish => Direction::SendOnly,
            HttpRole::PublishAndListen => Direction::SendRecv,
            HttpRole::Subscribe => Direction::RecvOnly,
        };
        let (mut rtc, mid, pending, offer, socket) = new_rtc(direction)?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let http = reqwest::Client::new();
        let response = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let answer = response.text().await.map_err(|e| e.to_string())?;
        if status.as_u16() != 201 {
            return Err(format!("POST {url}: {status}: {answer}"));
        }
        let (answer, _relay) = through_relay(answer, options.impair.as_ref()).await?;
        accept(&mut rtc, pending, &answer)?;
        let mut media = Media::new(socket, local, rtc, mid, role != HttpRole::Subscribe);
        let mut call = Call::default();
        let result = media.run(None, &mut options, &mut call, opened).await;
        if let Some(location) = location {
            let base = url.split("/wh").next().unwrap_or_default();
            let _ = http
                .delete(format!("{base}{location}"))
                .bearer_auth(&token)
                .send()
                .await;
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
    fn new(socket: UdpSocket, local: SocketAddr, rtc: Rtc, mid: Mid, sends: bool) -> Self {
        Self {
            socket,
            local,
            rtc,
            mid,
            connected: false,
            decoders: HashMap::new(),
            sends,
        }
    }

    async fn run(
        &mut self,
        mut ws: Option<&mut Ws>,
        options: &mut CallOptions,
        call: &mut Call,
        opened: Instant,
    ) -> Result<(), String> {
        let mut encoder = OpusEncoder::new(48_000, 1).map_err(|e| e.to_string())?;
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
        let mut script = Script::default();
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let hard_limit = Instant::now() + options.limit + Duration::from_secs(20);
        loop {
            let wake = self.drain(&mut pcm, call, connected_at, options.audio.as_ref())?;
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
                if options
                    .stop_after_voiced
                    .is_some_and(|voiced| heard_then_quiet(call, voiced))
                {
                    return Ok(());
                }
                if options.stop.as_ref().is_some_and(|s| *s.borrow()) {
                    return Ok(());
                }
            }
            let ws_next = async {
                match ws.as_mut() {
                    Some(ws) => ws.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, from) = received.map_err(|e| e.to_string())?;
                    if let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, &buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), receive));
                    }
                }
                message = ws_next => {
                    if let Some(Ok(Message::Text(text))) = message
                        && let Ok(message) = serde_json::from_str::<ServerMessage>(text.as_str())
                    {
                        if let ServerMessage::Offer { sdp } = &message {
                            // The gateway offers the rest of the audio slots: accept, answer.
                            let answer = SdpOffer::from_sdp_string(sdp)
                                .map_err(|e| e.to_string())
                                .and_then(|offer| {
                                    self.rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())
                                })?;
                            let reply = ClientMessage::Answer { sdp: answer.to_sdp_string() };
                            if let Some(ws) = ws.as_mut() {
                                let reply = serde_json::to_string(&reply).unwrap_or_default();
                                ws.send(Message::Text(reply.into())).await.map_err(|e| e.to_string())?;
                            }
                        }
                        if let Some(events) = &options.events {
                            let _ = events.try_send(message.clone());
                        }
                        call.messages.push(message);
                    }
                }
                _ = ticker.tick() => {
                    if connected_at.is_none() && self.connected {
                        connected_at = Some(Instant::now());
                        call.connect_time = opened.elapsed();
                        if let (Some(text), Some(ws)) = (&options.typed, ws.as_mut()) {
                            let typed = ClientMessage::Text { text: text.clone() };
                            let typed = serde_json::to_string(&typed).unwrap_or_default();
                            ws.send(Message::Text(typed.into())).await.map_err(|e| e.to_string())?;
                        }
                    }
                    if connected_at.is_some() && self.sends {
                        if answer_audible.is_none() && call.first_answer_latency().is_some() {
                            answer_audible = Some(sent_frames);
                        }
                        let elapsed = connected_at.map_or(Duration::ZERO, |at| at.elapsed());
                        let frame = match &options.audio {
                            Some(live) => live.mic.try_recv().unwrap_or([0; FRAME]),
                            None if options.follow_ups.is_empty() => {
                                next_frame(options, sent_frames, answer_audible)
                            }
                            None => script.frame(options, sent_frames, elapsed, call),
                        };
                        let n = encoder.encode(&frame, &mut packet).map_err(|e| e.to_string())?;
                        let writer = self.rtc.writer(self.mid).ok_or("no writer")?;
                        let pt = writer.payload_params().next().ok_or("no codec")?.pt();
                        let time = MediaTime::new(sent_frames * FRAME as u64, Frequency::FORTY_EIGHT_KHZ);
                        let level = level_dbov(&frame);
                        writer
                            .audio_level(-(level as i8), level < 127)
                            .write(pt, Instant::now(), time, packet[..n].to_vec())
                            .map_err(|e| e.to_string())?;
                        sent_frames += 1;
                    }
                    if connected_at.is_some()
                        && answer_ended.is_none()
                        && answer_finished(
                            call,
                            options.interjection.is_some(),
                            1 + options.follow_ups.len(),
                        )
                    {
                        answer_ended = Some(Instant::now());
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
        pcm: &mut [i16; FRAME],
        call: &mut Call,
        connected_at: Option<Instant>,
        live: Option<&LiveAudio>,
    ) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(data)) => {
                    let (line, decoder) = match self.decoders.entry(data.mid) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let decoder = OpusDecoder::new(48_000, 1).map_err(|e| e.to_string())?;
                            call.lines.push(Vec::new());
                            e.insert((call.lines.len() - 1, decoder))
                        }
                    };
                    let n = decoder.decode(&data.data, pcm).unwrap_or(0);
                    if n == FRAME {
                        call.heard.extend_from_slice(&pcm[..]);
                        call.lines[*line].extend_from_slice(&pcm[..]);
                        let at = connected_at.map_or(Duration::ZERO, |c| c.elapsed());
                        call.arrivals.push(at);
                        if let Some(live) = live {
                            let _ = live.speaker.try_send(*pcm);
                        }
                    }
                }
                Output::Event(_) => {}
            }
        }
    }
}

/// Whether `voiced` of audible audio was heard, followed by 1.5 s of quiet.
fn heard_then_quiet(call: &Call, voiced: Duration) -> bool {
    let needed = voiced.as_millis() as usize / 20;
    let mut audible = 0;
    let mut quiet = 0;
    for frame in call.heard.chunks(FRAME) {
        if crate::rms(frame) > SPEECH_RMS {
            audible += 1;
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    audible >= needed && quiet >= 75
}

/// Audible time of `samples` (48 kHz), as [`CallOptions::stop_after_voiced`] counts it.
pub fn voiced(samples: &[i16]) -> Duration {
    let frames = samples
        .chunks(FRAME)
        .filter(|f| crate::rms(f) > SPEECH_RMS)
        .count();
    Duration::from_millis(frames as u64 * 20)
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
fn answer_finished(call: &Call, interjected: bool, questions: usize) -> bool {
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
        latencies >= questions
    }
}

/// Where a client with follow-up questions is: the clip it speaks, from which frame, and when
/// the answer to the last one finished.
#[derive(Debug, Default)]
struct Script {
    clip: usize,
    clip_start: u64,
    answered_at: Option<Duration>,
}

impl Script {
    /// Frame `index` (sent `elapsed` after media connected): the current question, then silence
    /// until its answer has finished and `think` has passed, then the next question.
    fn frame(
        &mut self,
        options: &CallOptions,
        index: u64,
        elapsed: Duration,
        call: &mut Call,
    ) -> [i16; FRAME] {
        let mut frame = [0i16; FRAME];
        let clip = if self.clip == 0 {
            &options.speech
        } else {
            &options.follow_ups[self.clip - 1]
        };
        let offset = (index - self.clip_start) as usize * FRAME;
        if offset < clip.len() {
            let end = (offset + FRAME).min(clip.len());
            frame[..end - offset].copy_from_slice(&clip[offset..end]);
            return frame;
        }
        if call.questions.len() == self.clip {
            let last_voiced = clip
                .iter()
                .rposition(|s| s.unsigned_abs() > 300)
                .unwrap_or(0);
            let spoken_for = Duration::from_secs_f64((clip.len() - last_voiced) as f64 / 48_000.0);
            call.questions.push(Asked {
                speech_end: elapsed.saturating_sub(spoken_for),
                heard_from: call.arrivals.len(),
            });
        }
        let answered = call
            .messages
            .iter()
            .filter(|m| matches!(m, ServerMessage::Latency { .. }))
            .count()
            > self.clip;
        if answered && self.clip < options.follow_ups.len() {
            let at = *self.answered_at.get_or_insert(elapsed);
            if elapsed.saturating_sub(at) >= options.think {
                self.clip += 1;
                self.clip_start = index;
                self.answered_at = None;
            }
        }
        frame
    }
}
