//! Conversions of registry model files into the formats Dartmouth's runtimes load.

pub mod ct2;
pub mod whisper;
