//! Reading what an SDP negotiation gave a peer, and short error text for bad offers.

use str0m::Rtc;
use str0m::media::{Direction, MediaKind, Mid, Pt};

use super::Slot;

/// The Opus payload type negotiated on `mid`, if any (RTP mode: read from the negotiation, not
/// from a frame writer).
pub(super) fn opus_pt(rtc: &mut Rtc, mid: Mid) -> Option<Pt> {
    let remote = rtc.media(mid)?.remote_pts().to_vec();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == str0m::format::Codec::Opus && remote.contains(&p.pt()))
        .map(|p| p.pt())
}

/// The audio m-lines of an accepted offer: the one the peer publishes on (with its Opus payload
/// type), and those it can receive on (with the Opus payload type to send).
pub(super) fn audio_lines(rtc: &mut Rtc, answer_sdp: &str) -> (Option<(Mid, Pt)>, Vec<Slot>) {
    let mut publish = None;
    let mut slots = Vec::new();
    for mid in answer_mids(answer_sdp) {
        let Some(media) = rtc.media(mid) else {
            continue;
        };
        if media.kind() != MediaKind::Audio {
            continue;
        }
        let direction = media.direction();
        let Some(pt) = opus_pt(rtc, mid) else {
            continue;
        };
        if matches!(direction, Direction::RecvOnly | Direction::SendRecv) && publish.is_none() {
            publish = Some((mid, pt));
        }
        if matches!(direction, Direction::SendOnly | Direction::SendRecv) {
            slots.push(Slot::new(mid, pt));
        }
    }
    (publish, slots)
}

/// The `a=mid:` values of audio m-lines that were accepted (non-zero port).
fn answer_mids(sdp: &str) -> Vec<Mid> {
    let mut mids = Vec::new();
    let mut in_accepted_audio = false;
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            in_accepted_audio = rest.starts_with("audio ") && !rest.starts_with("audio 0 ");
        } else if let Some(mid) = line.strip_prefix("a=mid:")
            && in_accepted_audio
        {
            mids.push(Mid::from(mid.trim()));
        }
    }
    mids
}

/// A parser error as one short line, without the parser's internals (memory offsets).
pub(super) fn sdp_error_summary(error: &str) -> String {
    let mut summary: String = error
        .lines()
        .map(|line| match line.find(" at PointerOffset") {
            Some(i) => &line[..i],
            None => line,
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if summary.len() > 160 {
        let mut cut = 160;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push('…');
    }
    summary
}
