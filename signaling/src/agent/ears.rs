//! The agent's ears: Opus packets of one or several sources → decoded (gaps recovered from the
//! next packet's in-band FEC where the sender added it, otherwise concealed) → mixed when several
//! speak → the agent's listening queue, with silence fed when packets stop.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dartmouth_media::{OpusDecoder, PeerId, TapPacket};
use dartmouth_voice::agent::AgentSession;
use dartmouth_voice::frame::{AudioFrame, FRAME_DURATION};

use super::{FRAME_SAMPLES, RTP_RATE};

/// Frames concealed at most for one gap in a source's packets.
const MAX_CONCEALED_FRAMES: u16 = 5;
/// Without packets for this long, the listener hears silence (a muted or DTX-silent sender).
const SILENCE_AFTER: Duration = Duration::from_millis(60);
/// Most sources decoded at once (an "everyone" listener in a big room hears the first ones).
const MAX_SOURCES: usize = 8;
/// Decoded frames held per source for the mix (beyond: the oldest is dropped).
const MIX_DEPTH: usize = 4;

/// One source's decoder and the frames waiting for the mix.
struct Voice {
    source: PeerId,
    decoder: OpusDecoder,
    expected: Option<u16>,
    last_heard: Instant,
    frames: VecDeque<[i16; FRAME_SAMPLES]>,
}

/// The agent's ears. With one source, packets are decoded and fed as they arrive, in order (gaps
/// concealed, late ones dropped), instead of through a playout jitter buffer: the listener is a
/// model, not a person, so smoothing playout would only delay its decisions. With several sources
/// (listening to everyone), each is decoded on its own and the frames are mixed every 20 ms.
/// Silence is fed when packets stop, so voice activity and end-of-turn timing keep going.
pub(super) struct Ears {
    muted: Arc<AtomicBool>,
    voices: Vec<Voice>,
    last_audio: Instant,
    pub(super) media_time: Duration,
    pcm: [i16; FRAME_SAMPLES],
    mix: [i32; FRAME_SAMPLES],
}

impl Ears {
    pub(super) fn new(muted: Arc<AtomicBool>) -> Self {
        Self {
            muted,
            voices: Vec::new(),
            last_audio: Instant::now(),
            media_time: Duration::ZERO,
            pcm: [0; FRAME_SAMPLES],
            mix: [0; FRAME_SAMPLES],
        }
    }

    /// One packet of a source's audio; `heard_from` adds up who was heard.
    pub(super) fn hear(
        &mut self,
        session: &AgentSession,
        packet: &TapPacket,
        heard_from: &mut HashMap<PeerId, f64>,
    ) {
        let now = Instant::now();
        let index = match self.voices.iter().position(|v| v.source == packet.source) {
            Some(i) => i,
            None => {
                self.voices
                    .retain(|v| now.duration_since(v.last_heard) < Duration::from_secs(2));
                if self.voices.len() >= MAX_SOURCES {
                    return;
                }
                let Ok(decoder) = OpusDecoder::new(RTP_RATE, 1) else {
                    return;
                };
                self.voices.push(Voice {
                    source: packet.source,
                    decoder,
                    expected: None,
                    last_heard: now,
                    frames: Default::default(),
                });
                self.voices.len() - 1
            }
        };
        let voice = &mut self.voices[index];
        voice.last_heard = now;
        if let Some(expected) = voice.expected {
            let ahead = packet.seq.wrapping_sub(expected);
            if ahead > u16::MAX / 2 {
                return; // late or duplicate
            }
            fill_gap(
                &mut voice.decoder,
                ahead,
                &packet.payload,
                &mut self.pcm,
                &mut voice.frames,
            );
        }
        voice.expected = Some(packet.seq.wrapping_add(1));
        if matches!(
            voice.decoder.decode(&packet.payload, &mut self.pcm),
            Ok(FRAME_SAMPLES)
        ) {
            if packet.level < 60 {
                let energy = 10f64.powf(-f64::from(packet.level) / 10.0);
                *heard_from.entry(packet.source).or_default() += energy;
            }
            push_frame(&mut voice.frames, &self.pcm);
        }
        // One voice: feed at once. Several: the 20 ms tick mixes them.
        let active = self
            .voices
            .iter()
            .filter(|v| now.duration_since(v.last_heard) < SILENCE_AFTER)
            .count();
        if active <= 1 {
            while let Some(frame) = self.voices[index].frames.pop_front() {
                self.pcm = frame;
                self.push(session, true);
            }
            self.last_audio = now;
        }
    }

    /// Called every 20 ms: one mixed frame when several sources speak, silence when every
    /// source's packets have stopped.
    pub(super) fn tick(&mut self, session: &AgentSession) {
        let now = Instant::now();
        if self.voices.iter().any(|v| !v.frames.is_empty()) {
            self.mix = [0; FRAME_SAMPLES];
            for voice in &mut self.voices {
                if let Some(frame) = voice.frames.pop_front() {
                    for (m, s) in self.mix.iter_mut().zip(frame) {
                        *m += i32::from(s);
                    }
                }
            }
            for (p, m) in self.pcm.iter_mut().zip(self.mix) {
                *p = m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
            self.push(session, true);
            self.last_audio = now;
        } else if now.duration_since(self.last_audio) >= SILENCE_AFTER {
            self.push(session, false);
            self.last_audio += FRAME_DURATION;
        }
    }

    fn push(&mut self, session: &AgentSession, decoded: bool) {
        let audible = decoded && !self.muted.load(Ordering::Relaxed);
        if !audible {
            self.pcm = [0; FRAME_SAMPLES];
        }
        if let Ok(frame) = AudioFrame::new(&self.pcm, RTP_RATE, 1, self.media_time) {
            session.push_audio(frame);
        }
        self.media_time += FRAME_DURATION;
    }
}

/// Queues a decoded frame for the mix, dropping the oldest beyond [`MIX_DEPTH`].
fn push_frame(frames: &mut VecDeque<[i16; FRAME_SAMPLES]>, pcm: &[i16; FRAME_SAMPLES]) {
    if frames.len() >= MIX_DEPTH {
        frames.pop_front();
    }
    frames.push_back(*pcm);
}

/// Fills a gap of `missing` frames before `next_packet`: the last missing frame is recovered
/// from `next_packet`'s in-band FEC (libopus conceals when it carries none), the ones before it
/// are concealed; a gap longer than [`MAX_CONCEALED_FRAMES`] is only partly filled.
fn fill_gap(
    decoder: &mut OpusDecoder,
    missing: u16,
    next_packet: &[u8],
    pcm: &mut [i16; FRAME_SAMPLES],
    frames: &mut VecDeque<[i16; FRAME_SAMPLES]>,
) {
    let filled = missing.min(MAX_CONCEALED_FRAMES);
    for n in 0..filled {
        let recovered = if n + 1 == missing {
            decoder.decode_fec(next_packet, pcm)
        } else {
            decoder.conceal(pcm)
        };
        if recovered.is_ok() {
            push_frame(frames, pcm);
        }
    }
}

#[cfg(test)]
#[path = "ears_tests.rs"]
mod tests;
