//! The WebAssembly side: the host calls go to the component's imports, and the `process`
//! export drives the user's function. Only compiled for `wasm32`.

use crate::__private::bindings::sluice::function::{cache as wit_cache, config as wit_config, log as wit_log, types};
use crate::cache::CacheError;
use crate::log::Level;
use crate::{Header, Output, Outputs, Record, Result};

/// The `process` export's argument.
pub type Batch = Vec<types::InputRecord>;
/// The `process` export's result.
pub type BatchResults = Vec<types::RecordResult>;

/// The body of the generated `process` export: one call of `function` per record, in order,
/// each with a fresh [`Outputs`], and one result per record. Byte buffers are moved, not copied.
pub fn process_batch<F>(batch: Batch, mut function: F) -> BatchResults
where
    F: FnMut(&Record, &mut Outputs) -> Result<()>,
{
    batch
        .into_iter()
        .map(|input| {
            let record = record_from(input);
            match crate::run_record(&mut function, &record) {
                Ok(outputs) => Ok(outputs.into_iter().map(output_record_from).collect()),
                Err(error) => {
                    let (message, retryable) = error.into_parts();
                    Err(types::RecordError { message, retryable })
                }
            }
        })
        .collect()
}

fn header_from(header: types::Header) -> Header {
    Header { key: header.key, value: header.value }
}

fn record_from(input: types::InputRecord) -> Record {
    Record {
        topic: input.topic,
        partition: input.partition,
        offset: input.offset,
        timestamp_ms: input.timestamp_ms,
        key: input.key,
        value: input.value,
        headers: input.headers.into_iter().map(header_from).collect(),
    }
}

fn output_record_from(output: Output) -> types::OutputRecord {
    types::OutputRecord {
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
