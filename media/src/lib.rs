//! # dartmouth-media
//!
//! The sans-IO media core. Rooms hold participants whose audio tracks are forwarded to each other
//! (RTP is rewritten, never transcoded, between humans); WebRTC peers are `str0m` state machines fed
//! `(now, packet)` and polled for transmits, events and timeouts, while a thin driver owns the UDP
//! socket and timers. Opus and G.711 codecs, the jitter buffer with loss concealment and the audio
//! frame type live here. Filled in by the WebRTC gateway work; this is its public face.
