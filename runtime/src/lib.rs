//! Sluice: a runtime for stream functions.
//!
//! A stream function is a WebAssembly component implementing the `sluice:function/processor`
//! world (see `wit/sluice.wit`). Sluice runs it on every record of a stream, partition by
//! partition and in order, and gives it fast calls to a cache.
//!
//! The crate is laid out along the flow of a record:
//! - [`record`]: the records that go in and come out;
//! - [`engine`]: modules, instances and their limits (wasmtime);
//! - [`cache`]: the cache capability and its backends;
//! - [`runner`]: the local runner behind `sluice run`, which feeds a function from a file.

pub mod cache;
pub mod engine;
pub mod record;
pub mod runner;
