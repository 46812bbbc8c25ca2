//! Every limit the engine puts on a function, with its default, in one place.
//!
//! A guest that breaks a limit fails its batch with a [`super::BatchError`] naming the limit;
//! other workers are not disturbed. The limits on cache calls live in
//! [`sluice_cache::limits`].

use std::time::Duration;

pub use sluice_cache::EffectLimits;

/// Limits on modules and on each running function instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest module (component binary) accepted, in bytes. Default 32 MiB: a Rust function
    /// is a few hundred KiB; a Python one (componentize-py) about 18 MB.
    pub max_module_bytes: usize,
    /// Largest linear memory of one instance, in bytes. Default 64 MiB.
    pub max_memory_bytes: usize,
    /// Guest CPU time allowed per `process` call, measured in epoch ticks of
    /// [`Limits::EPOCH_TICK`] while guest code runs. Default 2 s.
    pub max_cpu_per_call: Duration,
    /// Wall-clock time allowed per `process` call, including the host calls it makes (a slow
    /// cache). Default 10 s.
    pub call_timeout: Duration,
    /// Most output records one batch may return. Default 250,000 (500 records of 500 outputs).
    pub max_outputs_per_batch: usize,
    /// Most output bytes (keys, values and headers) one batch may return. Default 16 MiB.
    pub max_output_bytes_per_batch: usize,
    /// Most bytes of native stack guest code may use; deeper recursion traps as a stack
    /// overflow. Default 512 KiB.
    pub max_wasm_stack_bytes: usize,
    /// Most elements of one instance's tables. Default 100,000.
    pub max_table_elements: usize,
    /// Most function instances alive at once in one engine (one per pipeline partition
    /// worker), which sizes the pooling allocator. Default 1,000.
    pub max_instances: u32,
    /// Longest guest log line (through `log` or stdout/stderr) kept, in bytes; the rest of
    /// the line is cut. Default 4 KiB.
    pub max_log_line_bytes: usize,
    /// Most cache writes one call holds back until it succeeds (distinct keys, and bytes of
    /// keys and values): see [`sluice_cache::CallCache`]. Default 100,000 keys and 16 MiB.
    pub cache_effects: EffectLimits,
}

impl Limits {
    /// How often the engine's epoch advances: the granularity of the CPU limit, and how often
    /// a long-running guest yields to other workers on its thread.
    pub const EPOCH_TICK: Duration = Duration::from_millis(10);

    /// An instance whose linear memory has grown past this share of
    /// [`Limits::max_memory_bytes`] (in percent) after a successful call is retired: the next
    /// call gets a fresh instance. Some language runtimes leak a little on every call
    /// (componentize-py about 50 bytes per output, componentize-js kilobytes per call);
    /// retiring them before the limit keeps the leak from ever trapping a call.
    pub const RETIRE_AT_MEMORY_PERCENT: usize = 75;

    /// The memory past which an instance is retired after a call
    /// ([`Limits::RETIRE_AT_MEMORY_PERCENT`]).
    pub fn retire_at_memory_bytes(&self) -> usize {
        (self.max_memory_bytes as u64 * Self::RETIRE_AT_MEMORY_PERCENT as u64 / 100) as usize
    }

    /// The CPU budget of one call in epoch ticks (at least one).
    pub(crate) fn cpu_ticks_per_call(&self) -> u64 {
        (self.max_cpu_per_call.as_millis() / Self::EPOCH_TICK.as_millis()).max(1) as u64
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 32 * 1024 * 1024,
            max_memory_bytes: 64 * 1024 * 1024,
            max_cpu_per_call: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
            max_outputs_per_batch: 250_000,
            max_output_bytes_per_batch: 16 * 1024 * 1024,
            max_wasm_stack_bytes: 512 * 1024,
            max_table_elements: 100_000,
            max_instances: 1_000,
            max_log_line_bytes: 4 * 1024,
            cache_effects: EffectLimits::default(),
        }
    }
}
