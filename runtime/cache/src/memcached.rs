//! The Memcached backend: one or more servers, keys spread by rendezvous hashing, spoken to
//! over the meta protocol by a small client of our own ([`protocol`], [`servers`]).
//!
//! Owns the mapping of each cache call onto meta commands, and the work needed to give
//! Memcached the exact meaning the other backends give: it does not check keys, values or
//! TTLs ([`super::Cache`] did).
//!
//! # Why our own client
//!
//! The `memcache` crate's `exp` meta client was the first choice, and it is not usable for
//! the counter path: memcached answers an `ma` on a value that is not an unsigned number with a
//! bare `CLIENT_ERROR` line that carries no opaque token, and that client treats such a line in
//! a pipelined batch as a broken stream, dropping the connection and failing every later
//! command of the batch as "ambiguous" although the server ran them. Sluice counters are often
//! negative, which memcached always refuses that way, so `incr-many` could not be pipelined.
//! It also refuses to create a counter without a TTL (`N0`). The client here reads replies
//! strictly by position, so a refused `ma` is just one reply among the others. It needs no
//! dependency beyond tokio.
//!
//! # Counters
//!
//! Sluice counters are signed 64-bit decimal text (`get` returns `"-3"`); memcached's are
//! unsigned, its `decr` stops at 0, its `incr` wraps at 2^64, and its decrements pad the text
//! with spaces. `incr` therefore takes one of two paths:
//!
//! - **Fast path**, one round trip: when the delta is not negative, `ma key N<ttl> J<delta>
//!   D<delta> v`. A missing key is created holding `delta`, with the TTL (`N0`: none) applied
//!   only then; an existing counter keeps its expiry. Memcached accepts the stored text only if
//!   it reads it as an unsigned number, and [`needs_escape`] makes sure that every such text is
//!   a canonical counter in `0..=i64::MAX` (see below), so the result is exact unless it passes
//!   `i64::MAX`. Then the call fails with not-a-number like on the other backends, and the
//!   increment is undone (a compare-and-swap writing back the value before it), since memcached
//!   has already stored it. Between the two, a concurrent reader can see the overflowed value.
//! - **Compare-and-swap path**, two round trips: for a negative delta, and when memcached
//!   refused the fast path (the stored text is negative or not a number). `mg key v f c t`
//!   reads the text, its CAS and its remaining TTL; Sluice's own [`parse_counter`] and
//!   [`add_to_counter`] compute the result exactly as the in-memory backend does; `ms key C<cas>
//!   T<remaining>` writes it back only if nobody changed it in between (or `ms .. ME T<ttl>`
//!   creates it when missing), and the round is repeated for the counters that lost a race. The
//!   rewrite keeps the expiry to memcached's one-second resolution.
//!
//! `incr-many` groups its entries by key, in order: each key whose deltas are all non-negative
//! gets one `ma` with their sum (the results of its entries follow from the answer, as if they
//! had run one after another), all of them pipelined in one exchange per server; the other keys
//! then take the compare-and-swap path together, one pipelined read and one pipelined write per
//! round.
//!
//! # A call's effects
//!
//! [`CacheBackend::apply`] sends the `set`s and `delete`s of a call (`ms`, `md`) in one
//! pipelined exchange per server and, at the same time, its increments by the paths above (one
//! `incr-many` per TTL, usually one): one round trip when no delta is negative, more for the
//! compare-and-swap path. Memcached has no multi-key transaction, so only each key's effect is
//! atomic: another client can read some of a call's effects before the others land, and a
//! failure part-way (a server down, a counter refused) leaves the effects that got through
//! applied. What the overlay guarantees on Memcached is that a *failed* call writes nothing.
//!
//! # Values memcached would take for numbers
//!
//! Memcached's `incr` reads any value that starts like an unsigned number: `007`, `+5`, ` 5`,
//! `-0`, `5 apples`, `18446744073709551615`. Sluice reads none of those as counters. So `set`
//! stores such a value with a one-byte prefix ([`ESCAPE`]) and the client flag [`FLAG_ESCAPED`],
//! which memcached cannot read as a number, and `get` strips it. Only those rare values carry
//! the prefix; counters and other values are stored as given.

#[cfg(feature = "memcached")]
mod protocol;
#[cfg(feature = "memcached")]
mod servers;

#[cfg(feature = "memcached")]
use std::collections::HashMap;
use std::fmt;
#[cfg(feature = "memcached")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "memcached")]
use async_trait::async_trait;
#[cfg(feature = "memcached")]
use tokio::time::Instant;

#[cfg(feature = "memcached")]
use self::protocol::{Condition, Reply, Request};
#[cfg(feature = "memcached")]
use self::servers::Servers;
use super::{CacheBackend, CacheError, Effect, add_to_counter, limits, parse_counter};

#[cfg(feature = "memcached")]
/// Client flag of a value stored behind [`ESCAPE`].
const FLAG_ESCAPED: u32 = 1;

#[cfg(feature = "memcached")]
/// The byte put in front of a value that memcached would otherwise read as a number.
const ESCAPE: u8 = b'#';

#[cfg(feature = "memcached")]
/// Most compare-and-swap rounds one call makes before giving up with `unavailable`, when other
/// writers keep changing the same counter. Each round is two round trips, and a lost round
/// waits a random time under [`CAS_BACKOFF_MAX`] before the next, so that writers colliding on
/// one counter spread out instead of colliding again.
const MAX_CAS_ROUNDS: usize = 64;

#[cfg(feature = "memcached")]
/// The longest wait between two compare-and-swap rounds: the bound starts at 50 µs and doubles
/// with each round lost, up to this.
const CAS_BACKOFF_MAX: Duration = Duration::from_millis(5);

/// Where and how to reach memcached. Built from a `memcache://` URL by [`super::CacheUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedConfig {
    /// Servers, `host:port` each. Every process that shares the cache must list the same
    /// servers (in any order) to agree on where keys live.
    pub servers: Vec<String>,
    /// Deadline of each cache call, all its round trips included.
    pub timeout: Duration,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// Most connections to each server (calls beyond it wait for a free one).
    pub pool_size: usize,
}

impl MemcachedConfig {
    /// Default port.
    pub const DEFAULT_PORT: u16 = 11211;
    /// Default deadline of a cache call: 500 ms (see [`super::RedisConfig::DEFAULT_TIMEOUT`]).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default deadline of a connection attempt: 500 ms.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default connections per server: 8. Each carries whole pipelined batches, so a few keep a
    /// server's worker threads busy.
    pub const DEFAULT_POOL_SIZE: usize = 8;

    /// A configuration for `servers` (`host:port` each) with the default settings.
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        MemcachedConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            pool_size: Self::DEFAULT_POOL_SIZE,
        }
    }
}

#[cfg(feature = "memcached")]
/// A cache backend on one or more memcached servers. Cheap to clone; clones share the
/// connection pools.
#[derive(Clone)]
pub struct MemcachedCache {
    servers: Arc<Servers>,
    /// `memcached at host:port,...`, for messages.
    label: String,
    timeout: Duration,
}

#[cfg(feature = "memcached")]
impl fmt::Debug for MemcachedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedCache").field("servers", &self.label).field("timeout", &self.timeout).finish()
    }
}

#[cfg(feature = "memcached")]
impl MemcachedCache {
    /// Sets up the servers of `config` and checks that each answers (`mn`), so a wrong address
    /// is reported here rather than on the first record.
    pub async fn connect(config: &MemcachedConfig) -> Result<Self, CacheError> {
        if config.servers.is_empty() {
            return Err(CacheError::InvalidArgument("memcached needs at least one server".into()));
        }
        if config.pool_size == 0 {
            return Err(CacheError::InvalidArgument("memcached pool size must be at least 1".into()));
        }
        let servers = Servers::new(&config.servers, config.pool_size, config.timeout, config.connect_timeout);
        let cache = MemcachedCache {
            servers: Arc::new(servers),
            label: format!("memcached at {}", config.servers.join(",")),
            timeout: config.timeout,
        };
        for server in 0..cache.servers.len() {
            let replies = cache.servers.exchange(server, [Request::Noop].iter(), cache.deadline()).await?;
            if replies != [Reply::Noop] {
                return Err(CacheError::Other(format!(
                    "{} answered {replies:?} to a no-op; is it memcached 1.6 or later?",
                    config.servers[server]
                )));
            }
        }
        Ok(cache)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The error for a reply that is not one of those the request allows.
    fn refused(&self, key: &str, reply: Reply) -> CacheError {
        let label = &self.label;
        match reply {
            Reply::ServerError(message) if message.contains("too large") => {
                CacheError::TooLarge(format!("{label} refused the value at {key:?}: {message}"))
            }
            Reply::ServerError(message) => CacheError::Other(format!("{label} failed on {key:?}: {message}")),
            Reply::ClientError(message) => {
                CacheError::Other(format!("{label} refused the request for {key:?}: {message}"))
            }
            other => CacheError::Other(format!("{label} answered {other:?} for {key:?}")),
        }
    }

    /// The value in a reply to `mg`.
    fn stored_value(&self, key: &str, reply: Reply) -> Result<Option<Vec<u8>>, CacheError> {
        match reply {
            Reply::Value { data, flags, .. } => Ok(Some(unescape(data, flags))),
            Reply::Miss => Ok(None),
            other => Err(self.refused(key, other)),
        }
    }

    /// Applies `entries` in order and returns each result, or the failure of the first entry
    /// that failed. See the module docs for the two paths.
    async fn increments(&self, entries: &[(&str, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        let deadline = self.deadline();
        let mut counters: Vec<Counter<'_>> = Vec::new();
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for (position, &(key, delta)) in entries.iter().enumerate() {
            let index = *by_key.entry(key).or_insert_with(|| {
                counters.push(Counter { key, entries: Vec::new() });
                counters.len() - 1
            });
            counters[index].entries.push((position, delta));
        }

        let mut outcome = Outcome { values: vec![None; entries.len()], failure: None };
        let (fast, mut slow): (Vec<&Counter<'_>>, Vec<&Counter<'_>>) =
            counters.iter().partition(|counter| counter.total_if_not_negative().is_some());
        let mut overflowed = Vec::new();
        if !fast.is_empty() {
            let requests: Vec<Request<'_>> = fast
                .iter()
                .map(|counter| Request::Increment {
                    key: counter.key,
                    delta: counter.total_if_not_negative().unwrap_or_default(),
                    vivify_ttl: ttl_seconds.unwrap_or(0),
                })
                .collect();
            let replies = self.servers.exchange_all(&requests, deadline).await?;
            for (counter, reply) in fast.into_iter().zip(replies) {
                match reply {
                    Reply::Value { data, .. } => {
                        let after = parse_unsigned(&data).ok_or_else(|| {
                            self.refused(counter.key, Reply::Value { data, flags: 0, cas: None, ttl: None })
                        })?;
                        if let Some(excess) = counter.settle(after, &mut outcome, &self.label)? {
                            overflowed.push((counter.key, excess));
                        }
                    }
                    // Memcached does not read the stored text as an unsigned number.
                    Reply::ClientError(_) => slow.push(counter),
                    other => return Err(self.refused(counter.key, other)),
                }
            }
        }
        if !slow.is_empty() {
            self.increment_by_swapping(slow, ttl_seconds, &mut outcome, deadline).await?;
        }
        if !overflowed.is_empty() {
            self.undo_overflow(overflowed, deadline).await;
        }
        outcome.finish()
    }

    /// The compare-and-swap path for `counters`, in rounds until every one is written.
    async fn increment_by_swapping(
        &self,
        mut pending: Vec<&Counter<'_>>,
        ttl_seconds: Option<u32>,
        outcome: &mut Outcome,
        deadline: Instant,
    ) -> Result<(), CacheError> {
        for round in 0..MAX_CAS_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            if round > 0 {
                cas_backoff(round, deadline).await;
            }
            let reads: Vec<Request<'_>> =
                pending.iter().map(|counter| Request::Get { key: counter.key, cas_and_ttl: true }).collect();
            let replies = self.servers.exchange_all(&reads, deadline).await?;
            let mut writes = Vec::new();
            for (counter, reply) in pending.iter().copied().zip(replies) {
                let (stored, condition, ttl) = match reply {
                    Reply::Miss => (None, Condition::Missing, ttl_seconds),
                    Reply::Value { data, flags, cas: Some(cas), ttl } => {
                        (Some(unescape(data, flags)), Condition::Unchanged(cas), remaining_ttl(ttl))
                    }
                    other => return Err(self.refused(counter.key, other)),
                };
                let applied = counter.apply(stored.as_deref());
                match applied.last {
                    Some(last) => writes.push((counter, last.to_string(), condition, ttl, applied)),
                    // Nothing to write: the stored text is not a counter, or the first entry overflows.
                    None => outcome.commit(applied),
                }
            }
            let requests: Vec<Request<'_>> = writes
                .iter()
                .map(|(counter, text, condition, ttl, _)| Request::Set {
                    key: counter.key,
                    prefix: None,
                    value: text.as_bytes(),
                    flags: 0,
                    ttl: *ttl,
                    condition: *condition,
                })
                .collect();
            let replies = self.servers.exchange_all(&requests, deadline).await?;
            let mut lost = Vec::new();
            for ((counter, _, _, _, applied), reply) in writes.into_iter().zip(replies) {
                match reply {
                    Reply::Done => outcome.commit(applied),
                    // Created, changed or expired since the read: read it again.
                    Reply::NotStored | Reply::Exists | Reply::NotFound => lost.push(counter),
                    other => return Err(self.refused(counter.key, other)),
                }
            }
            pending = lost;
        }
        match pending.first() {
            None => Ok(()),
            Some(counter) => Err(CacheError::Unavailable(format!(
                "{}: incr of {:?} lost {MAX_CAS_ROUNDS} races with concurrent writers; try again",
                self.label, counter.key
            ))),
        }
    }

    /// Takes back increments that went past `i64::MAX` on the fast path: subtracts each `excess`
    /// from its counter, by compare-and-swap. Best effort: a counter that was replaced or
    /// deleted meanwhile is left alone.
    async fn undo_overflow(&self, mut pending: Vec<(&str, u64)>, deadline: Instant) {
        for _ in 0..MAX_CAS_ROUNDS {
            if pending.is_empty() {
                return;
            }
            let reads: Vec<Request<'_>> =
                pending.iter().map(|&(key, _)| Request::Get { key, cas_and_ttl: true }).collect();
            let Ok(replies) = self.servers.exchange_all(&reads, deadline).await else { break };
            let mut writes = Vec::new();
            for (&(key, excess), reply) in pending.iter().zip(replies) {
                if let Reply::Value { data, flags: 0, cas: Some(cas), ttl } = reply
                    && let Some(value) = parse_unsigned(&data).and_then(|value| value.checked_sub(excess))
                {
                    writes.push((key, excess, value.to_string(), cas, remaining_ttl(ttl)));
                }
            }
            let requests: Vec<Request<'_>> = writes
                .iter()
                .map(|(key, _, text, cas, ttl)| Request::Set {
                    key,
                    prefix: None,
                    value: text.as_bytes(),
                    flags: 0,
                    ttl: *ttl,
                    condition: Condition::Unchanged(*cas),
                })
                .collect();
            let Ok(replies) = self.servers.exchange_all(&requests, deadline).await else { break };
            pending = writes
                .iter()
                .zip(replies)
                .filter(|(_, reply)| *reply == Reply::Exists)
                .map(|((key, excess, ..), _)| (*key, *excess))
                .collect();
        }
        if let Some((key, _)) = pending.first() {
            tracing::warn!(backend = %self.label, key, "could not take back an increment that overflowed 64 bits");
        }
    }
}

#[cfg(feature = "memcached")]
/// The entries of one `incr-many` call for one key, in call order.
struct Counter<'a> {
    key: &'a str,
    /// (position in the call, delta).
    entries: Vec<(usize, i64)>,
}

#[cfg(feature = "memcached")]
/// What one counter's entries gave, from one stored value.
#[derive(Default)]
struct Applied {
    /// (position, new value) of each entry that succeeded.
    values: Vec<(usize, i64)>,
    /// The entry that failed, if one did (the entries after it were not applied).
    failure: Option<(usize, CacheError)>,
    /// The value after the last entry that succeeded: what to store.
    last: Option<i64>,
}

#[cfg(feature = "memcached")]
impl Counter<'_> {
    /// The sum of the deltas for one fast-path `ma`: `None` when a delta is negative or the sum
    /// is past `i64::MAX` (then an entry fails, which the compare-and-swap path reports exactly).
    fn total_if_not_negative(&self) -> Option<u64> {
        let mut total: i64 = 0;
        for &(_, delta) in &self.entries {
            if delta < 0 {
                return None;
            }
            total = total.checked_add(delta)?;
        }
        u64::try_from(total).ok()
    }

    /// Reads the fast path's answer `after` (the counter after adding every delta at once) into
    /// per-entry results. Returns how much to take back when the counter went past `i64::MAX`.
    fn settle(&self, after: u64, outcome: &mut Outcome, label: &str) -> Result<Option<u64>, CacheError> {
        let total = self.total_if_not_negative().unwrap_or_default();
        let before = after.checked_sub(total).ok_or_else(|| {
            CacheError::Other(format!("{label} answered {after} to an increment of {:?} by {total}", self.key))
        })?;
        let mut running = before;
        for &(position, delta) in &self.entries {
            // Cannot wrap: `running + delta` is at most `after`.
            let next = running + delta.unsigned_abs();
            match (i64::try_from(running), i64::try_from(next)) {
                (_, Ok(value)) => {
                    outcome.values[position] = Some(value);
                    running = next;
                }
                (Ok(current), Err(_)) => {
                    let error = add_to_counter(self.key, current, delta).expect_err("the sum is past i64::MAX");
                    outcome.fail(position, error);
                    return Ok(Some(after - running));
                }
                (Err(_), Err(_)) => {
                    // Another client's overflow, not yet taken back: not a counter right now.
                    let error = parse_counter(self.key, running.to_string().as_bytes()).expect_err("past i64::MAX");
                    outcome.fail(position, error);
                    return Ok(Some(after - running));
                }
            }
        }
        Ok(None)
    }

    /// Applies the entries to `stored` (`None`: missing, taken as 0), the way the in-memory
    /// backend does.
    fn apply(&self, stored: Option<&[u8]>) -> Applied {
        let mut applied = Applied::default();
        let mut current = match stored.map(|raw| parse_counter(self.key, raw)) {
            None => 0,
            Some(Ok(value)) => value,
            Some(Err(error)) => {
                applied.failure = Some((self.entries[0].0, error));
                return applied;
            }
        };
        for &(position, delta) in &self.entries {
            match add_to_counter(self.key, current, delta) {
                Ok(next) => {
                    current = next;
                    applied.values.push((position, next));
                    applied.last = Some(next);
                }
                Err(error) => {
                    applied.failure = Some((position, error));
                    break;
                }
            }
        }
        applied
    }
}

#[cfg(feature = "memcached")]
/// The results of one `incr-many` call, filled in as counters settle.
struct Outcome {
    values: Vec<Option<i64>>,
    /// The failed entry that comes first in the call.
    failure: Option<(usize, CacheError)>,
}

#[cfg(feature = "memcached")]
impl Outcome {
    fn fail(&mut self, position: usize, error: CacheError) {
        if self.failure.as_ref().is_none_or(|(first, _)| position < *first) {
            self.failure = Some((position, error));
        }
    }

    fn commit(&mut self, applied: Applied) {
        for (position, value) in applied.values {
            self.values[position] = Some(value);
        }
        if let Some((position, error)) = applied.failure {
            self.fail(position, error);
        }
    }

    fn finish(self) -> Result<Vec<i64>, CacheError> {
        if let Some((_, error)) = self.failure {
            return Err(error);
        }
        Ok(self.values.into_iter().map(|value| value.expect("every entry settled")).collect())
    }
}

#[cfg(feature = "memcached")]
/// Whether memcached might read `value` as an unsigned number although Sluice does not read it
/// as a counter in `0..=i64::MAX`: such values are stored behind [`ESCAPE`]. Memcached skips
/// leading C whitespace, takes an optional sign and needs a digit next; anything else it
/// refuses, and so does not need the prefix.
fn needs_escape(value: &[u8]) -> bool {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let rest = &value[value.iter().position(|b| !is_space(b)).unwrap_or(value.len())..];
    let rest = rest.strip_prefix(b"+").or_else(|| rest.strip_prefix(b"-")).unwrap_or(rest);
    rest.first().is_some_and(u8::is_ascii_digit) && !matches!(parse_counter("", value), Ok(n) if n >= 0)
}

#[cfg(feature = "memcached")]
/// A stored value as the caller gave it: without the escape prefix.
fn unescape(mut data: Vec<u8>, flags: u32) -> Vec<u8> {
    if flags & FLAG_ESCAPED != 0 && data.first() == Some(&ESCAPE) {
        data.remove(0);
    }
    data
}

#[cfg(feature = "memcached")]
/// An unsigned decimal as memcached writes it.
fn parse_unsigned(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data.trim_ascii()).ok()?.parse().ok()
}

#[cfg(feature = "memcached")]
/// Waits before compare-and-swap round `round` (from 1): a random time under a bound that
/// doubles with each round lost, from 50 µs up to [`CAS_BACKOFF_MAX`], and never past `deadline`.
async fn cas_backoff(round: usize, deadline: Instant) {
    let bound = Duration::from_micros(50).saturating_mul(1 << round.min(16)).min(CAS_BACKOFF_MAX);
    let wait = bound.mul_f64(fastrand::f64());
    tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
}

#[cfg(feature = "memcached")]
/// The TTL that keeps an item's expiry when it is rewritten, from `mg`'s remaining TTL
/// (`-1`: none).
fn remaining_ttl(ttl: Option<i64>) -> Option<u32> {
    match ttl {
        None | Some(..0) => None,
        Some(seconds) => Some(u32::try_from(seconds).unwrap_or(u32::MAX).clamp(1, limits::MAX_TTL_SECONDS)),
    }
}

#[cfg(feature = "memcached")]
/// An `ms` of `value` that memcached will never take for a number unless it is a counter.
fn store<'a>(key: &'a str, value: &'a [u8], ttl: Option<u32>) -> Request<'a> {
    let escaped = needs_escape(value);
    Request::Set {
        key,
        prefix: escaped.then_some(ESCAPE),
        value,
        flags: if escaped { FLAG_ESCAPED } else { 0 },
        ttl,
        condition: Condition::Always,
    }
}

#[cfg(feature = "memcached")]
#[async_trait]
impl CacheBackend for MemcachedCache {
    fn kind(&self) -> &'static str {
        "memcached"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let request = [Request::Get { key, cas_and_ttl: false }];
        let reply = self.servers.exchange_all(&request, self.deadline()).await?.pop().expect("one reply");
        self.stored_value(key, reply)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let requests: Vec<Request<'_>> = keys.iter().map(|key| Request::Get { key, cas_and_ttl: false }).collect();
        let replies = self.servers.exchange_all(&requests, self.deadline()).await?;
        keys.iter().zip(replies).map(|(key, reply)| self.stored_value(key, reply)).collect()
    }

    async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let reply = self.servers.exchange_all(&[store(key, value, ttl_seconds)], self.deadline()).await?;
        match reply.into_iter().next().expect("one reply") {
            Reply::Done => Ok(()),
            other => Err(self.refused(key, other)),
        }
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let requests: Vec<Request<'_>> = entries.iter().map(|(key, value)| store(key, value, ttl_seconds)).collect();
        let replies = self.servers.exchange_all(&requests, self.deadline()).await?;
        for ((key, _), reply) in entries.iter().zip(replies) {
            if reply != Reply::Done {
                return Err(self.refused(key, reply));
            }
        }
        Ok(())
    }

    async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        Ok(self.increments(&[(key, delta)], ttl_seconds).await?[0])
    }

    async fn incr_many(&self, entries: &[(String, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        let entries: Vec<(&str, i64)> = entries.iter().map(|(key, delta)| (key.as_str(), *delta)).collect();
        self.increments(&entries, ttl_seconds).await
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let reply = self.servers.exchange_all(&[Request::Delete { key }], self.deadline()).await?;
        match reply.into_iter().next().expect("one reply") {
            Reply::Done => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(self.refused(key, other)),
        }
    }

    async fn apply(&self, effects: &[Effect]) -> Result<(), CacheError> {
        let mut writes = Vec::new();
        let mut increments: Vec<(Option<u32>, Vec<(&str, i64)>)> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Set { key, value, ttl } => writes.push(store(key, value, *ttl)),
                Effect::Delete { key } => writes.push(Request::Delete { key }),
                Effect::Incr { key, delta, ttl } => match increments.iter_mut().find(|(t, _)| t == ttl) {
                    Some((_, entries)) => entries.push((key, *delta)),
                    None => increments.push((*ttl, vec![(key, *delta)])),
                },
            }
        }
        let written = async {
            if writes.is_empty() {
                return Ok(());
            }
            let replies = self.servers.exchange_all(&writes, self.deadline()).await?;
            for (request, reply) in writes.iter().zip(replies) {
                let key = request.key().unwrap_or_default();
                match (request, reply) {
                    (Request::Delete { .. }, Reply::Done | Reply::NotFound) | (_, Reply::Done) => {}
                    (_, other) => return Err(self.refused(key, other)),
                }
            }
            Ok(())
        };
        let incremented =
            futures_util::future::join_all(increments.iter().map(|(ttl, entries)| self.increments(entries, *ttl)));
        let (written, incremented) = tokio::join!(written, incremented);
        written?;
        for result in incremented {
            result?;
        }
        Ok(())
    }
}

#[cfg(feature = "memcached")]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_memcached_could_read_as_numbers_are_escaped_unless_they_are_counters() {
        for plain in [&b"0"[..], b"42", b"9223372036854775807", b"", b"abc", b"x5", b"- 5", b" ", b"#7"] {
            assert!(!needs_escape(plain), "{:?}", String::from_utf8_lossy(plain));
        }
        for escaped in [
            &b"-3"[..],
            b"-0",
            b"007",
            b"+5",
            b" 5",
            b"\x0b5",
            b"5 apples",
            b"5\r\n",
            b"9223372036854775808",
            b"18446744073709551616",
        ] {
            assert!(needs_escape(escaped), "{:?}", String::from_utf8_lossy(escaped));
        }
    }

    #[test]
    fn unescape_strips_the_prefix_only_under_the_flag() {
        assert_eq!(unescape(b"#007".to_vec(), FLAG_ESCAPED), b"007");
        assert_eq!(unescape(b"#007".to_vec(), 0), b"#007");
    }

    #[test]
    fn remaining_ttl_keeps_the_expiry_or_none() {
        assert_eq!(remaining_ttl(Some(-1)), None);
        assert_eq!(remaining_ttl(None), None);
        assert_eq!(remaining_ttl(Some(0)), Some(1));
        assert_eq!(remaining_ttl(Some(42)), Some(42));
    }

    #[test]
    fn fast_path_answers_become_per_entry_results() {
        let counter = Counter { key: "k", entries: vec![(0, 1), (2, 5)] };
        let mut outcome = Outcome { values: vec![None; 3], failure: None };
        assert_eq!(counter.settle(16, &mut outcome, "m").unwrap(), None);
        assert_eq!(outcome.values, [Some(11), None, Some(16)]);

        let counter = Counter { key: "k", entries: vec![(0, 1), (1, 5)] };
        let mut outcome = Outcome { values: vec![None; 2], failure: None };
        let after = i64::MAX as u64 - 3 + 6;
        assert_eq!(counter.settle(after, &mut outcome, "m").unwrap(), Some(5), "the second entry is taken back");
        assert_eq!(outcome.values, [Some(i64::MAX - 2), None]);
        assert!(matches!(outcome.failure, Some((1, CacheError::NotANumber(_)))));
    }
}
