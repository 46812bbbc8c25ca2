//! Shared harness for Sluice's integration tests: where the built guests are, builders for
//! engines and records, the real servers (cache, broker) the tests start on loopback, and a
//! headless browser for the web console.

pub mod browser;
pub mod chaos;
pub mod cluster;
pub mod fixtures;
pub use sluice_fuzzing as fuzzing;
pub mod guests;
pub mod hostile;
pub mod kafka;
pub mod process;
pub mod servers;
