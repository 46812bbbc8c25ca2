//! The WebAssembly engine: turns module bytes into validated, compiled [`Module`]s and runs
//! them as [`FunctionInstance`]s under [`Limits`].
//!
//! The engine owns wasmtime's configuration (component model, async host calls, epoch
//! interruption, the pooling allocator), the linker with the host's imports, the epoch ticker
//! and the on-disk cache of compiled artifacts. It knows nothing of Kafka: a source hands it
//! batches of records and takes back results.

mod artifacts;
mod guest_log;
mod host;
mod instance;
mod limits;
mod module;

pub use guest_log::{GuestLogSink, GuestOutput};
pub use host::FunctionContext;
pub use instance::{BatchError, BatchErrorKind, FunctionInstance};
pub use limits::Limits;

pub use module::{MalformedDigest, Module, ModuleDigest, ModuleError};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

use artifacts::ArtifactCache;
use host::HostState;

/// How to build an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Limits on modules and instances.
    pub limits: Limits,
    /// Where compiled modules are kept across restarts; `None` keeps nothing on disk.
    pub artifact_dir: Option<PathBuf>,
}

/// A shared engine: one per runtime process. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<HostState>,
    limits: Limits,
    artifacts: Option<ArtifactCache>,
    ticker_stop: Arc<AtomicBool>,
    stats: Arc<EngineStats>,
}

/// What an engine has done and holds, for metrics. Updated by modules as they load and by
/// instances as they start, grow and end.
#[derive(Debug, Default)]
pub struct EngineStats {
    instances: AtomicI64,
    memory_bytes: AtomicI64,
    modules_compiled: AtomicU64,
    modules_from_artifacts: AtomicU64,
    compile_nanos: AtomicU64,
}

/// A copy of [`EngineStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EngineStatsSnapshot {
    /// Function instances alive now.
    pub instances: i64,
    /// Linear memory held by those instances, in bytes.
    pub memory_bytes: i64,
    /// Modules compiled from their bytes.
    pub modules_compiled: u64,
    /// Modules loaded from the on-disk cache of compiled artifacts instead.
    pub modules_from_artifacts: u64,
    /// Time spent compiling or loading modules, in nanoseconds.
    pub compile_nanos: u64,
}

impl EngineStats {
    pub(crate) fn instance_started(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_ended(&self, memory_bytes: usize) {
        self.instances.fetch_sub(1, Ordering::Relaxed);
        self.memory_bytes.fetch_sub(memory_bytes as i64, Ordering::Relaxed);
    }

    pub(crate) fn memory_grown(&self, bytes: usize) {
        self.memory_bytes.fetch_add(bytes as i64, Ordering::Relaxed);
    }

    pub(crate) fn module_loaded(&self, took: Duration, from_artifact_cache: bool) {
        let counter = if from_artifact_cache { &self.modules_from_artifacts } else { &self.modules_compiled };
        counter.fetch_add(1, Ordering::Relaxed);
        self.compile_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> EngineStatsSnapshot {
        EngineStatsSnapshot {
            instances: self.instances.load(Ordering::Relaxed),
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            modules_compiled: self.modules_compiled.load(Ordering::Relaxed),
            modules_from_artifacts: self.modules_from_artifacts.load(Ordering::Relaxed),
            compile_nanos: self.compile_nanos.load(Ordering::Relaxed),
        }
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Engine {
    /// An engine with `config`. Starts the epoch ticker thread, which ends with the engine.
    pub fn new(config: EngineConfig) -> anyhow::Result<Engine> {
        let limits = config.limits;
        let wasmtime = wasmtime::Engine::new(&wasmtime_config(&limits)?)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("cannot configure the WebAssembly engine")?;
        let linker = linker(&wasmtime)?;
        let artifacts = match &config.artifact_dir {
            Some(dir) => Some(
                ArtifactCache::open(dir, &wasmtime)
                    .with_context(|| format!("cannot open the compiled module cache at {}", dir.display()))?,
            ),
            None => None,
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        start_epoch_ticker(&wasmtime, ticker_stop.clone())?;
        let stats = Arc::default();
        Ok(Engine { inner: Arc::new(EngineInner { wasmtime, linker, limits, artifacts, ticker_stop, stats }) })
    }

    /// Checks, compiles (or loads from the artifact cache) and prepares a module.
    ///
    /// Compilation takes from milliseconds to seconds; call this off the async executor's
    /// hot path (for example with `tokio::task::spawn_blocking`).
    pub fn load(&self, bytes: &[u8]) -> Result<Module, ModuleError> {
        Module::load(self, bytes)
    }

    /// The limits instances of this engine run under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// What the engine has compiled and runs.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.inner.stats
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    fn artifacts(&self) -> Option<&ArtifactCache> {
        self.inner.artifacts.as_ref()
    }
}

fn wasmtime_config(limits: &Limits) -> anyhow::Result<wasmtime::Config> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(limits.max_wasm_stack_bytes);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);

    let mut pool = PoolingAllocationConfig::default();
    // One component instance per worker. A component built by wasm-component-ld has a few
    // core instances (the program and small shims) with their tables.
    pool.total_component_instances(limits.max_instances);
    pool.total_core_instances(limits.max_instances * 8);
    pool.total_memories(limits.max_instances * 2);
    pool.total_tables(limits.max_instances * 8);
    pool.total_stacks(limits.max_instances);
    pool.max_memory_size(limits.max_memory_bytes);
    // The pool's own cap on a table (20,000 elements by default) must not be below the
    // limit that fails a call with `TableLimit`: a `table.grow` past it would fail quietly.
    pool.table_elements(limits.max_table_elements);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}

fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    host::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("cannot link the host's imports: {e:#}"))?;
    Ok(linker)
}

fn start_epoch_ticker(engine: &wasmtime::Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Limits::EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with one table, and an export that grows it by `delta` elements and
    /// returns its size before (or -1 when the growth is refused).
    const GROWS_A_TABLE: &str = r#"(module
        (table 1 funcref)
        (func (export "grow") (param i32) (result i32)
            (table.grow (ref.null func) (local.get 0))))"#;

    #[test]
    fn tables_grow_up_to_the_table_limit_and_no_further() {
        let limits = Limits { max_instances: 2, ..Limits::default() };
        let engine = wasmtime::Engine::new(&wasmtime_config(&limits).unwrap()).unwrap();
        let module = wasmtime::Module::new(&engine, wat::parse_str(GROWS_A_TABLE).unwrap()).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance.get_typed_func::<u32, i32>(&mut store, "grow").unwrap();
        // Up to the limit: 1 + (limit - 1) elements.
        let to_limit = (limits.max_table_elements - 1) as u32;
        assert_eq!(grow.call(&mut store, to_limit).unwrap(), 1, "a table grows to the table limit");
        assert_eq!(grow.call(&mut store, 1).unwrap(), -1, "and not one element past it");
    }
}
