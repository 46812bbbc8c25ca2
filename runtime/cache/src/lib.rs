//! The cache capability: what a function's `cache` calls run against.
//!
//! This module owns the meaning of a cache call, the same on every backend: key, value, TTL
//! and batch limits ([`limits`]), per-pipeline namespacing ([`Namespace`]), and hit, miss, error
//! and latency accounting ([`CacheStats`]). [`Cache`] is the handle a function instance holds: it checks a
//! call, prefixes the key with the namespace and forwards it to a [`CacheBackend`].
//!
//! Backends only store and fetch: they receive keys that are already valid and namespaced,
//! and must not re-check limits. Each backend lives in a submodule of its own: [`MemoryCache`]
//! (in-process), [`RedisCache`] and [`MemcachedCache`]; [`connect`] builds one from a URL
//! ([`CacheUrl`] documents the forms and settings).
//!
//! Every backend gives each call the same meaning, down to the text of a counter and the errors;
//! the integration suite runs one set of checks, unchanged, against all three.

pub mod latency;
mod memcached;
mod memory;
mod redis;
mod url;

pub use latency::{LATENCY_BUCKET_BOUNDS_MICROS, LATENCY_BUCKETS, LatencyHistogram, LatencySnapshot};
#[cfg(feature = "memcached")]
pub use memcached::MemcachedCache;
pub use memcached::MemcachedConfig;
pub use memory::MemoryCache;
#[cfg(feature = "redis")]
pub use redis::RedisCache;
pub use redis::{RedisConfig, RedisTls};
pub use url::{CacheUrl, connect, redact_url};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// Limits on cache calls. They are the same on every backend, so a function that works on the
/// in-memory cache works unchanged on Memcached or Redis.
pub mod limits {
    /// Longest key a function may use, in bytes (before the namespace prefix). Memcached allows
    /// 250 bytes in all; the rest is kept for the namespace.
    pub const MAX_KEY_BYTES: usize = 200;
    /// Longest namespace, in bytes.
    pub const MAX_NAMESPACE_BYTES: usize = 48;
    /// Largest value, in bytes. Memcached's default item size is 1 MiB including its own
    /// overhead; this leaves room for it.
    pub const MAX_VALUE_BYTES: usize = 1_000_000;
    /// Longest TTL, in seconds (30 days). Memcached reads larger TTLs as absolute Unix times.
    pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 60 * 60;
    /// Most keys in one `get-many` or entries in one `set-many`.
    pub const MAX_BATCH_KEYS: usize = 1_000;
    /// Most bytes the host buffers for one `get-many` answer before handing it to the guest.
    pub const MAX_HOST_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
}

/// Why a cache call failed. The variants match the WIT `cache-error` variant one to one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The backend could not be reached or did not answer in time.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// The key is empty, too long, or has forbidden characters.
    #[error("invalid cache key: {0}")]
    InvalidKey(String),
    /// A value (or a batch answer) is larger than the limit.
    #[error("cache value too large: {0}")]
    TooLarge(String),
    /// `incr` on a value that is not a signed 64-bit decimal, or an overflow.
    #[error("cache value is not a number: {0}")]
    NotANumber(String),
    /// Another argument is out of range.
    #[error("invalid cache argument: {0}")]
    InvalidArgument(String),
    /// Any other backend failure.
    #[error("cache error: {0}")]
    Other(String),
}

/// How the message of an [`CacheError::Unavailable`] for a deadline that passed starts; see
/// [`CacheError::timed_out`].
const TIMED_OUT_PREFIX: &str = "timed out after ";

impl CacheError {
    /// `true` when the same call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CacheError::Unavailable(_))
    }

    /// The [`CacheError::Unavailable`] of a call to `backend` (e.g. `redis at 10.0.0.5:6379`)
    /// that did not complete within `timeout`. Backends build every deadline error with this, so
    /// [`CacheError::is_timeout`] can tell a slow backend from an unreachable one.
    pub fn timed_out(backend: &str, timeout: Duration) -> CacheError {
        CacheError::Unavailable(format!("{TIMED_OUT_PREFIX}{} ms: {backend} did not answer", timeout.as_millis()))
    }

    /// `true` for an [`CacheError::Unavailable`] made by [`CacheError::timed_out`]: the backend
    /// did not answer in time (as opposed to refusing or dropping the connection).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CacheError::Unavailable(message) if message.starts_with(TIMED_OUT_PREFIX))
    }
}

/// A storage backend for [`Cache`]. Implementations receive keys that are already validated
/// and namespaced, values within [`limits::MAX_VALUE_BYTES`], and TTLs within range.
///
/// A backend behind a network bounds every call by its own deadline and reports a miss of it
/// with [`CacheError::timed_out`], and a server it cannot reach with another
/// [`CacheError::Unavailable`]; it recovers by itself once the server is back.
#[async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    /// Short name for logs and metrics: `memory`, `redis`, `memcached`.
    fn kind(&self) -> &'static str;
    /// Value at `key`, `None` when missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Values at `keys`, in order, in as few round trips as the backend allows.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError>;
    /// Stores `value` at `key`, replacing value and TTL.
    async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError>;
    /// Stores many entries with one TTL, in as few round trips as the backend allows.
    async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError>;
    /// Adds `delta` to the signed 64-bit counter at `key`, creating it at 0 with `ttl_seconds`
    /// when missing; an existing counter keeps its expiry. Returns the new value.
    async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError>;
    /// Applies `incr` to each entry in order, in as few round trips as the backend allows.
    /// The default runs one `incr` after another.
    async fn incr_many(&self, entries: &[(String, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        let mut values = Vec::with_capacity(entries.len());
        for (key, delta) in entries {
            values.push(self.incr(key, *delta, ttl_seconds).await?);
        }
        Ok(values)
    }
    /// Removes `key`; `true` when it existed.
    async fn delete(&self, key: &str) -> Result<bool, CacheError>;
}

/// The prefix that keeps one pipeline's keys apart from another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// A namespace of 1 to [`limits::MAX_NAMESPACE_BYTES`] ASCII letters, digits, `_`, `-`, `.`.
    pub fn new(name: &str) -> Result<Self, CacheError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty() || name.len() > limits::MAX_NAMESPACE_BYTES || !name.chars().all(valid_char) {
            return Err(CacheError::InvalidArgument(format!(
                "namespace {name:?} must be 1 to {} ASCII letters, digits, '_', '-' or '.'",
                limits::MAX_NAMESPACE_BYTES
            )));
        }
        Ok(Namespace(name.into()))
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The backend key for a function's `key`: `<namespace>:<key>`.
    fn qualify(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.0.len() + 1 + key.len());
        full.push_str(&self.0);
        full.push(':');
        full.push_str(key);
        full
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counters of one [`Cache`]: what operators watch first (the hit ratio) and what went wrong.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Keys found by `get` and `get-many`.
    pub hits: AtomicU64,
    /// Keys missing in `get` and `get-many`.
    pub misses: AtomicU64,
    /// Calls that wrote (`set`, `set-many`, `incr`, `delete`).
    pub writes: AtomicU64,
    /// Calls that failed with `unavailable`: `timeouts` plus `connection_errors`.
    pub unavailable: AtomicU64,
    /// Of the `unavailable` calls, those whose backend did not answer in time.
    pub timeouts: AtomicU64,
    /// Of the `unavailable` calls, those whose backend could not be reached (connection refused,
    /// reset or closed).
    pub connection_errors: AtomicU64,
    /// Calls that failed otherwise, including refused arguments.
    pub errors: AtomicU64,
    /// How long the backend took, for every call that reached it (failed ones included).
    pub latency: LatencyHistogram,
    /// Times the backend became unavailable (a call failed `unavailable` after one that
    /// reached it, or as the first call).
    pub outages: AtomicU64,
    /// Since when the backend has been unavailable, during an outage.
    outage_since: std::sync::Mutex<Option<Instant>>,
}

/// A plain copy of [`CacheStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStatsSnapshot {
    /// Keys found.
    pub hits: u64,
    /// Keys missing.
    pub misses: u64,
    /// Write calls.
    pub writes: u64,
    /// Calls that failed with `unavailable`.
    pub unavailable: u64,
    /// Unavailable calls that timed out.
    pub timeouts: u64,
    /// Unavailable calls that could not reach the backend.
    pub connection_errors: u64,
    /// Other failed calls.
    pub errors: u64,
    /// Backend call latency.
    pub latency: LatencySnapshot,
    /// Times the backend became unavailable.
    pub outages: u64,
    /// How long the backend has been unavailable, during an outage, in milliseconds.
    pub unavailable_for_ms: Option<u64>,
}

impl CacheStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        CacheStatsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            connection_errors: self.connection_errors.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
            outages: self.outages.load(Ordering::Relaxed),
            unavailable_for_ms: self
                .outage_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|since| since.elapsed().as_millis() as u64),
        }
    }

    fn count<T>(&self, result: &Result<T, CacheError>) {
        if let Err(e) = result {
            if e.is_unavailable() {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                let cause = if e.is_timeout() { &self.timeouts } else { &self.connection_errors };
                cause.fetch_add(1, Ordering::Relaxed);
            } else {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count_lookups<'a>(&self, values: impl IntoIterator<Item = &'a Option<Vec<u8>>>) {
        let (mut hits, mut misses) = (0, 0);
        for value in values {
            if value.is_some() { hits += 1 } else { misses += 1 }
        }
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }
}

/// A pipeline's view of a cache: checks each call against [`limits`], namespaces its keys and
/// counts it. Cheap to clone; clones share the backend and the counters.
#[derive(Clone)]
pub struct Cache {
    backend: Arc<dyn CacheBackend>,
    namespace: Namespace,
    stats: Arc<CacheStats>,
    /// Who uses this handle (a pipeline's name), for log lines.
    owner: Arc<str>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("backend", &self.backend.kind()).field("namespace", &self.namespace).finish()
    }
}

impl Cache {
    /// A handle on `backend` whose keys live under `namespace`.
    pub fn new(backend: Arc<dyn CacheBackend>, namespace: Namespace) -> Self {
        let owner = Arc::from(namespace.to_string());
        Cache { backend, namespace, stats: Arc::default(), owner }
    }

    /// This handle, naming `owner` (a pipeline) in its log lines.
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = Arc::from(owner);
        self
    }

    /// The backend's kind (`memory`, `redis`, `memcached`).
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// This handle's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// This handle's counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// See the WIT `cache.get`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let result = match self.key(key) {
            Ok(key) => self.timed(self.backend.get(&key)).await,
            Err(e) => Err(e),
        };
        if let Ok(value) = &result {
            self.stats.count_lookups([value]);
        }
        self.stats.count(&result);
        result
    }

    /// See the WIT `cache.get-many`.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let result = self.get_many_checked(keys).await;
        if let Ok(values) = &result {
            self.stats.count_lookups(values);
        }
        self.stats.count(&result);
        result
    }

    async fn get_many_checked(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        check_batch_len(keys.len())?;
        let keys = keys.iter().map(|k| self.key(k)).collect::<Result<Vec<_>, _>>()?;
        let values = self.timed(self.backend.get_many(&keys)).await?;
        let buffered: usize = values.iter().flatten().map(Vec::len).sum();
        if buffered > limits::MAX_HOST_BUFFERED_BYTES {
            return Err(CacheError::TooLarge(format!(
                "get-many answer of {buffered} bytes is over the {} byte limit; ask for fewer keys",
                limits::MAX_HOST_BUFFERED_BYTES
            )));
        }
        Ok(values)
    }

    /// See the WIT `cache.set`.
    pub async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = async {
            let key = self.key(key)?;
            check_value(value)?;
            check_ttl(ttl_seconds)?;
            self.timed(self.backend.set(&key, value, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.set-many`.
    pub async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = async {
            check_batch_len(entries.len())?;
            check_ttl(ttl_seconds)?;
            let entries = entries
                .iter()
                .map(|(k, v)| Ok((self.key(k)?, check_value(v).map(|()| v.clone())?)))
                .collect::<Result<Vec<_>, CacheError>>()?;
            self.timed(self.backend.set_many(&entries, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.incr`.
    pub async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let result = async {
            let key = self.key(key)?;
            check_ttl(ttl_seconds)?;
            self.timed(self.backend.incr(&key, delta, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.incr-many`.
    pub async fn incr_many(&self, entries: &[(String, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        let result = async {
            check_batch_len(entries.len())?;
            check_ttl(ttl_seconds)?;
            let entries =
                entries.iter().map(|(k, d)| Ok((self.key(k)?, *d))).collect::<Result<Vec<_>, CacheError>>()?;
            self.timed(self.backend.incr_many(&entries, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.delete`.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let result = match self.key(key) {
            Ok(key) => self.timed(self.backend.delete(&key)).await,
            Err(e) => Err(e),
        };
        self.count_write(&result);
        result
    }

    /// Runs one backend call, recording how long it took.
    async fn timed<T>(&self, call: impl Future<Output = Result<T, CacheError>>) -> Result<T, CacheError> {
        let started = Instant::now();
        let result = call.await;
        self.stats.latency.record(started.elapsed());
        self.watch_outage(&result);
        result
    }

    /// Logs one line when the backend becomes unavailable and one when it answers again, with
    /// the pipeline's name, however many calls fail in between.
    fn watch_outage<T>(&self, result: &Result<T, CacheError>) {
        let unavailable = result.as_ref().err().filter(|e| e.is_unavailable());
        let mut since = self.stats.outage_since.lock().unwrap_or_else(|p| p.into_inner());
        match (unavailable, *since) {
            (Some(error), None) => {
                *since = Some(Instant::now());
                self.stats.outages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    pipeline = %self.owner, cache = self.backend.kind(),
                    "the cache is unavailable ({error}); its calls fail as retryable and records wait until it is back"
                );
            }
            (None, Some(started)) => {
                *since = None;
                tracing::info!(
                    pipeline = %self.owner, cache = self.backend.kind(),
                    "the cache answers again after {:.1?}", started.elapsed()
                );
            }
            _ => {}
        }
    }

    fn count_write<T>(&self, result: &Result<T, CacheError>) {
        if result.is_ok() {
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.count(result);
    }

    fn key(&self, key: &str) -> Result<String, CacheError> {
        check_key(key)?;
        Ok(self.namespace.qualify(key))
    }
}

/// Checks a function's key against the rules every backend shares (those of memcached's text
/// protocol): 1 to [`limits::MAX_KEY_BYTES`] bytes, no spaces or control characters.
pub fn check_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() {
        return Err(CacheError::InvalidKey("key is empty".into()));
    }
    if key.len() > limits::MAX_KEY_BYTES {
        return Err(CacheError::InvalidKey(format!(
            "key of {} bytes is over the {} byte limit",
            key.len(),
            limits::MAX_KEY_BYTES
        )));
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(CacheError::InvalidKey(format!(
            "key {key:?} contains {c:?}; spaces and control characters are not allowed"
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), CacheError> {
    if value.len() > limits::MAX_VALUE_BYTES {
        return Err(CacheError::TooLarge(format!(
            "value of {} bytes is over the {} byte limit",
            value.len(),
            limits::MAX_VALUE_BYTES
        )));
    }
    Ok(())
}

fn check_ttl(ttl_seconds: Option<u32>) -> Result<(), CacheError> {
    match ttl_seconds {
        Some(ttl) if ttl == 0 || ttl > limits::MAX_TTL_SECONDS => Err(CacheError::InvalidArgument(format!(
            "TTL of {ttl} s is out of range: use 1 to {} s, or no TTL",
            limits::MAX_TTL_SECONDS
        ))),
        _ => Ok(()),
    }
}

fn check_batch_len(len: usize) -> Result<(), CacheError> {
    if len > limits::MAX_BATCH_KEYS {
        return Err(CacheError::InvalidArgument(format!(
            "{len} keys in one call is over the {} key limit",
            limits::MAX_BATCH_KEYS
        )));
    }
    Ok(())
}

/// Parses a stored counter: signed 64-bit decimal text in its one canonical form, the form
/// `incr` writes: an optional `-`, then digits without leading zeros (`0`, `42`, `-3`; not `007`,
/// `+5`, `-0` or ` 5`). Shared by backends that keep counters as text and must agree on what a
/// number is; the canonical form is what Redis' `INCRBY` accepts, so all backends agree.
pub fn parse_counter(key: &str, raw: &[u8]) -> Result<i64, CacheError> {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    let canonical = match digits {
        [b'0'] => digits.len() == raw.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical
        .then(|| std::str::from_utf8(raw).ok()?.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| CacheError::NotANumber(format!("value at {key:?} is not a signed 64-bit decimal integer")))
}

/// Adds `delta` to `current`, or says why it cannot.
pub fn add_to_counter(key: &str, current: i64, delta: i64) -> Result<i64, CacheError> {
    current
        .checked_add(delta)
        .ok_or_else(|| CacheError::NotANumber(format!("incr of {current} by {delta} at {key:?} overflows 64 bits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_only_in_their_canonical_decimal_form() {
        for (text, value) in [("0", 0), ("42", 42), ("-3", -3), ("9223372036854775807", i64::MAX)] {
            assert_eq!(parse_counter("k", text.as_bytes()), Ok(value), "{text}");
        }
        assert_eq!(parse_counter("k", b"-9223372036854775808"), Ok(i64::MIN));
        for text in ["", "-", "007", "+5", "-0", " 5", "5 ", "1.5", "1e3", "9223372036854775808", "٣"] {
            assert!(matches!(parse_counter("k", text.as_bytes()), Err(CacheError::NotANumber(_))), "{text:?}");
        }
    }

    #[test]
    fn timeouts_are_told_apart_from_other_unavailability() {
        let timeout = CacheError::timed_out("redis at h:1", Duration::from_millis(500));
        assert!(timeout.is_timeout() && timeout.is_unavailable());
        assert_eq!(timeout.to_string(), "cache unavailable: timed out after 500 ms: redis at h:1 did not answer");
        assert!(!CacheError::Unavailable("redis at h:1 is not reachable".into()).is_timeout());
        assert!(!CacheError::Other("timed out after 1 ms".into()).is_timeout());

        let stats = CacheStats::default();
        stats.count::<()>(&Err(timeout));
        stats.count::<()>(&Err(CacheError::Unavailable("refused".into())));
        stats.count::<()>(&Err(CacheError::InvalidKey("empty".into())));
        let snapshot = stats.snapshot();
        assert_eq!(
            (snapshot.unavailable, snapshot.timeouts, snapshot.connection_errors, snapshot.errors),
            (2, 1, 1, 1)
        );
    }

    /// A backend that is down while its flag says so.
    struct Flaky(std::sync::atomic::AtomicBool);

    #[async_trait::async_trait]
    impl CacheBackend for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CacheError> {
            match self.0.load(Ordering::Relaxed) {
                true => Err(CacheError::Unavailable("flaky is down".into())),
                false => Ok(None),
            }
        }
        async fn get_many(&self, _: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
            unreachable!()
        }
        async fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), CacheError> {
            unreachable!()
        }
        async fn set_many(&self, _: &[(String, Vec<u8>)], _: Option<u32>) -> Result<(), CacheError> {
            unreachable!()
        }
        async fn incr(&self, _: &str, _: i64, _: Option<u32>) -> Result<i64, CacheError> {
            unreachable!()
        }
        async fn delete(&self, _: &str) -> Result<bool, CacheError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn an_outage_is_one_outage_however_many_calls_fail_and_ends_at_the_first_answer() {
        let backend = Arc::new(Flaky(std::sync::atomic::AtomicBool::new(true)));
        let cache = Cache::new(backend.clone(), Namespace::new("ns").unwrap()).owned_by("clicks");
        for _ in 0..50 {
            assert!(cache.get("k").await.unwrap_err().is_unavailable());
        }
        let during = cache.stats().snapshot();
        assert_eq!((during.outages, during.unavailable), (1, 50));
        assert!(during.unavailable_for_ms.is_some());
        backend.0.store(false, Ordering::Relaxed);
        assert_eq!(cache.get("k").await, Ok(None));
        assert_eq!(cache.stats().snapshot().unavailable_for_ms, None);
        backend.0.store(true, Ordering::Relaxed);
        let _ = cache.get("k").await;
        assert_eq!(cache.stats().snapshot().outages, 2);
    }
}
