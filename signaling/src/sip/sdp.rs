//! SDP offer/answer for SIP legs (RFC 3264), audio only: PCMU, PCMA, G.722 and Opus, with
//! RFC 4733 telephone-events and RFC 3389 comfort noise, and the direction attribute that
//! carries hold and resume. The parser is strict about size and lenient about what it ignores
//! (video, unknown attributes), so any phone's offer reads and nothing a peer sends can make it
//! allocate without bound.

use std::net::{IpAddr, SocketAddr};

use dartmouth_media::PhoneCodec;

/// Largest SDP body read, in bytes.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Most payload types read from one m-line.
const MAX_PAYLOADS: usize = 32;
/// Dynamic payload type offered for Opus.
const OPUS_PT: u8 = 111;
/// Dynamic payload type offered for telephone-events at 8 kHz.
const DTMF_PT: u8 = 101;
/// Dynamic payload type offered for telephone-events at 48 kHz (with Opus).
const DTMF_48K_PT: u8 = 110;
/// Static payload type of comfort noise.
const CN_PT: u8 = 13;

/// Why an SDP body was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Over [`MAX_SDP_BYTES`] or not UTF-8 or missing required lines.
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
    /// No audio m-line with a port.
    #[error("the SDP has no audio stream")]
    NoAudio,
    /// None of the offered codecs is allowed here.
    #[error("no common codec")]
    NoCommonCodec,
}

/// Media direction (RFC 3264 §5.1), from the sender of the SDP's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The SDP's sender only sends (it put us on hold with music, or is listening to us not).
    SendOnly,
    /// The SDP's sender only receives.
    RecvOnly,
    /// Neither (hold).
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes to this offered direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the SDP's sender wants to hear us.
    pub fn peer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Whether the SDP's sender will send us audio.
    pub fn peer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One payload type of an audio m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Payload type number.
    pub pt: u8,
    /// Encoding name (`PCMU`, `telephone-event`…), from `a=rtpmap` or the static table.
    pub name: String,
    /// Clock rate.
    pub clock: u32,
}

/// The audio stream a peer described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAudio {
    /// Where it receives RTP (connection address, m-line port).
    pub addr: SocketAddr,
    /// Payload types in preference order.
    pub payloads: Vec<Payload>,
    /// Its direction.
    pub direction: Direction,
}

/// What offer/answer settled for one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The audio codec.
    pub codec: PhoneCodec,
    /// Its payload type.
    pub audio_pt: u8,
    /// Telephone-event payload type, if both sides have it.
    pub dtmf_pt: Option<u8>,
    /// Comfort-noise payload type, if both sides have it.
    pub cn_pt: Option<u8>,
    /// The peer's RTP address.
    pub remote: SocketAddr,
    /// The peer's direction.
    pub direction: Direction,
}

fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8_000)),
        8 => Some(("PCMA", 8_000)),
        9 => Some(("G722", 8_000)),
        13 => Some(("CN", 8_000)),
        _ => None,
    }
}

/// Reads the first audio stream of an SDP body.
pub fn parse(body: &[u8]) -> Result<RemoteAudio, SdpError> {
    if body.len() > MAX_SDP_BYTES {
        return Err(SdpError::Malformed("too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8"))?;
    if !text.trim_start().starts_with("v=") {
        return Err(SdpError::Malformed("does not start with v="));
    }
    let mut session_addr: Option<IpAddr> = None;
    let mut session_direction = Direction::SendRecv;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut audio_addr: Option<IpAddr> = None;
    let mut audio_direction: Option<Direction> = None;
    let mut rtpmaps: Vec<(u8, String, u32)> = Vec::new();
    // Where we are: 0 session, 1 the first audio m-line, 2 any later m-line (ignored).
    let mut section = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if section == 0 && m.starts_with("audio ") {
                let mut parts = m.split_whitespace();
                let port = parts
                    .nth(1)
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or(SdpError::Malformed("bad m= port"))?;
                let pts: Vec<u8> = parts
                    .skip(1)
                    .filter_map(|p| p.parse::<u8>().ok())
                    .filter(|p| *p < 128)
                    .take(MAX_PAYLOADS)
                    .collect();
                audio = Some((port, pts));
                section = 1;
            } else {
                section = 2;
            }
            continue;
        }
        if section == 2 {
            continue;
        }
        if let Some(c) = line.strip_prefix("c=") {
            let addr = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse::<IpAddr>().ok())
                .ok_or(SdpError::Malformed("bad c= line"))?;
            if section == 0 {
                session_addr = Some(addr);
            } else {
                audio_addr = Some(addr);
            }
        } else if let Some(a) = line.strip_prefix("a=") {
            let direction = match a {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            };
            if let Some(d) = direction {
                if section == 0 {
                    session_direction = d;
                } else {
                    audio_direction = Some(d);
                }
            } else if section == 1
                && let Some(map) = a.strip_prefix("rtpmap:")
                && rtpmaps.len() < MAX_PAYLOADS
                && let Some((pt, encoding)) = map.split_once(' ')
                && let Ok(pt) = pt.parse::<u8>()
            {
                let mut parts = encoding.split('/');
                let name = parts.next().unwrap_or("").to_string();
                let clock = parts.next().and_then(|c| c.parse().ok()).unwrap_or(8_000);
                rtpmaps.push((pt, name, clock));
            }
        }
    }
    let (port, pts) = audio.ok_or(SdpError::NoAudio)?;
    let ip = audio_addr
        .or(session_addr)
        .ok_or(SdpError::Malformed("no c= line"))?;
    let mut direction = audio_direction.unwrap_or(session_direction);
    // RFC 2543 hold: a zero connection address.
    if ip.is_unspecified() && direction == Direction::SendRecv {
        direction = Direction::Inactive;
    }
    if port == 0 {
        direction = Direction::Inactive;
    }
    let payloads = pts
        .into_iter()
        .filter_map(|pt| {
            if let Some((_, name, clock)) = rtpmaps.iter().find(|(p, _, _)| *p == pt) {
                return Some(Payload {
                    pt,
                    name: name.clone(),
                    clock: *clock,
                });
            }
            static_payload(pt).map(|(name, clock)| Payload {
                pt,
                name: name.into(),
                clock,
            })
        })
        .collect();
    Ok(RemoteAudio {
        addr: SocketAddr::new(ip, port),
        payloads,
        direction,
    })
}

/// Picks the first of the peer's codecs that `allowed` holds (the offerer's preference wins,
/// RFC 3264 §6.1), with telephone-events and comfort noise at the codec's clock rate.
pub fn negotiate(remote: &RemoteAudio, allowed: &[PhoneCodec]) -> Result<Negotiated, SdpError> {
    let (codec, audio_pt) = remote
        .payloads
        .iter()
        .find_map(|p| {
            let codec = PhoneCodec::from_name(&p.name)?;
            (allowed.contains(&codec) && p.clock == codec.clock_rate()).then_some((codec, p.pt))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let find = |name: &str, clock: u32| {
        remote
            .payloads
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name) && p.clock == clock)
            .map(|p| p.pt)
    };
    Ok(Negotiated {
        codec,
        audio_pt,
        dtmf_pt: find("telephone-event", codec.clock_rate()),
        cn_pt: (codec.clock_rate() == 8_000)
            .then(|| find("CN", 8_000))
            .flatten(),
        remote: remote.addr,
        direction: remote.direction,
    })
}

/// Our SDP body: one audio stream at `local` in `direction`, carrying `codecs` (an offer) or
/// the one negotiated codec (an answer).
pub fn describe(
    local: SocketAddr,
    session: u64,
    version: u64,
    codecs: &[(PhoneCodec, u8)],
    events: &[(u8, u32)],
    cn_pt: Option<u8>,
    direction: Direction,
) -> String {
    let ip_kind = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let mut pts: Vec<String> = codecs.iter().map(|(_, pt)| pt.to_string()).collect();
    pts.extend(events.iter().map(|(p, _)| p.to_string()));
    pts.extend(cn_pt.map(|p| p.to_string()));
    let mut sdp = format!(
        "v=0\r\no=dartmouth {session} {version} IN {ip_kind} {ip}\r\ns=dartmouth\r\n\
         c=IN {ip_kind} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
        local.port(),
        pts.join(" ")
    );
    for (codec, pt) in codecs {
        match codec {
            PhoneCodec::Opus => {
                sdp.push_str(&format!("a=rtpmap:{pt} opus/48000/2\r\n"));
                sdp.push_str(&format!("a=fmtp:{pt} useinbandfec=1;stereo=0\r\n"));
            }
            c => sdp.push_str(&format!(
                "a=rtpmap:{pt} {}/{}\r\n",
                c.name(),
                c.clock_rate()
            )),
        }
    }
    for (pt, clock) in events {
        sdp.push_str(&format!(
            "a=rtpmap:{pt} telephone-event/{clock}\r\na=fmtp:{pt} 0-16\r\n"
        ));
    }
    if let Some(pt) = cn_pt {
        sdp.push_str(&format!("a=rtpmap:{pt} CN/8000\r\n"));
    }
    sdp.push_str(&format!("a=ptime:20\r\na={}\r\n", direction.attribute()));
    sdp
}

/// Our answer to a negotiated offer.
pub fn answer(
    negotiated: &Negotiated,
    local: SocketAddr,
    session: u64,
    version: u64,
    direction: Direction,
) -> String {
    describe(
        local,
        session,
        version,
        &[(negotiated.codec, negotiated.audio_pt)],
        &negotiated
            .dtmf_pt
            .map(|pt| (pt, negotiated.codec.clock_rate()))
            .into_iter()
            .collect::<Vec<_>>(),
        negotiated.cn_pt,
        direction,
    )
}

/// Our offer of `codecs` (an outbound call, or the 200 OK of an INVITE without an offer).
pub fn offer(codecs: &[PhoneCodec], local: SocketAddr, session: u64, version: u64) -> String {
    let listed: Vec<(PhoneCodec, u8)> = codecs
        .iter()
        .map(|c| (*c, c.static_payload_type().unwrap_or(OPUS_PT)))
        .collect();
    let mut events = vec![(DTMF_PT, 8_000)];
    if codecs.contains(&PhoneCodec::Opus) {
        events.push((DTMF_48K_PT, 48_000));
    }
    describe(
        local,
        session,
        version,
        &listed,
        &events,
        Some(CN_PT),
        Direction::SendRecv,
    )
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;
