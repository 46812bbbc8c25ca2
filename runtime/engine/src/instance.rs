//! One running function: a store and an instance of a module, reused batch after batch by
//! one worker (one pipeline partition), and rebuilt after a call that traps or times out.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap, UpdateDeadline};

use super::host::{Breach, FunctionContext, HostState};
use super::{Engine, Limits, Module};
use crate::module::Pre;
use sluice_cache::{CallCache, EffectsBreach};
use sluice_record::batch::bindings::Processor as BatchProcessor;
use sluice_record::batch::{self, bindings::sluice::function::types::BatchResults};
use sluice_record::bindings::Processor;
use sluice_record::{InputRecord, OutputRecord, RecordError, RecordResult};

/// Why a whole batch failed. The instance that failed is discarded; the next call gets a
/// fresh one. Each message names the function and the limit or fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The guest computed for longer than [`Limits::max_cpu_per_call`].
    #[error("{function}: used more than {limit:?} of CPU time in one call (an infinite loop?)")]
    CpuLimit {
        /// The function.
        function: Arc<str>,
        /// The limit.
        limit: Duration,
    },
    /// The call, host calls included, took longer than [`Limits::call_timeout`].
    #[error(
        "{function}: call timed out after {limit:?} of wall-clock time (guest code and host calls such as the cache)"
    )]
    Timeout {
        /// The function.
        function: Arc<str>,
        /// The limit.
        limit: Duration,
    },
    /// The guest tried to grow its memory past [`Limits::max_memory_bytes`].
    #[error("{function}: tried to grow its memory to {desired} bytes, over the {limit} byte limit")]
    MemoryLimit {
        /// The function.
        function: Arc<str>,
        /// The size the guest asked for.
        desired: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest tried to grow a table past [`Limits::max_table_elements`].
    #[error("{function}: tried to grow a table to {desired} elements, over the {limit} element limit")]
    TableLimit {
        /// The function.
        function: Arc<str>,
        /// The size the guest asked for.
        desired: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest overflowed its stack (unbounded recursion).
    #[error("{function}: overflowed its stack (unbounded recursion?)")]
    StackOverflow {
        /// The function.
        function: Arc<str>,
    },
    /// The guest trapped: a panic, an `unreachable`, an out-of-bounds access.
    #[error("{function}: trapped: {trap}{}", stderr_suffix(.guest_stderr))]
    Trap {
        /// The function.
        function: Arc<str>,
        /// What the trap was.
        trap: String,
        /// The last lines the guest wrote to stderr in this call (a Rust panic's message).
        guest_stderr: String,
    },
    /// The batch's outputs are over [`Limits::max_outputs_per_batch`] or
    /// [`Limits::max_output_bytes_per_batch`].
    #[error("{function}: returned {actual} output {what} for one batch, over the {limit} limit")]
    OutputLimit {
        /// The function.
        function: Arc<str>,
        /// `records` or `bytes`.
        what: &'static str,
        /// How many the guest returned.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The call's pending cache writes went past [`Limits::cache_effects`]; none of them was
    /// applied.
    #[error(
        "{function}: its cache writes in one call (records at offsets {offsets}) reached {actual} {what}, over the \
         limit of {limit} per call; none was applied"
    )]
    CacheEffectsLimit {
        /// The function.
        function: Arc<str>,
        /// The offsets of the call's records, `first..=last`.
        offsets: String,
        /// `keys` or `bytes`.
        what: &'static str,
        /// How many the call would have held.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest broke the contract of one result per input record.
    #[error("{function}: returned {actual} results for a batch of {expected} records (one per record is required)")]
    ResultCount {
        /// The function.
        function: Arc<str>,
        /// Records in the batch.
        expected: usize,
        /// Results returned.
        actual: usize,
    },
    /// The guest's results (contract 0.2.0) break their layout: columns that disagree, a
    /// length past the end of the bytes, a record out of the batch or out of order.
    #[error("{function}: returned malformed results: {reason}")]
    MalformedResults {
        /// The function.
        function: Arc<str>,
        /// The entry at fault.
        reason: String,
    },
    /// The module could not be instantiated (its start-up code trapped).
    #[error("{function}: could not be instantiated: {reason}")]
    Instantiate {
        /// The function.
        function: Arc<str>,
        /// Why.
        reason: String,
    },
}

/// The kind of a [`BatchError`], without its details: a stable name for dead-letter headers
/// and metrics, serialised as it (`cpu-limit`, `timeout`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchErrorKind {
    /// [`BatchError::CpuLimit`].
    CpuLimit,
    /// [`BatchError::Timeout`].
    Timeout,
    /// [`BatchError::MemoryLimit`].
    MemoryLimit,
    /// [`BatchError::TableLimit`].
    TableLimit,
    /// [`BatchError::StackOverflow`].
    StackOverflow,
    /// [`BatchError::Trap`].
    Trap,
    /// [`BatchError::OutputLimit`].
    OutputLimit,
    /// [`BatchError::CacheEffectsLimit`].
    CacheEffectsLimit,
    /// [`BatchError::ResultCount`].
    ResultCount,
    /// [`BatchError::MalformedResults`].
    MalformedResults,
    /// [`BatchError::Instantiate`].
    Instantiate,
}

impl BatchErrorKind {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchErrorKind::CpuLimit => "cpu-limit",
            BatchErrorKind::Timeout => "timeout",
            BatchErrorKind::MemoryLimit => "memory-limit",
            BatchErrorKind::TableLimit => "table-limit",
            BatchErrorKind::StackOverflow => "stack-overflow",
            BatchErrorKind::Trap => "trap",
            BatchErrorKind::OutputLimit => "output-limit",
            BatchErrorKind::CacheEffectsLimit => "cache-effects-limit",
            BatchErrorKind::ResultCount => "result-count",
            BatchErrorKind::MalformedResults => "malformed-results",
            BatchErrorKind::Instantiate => "instantiate",
        }
    }
}

impl std::fmt::Display for BatchErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BatchError {
    /// The kind of fault, whose name is used in dead-letter headers and metrics.
    pub fn kind(&self) -> BatchErrorKind {
        match self {
            BatchError::CpuLimit { .. } => BatchErrorKind::CpuLimit,
            BatchError::Timeout { .. } => BatchErrorKind::Timeout,
            BatchError::MemoryLimit { .. } => BatchErrorKind::MemoryLimit,
            BatchError::TableLimit { .. } => BatchErrorKind::TableLimit,
            BatchError::StackOverflow { .. } => BatchErrorKind::StackOverflow,
            BatchError::Trap { .. } => BatchErrorKind::Trap,
            BatchError::OutputLimit { .. } => BatchErrorKind::OutputLimit,
            BatchError::CacheEffectsLimit { .. } => BatchErrorKind::CacheEffectsLimit,
            BatchError::ResultCount { .. } => BatchErrorKind::ResultCount,
            BatchError::MalformedResults { .. } => BatchErrorKind::MalformedResults,
            BatchError::Instantiate { .. } => BatchErrorKind::Instantiate,
        }
    }

    /// `true` when the same records may succeed on another try: a timeout (a slow cache) or
    /// a failed instantiation. Limits, traps and contract breaches are deterministic.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BatchError::Timeout { .. } | BatchError::Instantiate { .. })
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() { String::new() } else { format!(" (guest stderr: {stderr})") }
}

/// A module instantiated for one worker, with its host context and limits.
pub struct FunctionInstance {
    engine: Engine,
    module: Module,
    context: FunctionContext,
    live: Option<Live>,
    /// In exactly-once mode ([`FunctionInstance::hold_effects`]): the cache writes of the
    /// successful calls since the last [`FunctionInstance::take_held_effects`].
    held: Option<CallCache>,
    /// Whether the last call failed and discarded the instance (the next one is a rebuild).
    discarded: bool,
    /// Instances built again after a call discarded the previous one.
    rebuilds: u64,
    /// Instances retired after a successful call for the memory they had grown to.
    retired: u64,
    /// Whether a cache call of the last successful call (or the applying of its writes) found
    /// the backend unavailable.
    outage: bool,
    /// Whether the last call ran on an instance built for it (it served no call before).
    last_call_fresh: bool,
}

struct Live {
    store: Store<HostState>,
    processor: Exports,
    /// Calls the instance has served.
    calls: u64,
}

/// The `process` export of an instance, by contract version.
enum Exports {
    /// 0.2.0: the batch goes in as columns and one buffer of bytes ([`batch::pack`]).
    Batch(BatchProcessor),
    /// 0.1.0: the batch goes in as a list of records.
    Records(Processor),
}

/// What a call returned, in its contract version's shape.
enum Returned {
    Batch(BatchResults),
    Records(Vec<RecordResult>),
}

impl FunctionInstance {
    /// An instance of `module` that will use `context`. Instantiation happens on the first
    /// call, and again after any call that fails.
    pub fn new(engine: &Engine, module: &Module, context: FunctionContext) -> Self {
        FunctionInstance {
            engine: engine.clone(),
            module: module.clone(),
            context,
            live: None,
            held: None,
            discarded: false,
            rebuilds: 0,
            retired: 0,
            outage: false,
            last_call_fresh: false,
        }
    }

    /// From now on, a successful call's cache writes are not applied: they join the overlay
    /// the next call starts from, until the caller takes them ([`Self::take_held_effects`])
    /// and applies them with the batch's position. A failed call's writes are dropped as
    /// always. This is how a batch's effects are applied exactly once.
    pub fn hold_effects(&mut self) {
        if self.held.is_none() {
            self.held = Some(self.context.cache.begin_call(self.engine.limits().cache_effects));
        }
    }

    /// Like [`Self::hold_effects`], over values read in place of the backend's
    /// ([`CallCache::reading_before`]): for running again a batch whose writes were applied.
    pub fn hold_effects_reading_before(&mut self, before: sluice_cache::ValuesBefore) {
        self.held = Some(self.context.cache.begin_call(self.engine.limits().cache_effects).reading_before(before));
    }

    /// Makes `overlay` (taken from this instance) the one the next call starts from again:
    /// the batches of a replay see the writes of the replayed batches before them.
    pub fn continue_from(&mut self, overlay: CallCache) {
        self.held = Some(overlay);
    }

    /// The held writes of the successful calls since the last take (an empty overlay when
    /// effects are not held), leaving an empty one in their place.
    pub fn take_held_effects(&mut self) -> CallCache {
        let fresh = self.context.cache.begin_call(self.engine.limits().cache_effects);
        match &mut self.held {
            Some(held) => std::mem::replace(held, fresh),
            None => fresh,
        }
    }

    /// How many times the instance was built again because a failed call (a trap, a limit, a
    /// timeout) discarded the previous one.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Whether the last call ran on a fresh instance, one that had served no call before. A
    /// call that failed on an instance that had served others may have failed for what they
    /// left behind (a leak growing towards the memory limit), not for its own records.
    pub fn last_call_was_fresh(&self) -> bool {
        self.last_call_fresh
    }

    /// Whether the next call reuses a live instance; `false` after a call that discarded it.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// The linear memory of the live instance, in bytes; `None` when there is none (before
    /// the first call, after a failed call, after retirement).
    pub fn memory_bytes(&self) -> Option<usize> {
        self.live.as_ref().map(|live| live.store.data().memory_bytes())
    }

    /// The module this instance runs.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The host context (name, cache, config).
    pub fn context(&self) -> &FunctionContext {
        &self.context
    }

    /// `true` when a cache call of the last successful call failed as unavailable: its
    /// retryable record errors are then most likely the outage's, not the records'.
    pub fn saw_cache_outage(&self) -> bool {
        self.outage
    }

    /// Instantiates the module now rather than on the first call, so the first batch does
    /// not pay for it (used when switching a worker to a reloaded module).
    pub async fn prepare(&mut self) -> Result<(), BatchError> {
        if self.live.is_none() {
            self.live = Some(self.instantiate().await?);
        }
        Ok(())
    }

    /// How many times an instance was retired after a successful call because its memory had
    /// grown past [`Limits::retire_at_memory_bytes`] (a leak in the guest's language runtime).
    pub fn retired(&self) -> u64 {
        self.retired
    }

    /// A fresh instance, counted as a rebuild when it replaces one a failed call discarded.
    async fn instantiate(&mut self) -> Result<Live, BatchError> {
        if std::mem::take(&mut self.discarded) {
            self.rebuilds += 1;
        }
        instantiate(&self.engine, &self.module, &self.context, self.engine.limits()).await
    }

    /// Runs the guest's `process` on `batch`, consecutive records of one topic partition, and
    /// returns one result per record.
    ///
    /// The call's cache writes are held back while it runs and applied, in one round trip,
    /// only when it returns results that pass the checks; on a [`BatchError`] they are
    /// discarded and no result of the batch is valid (the caller decides whether to retry it
    /// or split it to find the records at fault). When the backend fails to apply them, every
    /// record gets a retryable error instead of its outputs, and the failure counts as a cache
    /// outage ([`FunctionInstance::saw_cache_outage`]) when the backend was unavailable.
    pub async fn process(&mut self, batch: &[InputRecord]) -> Result<Vec<RecordResult>, BatchError> {
        let limits = self.engine.limits().clone();
        let function = self.context.name.clone();
        self.outage = false;
        self.last_call_fresh = self.live.as_ref().is_none_or(|live| live.calls == 0);
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.instantiate().await?,
        };
        // Until the call succeeds, the instance counts as discarded.
        self.discarded = true;
        live.calls += 1;
        live.store.data_mut().start_call(self.held.as_ref());
        live.store.set_epoch_deadline(1);
        let Live { store, processor, .. } = &mut live;
        let call = async {
            match processor {
                Exports::Batch(processor) => {
                    processor.call_process(store, &batch::pack(batch)).await.map(Returned::Batch)
                }
                Exports::Records(processor) => processor.call_process(store, batch).await.map(Returned::Records),
            }
        };
        let returned = match tokio::time::timeout(limits.call_timeout, call).await {
            Ok(Ok(returned)) => returned,
            Ok(Err(error)) => return Err(classify(&function, &limits, live.store.data(), &error, batch)),
            Err(_) => return Err(BatchError::Timeout { function, limit: limits.call_timeout }),
        };
        let effects = live.store.data_mut().take_cache_effects();
        let breach = live.store.data().breach;
        self.outage = live.store.data().cache_unavailable > 0;
        // The instance is sound: keep it for the next batch, whatever the checks below say,
        // unless a leak has grown its memory close to the limit.
        self.discarded = false;
        let retire = live.store.data().memory_bytes() > limits.retire_at_memory_bytes();
        if retire {
            tracing::debug!(function = %function, memory = live.store.data().memory_bytes(), "retiring the instance");
            self.retired += 1;
        } else {
            self.live = Some(live);
        }
        if let Some(Breach::CacheEffects(breach)) = breach {
            return Err(cache_effects_limit(&function, batch, breach));
        }
        let results = match returned {
            Returned::Records(results) => results,
            Returned::Batch(results) => batch::unpack(batch.len(), results)
                .map_err(|e| BatchError::MalformedResults { function: function.clone(), reason: e.to_string() })?,
        };
        check_results(&function, &limits, batch.len(), &results)?;
        if let Some(held) = &mut self.held {
            *held = effects;
            return Ok(results);
        }
        match effects.apply().await {
            Ok(()) => Ok(results),
            Err(error) => {
                if error.is_unavailable() {
                    self.outage = true;
                }
                tracing::warn!(function = %function, "the cache writes of a call could not be applied: {error}");
                let message = format!("{function}: the call's cache writes could not be applied: {error}");
                Ok(batch.iter().map(|_| Err(RecordError { message: message.clone(), retryable: true })).collect())
            }
        }
    }
}

/// A fresh instance of `module` in a new store with `context`, limited by `limits`.
async fn instantiate(
    engine: &Engine,
    module: &Module,
    context: &FunctionContext,
    limits: &Limits,
) -> Result<Live, BatchError> {
    let mut store =
        Store::new(engine.wasmtime(), HostState::new(context.clone(), limits.clone(), engine.stats().clone()));
    store.limiter(|state| state);
    let budget = limits.cpu_ticks_per_call();
    store.epoch_deadline_callback(move |mut store| {
        let state = store.data_mut();
        state.cpu_ticks += 1;
        if state.cpu_ticks > budget {
            state.breach = Some(Breach::Cpu);
            return Err(wasmtime::Error::msg("CPU time limit exceeded"));
        }
        // Let other workers on this thread run, then check again after one more tick.
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    let function = context.name.clone();
    let instantiate = async {
        match module.pre() {
            Pre::Batch(pre) => pre.instantiate_async(&mut store).await.map(Exports::Batch),
            Pre::Records(pre) => pre.instantiate_async(&mut store).await.map(Exports::Records),
        }
    };
    match tokio::time::timeout(limits.call_timeout, instantiate).await {
        Ok(Ok(processor)) => Ok(Live { store, processor, calls: 0 }),
        Ok(Err(e)) => Err(BatchError::Instantiate { function, reason: format!("{e:#}") }),
        Err(_) => Err(BatchError::Timeout { function, limit: limits.call_timeout }),
    }
}

/// Names the limit or fault behind a failed call.
fn classify(
    function: &Arc<str>,
    limits: &Limits,
    state: &HostState,
    error: &wasmtime::Error,
    batch: &[InputRecord],
) -> BatchError {
    let function = function.clone();
    match state.breach {
        Some(Breach::CacheEffects(breach)) => cache_effects_limit(&function, batch, breach),
        Some(Breach::Cpu) => BatchError::CpuLimit { function, limit: limits.max_cpu_per_call },
        Some(Breach::Memory { desired }) => {
            BatchError::MemoryLimit { function, desired, limit: limits.max_memory_bytes }
        }
        Some(Breach::Table { desired }) => {
            BatchError::TableLimit { function, desired, limit: limits.max_table_elements }
        }
        None => match error.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => BatchError::StackOverflow { function },
            Some(Trap::MemoryOutOfBounds) => BatchError::Trap {
                function,
                trap: format!(
                    "{} (a bad pointer, or the guest's stack in linear memory overflowing)",
                    Trap::MemoryOutOfBounds
                ),
                guest_stderr: state.stderr.recent(),
            },
            Some(trap) => BatchError::Trap { function, trap: trap.to_string(), guest_stderr: state.stderr.recent() },
            None => BatchError::Trap { function, trap: format!("{error:#}"), guest_stderr: state.stderr.recent() },
        },
    }
}

/// The error of a call whose pending cache writes went past their limit.
fn cache_effects_limit(function: &Arc<str>, batch: &[InputRecord], breach: EffectsBreach) -> BatchError {
    let offsets = sluice_record::offset_range(batch);
    BatchError::CacheEffectsLimit {
        function: function.clone(),
        offsets,
        what: breach.what,
        actual: breach.actual,
        limit: breach.limit,
    }
}

/// Checks the contract and the output limits on what a call returned.
fn check_results(
    function: &Arc<str>,
    limits: &Limits,
    expected: usize,
    results: &[RecordResult],
) -> Result<(), BatchError> {
    if results.len() != expected {
        return Err(BatchError::ResultCount { function: function.clone(), expected, actual: results.len() });
    }
    let outputs = results.iter().flatten().flatten();
    let (count, bytes) = outputs.fold((0, 0), |(count, bytes), output| (count + 1, bytes + output_bytes(output)));
    let over = |what, actual, limit| BatchError::OutputLimit { function: function.clone(), what, actual, limit };
    if count > limits.max_outputs_per_batch {
        return Err(over("records", count, limits.max_outputs_per_batch));
    }
    if bytes > limits.max_output_bytes_per_batch {
        return Err(over("bytes", bytes, limits.max_output_bytes_per_batch));
    }
    Ok(())
}

/// Bytes of one output record: key, value, and headers.
pub(crate) fn output_bytes(output: &OutputRecord) -> usize {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    len(&output.key) + len(&output.value) + output.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
}
