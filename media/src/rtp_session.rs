//! Plain RTP for SIP legs: a sans-IO session fed `(now, source, datagram)` that classifies what
//! arrives and builds what goes out.
//!
//! - **Symmetric RTP (latching)**: a phone behind NAT announces a private address in its SDP and
//!   sends from another. The session answers to whoever it latched onto: the first source of
//!   valid RTP with a negotiated payload type. After that, packets from any other source are
//!   ignored, unless the latched source has been silent for [`RELATCH_SILENCE`] and the newcomer
//!   sends [`RELATCH_PACKETS`] consecutive valid packets of one SSRC (a phone that changed
//!   network), or the signaling resets the remote address (re-INVITE).
//! - **RFC 4733 telephone-events**: one digit is reported per event (keyed by the event's RTP
//!   timestamp), at its first packet, whether or not the marker bit is set; repeated and redundant
//!   end packets of the same event are absorbed. Digits go out as a 100 ms event with three
//!   end packets.
//! - **RFC 3389 comfort noise**: a received CN payload reports its noise level; the sender emits a
//!   CN packet when the outgoing audio falls silent and every [`CN_REFRESH_FRAMES`] while silent.
//! - Sequence numbers and timestamps of the outgoing stream advance one frame per tick, silent or
//!   not, so the far end's jitter buffer sees a continuous clock.
//!
//! ```
//! use std::time::Duration;
//! use dartmouth_media::rtp_session::{RtpSession, RtpConfig, Received};
//!
//! let remote = "127.0.0.1:40000".parse().unwrap();
//! let mut session = RtpSession::new(RtpConfig::pcmu(remote), 0x1234);
//! let mut out = [0u8; 200];
//! let n = session.write_audio(&[0xff; 160], &mut out);
//! assert_eq!(n, 12 + 160);
//! let mut peer = RtpSession::new(RtpConfig::pcmu("127.0.0.1:5000".parse().unwrap()), 9);
//! match peer.receive(Duration::ZERO, remote, &out[..n]) {
//!     Received::Audio { payload, .. } => assert_eq!(payload.len(), 160),
//!     other => panic!("{other:?}"),
//! }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

/// Length of the fixed RTP header.
pub const RTP_HEADER: usize = 12;
/// A source silent this long may be replaced by a new one.
pub const RELATCH_SILENCE: Duration = Duration::from_secs(2);
/// Consecutive valid packets of one SSRC a new source must send to be latched after silence.
pub const RELATCH_PACKETS: u32 = 3;
/// Frames between comfort-noise refreshes while the outgoing audio is silent (1 s).
pub const CN_REFRESH_FRAMES: u32 = 50;
/// Frames a sent DTMF digit lasts before its end packets (100 ms).
const DTMF_FRAMES: u16 = 5;
/// End packets sent per digit (RFC 4733 §2.5.1.4 recommends three).
const DTMF_END_PACKETS: u16 = 3;
/// Volume sent with outgoing digits (−10 dBm0).
const DTMF_VOLUME: u8 = 10;
/// Digits queued for sending at most.
pub const DTMF_QUEUE: usize = 32;
/// Noise level sent in comfort-noise packets, in −dBov.
const CN_LEVEL: u8 = 70;

/// What the session negotiated for one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpConfig {
    /// Where to send until a source is latched (the SDP's connection address and port).
    pub remote: SocketAddr,
    /// Audio payload type.
    pub audio_pt: u8,
    /// RTP clock rate of the audio payload type (8000 for G.711 and G.722).
    pub clock_rate: u32,
    /// RTP timestamp ticks per 20 ms frame.
    pub frame_ticks: u32,
    /// Telephone-event payload type, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// Comfort-noise payload type, if negotiated.
    pub cn_pt: Option<u8>,
}

impl RtpConfig {
    /// PCMU at 8 kHz, 20 ms, no events (for tests and examples).
    pub fn pcmu(remote: SocketAddr) -> Self {
        Self {
            remote,
            audio_pt: 0,
            clock_rate: 8_000,
            frame_ticks: 160,
            dtmf_pt: None,
            cn_pt: None,
        }
    }
}

/// Why a datagram was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not RTP (too short, wrong version, bad padding or extension lengths).
    Malformed,
    /// RTCP (payload types 200–204 with the marker bit): counted, not used.
    Rtcp,
    /// From a source other than the latched one.
    UnexpectedSource,
    /// A payload type that was not negotiated.
    UnknownPayloadType(u8),
    /// A repeated packet of a telephone event already reported.
    DtmfRepeat,
}

/// What a received datagram carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// Audio in the negotiated payload type.
    Audio {
        /// Sequence number.
        seq: u16,
        /// Timestamp.
        timestamp: u32,
        /// Whether the marker bit is set (start of a talk spurt).
        marker: bool,
        /// The encoded audio.
        payload: &'a [u8],
    },
    /// The start of a telephone event (a DTMF key press).
    Dtmf {
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
    },
    /// Comfort noise: the sender is silent; `level` is the noise level in −dBov.
    ComfortNoise {
        /// Noise level (0 loud – 127 silent).
        level: u8,
    },
    /// Not used, and why.
    Ignored(Ignored),
}

/// Counters of the receive side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// Audio packets accepted.
    pub audio: u64,
    /// Packets from unexpected sources dropped.
    pub unexpected_source: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Digits received.
    pub digits: u64,
    /// Times the session latched onto a source (1 for a stable call).
    pub latches: u64,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    ssrc: u32,
    count: u32,
}

#[derive(Debug, Clone, Copy)]
struct OutgoingDigit {
    event: u8,
    /// Frames sent so far for this digit.
    sent: u16,
    start_ts: u32,
}

/// One SIP leg's RTP state; see the module docs.
#[derive(Debug)]
pub struct RtpSession {
    config: RtpConfig,
    latched: Option<SocketAddr>,
    last_from_latched: Duration,
    candidate: Option<Candidate>,
    /// Timestamp of the last telephone event reported.
    last_event_ts: Option<u32>,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    silent_frames: Option<u32>,
    digits: [u8; DTMF_QUEUE],
    digits_head: usize,
    digits_len: usize,
    sending_digit: Option<OutgoingDigit>,
    stats: RtpStats,
}

impl RtpSession {
    /// A session sending as `ssrc` (pick it at random per leg).
    pub fn new(config: RtpConfig, ssrc: u32) -> Self {
        Self {
            config,
            latched: None,
            last_from_latched: Duration::ZERO,
            candidate: None,
            last_event_ts: None,
            ssrc,
            seq: (ssrc >> 7) as u16,
            timestamp: ssrc.rotate_left(13),
            silent_frames: None,
            digits: [0; DTMF_QUEUE],
            digits_head: 0,
            digits_len: 0,
            sending_digit: None,
            stats: RtpStats::default(),
        }
    }

    /// The negotiated parameters.
    pub fn config(&self) -> &RtpConfig {
        &self.config
    }

    /// Receive counters.
    pub fn stats(&self) -> RtpStats {
        self.stats
    }

    /// Where packets go: the latched source, else the SDP address.
    pub fn destination(&self) -> SocketAddr {
        self.latched.unwrap_or(self.config.remote)
    }

    /// The source currently latched, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// New parameters from a re-negotiation (re-INVITE): a changed remote address drops the
    /// latch, so the next valid source is taken again.
    pub fn update(&mut self, config: RtpConfig) {
        if config.remote != self.config.remote {
            self.latched = None;
            self.candidate = None;
        }
        self.config = config;
    }

    /// Classifies one datagram received at `now` from `from`.
    pub fn receive<'a>(&mut self, now: Duration, from: SocketAddr, data: &'a [u8]) -> Received<'a> {
        let Some(packet) = parse(data) else {
            self.stats.malformed += 1;
            return Received::Ignored(Ignored::Malformed);
        };
        if (72..=76).contains(&packet.pt) {
            return Received::Ignored(Ignored::Rtcp);
        }
        let known = packet.pt == self.config.audio_pt
            || Some(packet.pt) == self.config.dtmf_pt
            || Some(packet.pt) == self.config.cn_pt;
        if !known {
            return Received::Ignored(Ignored::UnknownPayloadType(packet.pt));
        }
        if !self.admit(now, from, packet.ssrc) {
            self.stats.unexpected_source += 1;
            return Received::Ignored(Ignored::UnexpectedSource);
        }
        if Some(packet.pt) == self.config.dtmf_pt {
            return self.telephone_event(packet.timestamp, packet.payload);
        }
        if Some(packet.pt) == self.config.cn_pt {
            let level = packet.payload.first().copied().unwrap_or(127) & 0x7f;
            return Received::ComfortNoise { level };
        }
        self.stats.audio += 1;
        Received::Audio {
            seq: packet.seq,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload: packet.payload,
        }
    }

    /// The latching rules: whether a valid packet from `from` is used.
    fn admit(&mut self, now: Duration, from: SocketAddr, ssrc: u32) -> bool {
        match self.latched {
            None => {
                self.latch(now, from);
                true
            }
            Some(addr) if addr == from => {
                self.last_from_latched = now;
                self.candidate = None;
                true
            }
            Some(_) => {
                if now.saturating_sub(self.last_from_latched) < RELATCH_SILENCE {
                    return false;
                }
                let count = match self.candidate {
                    Some(c) if c.addr == from && c.ssrc == ssrc => c.count + 1,
                    _ => 1,
                };
                self.candidate = Some(Candidate {
                    addr: from,
                    ssrc,
                    count,
                });
                if count >= RELATCH_PACKETS {
                    self.latch(now, from);
                    return true;
                }
                false
            }
        }
    }

    fn latch(&mut self, now: Duration, from: SocketAddr) {
        self.latched = Some(from);
        self.last_from_latched = now;
        self.candidate = None;
        self.stats.latches += 1;
    }

    fn telephone_event<'a>(&mut self, timestamp: u32, payload: &[u8]) -> Received<'a> {
        if payload.len() < 4 {
            self.stats.malformed += 1;
            return Received::Ignored(Ignored::Malformed);
        }
        // One event per timestamp: a missing marker bit does not hide a new event, and the
        // repeated (and redundant end) packets of an event carry its start timestamp.
        if self.last_event_ts == Some(timestamp) {
            return Received::Ignored(Ignored::DtmfRepeat);
        }
        let Some(digit) = event_digit(payload[0]) else {
            return Received::Ignored(Ignored::UnknownPayloadType(
                self.config.dtmf_pt.unwrap_or(0),
            ));
        };
        self.last_event_ts = Some(timestamp);
        self.stats.digits += 1;
        Received::Dtmf { digit }
    }

    /// Queues digits to send as telephone events; returns how many were queued (unknown
    /// characters are skipped, and nothing is queued without a negotiated event payload type).
    pub fn queue_digits(&mut self, digits: &str) -> usize {
        if self.config.dtmf_pt.is_none() {
            return 0;
        }
        let mut queued = 0;
        for event in digits.chars().filter_map(digit_event) {
            if self.digits_len == DTMF_QUEUE {
                break;
            }
            self.digits[(self.digits_head + self.digits_len) % DTMF_QUEUE] = event;
            self.digits_len += 1;
            queued += 1;
        }
        queued
    }

    /// Whether a digit is being sent (the audio of this frame should not go out).
    pub fn sending_digits(&self) -> bool {
        self.sending_digit.is_some() || self.digits_len > 0
    }

    /// Builds this tick's telephone-event packet into `out` (returns its length; 0 when no
    /// digit is being sent). Call once per 20 ms tick instead of [`RtpSession::write_audio`].
    pub fn write_dtmf(&mut self, out: &mut [u8]) -> usize {
        let Some(pt) = self.config.dtmf_pt else {
            return 0;
        };
        if self.sending_digit.is_none() {
            if self.digits_len == 0 {
                return 0;
            }
            let event = self.digits[self.digits_head];
            self.digits_head = (self.digits_head + 1) % DTMF_QUEUE;
            self.digits_len -= 1;
            self.sending_digit = Some(OutgoingDigit {
                event,
                sent: 0,
                start_ts: self.timestamp,
            });
        }
        let Some(mut digit) = self.sending_digit else {
            return 0;
        };
        if out.len() < RTP_HEADER + 4 {
            return 0;
        }
        digit.sent += 1;
        let end = digit.sent > DTMF_FRAMES;
        let frames = digit.sent.min(DTMF_FRAMES);
        let duration =
            (u32::from(frames) * self.config.frame_ticks).min(u32::from(u16::MAX)) as u16;
        self.header(out, pt, digit.sent == 1, digit.start_ts);
        out[RTP_HEADER] = digit.event;
        out[RTP_HEADER + 1] = (if end { 0x80 } else { 0 }) | DTMF_VOLUME;
        out[RTP_HEADER + 2..RTP_HEADER + 4].copy_from_slice(&duration.to_be_bytes());
        self.timestamp = self.timestamp.wrapping_add(self.config.frame_ticks);
        if digit.sent >= DTMF_FRAMES + DTMF_END_PACKETS {
            self.sending_digit = None;
        } else {
            self.sending_digit = Some(digit);
        }
        RTP_HEADER + 4
    }

    /// Builds one audio packet of this tick into `out` (returns its length, 0 if `out` is too
    /// small) and advances the stream by one frame.
    pub fn write_audio(&mut self, payload: &[u8], out: &mut [u8]) -> usize {
        if out.len() < RTP_HEADER + payload.len() {
            return 0;
        }
        let marker = self.silent_frames.take().is_some();
        let ts = self.timestamp;
        self.header(out, self.config.audio_pt, marker, ts);
        out[RTP_HEADER..RTP_HEADER + payload.len()].copy_from_slice(payload);
        self.timestamp = self.timestamp.wrapping_add(self.config.frame_ticks);
        RTP_HEADER + payload.len()
    }

    /// A silent tick: advances the clock and, with comfort noise negotiated, builds a CN packet
    /// at the start of the silence and every [`CN_REFRESH_FRAMES`] after (returns its length;
    /// 0 when nothing is sent this tick).
    pub fn write_silence(&mut self, out: &mut [u8]) -> usize {
        let frames = self.silent_frames.map_or(0, |f| f + 1);
        self.silent_frames = Some(frames);
        let ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(self.config.frame_ticks);
        let Some(pt) = self.config.cn_pt else {
            return 0;
        };
        if !frames.is_multiple_of(CN_REFRESH_FRAMES) || out.len() < RTP_HEADER + 1 {
            return 0;
        }
        self.header(out, pt, false, ts);
        out[RTP_HEADER] = CN_LEVEL;
        RTP_HEADER + 1
    }

    /// Whether comfort noise was negotiated (silence may then be sent as CN instead of audio).
    pub fn comfort_noise(&self) -> bool {
        self.config.cn_pt.is_some()
    }

    fn header(&mut self, out: &mut [u8], pt: u8, marker: bool, timestamp: u32) {
        out[0] = 0x80;
        out[1] = (if marker { 0x80 } else { 0 }) | (pt & 0x7f);
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
    }
}

/// A parsed RTP packet, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Payload type.
    pub pt: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload (CSRCs, extension and padding removed).
    pub payload: &'a [u8],
}

/// Parses an RTP packet (RFC 3550 §5.1), or `None` when it is not one.
pub fn parse(data: &[u8]) -> Option<RtpPacket<'_>> {
    if data.len() < RTP_HEADER || data[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(data[0] & 0x0f);
    let mut start = RTP_HEADER + 4 * csrc;
    if data[0] & 0x10 != 0 {
        let ext = data.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        let pad = usize::from(*data.last()?);
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    if start > end {
        return None;
    }
    Some(RtpPacket {
        pt: data[1] & 0x7f,
        marker: data[1] & 0x80 != 0,
        seq: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        payload: &data[start..end],
    })
}

/// The key of an RFC 4733 DTMF event code.
pub fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF key.
pub fn digit_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

#[cfg(test)]
#[path = "rtp_session_tests.rs"]
mod tests;
