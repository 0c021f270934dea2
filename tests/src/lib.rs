//! # dartmouth-tests
//!
//! Cross-crate end-to-end scenarios, one file per behaviour under `tests/`, sharing the harness in
//! this library (model lookup, speech fixtures, word error rate).
