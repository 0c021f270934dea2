//! Everything a SIP peer sends the bridge: SIP messages as the transport reads them, SDP
//! bodies through offer/answer (and our answer back through the parser), and RTP datagrams
//! through a session's latching, telephone-event and comfort-noise handling. Any bytes are
//! read or refused; nothing panics.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use dartmouth_media::PhoneCodec;
use dartmouth_media::rtp_session::{RtpConfig, RtpSession};
use dartmouth_signaling::sip::{read_message, sdp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_message(data);
    if let Ok(remote) = sdp::parse(data)
        && let Ok(negotiated) = sdp::negotiate(&remote, &PhoneCodec::ALL)
    {
        let local: SocketAddr = "127.0.0.1:16000".parse().unwrap();
        let answer = sdp::answer(&negotiated, local, 1, 1, negotiated.direction.answer());
        let back = sdp::parse(answer.as_bytes()).expect("our answer parses");
        assert_eq!(sdp::negotiate(&back, &[negotiated.codec]).map(|n| n.codec), Ok(negotiated.codec));
    }
    let config = RtpConfig { dtmf_pt: Some(101), cn_pt: Some(13), ..RtpConfig::pcmu("127.0.0.1:4000".parse().unwrap()) };
    let mut session = RtpSession::new(config, 7);
    let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    for (i, chunk) in data.chunks(172).enumerate() {
        let _ = session.receive(Duration::from_millis(20 * i as u64), from, chunk);
    }
});
