//! The embedded in-memory backend: the default, for the demo, local runs and tests.
//!
//! Bounded by total bytes (keys plus values), least recently used entries evicted first, with
//! per-entry TTLs. It is process-local: two runtime processes do not share it.
//!
//! Counters are stored as atomic integers, so incrementing an existing counter is a lookup and
//! an atomic add rather than a locked read-modify-write of the entry; they read back as
//! decimal text, like on every other backend.
//!
//! A call's effects ([`CacheBackend::apply`]) are applied under one lock, the write side of a
//! reader-writer gate that every other call takes the read side of: no call, read or write,
//! sees or interleaves with part of another call's effects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache as MokaCache;

use super::format_counter;
use super::{CacheBackend, CacheError, Effect, Fence, FencePosition, Fenced, add_to_counter, parse_counter};

/// An in-process cache with a size bound and TTL expiry.
#[derive(Clone)]
pub struct MemoryCache {
    entries: MokaCache<String, Entry>,
    /// Taken for writing while one call's effects are applied, for reading by every other call.
    gate: Arc<RwLock<()>>,
    /// Exactly-once positions ([`CacheBackend::apply_fenced`]), apart from the entries so that
    /// eviction never drops one.
    fences: Arc<Mutex<HashMap<String, FencePosition>>>,
}

#[derive(Clone)]
struct Entry {
    value: Stored,
    ttl: Option<Duration>,
    /// Set when `incr` turns an existing value into a counter: the update keeps its expiry.
    keeps_expiry: bool,
}

#[derive(Clone)]
enum Stored {
    Bytes(Arc<[u8]>),
    Counter(Arc<AtomicI64>),
}

impl Stored {
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Stored::Bytes(bytes) => bytes.to_vec(),
            Stored::Counter(n) => format_counter(n.load(Ordering::SeqCst)).into_bytes(),
        }
    }

    fn weight(&self) -> usize {
        match self {
            Stored::Bytes(bytes) => bytes.len(),
            Stored::Counter(_) => 20,
        }
    }
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
            .weigher(|key: &String, entry: &Entry| u32::try_from(key.len() + entry.value.weight()).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry)
            .build();
        MemoryCache { entries, gate: Arc::default(), fences: Arc::default() }
    }

    /// Every live entry, sorted by key: what the local runner prints as the cache's final state.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = self.entries.iter().map(|(k, e)| (k.as_ref().clone(), e.value.to_bytes())).collect();
        all.sort();
        all
    }

    /// The read side of the gate: no call's effects are half applied while it is held.
    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) {
        let entry = Entry { value: Stored::Bytes(value.into()), ttl: ttl(ttl_seconds), keeps_expiry: false };
        self.entries.insert(key.to_owned(), entry);
    }

    /// `incr`, without the gate.
    fn add(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        // Fast path: an existing counter is incremented in place. A `set` or `delete` racing
        // with it replaces the entry; the increment then simply happened just before.
        if let Some(Entry { value: Stored::Counter(n), .. }) = self.entries.get(key) {
            let mut overflow = false;
            let previous = n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                let next = current.checked_add(delta);
                overflow = next.is_none();
                next
            });
            return match previous {
                Ok(previous) => Ok(previous + delta),
                Err(current) if overflow => add_to_counter(key, current, delta),
                Err(_) => unreachable!("fetch_update only fails when the closure returns None"),
            };
        }
        self.incr_slow(key, delta, ttl_seconds)
    }

    /// The slow path of `incr`: creates the counter, or turns a numeric text value into one,
    /// under moka's per-key lock.
    fn incr_slow(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let mut outcome = Err(CacheError::Other("incr did not run".into()));
        self.entries.entry_by_ref(key).and_compute_with(|existing| {
            let (next, keeps_expiry) = match existing.as_ref().map(|e| &e.value().value) {
                None => (Ok(delta), false),
                Some(Stored::Counter(n)) => (add_to_counter(key, n.load(Ordering::SeqCst), delta), true),
                Some(Stored::Bytes(bytes)) => {
                    (parse_counter(key, bytes).and_then(|n| add_to_counter(key, n, delta)), true)
                }
            };
            outcome = next.clone();
            match next {
                Ok(n) => Op::Put(Entry {
                    value: Stored::Counter(Arc::new(AtomicI64::new(n))),
                    ttl: if keeps_expiry { None } else { ttl(ttl_seconds) },
                    keeps_expiry,
                }),
                Err(_) => Op::Nop,
            }
        });
        outcome
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
        let _shared = self.shared();
        Ok(self.entries.get(key).map(|e| e.value.to_bytes()))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let _shared = self.shared();
        Ok(keys.iter().map(|k| self.entries.get(k).map(|e| e.value.to_bytes())).collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let _shared = self.shared();
        self.put(key, value, ttl_seconds);
        Ok(())
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let _shared = self.shared();
        for (key, value) in entries {
            self.put(key, value, ttl_seconds);
        }
        Ok(())
    }

    async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let _shared = self.shared();
        self.add(key, delta, ttl_seconds)
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let _shared = self.shared();
        Ok(self.entries.remove(key).is_some())
    }

    async fn apply(&self, effects: &[Effect]) -> Result<(), CacheError> {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.apply_exclusive(effects)
    }

    /// Under the same lock as `apply`: the stored position is read, and the effects and the
    /// new position written, with every other cache call waiting. The position lives as long as
    /// the process, so a batch is applied once within a process's lifetime.
    async fn apply_fenced(&self, effects: &[Effect], fence: &Fence) -> Result<Fenced, CacheError> {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(position) = fences.get(&fence.key).filter(|at| at.applied_through >= fence.first) {
            return Ok(Fenced::Skipped { applied_through: position.applied_through });
        }
        let before = effects
            .iter()
            .map(|effect| (effect.key().to_owned(), self.entries.get(effect.key()).map(|e| e.value.to_bytes())))
            .collect();
        let result = self.apply_exclusive(effects);
        fences.insert(
            fence.key.clone(),
            FencePosition { applied_through: fence.last, applied_from: fence.first, before },
        );
        result.map(|()| Fenced::Applied)
    }

    async fn fence_position(&self, key: &str) -> Result<Option<FencePosition>, CacheError> {
        Ok(self.fences.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned())
    }

    fn supports_fences(&self) -> bool {
        true
    }
}

impl MemoryCache {
    /// Applies `effects`; the caller holds the gate exclusively.
    fn apply_exclusive(&self, effects: &[Effect]) -> Result<(), CacheError> {
        // Every effect is applied even when a counter refuses its increment (a value another
        // writer made not a number since the call read it), as on Redis; the first such
        // refusal is reported.
        let mut refused = None;
        for effect in effects {
            match effect {
                Effect::Set { key, value, ttl } => self.put(key, value, *ttl),
                Effect::Delete { key } => {
                    self.entries.remove(key);
                }
                Effect::Incr { key, delta, ttl } => {
                    if let Err(error) = self.add(key, *delta, *ttl) {
                        refused.get_or_insert(error);
                    }
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past its capacity the cache evicts: what it holds, keys and values weighed, stays
    /// within the bound however much is written.
    #[test]
    fn a_cache_written_past_its_capacity_evicts_down_to_it() {
        const CAPACITY: u64 = 64 * 1024;
        let cache = MemoryCache::with_capacity(CAPACITY);
        let value = vec![b'v'; 1024];
        for n in 0..1_000 {
            cache.put(&format!("key-{n:04}"), &value, None);
        }
        cache.entries.run_pending_tasks();
        let held = cache.entries.weighted_size();
        assert!(held <= CAPACITY, "holds {held} bytes, over its capacity of {CAPACITY}");
        assert!(held > 0, "it still holds entries");
        let entries = cache.snapshot().len();
        assert!(entries < 1_000 && entries > 0, "{entries} of 1,000 entries are left");
    }
}
