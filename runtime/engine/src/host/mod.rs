//! The host side of a function instance: the state in its `Store`, WASI with nothing granted
//! (no files, network, environment or arguments; stdout and stderr go to the runtime log), and
//! one file per capability the guest imports: [`cache`], [`log`] and [`config`], each with the
//! `add_to_linker` that links it.

mod cache;
mod config;
mod log;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::guest_log::{GuestLogSink, GuestStream};
use crate::{EngineStats, Limits};
use sluice_cache::{Cache, CallCache, EffectsBreach};
use sluice_record::batch::bindings::sluice::function::types as types_v02;
use sluice_record::bindings::sluice::function::types;
use wasmtime::component::{HasSelf, Linker};

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
    /// Where the function's log lines (the `log` import, stdout and stderr) also go, besides
    /// the runtime log: a pipeline's ring of function logs. `None`: the runtime log only.
    pub log_sink: Option<Arc<dyn GuestLogSink>>,
}

/// Which limit a call broke, recorded by the limiter or the epoch callback as it happens so
/// the error can name it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    Cpu,
    Memory {
        desired: usize,
    },
    Table {
        desired: usize,
    },
    /// The call's pending cache writes went past [`Limits::cache_effects`].
    CacheEffects(EffectsBreach),
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
    /// The current call's cache, whose writes wait in an overlay until the call succeeds.
    pub(crate) call_cache: CallCache,
    /// The engine's counters: this instance's life and memory are counted there.
    engine_stats: Arc<EngineStats>,
    /// Linear memory this instance holds, in bytes.
    memory_bytes: usize,
}

impl HostState {
    /// Linear memory this instance holds, in bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.engine_stats.instance_ended(self.memory_bytes);
    }
}

impl HostState {
    pub(crate) fn new(context: FunctionContext, limits: Limits, engine_stats: Arc<EngineStats>) -> Self {
        engine_stats.instance_started();
        let sink = context.log_sink.clone();
        let stdout = GuestStream::stdout(context.name.clone(), sink.clone(), limits.max_log_line_bytes);
        let stderr = GuestStream::stderr(context.name.clone(), sink, limits.max_log_line_bytes);
        // Nothing is granted: no preopened directories, no environment, no arguments, and
        // (the WASI default since wasmtime 48) no network.
        let wasi = WasiCtx::builder().stdout(stdout).stderr(stderr.clone()).build();
        let call_cache = context.cache.begin_call(limits.cache_effects);
        HostState {
            wasi,
            table: ResourceTable::new(),
            context,
            stderr,
            limits,
            cpu_ticks: 0,
            breach: None,
            cache_unavailable: 0,
            call_cache,
            engine_stats,
            memory_bytes: 0,
        }
    }

    /// Resets the per-call state. The call's cache writes start from `held` (the batch's
    /// overlay in exactly-once mode) or from nothing.
    pub(crate) fn start_call(&mut self, held: Option<&CallCache>) {
        self.cpu_ticks = 0;
        self.breach = None;
        self.cache_unavailable = 0;
        self.call_cache = match held {
            Some(held) => held.clone(),
            None => self.context.cache.begin_call(self.limits.cache_effects),
        };
        self.stderr.start_call();
    }

    /// The cache writes of the call that just ended, leaving an empty overlay in their place.
    pub(crate) fn take_cache_effects(&mut self) -> CallCache {
        let fresh = self.context.cache.begin_call(self.limits.cache_effects);
        std::mem::replace(&mut self.call_cache, fresh)
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

impl types::Host for HostState {}
impl types_v02::Host for HostState {}

/// Links every import of the Sluice world (WASI included) into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    types_v02::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    cache::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    Ok(())
}
