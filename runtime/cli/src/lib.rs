//! Sluice: a runtime for stream functions.
//!
//! A stream function is a WebAssembly component implementing the `sluice:function/processor`
//! world (see `wit/sluice.wit`). Sluice runs it on every record of a stream, partition by
//! partition and in order, and gives it fast calls to a cache.
//!
//! The runtime is a set of crates laid out along the flow of a record, each depending only on
//! those before it:
//! - [`record`] (`sluice-record`): the WIT world's bindings and the record types;
//! - [`cache`] (`sluice-cache`): the cache capability the function calls, and its backends;
//! - [`engine`] (`sluice-engine`): modules, instances and their limits (wasmtime), one host
//!   file per capability;
//! - [`kafka`] (`sluice-kafka`): every line of rdkafka code: the cluster settings, the source
//!   (a consumer group's partitions) and the sink (a producer);
//! - [`pipeline`] (`sluice-pipeline`): source, engine and sink put together with the delivery
//!   guarantee, the module and pipeline store ([`registry`]) and the [`manager`];
//! - [`api`] (`sluice-api`): the admin API's types and a typed client ([`client`]);
//! - [`admin`] (`sluice-admin`): the admin HTTP server;
//! - this crate (`sluice`): the `sluice` command, with [`runner`] (`sluice run`), [`serve`]
//!   and [`dev`] (`sluice serve` and `sluice dev`) and [`scaffold`] (`sluice new`, `sluice
//!   build`), [`logging`] (the runtime's log on stderr) and [`version`] (`sluice version`).
//!
//! The crates are re-exported under their short names, so `sluice::engine::Engine` is
//! `sluice_engine::Engine`.

pub use sluice_admin as admin;
pub use sluice_api as api;
pub use sluice_api::client;
pub use sluice_cache as cache;
pub use sluice_engine as engine;
pub use sluice_kafka as kafka;
pub use sluice_pipeline as pipeline;
pub use sluice_pipeline::{cluster, manager, registry};
pub use sluice_record as record;

pub mod dev;
pub mod logging;
pub mod runner;
pub mod scaffold;
pub mod serve;
pub mod version;
