//! The embedded in-memory backend: the default, for the demo, local runs and tests.
//!
//! Bounded by total bytes (keys plus values), least recently used entries evicted first, with
//! per-entry TTLs. It is process-local: two runtime processes do not share it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache as MokaCache;

use super::{CacheBackend, CacheError, add_to_counter, parse_counter};

/// An in-process cache with a size bound and TTL expiry.
#[derive(Clone)]
pub struct MemoryCache {
    entries: MokaCache<String, Entry>,
}

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Option<Duration>,
    /// Set by `incr` on an existing counter: the update keeps the entry's expiry.
    keeps_expiry: bool,
}

struct EntryExpiry;

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        if entry.keeps_expiry { remaining } else { entry.ttl }
    }
}

impl MemoryCache {
    /// Default bound on keys plus values: 256 MiB.
    pub const DEFAULT_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;

    /// A cache holding at most [`Self::DEFAULT_CAPACITY_BYTES`].
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY_BYTES)
    }

    /// A cache holding at most `capacity_bytes` of keys and values.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        let entries = MokaCache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, entry: &Entry| u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry)
            .build();
        MemoryCache { entries }
    }

    /// Every live entry, sorted by key: what the local runner prints as the cache's final state.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = self.entries.iter().map(|(k, e)| (k.as_ref().clone(), e.value.to_vec())).collect();
        all.sort();
        all
    }

    fn put(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) {
        let entry = Entry { value: value.into(), ttl: ttl(ttl_seconds), keeps_expiry: false };
        self.entries.insert(key.to_owned(), entry);
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

fn ttl(seconds: Option<u32>) -> Option<Duration> {
    seconds.map(|s| Duration::from_secs(s.into()))
}

#[async_trait]
impl CacheBackend for MemoryCache {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.entries.get(key).map(|e| e.value.to_vec()))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        Ok(keys.iter().map(|k| self.entries.get(k).map(|e| e.value.to_vec())).collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        self.put(key, value, ttl_seconds);
        Ok(())
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        for (key, value) in entries {
            self.put(key, value, ttl_seconds);
        }
        Ok(())
    }

    async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let mut outcome = Err(CacheError::Other("incr did not run".into()));
        self.entries.entry_by_ref(key).and_compute_with(|existing| {
            let (next, keeps_expiry) = match existing {
                None => (Ok(delta), false),
                Some(entry) => {
                    (parse_counter(key, &entry.value().value).and_then(|n| add_to_counter(key, n, delta)), true)
                }
            };
            outcome = next.clone();
            match next {
                Ok(n) => Op::Put(Entry {
                    value: n.to_string().into_bytes().into(),
                    ttl: if keeps_expiry { None } else { ttl(ttl_seconds) },
                    keeps_expiry,
                }),
                Err(_) => Op::Nop,
            }
        });
        outcome
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.entries.remove(key).is_some())
    }
}
