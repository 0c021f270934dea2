//! Datagrams into the media core from a peer's address (STUN, DTLS, RTP, RTCP all arrive on the
//! one UDP port), and RTP payloads into the Opus decoder, as a hostile peer would send them.
//! Input: a sequence of `[len: u16 BE][bytes]` datagrams.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dartmouth_media::{CoreOutput, MediaCore, OpusDecoder};
use libfuzzer_sys::fuzz_target;

/// An offer from a str0m client at 127.0.0.1:50999, recorded once (see fuzz/README.md).
const OFFER: &str = include_str!("../seeds/offer.sdp");

fuzz_target!(|data: &[u8]| {
    let local: SocketAddr = "127.0.0.1:5004".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:50999".parse().unwrap();
    let start = Instant::now();
    let mut core = MediaCore::new(local);
    let Ok((_peer, _answer)) = core.add_peer(start, "room", OFFER, false) else {
        panic!("the recorded offer is accepted");
    };
    let mut decoder = OpusDecoder::new(48_000, 1).unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut rest = data;
    let mut now = start;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let datagram = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += Duration::from_millis(20);
        core.handle_receive(now, remote, local, datagram);
        if datagram.len() > 12 && (datagram[0] >> 6) == 2 {
            let _ = decoder.decode(&datagram[12..], &mut pcm);
        }
        for _ in 0..64 {
            if let CoreOutput::Timeout(_) = core.poll_output(now) {
                break;
            }
        }
        core.handle_timeout(now);
    }
});
