//! Shared harness for Sluice's integration tests: where the built guests are, builders for
//! engines and records, and the real servers (cache, broker) the tests start on loopback.

pub mod chaos;
pub mod cluster;
pub mod fixtures;
pub use sluice_fuzzing as fuzzing;
pub mod guests;
pub mod kafka;
pub mod process;
pub mod servers;
