//! Speech to text: the embedded Moonshine and Whisper recognisers.

pub mod moonshine;
pub mod whisper;
