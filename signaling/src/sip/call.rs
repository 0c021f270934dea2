//! One SIP call's media, as a task: RTP in and out on the call's own UDP port, through the
//! sans-IO [`RtpSession`] (latching, telephone-events, comfort noise), the jitter buffer and the
//! leg's codec, to whoever the caller talks to. Every 20 ms the task plays one frame out of the
//! jitter buffer (decoded, concealed, or comfort noise) to the listener and sends one frame of
//! the talker's audio back (or a digit, or comfort noise while silent).
//!
//! The caller talks to an agent directly in PCM at the codec's rate (no Opus in between), or
//! hears themselves (`echo`, the media loop benchmarks use). Signaling drives the task with
//! [`CallCommand`]s; the task reports digits and the agent's words as [`CallNotice`]s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dartmouth_media::jitter::JitterBuffer;
use dartmouth_media::phone_codec::MAX_FRAME_SAMPLES;
use dartmouth_media::rtp_session::{Received, RtpConfig, RtpSession};
use dartmouth_media::{PhoneDecoder, PhoneEncoder, Playout};
use dartmouth_voice::agent::{AgentEvent, AgentSession};
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::echo::EchoGate;
use super::room::RoomSeat;
use super::sdp::Negotiated;

/// Commands queued to a call's media task.
pub const CALL_COMMAND_CAPACITY: usize = 16;
/// Notices queued from a call's media task to its signaling.
pub const CALL_NOTICE_CAPACITY: usize = 64;
/// Largest RTP datagram read.
const RECEIVE_BUFFER: usize = 2048;
/// Without a digit for this long, the digits typed so far go to the agent.
const DIGIT_PAUSE: Duration = Duration::from_millis(1_200);
/// Most digits collected before they go to the agent anyway.
const MAX_DIGITS: usize = 32;
/// Without any RTP for this long (and not on hold), the call is dead.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(60);
/// The agent is done talking once it has been quiet this long (its last words may still be in
/// speech synthesis when it asks for a transfer).
pub const GOODBYE_SETTLE: Duration = Duration::from_millis(800);
/// Longest wait for the agent to finish talking before a transfer goes ahead anyway.
pub const GOODBYE_LIMIT: Duration = Duration::from_secs(10);

/// Who the caller talks to.
pub enum Talker {
    /// A voice agent, fed PCM at the codec's rate.
    Agent(AgentSession),
    /// The caller's own audio, looped back.
    Echo,
    /// Nobody (the room only, or a call being set up).
    Silence,
}

/// What signaling tells a call's media task.
#[derive(Debug)]
pub enum CallCommand {
    /// A new offer/answer (re-INVITE: hold, resume, new address or codec).
    Renegotiated(Negotiated),
    /// Send these digits as telephone-events.
    SendDigits(String),
    /// A digit arrived by SIP INFO.
    Digit(char),
    /// Answer once the agent has been quiet for [`GOODBYE_SETTLE`] (at once without an agent,
    /// at the latest after [`GOODBYE_LIMIT`]): a transfer waits for the agent's goodbye.
    WhenQuiet(tokio::sync::oneshot::Sender<()>),
    /// Stop.
    Hangup,
}

/// What a call's media task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CallNotice {
    /// Digits the caller typed (also given to the agent).
    Digits(String),
    /// What the caller said (the agent's transcript).
    CallerSaid(String),
    /// What the agent answered.
    AgentSaid(String),
    /// The caller barged in; what they heard of the answer.
    Interrupted(String),
    /// No RTP arrived for [`MEDIA_TIMEOUT`].
    MediaTimeout,
    /// Progress of an outbound call (`ringing`, `answered`, `busy`, `no_answer`, `failed`).
    Progress(String),
}

/// Counters a finished call leaves behind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Frames played from received packets.
    pub frames_in: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Ticks that ran more than a frame late (the task fell behind).
    pub late_ticks: u64,
    /// Ticks run.
    pub ticks: u64,
}

impl CallStats {
    /// Adds another call's counters.
    pub fn add(&mut self, other: &CallStats) {
        self.frames_in += other.frames_in;
        self.concealed += other.concealed;
        self.late += other.late;
        self.packets_out += other.packets_out;
        self.late_ticks += other.late_ticks;
        self.ticks += other.ticks;
    }
}

/// Runs a call's media until [`CallCommand::Hangup`] or the command queue closes.
pub async fn run(
    socket: UdpSocket,
    negotiated: Negotiated,
    mut talker: Talker,
    mut seat: Option<RoomSeat>,
    mut commands: mpsc::Receiver<CallCommand>,
    notices: mpsc::Sender<CallNotice>,
) -> CallStats {
    let Ok(mut leg) = Leg::new(negotiated) else {
        tracing::warn!("cannot create the call's codec");
        return CallStats::default();
    };
    let start = Instant::now();
    let mut buf = [0u8; RECEIVE_BUFFER];
    let mut ticker = tokio::time::interval(FRAME_DURATION);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_tick = tokio::time::Instant::now();
    let mut quiet: Option<QuietWait> = None;
    loop {
        let agent_event = async {
            match &mut talker {
                Talker::Agent(session) => session.next_event().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    leg.receive(start.elapsed(), from, &buf[..n]);
                }
            }
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if now.saturating_duration_since(next_tick) > FRAME_DURATION {
                    leg.stats.late_ticks += 1;
                }
                next_tick = now + FRAME_DURATION;
                leg.stats.ticks += 1;
                leg.tick(start.elapsed(), &mut talker, seat.as_mut(), &socket, &notices).await;
                if let Some(wait) = quiet.as_mut() {
                    let speaking = matches!(&talker, Talker::Agent(s) if s.is_speaking());
                    if wait.over(start.elapsed(), speaking)
                        && let Some(wait) = quiet.take()
                    {
                        let _ = wait.reply.send(());
                    }
                }
                if leg.timed_out(start.elapsed()) {
                    let _ = notices.try_send(CallNotice::MediaTimeout);
                    break;
                }
            }
            command = commands.recv() => match command {
                Some(CallCommand::Renegotiated(n)) => leg.renegotiate(n),
                Some(CallCommand::SendDigits(digits)) => { leg.session.queue_digits(&digits); }
                Some(CallCommand::Digit(digit)) => leg.digit(start.elapsed(), digit),
                Some(CallCommand::WhenQuiet(reply)) => {
                    if !matches!(talker, Talker::Agent(_)) {
                        let _ = reply.send(());
                    } else if let Some(older) = quiet.replace(QuietWait::new(reply, start.elapsed())) {
                        // A newer wait replaces an older one, which is answered now.
                        let _ = older.reply.send(());
                    }
                }
                Some(CallCommand::Hangup) | None => break,
            },
            event = agent_event => match event {
                Some(event) => leg.on_agent_event(event, &notices),
                None => talker = Talker::Silence,
            },
        }
    }
    if let Talker::Agent(session) = talker {
        session.stop().await;
    }
    if let Some(seat) = seat {
        seat.leave().await;
    }
    leg.stats
}

/// A wait for the agent to stop talking (see [`CallCommand::WhenQuiet`]).
struct QuietWait {
    reply: tokio::sync::oneshot::Sender<()>,
    asked: Duration,
    quiet_since: Duration,
}

impl QuietWait {
    fn new(reply: tokio::sync::oneshot::Sender<()>, now: Duration) -> Self {
        Self {
            reply,
            asked: now,
            quiet_since: now,
        }
    }

    /// Whether the wait is over at `now`, the agent `speaking` or not.
    fn over(&mut self, now: Duration, speaking: bool) -> bool {
        if speaking {
            self.quiet_since = now;
        }
        now.saturating_sub(self.quiet_since) >= GOODBYE_SETTLE
            || now.saturating_sub(self.asked) >= GOODBYE_LIMIT
    }
}

/// The media state of one leg (everything but the socket and the talker).
struct Leg {
    session: RtpSession,
    jitter: JitterBuffer,
    decoder: PhoneDecoder,
    encoder: PhoneEncoder,
    negotiated: Negotiated,
    echo: EchoGate,
    pcm_in: [i16; MAX_FRAME_SAMPLES],
    pcm_out: [i16; MAX_FRAME_SAMPLES],
    packet: [u8; RECEIVE_BUFFER],
    payload: [u8; RECEIVE_BUFFER],
    /// Noise level of the peer's comfort noise while it is silent.
    peer_noise: Option<u8>,
    last_rtp: Duration,
    media_time: Duration,
    digits: String,
    last_digit: Duration,
    /// The agent's answer so far (for the notice when the turn completes).
    stats: CallStats,
}

impl Leg {
    fn new(negotiated: Negotiated) -> Result<Self, dartmouth_media::CodecError> {
        let codec = negotiated.codec;
        Ok(Self {
            session: RtpSession::new(rtp_config(&negotiated), rand_ssrc()),
            jitter: JitterBuffer::new(codec.clock_rate()),
            decoder: PhoneDecoder::new(codec)?,
            encoder: PhoneEncoder::new(codec)?,
            negotiated,
            echo: EchoGate::new(codec.sample_rate()),
            pcm_in: [0; MAX_FRAME_SAMPLES],
            pcm_out: [0; MAX_FRAME_SAMPLES],
            packet: [0; RECEIVE_BUFFER],
            payload: [0; RECEIVE_BUFFER],
            peer_noise: None,
            last_rtp: Duration::ZERO,
            media_time: Duration::ZERO,
            digits: String::with_capacity(MAX_DIGITS),
            last_digit: Duration::ZERO,
            stats: CallStats::default(),
        })
    }

    fn frame_samples(&self) -> usize {
        self.negotiated.codec.frame_samples()
    }

    fn on_hold(&self) -> bool {
        !self.negotiated.direction.peer_receives()
    }

    fn timed_out(&self, now: Duration) -> bool {
        self.negotiated.direction.peer_sends() && now.saturating_sub(self.last_rtp) > MEDIA_TIMEOUT
    }

    fn renegotiate(&mut self, negotiated: Negotiated) {
        if negotiated.codec != self.negotiated.codec
            && let (Ok(d), Ok(e)) = (
                PhoneDecoder::new(negotiated.codec),
                PhoneEncoder::new(negotiated.codec),
            )
        {
            self.decoder = d;
            self.encoder = e;
            self.jitter = JitterBuffer::new(negotiated.codec.clock_rate());
        }
        self.session.update(rtp_config(&negotiated));
        self.negotiated = negotiated;
    }

    fn receive(&mut self, now: Duration, from: SocketAddr, data: &[u8]) {
        match self.session.receive(now, from, data) {
            Received::Audio {
                seq,
                timestamp,
                payload,
                ..
            } => {
                self.last_rtp = now;
                self.peer_noise = None;
                if self.jitter.push(now, seq, timestamp, payload)
                    == dartmouth_media::PushOutcome::Late
                {
                    self.stats.late += 1;
                }
            }
            Received::ComfortNoise { level } => {
                self.last_rtp = now;
                self.peer_noise = Some(level);
            }
            Received::Dtmf { digit } => {
                self.last_rtp = now;
                self.digit(now, digit);
            }
            Received::Ignored(_) => {}
        }
    }

    fn digit(&mut self, now: Duration, digit: char) {
        if self.digits.len() < MAX_DIGITS {
            self.digits.push(digit);
        }
        self.last_digit = now;
    }

    /// Digits typed so far, once the caller paused or pressed `#`.
    fn take_digits(&mut self, now: Duration) -> Option<String> {
        let done = self.digits.ends_with('#')
            || self.digits.len() >= MAX_DIGITS
            || now.saturating_sub(self.last_digit) >= DIGIT_PAUSE;
        (!self.digits.is_empty() && done).then(|| std::mem::take(&mut self.digits))
    }

    /// One 20 ms frame each way.
    async fn tick(
        &mut self,
        now: Duration,
        talker: &mut Talker,
        seat: Option<&mut RoomSeat>,
        socket: &UdpSocket,
        notices: &mpsc::Sender<CallNotice>,
    ) {
        let n = self.frame_samples();
        let rate = self.negotiated.codec.sample_rate();
        // In: one frame from the jitter buffer.
        let heard = match self.jitter.pop(now) {
            Playout::Packet(p) => {
                self.stats.frames_in += 1;
                self.decoder.decode(p.payload, &mut self.pcm_in);
                true
            }
            Playout::Lost { .. } => {
                self.stats.concealed += 1;
                self.decoder.conceal(&mut self.pcm_in);
                true
            }
            Playout::Empty => {
                match self.peer_noise {
                    Some(level) => {
                        self.decoder.comfort_noise(level, &mut self.pcm_in);
                    }
                    None => self.pcm_in[..n].fill(0),
                }
                false
            }
        };
        if self.on_hold() {
            self.pcm_in[..n].fill(0);
        }
        if let Some(seat) = seat
            && heard
        {
            seat.publish(&self.pcm_in[..n], rate);
        }
        if let Some(digits) = self.take_digits(now) {
            if let Talker::Agent(session) = talker {
                let spaced: Vec<String> = digits.chars().map(String::from).collect();
                session.push_text(format!("The caller pressed {}.", spaced.join(" ")));
            }
            let _ = notices.try_send(CallNotice::Digits(digits));
        }
        // Out: a digit, the talker's frame, or silence.
        let mut length = 0;
        if self.session.sending_digits() {
            length = self.session.write_dtmf(&mut self.packet);
        } else {
            let speech = match talker {
                Talker::Agent(session) => {
                    self.echo.suppress(&mut self.pcm_in[..n]);
                    if let Ok(frame) = AudioFrame::new(&self.pcm_in[..n], rate, 1, self.media_time)
                    {
                        session.push_audio(frame);
                    }
                    match session.pull_frame(self.media_time) {
                        Some(frame)
                            if frame.sample_rate() == rate && frame.samples().len() == n =>
                        {
                            self.pcm_out[..n].copy_from_slice(frame.samples());
                            true
                        }
                        _ => false,
                    }
                }
                Talker::Echo => {
                    self.pcm_out[..n].copy_from_slice(&self.pcm_in[..n]);
                    heard
                }
                Talker::Silence => false,
            };
            if speech {
                self.echo.reference(&self.pcm_out[..n]);
            } else {
                self.echo.reference_silence(n);
            }
            if !self.on_hold() {
                if speech {
                    let bytes = self.encoder.encode(&self.pcm_out[..n], &mut self.payload);
                    length = self
                        .session
                        .write_audio(&self.payload[..bytes], &mut self.packet);
                } else if self.session.comfort_noise() {
                    length = self.session.write_silence(&mut self.packet);
                } else {
                    self.pcm_out[..n].fill(0);
                    let bytes = self.encoder.encode(&self.pcm_out[..n], &mut self.payload);
                    length = self
                        .session
                        .write_audio(&self.payload[..bytes], &mut self.packet);
                }
            }
        }
        self.media_time += FRAME_DURATION;
        if length > 0 && !self.on_hold() {
            let _ = socket
                .send_to(&self.packet[..length], self.session.destination())
                .await;
            self.stats.packets_out += 1;
        }
    }

    fn on_agent_event(&mut self, event: AgentEvent, notices: &mpsc::Sender<CallNotice>) {
        match event {
            AgentEvent::UserTranscript { text, .. } => {
                let _ = notices.try_send(CallNotice::CallerSaid(text));
            }
            AgentEvent::TurnComplete(record) => {
                let _ = notices.try_send(CallNotice::AgentSaid(record.answer.trim().to_string()));
            }
            AgentEvent::Interrupted { heard, .. } => {
                let _ = notices.try_send(CallNotice::Interrupted(heard));
            }
            AgentEvent::State(state) => self.echo.agent_state(state),
            AgentEvent::Error(message) => tracing::warn!(%message, "agent on a SIP call"),
            _ => {}
        }
    }
}

fn rtp_config(n: &Negotiated) -> RtpConfig {
    RtpConfig {
        remote: n.remote,
        audio_pt: n.audio_pt,
        clock_rate: n.codec.clock_rate(),
        frame_ticks: n.codec.frame_ticks(),
        dtmf_pt: n.dtmf_pt,
        cn_pt: n.cn_pt,
    }
}

fn rand_ssrc() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_wait_ends_after_the_goodbye_or_at_the_limit() {
        let ms = Duration::from_millis;
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let mut wait = QuietWait::new(tx, ms(1_000));
        // Speech synthesis of the goodbye is still running: quiet, but not for long enough.
        assert!(!wait.over(ms(1_500), false));
        // The goodbye plays, then the agent is quiet.
        assert!(!wait.over(ms(1_600), true));
        assert!(!wait.over(ms(3_000), true));
        assert!(!wait.over(ms(3_500), false));
        assert!(wait.over(ms(3_000) + GOODBYE_SETTLE, false));
        // An agent that never stops talking is cut off at the limit.
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let mut wait = QuietWait::new(tx, ms(0));
        assert!(!wait.over(GOODBYE_LIMIT - ms(20), true));
        assert!(wait.over(GOODBYE_LIMIT, true));
    }
}
