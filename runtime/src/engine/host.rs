//! The host side of a function instance: the state in its `Store`, and the `cache`, `log`
//! and `config` imports the guest calls. WASI is linked with nothing granted (no files,
//! network, environment or arguments); stdout and stderr go to the runtime log.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::sluice::function::{cache, config, log};
use super::guest_log::{self, GuestStream};
use super::{EngineStats, Limits};
use crate::cache::{Cache, CacheError};

/// What a function instance may use of the host: its cache, its settings, its name.
#[derive(Debug, Clone)]
pub struct FunctionContext {
    /// How the function is named in logs and errors, e.g. `word-count` or
    /// `pipeline clicks, partition 3`.
    pub name: Arc<str>,
    /// The pipeline's cache, already namespaced.
    pub cache: Cache,
    /// The pipeline's settings for the function (the `config` import).
    pub config: Arc<BTreeMap<String, String>>,
}

/// Which limit a call broke, recorded by the limiter or the epoch callback as it happens so
/// the error can name it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    Cpu,
    Memory { desired: usize },
    Table { desired: usize },
}

/// The data of one instance's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) context: FunctionContext,
    pub(crate) stderr: GuestStream,
    limits: Limits,
    /// Epoch ticks the current call has used.
    pub(crate) cpu_ticks: u64,
    /// The limit the current call broke, if any.
    pub(crate) breach: Option<Breach>,
    /// Cache calls of the current call that failed as unavailable (the backend is down or
    /// slow), so failures that follow from an outage can be told apart from bad records.
    pub(crate) cache_unavailable: u32,
    /// The engine's counters: this instance's life and memory are counted there.
    engine_stats: Arc<EngineStats>,
    /// Linear memory this instance holds, in bytes.
    memory_bytes: usize,
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.engine_stats.instance_ended(self.memory_bytes);
    }
}

impl HostState {
    pub(crate) fn new(context: FunctionContext, limits: Limits, engine_stats: Arc<EngineStats>) -> Self {
        engine_stats.instance_started();
        let stdout = GuestStream::stdout(context.name.clone(), limits.max_log_line_bytes);
        let stderr = GuestStream::stderr(context.name.clone(), limits.max_log_line_bytes);
        // Nothing is granted: no preopened directories, no environment, no arguments, and
        // (the WASI default since wasmtime 48) no network.
        let wasi = WasiCtx::builder().stdout(stdout).stderr(stderr.clone()).build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            context,
            stderr,
            limits,
            cpu_ticks: 0,
            breach: None,
            cache_unavailable: 0,
            engine_stats,
            memory_bytes: 0,
        }
    }

    pub(crate) fn start_call(&mut self) {
        self.cpu_ticks = 0;
        self.breach = None;
        self.cache_unavailable = 0;
        self.stderr.start_call();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.max_memory_bytes {
            self.breach = Some(Breach::Memory { desired });
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        let grown = desired.saturating_sub(current);
        self.memory_bytes += grown;
        self.engine_stats.memory_grown(grown);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.max_table_elements {
            self.breach = Some(Breach::Table { desired });
            return Err(wasmtime::Error::msg("table limit exceeded"));
        }
        Ok(true)
    }
}

impl From<CacheError> for cache::CacheError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Unavailable(m) => cache::CacheError::Unavailable(m),
            CacheError::InvalidKey(m) => cache::CacheError::InvalidKey(m),
            CacheError::TooLarge(m) => cache::CacheError::TooLarge(m),
            CacheError::NotANumber(m) => cache::CacheError::NotANumber(m),
            CacheError::InvalidArgument(m) => cache::CacheError::InvalidArgument(m),
            CacheError::Other(m) => cache::CacheError::Other(m),
        }
    }
}

impl HostState {
    /// Converts a cache result for the guest, noting outages.
    fn cache_result<T>(&mut self, result: Result<T, CacheError>) -> Result<T, cache::CacheError> {
        if matches!(result, Err(CacheError::Unavailable(_))) {
            self.cache_unavailable += 1;
        }
        Ok(result?)
    }
}

impl cache::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, cache::CacheError> {
        let result = self.context.cache.get(&key).await;
        self.cache_result(result)
    }

    async fn get_many(&mut self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, cache::CacheError> {
        let result = self.context.cache.get_many(&keys).await;
        self.cache_result(result)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> Result<(), cache::CacheError> {
        let result = self.context.cache.set(&key, &value, ttl_seconds).await;
        self.cache_result(result)
    }

    async fn set_many(
        &mut self,
        entries: Vec<(String, Vec<u8>)>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), cache::CacheError> {
        let result = self.context.cache.set_many(&entries, ttl_seconds).await;
        self.cache_result(result)
    }

    async fn incr(&mut self, key: String, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, cache::CacheError> {
        let result = self.context.cache.incr(&key, delta, ttl_seconds).await;
        self.cache_result(result)
    }

    async fn incr_many(
        &mut self,
        entries: Vec<(String, i64)>,
        ttl_seconds: Option<u32>,
    ) -> Result<Vec<i64>, cache::CacheError> {
        let result = self.context.cache.incr_many(&entries, ttl_seconds).await;
        self.cache_result(result)
    }

    async fn delete(&mut self, key: String) -> Result<bool, cache::CacheError> {
        let result = self.context.cache.delete(&key).await;
        self.cache_result(result)
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        guest_log::emit(&self.context.name, level, &message, self.limits.max_log_line_bytes);
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.context.config.get(&key).cloned()
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        self.context.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl super::bindings::sluice::function::types::Host for HostState {}
