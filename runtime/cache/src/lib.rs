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
mod overlay;
mod redis;
mod url;

pub use latency::{LATENCY_BUCKET_BOUNDS_MICROS, LATENCY_BUCKETS, LatencyHistogram, LatencySnapshot};
#[cfg(feature = "memcached")]
pub use memcached::MemcachedCache;
pub use memcached::MemcachedConfig;
pub use memory::MemoryCache;
pub use overlay::{COUNTER_BYTES, CallCache, Effect, EffectLimits, EffectsBreach};
#[cfg(feature = "redis")]
pub use redis::RedisCache;
pub use redis::{RedisConfig, RedisTls};
pub use url::{CacheUrl, connect, redact_url};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;

/// Limits on cache calls, from the contract the SDK shares: the same on every backend, so a
/// function that works on the in-memory cache works unchanged on Memcached or Redis.
pub use sluice_contract::cache::limits;

/// Why a cache call failed, from the contract the SDK shares. The variants match the WIT
/// `cache-error` variant one to one.
pub use sluice_contract::cache::CacheError;

/// The contract's rules of a key, and of the counter text `incr` reads and writes.
pub use sluice_contract::cache::{add_to_counter, check_key, format_counter, parse_counter};

use sluice_contract::cache as contract;

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
    /// Applies the writes of one successful call ([`CallCache::apply`]), at most one per key,
    /// in as few round trips as the backend allows, and as one atomic step where it can (each
    /// backend documents what it makes atomic). `Ok` when every effect was applied; on an
    /// error, some effects may have been applied. The default applies one effect after another.
    async fn apply(&self, effects: &[Effect]) -> Result<(), CacheError> {
        for effect in effects {
            match effect {
                Effect::Set { key, value, ttl } => self.set(key, value, *ttl).await?,
                Effect::Delete { key } => {
                    self.delete(key).await?;
                }
                Effect::Incr { key, delta, ttl } => {
                    self.incr(key, *delta, *ttl).await?;
                }
            }
        }
        Ok(())
    }
    /// Applies `effects` as [`CacheBackend::apply`] does, and records `fence.last` at
    /// `fence.key` with the values the effects' keys held before ([`FencePosition::before`]),
    /// in one atomic step, unless the position stored at `fence.key` is already at
    /// or past `fence.first`: then nothing is written and the stored position is returned.
    /// This is what makes a replayed batch's cache writes happen once (docs/delivery.md).
    /// Backends without an atomic multi-key write refuse (the default).
    async fn apply_fenced(&self, effects: &[Effect], fence: &Fence) -> Result<Fenced, CacheError> {
        let _ = (effects, fence);
        Err(CacheError::InvalidArgument(format!(
            "the {} cache cannot write a batch's effects and its position in one atomic step, so it cannot apply them \
             exactly once",
            self.kind()
        )))
    }
    /// Whether [`CacheBackend::apply_fenced`] is supported.
    fn supports_fences(&self) -> bool {
        false
    }
    /// The position stored at `key` by [`CacheBackend::apply_fenced`], with the values the
    /// keys of that apply had before it; `None` before the first apply.
    async fn fence_position(&self, key: &str) -> Result<Option<FencePosition>, CacheError> {
        let _ = key;
        Ok(None)
    }
}

/// The position guard of an exactly-once apply ([`CacheBackend::apply_fenced`]): the batch of
/// offsets `first..=last` of one input partition, and the backend key where the last applied
/// offset of that partition is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The backend key that holds the partition's last applied offset.
    pub key: String,
    /// The batch's first offset.
    pub first: i64,
    /// The batch's last offset.
    pub last: i64,
}

/// Stored values by backend key, `None` for a missing key: what a batch's keys held before it.
pub type ValuesBefore = std::collections::HashMap<String, Option<Vec<u8>>>;

/// A partition's exactly-once position ([`CacheBackend::fence_position`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencePosition {
    /// The last offset whose batch's writes are applied.
    pub applied_through: i64,
    /// The first offset of that batch.
    pub applied_from: i64,
    /// What the keys that batch wrote held before it, by backend key (`None`: missing). A
    /// replay of the batch reads these, so it sees what the batch saw the first time.
    pub before: ValuesBefore,
}

/// What a fenced apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// The effects were written and the position moved to the batch's last offset.
    Applied,
    /// The position was already at `applied_through`, at or past the batch's first offset:
    /// an earlier attempt applied these effects, and nothing was written.
    Skipped {
        /// The stored position.
        applied_through: i64,
    },
}

/// The prefix that keeps one pipeline's keys apart from another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// A namespace of 1 to [`limits::MAX_NAMESPACE_BYTES`] ASCII letters, digits, `_`, `-`, `.`.
    pub fn new(name: &str) -> Result<Self, CacheError> {
        contract::check_namespace(name)?;
        Ok(Namespace(name.into()))
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The backend key for a function's `key`: `<namespace>:<key>`.
    fn qualify(&self, key: &str) -> String {
        contract::qualify(&self.0, key)
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, serde::Deserialize)]
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

    /// Whether the backend can apply a batch's effects exactly once
    /// ([`CacheBackend::apply_fenced`]).
    pub fn supports_fences(&self) -> bool {
        self.backend.supports_fences()
    }

    /// The backend key that holds the last offset of `topic`/`partition` whose cache effects
    /// pipeline `pipeline` applied in exactly-once mode. It lives in this handle's namespace
    /// but has spaces in it, which no function's key may have, so no function can write it.
    pub fn fence_key(&self, pipeline: &str, topic: &str, partition: i32) -> String {
        format!("{}:sluice applied {pipeline} {topic} {partition}", self.namespace)
    }

    /// The last offset whose effects were applied under `fence_key`, `None` before the first.
    pub async fn applied_through(&self, fence_key: &str) -> Result<Option<FencePosition>, CacheError> {
        self.timed(self.backend.fence_position(fence_key)).await
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
        contract::check_get_many(keys.iter().map(String::as_str))?;
        let keys = keys.iter().map(|k| self.namespace.qualify(k)).collect::<Vec<_>>();
        let values = self.timed(self.backend.get_many(&keys)).await?;
        contract::check_get_many_answer(&values)?;
        Ok(values)
    }

    /// See the WIT `cache.set`.
    pub async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = async {
            contract::check_set(key, value, ttl_seconds)?;
            self.timed(self.backend.set(&self.namespace.qualify(key), value, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.set-many`.
    pub async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = async {
            contract::check_set_many(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())), ttl_seconds)?;
            let entries = entries.iter().map(|(k, v)| (self.namespace.qualify(k), v.clone())).collect::<Vec<_>>();
            self.timed(self.backend.set_many(&entries, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.incr`.
    pub async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let result = async {
            contract::check_incr(key, ttl_seconds)?;
            self.timed(self.backend.incr(&self.namespace.qualify(key), delta, ttl_seconds)).await
        }
        .await;
        self.count_write(&result);
        result
    }

    /// See the WIT `cache.incr-many`.
    pub async fn incr_many(&self, entries: &[(String, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        let result = async {
            contract::check_incr_many(entries.iter().map(|(k, _)| k.as_str()), ttl_seconds)?;
            let entries = entries.iter().map(|(k, d)| (self.namespace.qualify(k), *d)).collect::<Vec<_>>();
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

    /// The backend key of `key`, checked as a `get` or `delete` checks it.
    fn key(&self, key: &str) -> Result<String, CacheError> {
        contract::check_get(key)?;
        Ok(self.namespace.qualify(key))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timeouts_are_counted_apart_from_other_unavailability() {
        let timeout = CacheError::timed_out("redis at h:1", Duration::from_millis(500));
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
