//! The WebAssembly side: the host calls go to the component's imports, and the `process`
//! export drives the user's function. Only compiled for `wasm32`.

use std::sync::Arc;

use sluice_contract::layout::{self, NO_TIMESTAMP, NULL};

use crate::__private::bindings::sluice::function::{cache as wit_cache, config as wit_config, log as wit_log, types};
use crate::cache::CacheError;
use crate::log::Level;
use crate::record::{HeaderRange, Headers};
use crate::{Output, Outputs, Record, Result};

/// The `process` export's argument.
pub type Batch = types::InputBatch;
/// The `process` export's result.
pub type BatchResults = types::BatchResults;

/// The body of the generated `process` export: one call of `function` per record, in order,
/// each with an empty [`Outputs`]. Records share the batch's bytes (a key or value is a range
/// of them, never a copy); each record's outputs are copied into the results' one buffer, and
/// dropped, as soon as the function returns.
pub fn process_batch<F>(batch: Batch, mut function: F) -> BatchResults
where
    F: FnMut(&Record, &mut Outputs) -> Result<()>,
{
    let types::InputBatch {
        topic,
        partition,
        offsets,
        timestamps,
        key_lengths,
        value_lengths,
        header_counts,
        header_lengths,
        data,
    } = batch;
    // Where each record's key, value and headers are in `data`: its parts follow each other,
    // and the lengths say where each ends.
    let mut end = 0;
    let mut next = |len: usize| {
        end += len;
        end - len..end
    };
    let mut header_lengths = header_lengths.chunks_exact(2);
    let mut header_ranges = Vec::with_capacity(header_lengths.len());
    let mut layout = Vec::with_capacity(offsets.len());
    for ((key, value), count) in key_lengths.iter().zip(&value_lengths).zip(&header_counts) {
        let key = nullable(*key).map(&mut next);
        let value = nullable(*value).map(&mut next);
        let first = header_ranges.len();
        for pair in header_lengths.by_ref().take(*count as usize) {
            header_ranges.push(HeaderRange { key: next(pair[0] as usize), value: next(pair[1] as usize) });
        }
        layout.push((key, value, first..header_ranges.len()));
    }
    let topic: Arc<str> = Arc::from(topic);
    let data: Arc<[u8]> = Arc::from(data);
    let header_ranges: Arc<[HeaderRange]> = Arc::from(header_ranges);
    let mut results = Results::with_capacity(offsets.len(), data.len());
    // One list of outputs serves every record: emptied after each, it allocates only to grow.
    let mut outputs = Outputs::new();
    for (input, (key, value, headers)) in layout.into_iter().enumerate() {
        let record = Record {
            topic: topic.clone(),
            partition,
            offset: offsets[input],
            timestamp_ms: Some(timestamps[input]).filter(|&t| t != NO_TIMESTAMP),
            data: data.clone(),
            key,
            value,
            headers: Headers::in_batch(header_ranges.clone(), headers),
        };
        let input = input as u32;
        match function(&record, &mut outputs) {
            // Each output is copied into the results and dropped as soon as its record is done.
            Ok(()) => {
                results.reserve(outputs.iter().map(Output::byte_len).sum());
                outputs.iter().for_each(|output| results.push(input, output));
                outputs.clear();
            }
            Err(error) => {
                outputs.clear();
                let (message, retryable) = error.into_parts();
                results.wire.errors.push(types::RecordError { input, message, retryable });
            }
        }
    }
    results.wire
}

/// The results of a batch as they are built: each output's bytes appended to `data`, its
/// lengths to the columns.
struct Results {
    wire: BatchResults,
}

impl Results {
    fn with_capacity(outputs: usize, bytes: usize) -> Self {
        Results {
            wire: BatchResults {
                inputs: Vec::with_capacity(outputs),
                key_lengths: Vec::with_capacity(outputs),
                value_lengths: Vec::with_capacity(outputs),
                header_counts: Vec::with_capacity(outputs),
                header_lengths: Vec::new(),
                targets: Vec::with_capacity(outputs),
                target_names: Vec::new(),
                data: Vec::with_capacity(bytes),
                errors: Vec::new(),
            },
        }
    }

    /// Makes room for `bytes` more: exactly that much for a large record, so that a record's
    /// outputs and their copy are in memory together at most once, and at least the size so
    /// far, so that many small records copy the buffer a few times only.
    fn reserve(&mut self, bytes: usize) {
        let data = &mut self.wire.data;
        if data.capacity() - data.len() < bytes {
            data.reserve_exact(bytes.max(data.len()));
        }
    }

    fn push(&mut self, input: u32, output: &Output) {
        let wire = &mut self.wire;
        wire.inputs.push(input);
        wire.key_lengths.push(layout::append(&mut wire.data, output.key()));
        wire.value_lengths.push(layout::append(&mut wire.data, output.value()));
        let header_count = output.headers.len();
        wire.header_counts.push(header_count as u32);
        if header_count > 0 {
            output.headers.each(&output.source, |name, value| {
                layout::append_header(&mut wire.data, &mut wire.header_lengths, name, value);
            });
        }
        let target =
            output.target.as_deref().map(|target| match wire.target_names.iter().position(|name| name == target) {
                Some(index) => index,
                None => {
                    wire.target_names.push(target.to_owned());
                    wire.target_names.len() - 1
                }
            });
        wire.targets.push(target.map_or(NULL, |index| index as i32));
    }
}

/// The length of a key or value, `None` for a null one (length -1).
fn nullable(length: i32) -> Option<usize> {
    usize::try_from(length).ok()
}

fn cache_error_from(error: wit_cache::CacheError) -> CacheError {
    match error {
        wit_cache::CacheError::Unavailable(m) => CacheError::Unavailable(m),
        wit_cache::CacheError::InvalidKey(m) => CacheError::InvalidKey(m),
        wit_cache::CacheError::TooLarge(m) => CacheError::TooLarge(m),
        wit_cache::CacheError::NotANumber(m) => CacheError::NotANumber(m),
        wit_cache::CacheError::InvalidArgument(m) => CacheError::InvalidArgument(m),
        wit_cache::CacheError::Other(m) => CacheError::Other(m),
    }
}

type CacheResult<T> = std::result::Result<T, CacheError>;

pub(crate) fn cache_get(key: &str) -> CacheResult<Option<Vec<u8>>> {
    wit_cache::get(key).map_err(cache_error_from)
}

pub(crate) fn cache_get_many(keys: &[&str]) -> CacheResult<Vec<Option<Vec<u8>>>> {
    wit_cache::get_many(keys).map_err(cache_error_from)
}

pub(crate) fn cache_set(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> CacheResult<()> {
    wit_cache::set(key, value, ttl_seconds).map_err(cache_error_from)
}

pub(crate) fn cache_set_many(entries: &[(&str, &[u8])], ttl_seconds: Option<u32>) -> CacheResult<()> {
    wit_cache::set_many(entries, ttl_seconds).map_err(cache_error_from)
}

pub(crate) fn cache_incr(key: &str, delta: i64, ttl_seconds: Option<u32>) -> CacheResult<i64> {
    wit_cache::incr(key, delta, ttl_seconds).map_err(cache_error_from)
}

pub(crate) fn cache_incr_many(entries: &[(&str, i64)], ttl_seconds: Option<u32>) -> CacheResult<Vec<i64>> {
    wit_cache::incr_many(entries, ttl_seconds).map_err(cache_error_from)
}

pub(crate) fn cache_delete(key: &str) -> CacheResult<bool> {
    wit_cache::delete(key).map_err(cache_error_from)
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit_log::Level::Trace,
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    wit_log::log(level, message);
}

pub(crate) fn config_get(key: &str) -> Option<String> {
    wit_config::get(key)
}

pub(crate) fn config_all() -> Vec<(String, String)> {
    wit_config::get_all()
}
