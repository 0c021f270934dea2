//! # dartmouth-signaling
//!
//! Everything that crosses the wire to a client: the versioned JSON protocol in [`proto`],
//! WebSocket signaling ([`ws`]), WHIP/WHEP endpoints, the room access tokens that gate every join
//! ([`token`]), and the bridge that seats a voice agent in a room as an in-process participant
//! ([`agent`]). No other crate knows a wire format.
//!
//! ```
//! use dartmouth_signaling::proto::{ServerMessage, ErrorCode};
//!
//! let refusal = ServerMessage::error(ErrorCode::BadSdp, "no audio");
//! assert!(refusal.to_json().contains(r#""code":"bad_sdp""#));
//! ```

pub mod agent;
pub mod gateway;
pub mod limits;
pub mod proto;
pub mod recording;
pub mod rooms;
mod rooms_api;
pub mod sip;
pub mod token;
mod whip;
mod ws;

pub use agent::{AgentFactory, AgentInfo, AgentRefusal, AgentRequest, Floor};
pub use gateway::{Gateway, RoomEvents, routes};
pub use token::{Grants, TokenKeys};
