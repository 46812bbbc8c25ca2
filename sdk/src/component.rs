//! The WebAssembly side: the host calls go to the component's imports, and the `process`
//! export drives the user's function. Only compiled for `wasm32`.

use std::ops::Range;
use std::sync::Arc;

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
/// of them, never a copy); outputs move into the results as the function built them.
pub fn process_batch<F>(batch: Batch, mut function: F) -> BatchResults
where
    F: FnMut(&Record, &mut Outputs) -> Result<()>,
{
    let types::InputBatch { topic, partition, data, headers, records } = batch;
    let topic: Arc<str> = Arc::from(topic);
    let data: Arc<[u8]> = Arc::from(data);
    let headers: Arc<[HeaderRange]> =
        headers.iter().map(|h| HeaderRange { key: range(&h.key), value: range(&h.value) }).collect();
    let mut results = BatchResults { outputs: Vec::with_capacity(records.len()), errors: Vec::new() };
    // One list of outputs serves every record: emptied after each, it allocates only to grow.
    let mut outputs = Outputs::new();
    for (input, wire) in records.iter().enumerate() {
        let record = Record {
            topic: topic.clone(),
            partition,
            offset: wire.offset,
            timestamp_ms: wire.timestamp_ms,
            data: data.clone(),
            key: wire.key.as_ref().map(range),
            value: wire.value.as_ref().map(range),
            headers: Headers::in_batch(headers.clone(), range(&wire.headers)),
        };
        let input = input as u32;
        match function(&record, &mut outputs) {
            Ok(()) => results.outputs.extend(outputs.drain().map(|output| output_record(input, output))),
            Err(error) => {
                outputs.drain();
                let (message, retryable) = error.into_parts();
                results.errors.push(types::RecordError { input, message, retryable });
            }
        }
    }
    results
}

/// The bytes or entries a span names, as a range.
fn range(span: &types::Span) -> Range<usize> {
    span.start as usize..span.start as usize + span.len as usize
}

fn output_record(input: u32, output: Output) -> types::OutputRecord {
    types::OutputRecord {
        input,
        key: output.key,
        value: output.value,
        headers: output.headers.into_iter().map(|h| types::Header { key: h.key, value: h.value }).collect(),
        target: output.target,
    }
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
