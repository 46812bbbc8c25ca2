//! The WebAssembly side: the host calls go to the component's imports, and the `process`
//! export drives the user's function. Only compiled for `wasm32`.

use std::sync::Arc;

use sluice_contract::layout::NO_TIMESTAMP;

use crate::__private::bindings::sluice::function::{cache as wit_cache, config as wit_config, log as wit_log, types};
use crate::cache::CacheError;
use crate::log::Level;
use crate::output::Columns;
use crate::record::{HeaderRange, Headers};
use crate::{Outputs, Record, Result};

/// The `process` export's argument.
pub type Batch = types::InputBatch;
/// The `process` export's result.
pub type BatchResults = types::BatchResults;

/// The body of the generated `process` export: one call of `function` per record, in order,
/// each with an empty [`Outputs`]. Records share the batch's bytes (a key or value is a range
/// of them, never a copy); each output's bytes are copied into the results' one buffer, and the
/// output dropped, as soon as it is emitted.
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
    // One list serves every record: each output's bytes go into it as they are emitted, laid
    // out as the results travel, and a failed record's are cut off again.
    let mut outputs = Outputs::for_batch(offsets.len(), data.len());
    let mut errors = Vec::new();
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
        outputs.begin(input);
        if let Err(error) = function(&record, &mut outputs) {
            outputs.discard();
            let (message, retryable) = error.into_parts();
            errors.push(types::RecordError { input, message, retryable });
        }
    }
    let Columns { inputs, key_lengths, value_lengths, header_counts, header_lengths, targets, target_names, data } =
        outputs.into_columns();
    BatchResults {
        inputs,
        key_lengths,
        value_lengths,
        header_counts,
        header_lengths,
        targets,
        target_names,
        data,
        errors,
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
