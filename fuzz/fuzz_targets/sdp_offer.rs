//! SDP offers into the media core, as a join or a WHIP POST hands them over: any text is
//! answered or refused with a reason; an accepted offer's peer can be renegotiated and removed.
#![no_main]

use std::time::Instant;

use dartmouth_media::MediaCore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let mut core = MediaCore::new("127.0.0.1:5004".parse().unwrap());
    if let Ok((peer, answer)) = core.add_peer(now, "room", offer, true) {
        assert!(answer.starts_with("v=0"));
        // The same text as a later answer and as a trickled candidate.
        let _ = core.accept_answer(peer, offer);
        for line in offer.lines().filter(|l| l.starts_with("a=candidate")) {
            let _ = core.add_remote_candidate(peer, line.trim_start_matches("a="));
        }
        core.handle_timeout(now);
        core.remove(peer);
    }
});
