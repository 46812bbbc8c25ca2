//! Sluice: a runtime for stream functions.
//!
//! A stream function is a WebAssembly component implementing the `sluice:function/processor`
//! world (see `wit/sluice.wit`). Sluice runs it on every record of a stream, partition by
//! partition and in order, and gives it fast calls to a cache.
//!
//! The crate is laid out along the flow of a record:
//! - [`source`]: where records come from (a Kafka consumer group);
//! - [`record`]: the records that go in and come out;
//! - [`engine`]: modules, instances and their limits (wasmtime);
//! - [`cache`]: the cache capability the function calls, and its backends;
//! - [`sink`]: where outputs and dead letters go (a Kafka producer);
//! - [`pipeline`]: source, engine and sink put together, with the delivery guarantee;
//! - [`registry`]: the uploaded modules, stored on disk by content digest;
//! - [`admin`]: the admin HTTP API over the registry (uploads, listing, health probes);
//! - [`kafka`]: the cluster connection settings shared by source and sink;
//! - [`runner`]: the local runner behind `sluice run`, which feeds a function from a file;
//! - [`serve`] and [`dev`]: `sluice serve` (pipelines from a config file) and `sluice dev`
//!   (an embedded Kafka and a synthetic stream, for a first look).

pub mod admin;
pub mod cache;
pub mod client;
pub mod dev;
pub mod engine;
#[cfg(test)]
mod fuzzing;
pub mod kafka;
pub mod manager;
pub mod pipeline;
pub mod record;
pub mod registry;
pub mod runner;
pub mod scaffold;
pub mod serve;
pub mod sink;
pub mod source;
