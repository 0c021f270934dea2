//! Client messages over WebSocket: any text is decoded into a message or a clear error, and any
//! string offered as a room token is verified or refused, never a panic.
#![no_main]

use dartmouth_signaling::TokenKeys;
use dartmouth_signaling::proto::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::decode(text) {
        Ok(ClientMessage::Join { token, .. }) => {
            let keys = TokenKeys::new(b"fuzzing secret, long enough for HS256");
            let _ = keys.verify_any_room(&token);
        }
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_server_message().to_json();
        }
    }
    let keys = TokenKeys::new(b"fuzzing secret, long enough for HS256");
    let _ = keys.verify(text, "room");
});
