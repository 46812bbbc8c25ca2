//! The contract between the Sluice runtime and the functions it runs, as code both sides use.
//!
//! The runtime's cache backends and the guest SDK's native stand-in give every cache call the
//! same meaning because they check it with the same functions ([`cache`]); a module is named by
//! the same digest everywhere ([`ModuleDigest`]); the runtime's batches and the SDK's results
//! of contract 0.2.0 are laid out by the same functions ([`layout`]). The cases of
//! [`conformance`] (behind the `conformance` feature) state the cache contract as data, so any
//! implementation of it can be checked against them.
//!
//! This crate owns rules only: no I/O, no engine, no backend. It builds for `wasm32-wasip2`
//! (the SDK compiles it into every function), so it must stay free of heavy dependencies.

pub mod cache;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(feature = "digest")]
mod digest;
pub mod layout;

#[cfg(feature = "digest")]
pub use digest::{DIGEST_HEX_LEN, DIGEST_PREFIX, MalformedDigest, ModuleDigest};
