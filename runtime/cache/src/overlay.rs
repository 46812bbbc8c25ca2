//! Batch-atomic cache effects: the writes of one function call, held back until the call has
//! succeeded ([`CallCache`]).
//!
//! During a call, `set`, `set-many`, `incr`, `incr-many` and `delete` change only a per-call
//! overlay; `get` and `get-many` read the overlay first and the backend for the rest, so the
//! call sees its own writes exactly as if they had been applied one after another. When the
//! call succeeds, [`CallCache::apply`] hands the overlay to the backend as one list of
//! [`Effect`]s, one per key, in one round trip ([`CacheBackend::apply`]); when it fails, the
//! overlay is dropped and the attempt leaves no trace in the cache.
//!
//! # What `incr` returns
//!
//! The first `incr` of a key in a call reads the key's stored value (missing: 0). The overlay
//! then keeps the sum of the call's deltas for the key, and `incr` returns *the value read at
//! first touch plus the call's deltas so far*: the call's own view, as if no one else wrote the
//! key during the call. At apply time the sum is added with the backend's atomic increment
//! (creating a missing key with the TTL of the call's first `incr` of it), so the stored
//! counter is always the exact sum of every successful call's deltas, even when another
//! partition increments the same key at the same moment; the value a call returned may then
//! differ from the value stored after it.
//!
//! A key the call `set` or `delete`d before its `incr` is not read again: the increment
//! applies to the call's own value (a deleted key counts from 0) and the key is written as a
//! whole value at apply time, with the TTL sequential calls would have given it.
//!
//! # Bounds
//!
//! An overlay holds at most [`EffectLimits::max_keys`] keys and [`EffectLimits::max_bytes`]
//! bytes of keys and values. A write that would go past either fails with `too-large`, and the
//! breach is kept ([`CallCache::breach`]) so the engine fails the whole call, naming the limit.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Cache, CacheError, add_to_counter, contract, format_counter, parse_counter};

/// One write of a call's overlay, as the backend applies it. Keys are namespaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store `value`, replacing any value and TTL.
    Set {
        /// The backend key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Its TTL in seconds; `None`: no expiry.
        ttl: Option<u32>,
    },
    /// Remove the key.
    Delete {
        /// The backend key.
        key: String,
    },
    /// Add `delta` to the counter with the meaning of `incr`: a missing key is created at 0
    /// with `ttl`, an existing one keeps its expiry.
    Incr {
        /// The backend key.
        key: String,
        /// The call's deltas, summed.
        delta: i64,
        /// The TTL of a counter this creates.
        ttl: Option<u32>,
    },
}

impl Effect {
    /// The backend key this effect writes.
    pub fn key(&self) -> &str {
        match self {
            Effect::Set { key, .. } | Effect::Delete { key } | Effect::Incr { key, .. } => key,
        }
    }
}

/// How much one call may hold back. Both limits count the overlay as it stands (a key written
/// twice counts once, with its latest value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectLimits {
    /// Most distinct keys written in one call. Default [`EffectLimits::DEFAULT_MAX_KEYS`].
    pub max_keys: usize,
    /// Most bytes of keys and values written in one call (a counter or a deletion counts its
    /// key plus [`COUNTER_BYTES`]). Default [`EffectLimits::DEFAULT_MAX_BYTES`].
    pub max_bytes: usize,
}

impl EffectLimits {
    /// Default key bound: 100,000 keys, 100 `set-many` calls of the largest size.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;
    /// Default byte bound: 16 MiB, as much as the host buffers for one `get-many` answer.
    pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;
}

impl Default for EffectLimits {
    fn default() -> Self {
        EffectLimits { max_keys: Self::DEFAULT_MAX_KEYS, max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

/// Bytes a counter or a deletion counts for, besides its key: the longest counter text.
pub const COUNTER_BYTES: usize = 20;

/// Which limit of [`EffectLimits`] a call went past, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectsBreach {
    /// `keys` or `bytes`.
    pub what: &'static str,
    /// How many the call would have held.
    pub actual: usize,
    /// The limit.
    pub limit: usize,
}

/// What the overlay holds for one key.
#[derive(Debug, Clone)]
enum Pending {
    /// The call stored this value (by `set`, or by `incr` on a value it had stored or deleted).
    Value { value: Vec<u8>, ttl: Option<u32> },
    /// The call deleted the key.
    Deleted,
    /// The call only incremented the key: `base` was stored when it first touched it.
    Counter { base: i64, delta: i64, ttl: Option<u32> },
}

impl Pending {
    fn bytes(&self, key: &str) -> usize {
        key.len()
            + match self {
                Pending::Value { value, .. } => value.len(),
                Pending::Deleted | Pending::Counter { .. } => COUNTER_BYTES,
            }
    }

    /// What a `get` of the key reads now.
    fn read(&self) -> Option<Vec<u8>> {
        match self {
            Pending::Value { value, .. } => Some(value.clone()),
            Pending::Deleted => None,
            Pending::Counter { base, delta, .. } => Some(format_counter(base + delta).into_bytes()),
        }
    }
}

/// A [`Cache`] as one function call sees it: reads go through the call's overlay, writes stay
/// in it until [`CallCache::apply`]. Dropping it discards the writes. See the module docs.
///
/// In exactly-once mode one overlay spans a batch: each call starts from a clone of the
/// overlay the batch's successful calls left, and the whole is applied once with the batch's
/// position ([`CallCache::apply_fenced`]).
#[derive(Debug, Clone)]
pub struct CallCache {
    cache: Cache,
    limits: EffectLimits,
    pending: HashMap<String, Pending>,
    /// Bytes of `pending`, by [`Pending::bytes`].
    bytes: usize,
    breach: Option<EffectsBreach>,
    /// Values read in place of the backend's, by backend key: when a batch whose writes were
    /// already applied runs again, the values its keys had before ([`CallCache::reading_before`]).
    before: Arc<super::ValuesBefore>,
}

impl Cache {
    /// An empty overlay over this cache for one call, bounded by `limits`.
    pub fn begin_call(&self, limits: EffectLimits) -> CallCache {
        CallCache {
            cache: self.clone(),
            limits,
            pending: HashMap::new(),
            bytes: 0,
            breach: None,
            before: Arc::default(),
        }
    }
}

impl CallCache {
    /// This overlay, reading `before` (backend key: value, `None` for a missing key) in place
    /// of the backend's values of those keys. Exactly-once mode runs a batch whose writes an
    /// earlier attempt applied (and a crash kept from being committed) over the values its
    /// keys had before that apply, so the function returns what it returned the first time.
    pub fn reading_before(mut self, before: super::ValuesBefore) -> CallCache {
        self.before = Arc::new(before);
        self
    }

    /// The stored values of `keys` (not in the overlay): from `before` where it has them, the
    /// rest from the backend in one round trip.
    async fn stored(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let qualified: Vec<String> = keys.iter().map(|key| self.cache.namespace.qualify(key)).collect();
        let unknown: Vec<String> = qualified.iter().filter(|key| !self.before.contains_key(*key)).cloned().collect();
        let mut read = match unknown.len() {
            0 => Vec::new(),
            1 => vec![self.cache.timed(self.cache.backend.get(&unknown[0])).await?],
            _ => self.cache.timed(self.cache.backend.get_many(&unknown)).await?,
        }
        .into_iter();
        Ok(qualified
            .iter()
            .map(|key| match self.before.get(key) {
                Some(value) => value.clone(),
                None => read.next().flatten(),
            })
            .collect())
    }

    /// The cache underneath.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The limit this call went past, if it did: the call must then fail as a whole.
    pub fn breach(&self) -> Option<EffectsBreach> {
        self.breach
    }

    /// Keys the call has written.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// `true` when the call has written nothing.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// See the WIT `cache.get`.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        if let Some(pending) = self.pending.get(key) {
            let value = pending.read();
            self.cache.stats.count_lookups([&value]);
            return Ok(value);
        }
        if self.before.is_empty() {
            return self.cache.get(key).await;
        }
        let result = async {
            contract::check_get(key)?;
            Ok(self.stored(&[key]).await?.remove(0))
        }
        .await;
        if let Ok(value) = &result {
            self.cache.stats.count_lookups([value]);
        }
        self.cache.stats.count(&result);
        result
    }

    /// See the WIT `cache.get-many`.
    pub async fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if self.pending.is_empty() && self.before.is_empty() {
            return self.cache.get_many(keys).await;
        }
        let result = self.get_many_through(keys).await;
        if let Ok(values) = &result {
            self.cache.stats.count_lookups(values);
        }
        self.cache.stats.count(&result);
        result
    }

    async fn get_many_through(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        contract::check_get_many(keys.iter().map(String::as_str))?;
        let unwritten: Vec<&str> =
            keys.iter().map(String::as_str).filter(|key| !self.pending.contains_key(*key)).collect();
        let mut stored = self.stored(&unwritten).await?.into_iter();
        let values: Vec<Option<Vec<u8>>> = keys
            .iter()
            .map(|key| match self.pending.get(key) {
                Some(pending) => pending.read(),
                None => stored.next().flatten(),
            })
            .collect();
        contract::check_get_many_answer(&values)?;
        Ok(values)
    }

    /// See the WIT `cache.set`.
    pub async fn set(&mut self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = contract::check_set(key, value, ttl_seconds)
            .and_then(|()| self.hold(key, Pending::Value { value: value.to_vec(), ttl: ttl_seconds }));
        self.cache.count_write(&result);
        result
    }

    /// See the WIT `cache.set-many`.
    pub async fn set_many(
        &mut self,
        entries: &[(String, Vec<u8>)],
        ttl_seconds: Option<u32>,
    ) -> Result<(), CacheError> {
        let result = contract::check_set_many(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())), ttl_seconds)
            .and_then(|()| {
                entries.iter().try_for_each(|(key, value)| {
                    self.hold(key, Pending::Value { value: value.clone(), ttl: ttl_seconds })
                })
            });
        self.cache.count_write(&result);
        result
    }

    /// See the WIT `cache.incr`, and the module docs for what it returns.
    pub async fn incr(&mut self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let result = async {
            contract::check_incr(key, ttl_seconds)?;
            let stored = match self.pending.contains_key(key) {
                true => None,
                false => Some(self.stored(&[key]).await?.remove(0)),
            };
            self.add(key, delta, ttl_seconds, stored)
        }
        .await;
        self.cache.count_write(&result);
        result
    }

    /// See the WIT `cache.incr-many`: the keys the call has not written yet are read in one
    /// round trip, then each entry is `incr` in order. When an entry fails, the ones before it
    /// stay in the overlay.
    pub async fn incr_many(
        &mut self,
        entries: &[(String, i64)],
        ttl_seconds: Option<u32>,
    ) -> Result<Vec<i64>, CacheError> {
        let result = async {
            contract::check_incr_many(entries.iter().map(|(k, _)| k.as_str()), ttl_seconds)?;
            let mut unread: Vec<&str> =
                entries.iter().map(|(key, _)| key.as_str()).filter(|key| !self.pending.contains_key(*key)).collect();
            unread.sort_unstable();
            unread.dedup();
            let mut stored: HashMap<&str, Option<Vec<u8>>> = if unread.is_empty() {
                HashMap::new()
            } else {
                let values = self.stored(&unread).await?;
                unread.into_iter().zip(values).collect()
            };
            let mut values = Vec::with_capacity(entries.len());
            for (key, delta) in entries {
                let stored = if stored.is_empty() { None } else { stored.remove(key.as_str()) };
                values.push(self.add(key, *delta, ttl_seconds, stored)?);
            }
            Ok(values)
        }
        .await;
        self.cache.count_write(&result);
        result
    }

    /// See the WIT `cache.delete`. Whether the key existed is read from the overlay, or from the
    /// backend for a key the call has not written.
    pub async fn delete(&mut self, key: &str) -> Result<bool, CacheError> {
        let result = async {
            contract::check_get(key)?;
            let existed = match self.pending.get(key) {
                Some(pending) => pending.read().is_some(),
                None => self.stored(&[key]).await?.remove(0).is_some(),
            };
            self.hold(key, Pending::Deleted)?;
            Ok(existed)
        }
        .await;
        self.cache.count_write(&result);
        result
    }

    /// Applies the call's writes to the backend in one round trip (see
    /// [`super::CacheBackend::apply`] for what each backend makes atomic). Writes nothing when
    /// the call wrote nothing.
    pub async fn apply(self) -> Result<(), CacheError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let effects = self.effects();
        let result = self.cache.timed(self.cache.backend.apply(&effects)).await;
        self.cache.stats.count(&result);
        result
    }

    /// Applies the writes together with `fence`, once ([`super::CacheBackend::apply_fenced`]):
    /// when the stored position is already at or past the batch's first offset, nothing is
    /// written. Writes nothing, and says `Applied`, when the overlay is empty.
    pub async fn apply_fenced(&self, fence: &super::Fence) -> Result<super::Fenced, CacheError> {
        if self.pending.is_empty() {
            return Ok(super::Fenced::Applied);
        }
        let effects = self.effects();
        let result = self.cache.timed(self.cache.backend.apply_fenced(&effects, fence)).await;
        self.cache.stats.count(&result);
        result
    }

    /// The overlay as backend effects, one per key.
    fn effects(&self) -> Vec<Effect> {
        let namespace = &self.cache.namespace;
        self.pending
            .iter()
            .map(|(key, pending)| {
                let key = namespace.qualify(key);
                match pending.clone() {
                    Pending::Value { value, ttl } => Effect::Set { key, value, ttl },
                    Pending::Deleted => Effect::Delete { key },
                    Pending::Counter { delta, ttl, .. } => Effect::Incr { key, delta, ttl },
                }
            })
            .collect()
    }

    /// Adds `delta` to the call's view of `key`. `stored` is the backend's value when the call
    /// has not written the key (read just before), `None` otherwise.
    fn add(
        &mut self,
        key: &str,
        delta: i64,
        ttl: Option<u32>,
        stored: Option<Option<Vec<u8>>>,
    ) -> Result<i64, CacheError> {
        let next = match (self.pending.get_mut(key), stored) {
            // A counter the call already holds changes in place: its key and size stay as they
            // are, so no limit can be crossed. This is the common case of a counting function.
            (Some(Pending::Counter { base, delta: sum, .. }), _) => {
                let value = add_to_counter(key, *base + *sum, delta)?;
                *sum = sum.checked_add(delta).ok_or_else(|| summed_past_range(key))?;
                return Ok(value);
            }
            (Some(Pending::Value { value, ttl: kept }), _) => {
                let value = add_to_counter(key, parse_counter(key, value)?, delta)?;
                (value, Pending::Value { value: format_counter(value).into_bytes(), ttl: *kept })
            }
            (Some(Pending::Deleted), _) => (delta, Pending::Value { value: format_counter(delta).into_bytes(), ttl }),
            (None, stored) => {
                let base = match stored.flatten() {
                    Some(raw) => parse_counter(key, &raw)?,
                    None => 0,
                };
                (add_to_counter(key, base, delta)?, Pending::Counter { base, delta, ttl })
            }
        };
        self.hold(key, next.1)?;
        Ok(next.0)
    }

    /// Puts `pending` in the overlay at `key`, unless that would go past a limit.
    fn hold(&mut self, key: &str, pending: Pending) -> Result<(), CacheError> {
        let added = pending.bytes(key);
        let (keys, removed) = match self.pending.get(key) {
            Some(old) => (self.pending.len(), old.bytes(key)),
            None => (self.pending.len() + 1, 0),
        };
        let bytes = self.bytes - removed + added;
        let breach = if keys > self.limits.max_keys {
            Some(EffectsBreach { what: "keys", actual: keys, limit: self.limits.max_keys })
        } else if bytes > self.limits.max_bytes {
            Some(EffectsBreach { what: "bytes", actual: bytes, limit: self.limits.max_bytes })
        } else {
            None
        };
        if let Some(breach) = breach {
            self.breach.get_or_insert(breach);
            return Err(CacheError::TooLarge(format!(
                "the call's pending cache writes would reach {} {}, over the limit of {} per call; the call fails",
                breach.actual, breach.what, breach.limit
            )));
        }
        match self.pending.get_mut(key) {
            Some(held) => *held = pending,
            None => drop(self.pending.insert(key.to_owned(), pending)),
        }
        self.bytes = bytes;
        Ok(())
    }
}

fn summed_past_range(key: &str) -> CacheError {
    CacheError::NotANumber(format!("incr of {key:?}: the increments of one call add up past the signed 64-bit range"))
}
