//! The pipeline's key-value cache, shared by every partition of the pipeline.
//!
//! Every backend (in-memory, Redis, Memcached, and the native [`testing`](crate::testing)
//! stand-in) gives these calls the same meaning, checked by the same code (the
//! `sluice-contract` crate, which the runtime uses too):
//!
//! - **Keys** are 1 to [`MAX_KEY_BYTES`] (200) bytes of UTF-8 without whitespace or control
//!   characters; other keys fail with [`CacheError::InvalidKey`]. The runtime namespaces keys
//!   per pipeline, so two pipelines never see each other's keys unless configured to.
//! - **Values** are at most [`MAX_VALUE_BYTES`] (1,000,000) bytes; larger ones fail with
//!   [`CacheError::TooLarge`].
//! - **TTLs** are whole seconds from 1 to [`MAX_TTL_SECONDS`] (2,592,000, 30 days); `None`
//!   means no expiry. A [`Duration`] is rounded **up** to whole seconds (250 ms becomes 1 s).
//!   Other TTLs (zero, over 30 days) fail with [`CacheError::InvalidArgument`]: a TTL of zero
//!   is an error, not "no expiry". An expired key reads as missing.
//! - **Counters**: [`incr`] creates a missing key as 0, then adds `delta`, so the first call
//!   returns `delta`. The TTL applies only when the call creates the key; incrementing an
//!   existing counter keeps its expiry (a fixed window). Counters are stored as decimal text,
//!   so [`get`] returns e.g. `b"-3"`. A value that is not such text, or a result outside the
//!   `i64` range, fails with [`CacheError::NotANumber`].
//! - **Batches**: [`get_many`], [`set_many`] and [`incr_many`] take at most
//!   [`MAX_BATCH_ENTRIES`] (1,000) keys or entries, else [`CacheError::InvalidArgument`].
//! - **Several broken rules**: a call fails on the first it breaks, in the order key, value,
//!   TTL (`set`, `incr`); batch size, TTL, then each entry (`get_many`, `set_many`,
//!   `incr_many`).
//! - **Outages** fail with [`CacheError::Unavailable`]; converted with `?` into an
//!   [`Error`](crate::Error), that becomes a retryable record error.
//!
//! Delivery is at-least-once, so write to the cache in a way that is safe to repeat: `set`
//! values derived from the record, and count with [`incr`] only where a replay counting twice
//! is acceptable or where the key itself makes the count idempotent.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;

use sluice_contract::cache::limits;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = limits::MAX_KEY_BYTES;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = limits::MAX_VALUE_BYTES;
/// Longest TTL, in seconds (30 days).
pub const MAX_TTL_SECONDS: u32 = limits::MAX_TTL_SECONDS;
/// Most keys or entries in one `get_many`, `set_many` or `incr_many` call.
pub const MAX_BATCH_ENTRIES: usize = limits::MAX_BATCH_KEYS;

/// Why a cache call failed. Each variant carries a message for operators. The same type as
/// the runtime's, from the contract both share.
pub use sluice_contract::cache::CacheError;

/// A TTL as the host takes it: whole seconds, rounded up; too large a TTL saturates, so the host
/// rejects it as out of range.
pub(crate) fn ttl_seconds(ttl: Option<Duration>) -> Option<u32> {
    ttl.map(|d| {
        let seconds = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        u32::try_from(seconds).unwrap_or(u32::MAX)
    })
}

/// The value stored at `key`, or `None` when it is missing or expired.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, CacheError> {
    crate::host::cache_get(key)
}

/// Looks up many keys in one round trip: one entry per key, in order, `None` for each miss.
pub fn get_many(keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
    crate::host::cache_get_many(keys)
}

/// Stores `value` at `key`, replacing any previous value and TTL.
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
    crate::host::cache_set(key, value, ttl_seconds(ttl))
}

/// Stores many entries in one round trip, all with the same TTL.
pub fn set_many(entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<(), CacheError> {
    crate::host::cache_set_many(entries, ttl_seconds(ttl))
}

/// Adds `delta` (possibly negative) to the counter at `key` and returns the new value.
///
/// A missing key starts at 0; `ttl` applies only when this call creates the key.
pub fn incr(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, CacheError> {
    crate::host::cache_incr(key, delta, ttl_seconds(ttl))
}

/// Applies many increments in one round trip, in order, all with the same TTL, and returns the
/// new values in order. A key may appear more than once; each occurrence sees the previous ones.
/// When one entry fails, the call fails and earlier entries may have been applied.
pub fn incr_many(entries: &[(&str, i64)], ttl: Option<Duration>) -> Result<Vec<i64>, CacheError> {
    crate::host::cache_incr_many(entries, ttl_seconds(ttl))
}

/// Removes `key`; `true` when it existed.
pub fn delete(key: &str) -> Result<bool, CacheError> {
    crate::host::cache_delete(key)
}

/// The value at `key` parsed as JSON, or `None` when it is missing or expired.
///
/// # Errors
///
/// The cache error (retryable when the cache is unavailable), or a fatal error when the stored
/// bytes are not JSON of type `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    match get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

/// Stores `value` serialized as JSON at `key`.
///
/// # Errors
///
/// The cache error (retryable when the cache is unavailable), or a fatal error when `value`
/// cannot be serialized.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T, ttl: Option<Duration>) -> Result<()> {
    let bytes = serde_json::to_vec(value)?;
    set(key, &bytes, ttl)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(None), None);
        assert_eq!(ttl_seconds(Some(Duration::ZERO)), Some(0));
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1))), Some(1));
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1000))), Some(1));
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1001))), Some(2));
        assert_eq!(ttl_seconds(Some(Duration::from_secs(300))), Some(300));
        assert_eq!(ttl_seconds(Some(Duration::MAX)), Some(u32::MAX));
    }

    #[test]
    fn display_names_the_kind() {
        assert_eq!(CacheError::InvalidKey("empty".into()).to_string(), "invalid cache key: empty");
        assert!(CacheError::Unavailable(String::new()).is_unavailable());
        assert!(!CacheError::TooLarge(String::new()).is_unavailable());
    }
}
