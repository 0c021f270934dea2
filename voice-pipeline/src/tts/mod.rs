//! Text to speech: Piper (VITS on ONNX Runtime) with espeak-ng phonemes, and espeak-ng itself.

pub mod espeak;
pub mod piper;
