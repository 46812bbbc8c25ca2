//! The admin API's contract as Rust types, and a typed client of it: what the `sluice` CLI and
//! the tests speak to a runtime with. The server side is `sluice-admin`.

pub mod client;

pub use client::{AdminClient, DEFAULT_URL};
