//! # dartmouth-voice
//!
//! The voice pipeline: audio frames and the `Stage` contract, resampling, voice activity detection,
//! end-of-turn, and the speech-to-text, LLM and text-to-speech providers behind one trait each,
//! with barge-in. Model inference runs on dedicated threads; the providers here are the embedded
//! defaults the `models` crate provisions.

pub mod admission;
pub mod agent;
pub mod audio_queue;
pub mod chunker;
pub mod conversation;
pub mod egress;
pub mod embedded;
pub mod fallback;
pub mod frame;
pub mod http;
pub mod ingest;
pub mod job;
pub mod knowledge;
pub mod listening;
pub mod llm;
pub mod metrics;
pub mod provider;
pub mod resample;
pub mod scheduler;
pub mod stage;
pub mod stt;
pub mod text;
pub mod tts;
pub mod turn;
pub mod vad;
