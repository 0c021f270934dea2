//! # dartmouth-benches
//!
//! Micro-benchmarks of hot paths and the load/latency harness behind `dartmouth bench <suite>`.
//! Results print as tables compared in one run against a baseline, never as timed assertions.

pub mod events;
pub mod pipeline;
pub mod rag;
pub mod report;
pub mod stats;
pub mod timing;
pub mod turns;
