//! # dartmouth-signaling
//!
//! Everything that crosses the wire to a client: the versioned JSON protocol in `proto`, WebSocket
//! signaling, WHIP/WHEP endpoints, the SIP user agent that bridges calls into rooms, and the access
//! tokens that gate every join. No other crate knows a wire format. Filled in by the gateway work;
//! this is its public face.
