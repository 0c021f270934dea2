use std::collections::VecDeque;

use dartmouth_media::{OpusDecoder, OpusEncoder};

use super::{FRAME_SAMPLES, RTP_RATE, fill_gap};

/// A voiced, moving signal: harmonics of a pitch that glides and a loudness that swells, so
/// concealment (which extends the last frame) cannot guess the lost one.
fn speech_like(frames: usize) -> Vec<[i16; FRAME_SAMPLES]> {
    let rate = RTP_RATE as f64;
    let mut phase = 0.0f64;
    (0..frames)
        .map(|f| {
            let mut frame = [0i16; FRAME_SAMPLES];
            for (n, sample) in frame.iter_mut().enumerate() {
                let t = (f * FRAME_SAMPLES + n) as f64 / rate;
                let pitch = 140.0 + 60.0 * (t * 3.0).sin();
                phase += std::f64::consts::TAU * pitch / rate;
                let loudness = 0.35 + 0.3 * (t * 7.0).sin();
                let voiced: f64 = (1..6).map(|h| (phase * h as f64).sin() / h as f64).sum();
                *sample = (voiced * loudness * 12_000.0) as i16;
            }
            frame
        })
        .collect()
}

fn error(a: &[i16], b: &[i16]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum()
}

#[test]
fn a_lost_packet_is_recovered_from_the_next_packets_fec_not_only_concealed() {
    let mut encoder = OpusEncoder::new(RTP_RATE, 1).unwrap();
    encoder.set_fec(true, 20).unwrap();
    let mut packets = Vec::new();
    let mut out = [0u8; 1500];
    for frame in speech_like(60) {
        let n = encoder.encode(&frame, &mut out).unwrap();
        packets.push(out[..n].to_vec());
    }
    // What a listener that lost nothing decodes: the reference for the lost frame.
    let lost = 40;
    let mut reference = OpusDecoder::new(RTP_RATE, 1).unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut truth = [0i16; FRAME_SAMPLES];
    for (i, packet) in packets.iter().enumerate().take(lost + 1) {
        reference.decode(packet, &mut pcm).unwrap();
        if i == lost {
            truth = pcm;
        }
    }

    let mut decoder = OpusDecoder::new(RTP_RATE, 1).unwrap();
    for packet in &packets[..lost] {
        decoder.decode(packet, &mut pcm).unwrap();
    }
    let mut frames = VecDeque::new();
    fill_gap(&mut decoder, 1, &packets[lost + 1], &mut pcm, &mut frames);
    assert_eq!(frames.len(), 1, "one frame fills a gap of one");
    let recovered = error(&frames[0], &truth);

    let mut concealing = OpusDecoder::new(RTP_RATE, 1).unwrap();
    for packet in &packets[..lost] {
        concealing.decode(packet, &mut pcm).unwrap();
    }
    concealing.conceal(&mut pcm).unwrap();
    let concealed = error(&pcm, &truth);
    assert!(
        recovered < concealed * 0.5,
        "FEC recovery left {recovered:.3e} of error, concealment {concealed:.3e}"
    );
}

#[test]
fn a_long_gap_is_concealed_up_to_the_limit_without_fec() {
    let mut encoder = OpusEncoder::new(RTP_RATE, 1).unwrap();
    encoder.set_fec(true, 20).unwrap();
    let mut out = [0u8; 1500];
    let frames_in = speech_like(2);
    let n = encoder.encode(&frames_in[0], &mut out).unwrap();
    let mut decoder = OpusDecoder::new(RTP_RATE, 1).unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    decoder.decode(&out[..n], &mut pcm).unwrap();
    let n = encoder.encode(&frames_in[1], &mut out).unwrap();
    let mut frames = VecDeque::new();
    fill_gap(&mut decoder, 40, &out[..n], &mut pcm, &mut frames);
    assert_eq!(
        frames.len(),
        super::MIX_DEPTH,
        "the mix keeps its newest frames"
    );
}
