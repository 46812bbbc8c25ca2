//! A stand-in for the Sluice runtime, so stream functions are unit-tested with `cargo test`.
//!
//! Only on native targets. On a native target the [`cache`](crate::cache), [`log`](crate::log)
//! and [`config`](crate::config) calls go to an in-memory host kept in a thread-local: every
//! `#[test]` runs on its own thread, so tests never see each other's state. Tests that run
//! several steps on one thread can start over with [`reset`].
//!
//! The stand-in cache follows the same rules as the runtime's caches (see [`crate::cache`]),
//! checked by the same code (the `sluice-contract` crate): the key, value, TTL and batch limits
//! in the same order, counters created at 0 and stored as decimal text, TTLs that apply only
//! when `incr` creates a key, and expiry measured with [`Instant`]. The contract's conformance
//! cases run against both in the integration suite.
//!
//! ```
//! use sluice_sdk::{cache, testing, Output, Outputs, Record, Result};
//!
//! fn count(record: &Record, out: &mut Outputs) -> Result<()> {
//!     let n = cache::incr("seen", 1, None)?;
//!     out.emit(Output::new().with_value(n.to_string()));
//!     Ok(())
//! }
//!
//! let results = testing::run(count, vec![Record::new(), Record::new()]);
//! assert_eq!(results[1].as_ref().unwrap()[0].value_str(), Some("2"));
//! assert_eq!(testing::cache_entries(), vec![("seen".to_string(), b"2".to_vec())]);
//!
//! testing::set_cache_unavailable(true);
//! let results = testing::run(count, vec![Record::new()]);
//! assert!(results[0].as_ref().unwrap_err().is_retryable());
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub use crate::log::Level;
use crate::{Output, Outputs, Record, Result};

/// Runs `function` on each record in order, exactly as the component export does: a fresh
/// [`Outputs`] per record and one result per record (the outputs, or the error with what was
/// emitted discarded). Cache, config and logs are those of the current thread's stand-in.
pub fn run<F>(mut function: F, records: Vec<Record>) -> Vec<Result<Vec<Output>>>
where
    F: FnMut(&Record, &mut Outputs) -> Result<()>,
{
    records
        .iter()
        .map(|record| {
            // A fresh, empty list per record, as the component export gives.
            let mut outputs = Outputs::new();
            function(record, &mut outputs)?;
            Ok(outputs.into_vec())
        })
        .collect()
}

/// Forgets all config, cache entries and logs, and makes the cache available again.
pub fn reset() {
    with_host(|host| *host = Host::default());
}

/// Sets config key `key` to `value`, as an operator would in the pipeline's settings.
pub fn set_config(key: impl Into<String>, value: impl Into<String>) {
    with_host(|host| {
        host.config.insert(key.into(), value.into());
    });
}

/// Every live (unexpired) cache entry, sorted by key.
pub fn cache_entries() -> Vec<(String, Vec<u8>)> {
    let now = Instant::now();
    with_host(|host| {
        let mut entries: Vec<_> = host
            .cache
            .iter()
            .filter(|(_, entry)| entry.is_live(now))
            .map(|(key, entry)| (key.clone(), entry.value.clone()))
            .collect();
        entries.sort();
        entries
    })
}

/// Stores `value` at `key` without expiry, bypassing the limits: seeds the cache before a test.
pub fn cache_put(key: impl Into<String>, value: impl Into<Vec<u8>>) {
    with_host(|host| {
        host.cache.insert(key.into(), Entry { value: value.into(), expires_at: None });
    });
}

/// While `true`, every cache call fails with [`CacheError::Unavailable`](crate::cache::CacheError),
/// as when the runtime cannot reach its cache: use it to test outage handling.
pub fn set_cache_unavailable(unavailable: bool) {
    with_host(|host| host.cache_unavailable = unavailable);
}

/// Every line logged so far on this thread, in order.
pub fn logs() -> Vec<(Level, String)> {
    with_host(|host| host.logs.clone())
}

#[derive(Default)]
struct Host {
    config: BTreeMap<String, String>,
    cache: HashMap<String, Entry>,
    cache_unavailable: bool,
    logs: Vec<(Level, String)>,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

fn with_host<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// The host calls of the `cache`, `log` and `config` modules on native targets.
pub(crate) mod stand_in {
    use super::*;
    use crate::cache::CacheError;
    use sluice_contract::cache as contract;

    type CacheResult<T> = std::result::Result<T, CacheError>;

    /// Runs a cache call on the stand-in cache, unless it is marked unavailable.
    fn with_cache<R>(f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> CacheResult<R>) -> CacheResult<R> {
        with_host(|host| {
            if host.cache_unavailable {
                return Err(CacheError::Unavailable("the stand-in cache is marked unavailable".to_owned()));
            }
            f(&mut host.cache, Instant::now())
        })
    }

    /// A TTL the contract has accepted, as a duration.
    fn ttl(ttl_seconds: Option<u32>) -> Option<Duration> {
        ttl_seconds.map(|s| Duration::from_secs(u64::from(s)))
    }

    fn live<'a>(cache: &'a HashMap<String, Entry>, key: &str, now: Instant) -> Option<&'a Entry> {
        cache.get(key).filter(|entry| entry.is_live(now))
    }

    fn incr_one(
        cache: &mut HashMap<String, Entry>,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        now: Instant,
    ) -> CacheResult<i64> {
        let (value, expires_at) = match live(cache, key, now) {
            Some(entry) => {
                let current = contract::parse_counter(key, &entry.value)?;
                let value = contract::add_to_counter(key, current, delta)?;
                (value, entry.expires_at)
            }
            None => (delta, ttl.map(|ttl| now + ttl)),
        };
        cache.insert(key.to_owned(), Entry { value: contract::format_counter(value).into_bytes(), expires_at });
        Ok(value)
    }

    pub(crate) fn cache_get(key: &str) -> CacheResult<Option<Vec<u8>>> {
        with_cache(|cache, now| {
            contract::check_get(key)?;
            Ok(live(cache, key, now).map(|entry| entry.value.clone()))
        })
    }

    pub(crate) fn cache_get_many(keys: &[&str]) -> CacheResult<Vec<Option<Vec<u8>>>> {
        with_cache(|cache, now| {
            contract::check_get_many(keys.iter().copied())?;
            let values: Vec<_> =
                keys.iter().map(|key| live(cache, key, now).map(|entry| entry.value.clone())).collect();
            contract::check_get_many_answer(&values)?;
            Ok(values)
        })
    }

    pub(crate) fn cache_set(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> CacheResult<()> {
        with_cache(|cache, now| {
            contract::check_set(key, value, ttl_seconds)?;
            cache.insert(
                key.to_owned(),
                Entry { value: value.to_vec(), expires_at: ttl(ttl_seconds).map(|ttl| now + ttl) },
            );
            Ok(())
        })
    }

    pub(crate) fn cache_set_many(entries: &[(&str, &[u8])], ttl_seconds: Option<u32>) -> CacheResult<()> {
        with_cache(|cache, now| {
            contract::check_set_many(entries.iter().copied(), ttl_seconds)?;
            for (key, value) in entries {
                let entry = Entry { value: value.to_vec(), expires_at: ttl(ttl_seconds).map(|ttl| now + ttl) };
                cache.insert((*key).to_owned(), entry);
            }
            Ok(())
        })
    }

    pub(crate) fn cache_incr(key: &str, delta: i64, ttl_seconds: Option<u32>) -> CacheResult<i64> {
        with_cache(|cache, now| {
            contract::check_incr(key, ttl_seconds)?;
            incr_one(cache, key, delta, ttl(ttl_seconds), now)
        })
    }

    pub(crate) fn cache_incr_many(entries: &[(&str, i64)], ttl_seconds: Option<u32>) -> CacheResult<Vec<i64>> {
        with_cache(|cache, now| {
            contract::check_incr_many(entries.iter().map(|(key, _)| *key), ttl_seconds)?;
            entries.iter().map(|(key, delta)| incr_one(cache, key, *delta, ttl(ttl_seconds), now)).collect()
        })
    }

    pub(crate) fn cache_delete(key: &str) -> CacheResult<bool> {
        with_cache(|cache, now| {
            contract::check_get(key)?;
            Ok(cache.remove(key).is_some_and(|entry| entry.is_live(now)))
        })
    }

    pub(crate) fn log(level: Level, message: &str) {
        let mut end = message.len().min(crate::log::MAX_MESSAGE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        with_host(|host| host.logs.push((level, message[..end].to_owned())));
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        with_host(|host| host.config.get(key).cloned())
    }

    pub(crate) fn config_all() -> Vec<(String, String)> {
        with_host(|host| host.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::{self, CacheError};
    use crate::{Error, config, log};

    fn ttl(seconds: u64) -> Option<Duration> {
        Some(Duration::from_secs(seconds))
    }

    #[test]
    fn set_get_delete_round_trip() {
        cache::set("a", b"1", None).unwrap();
        assert_eq!(cache::get("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(cache::get("b").unwrap(), None);
        assert!(cache::delete("a").unwrap());
        assert!(!cache::delete("a").unwrap());
        assert_eq!(cache::get("a").unwrap(), None);
    }

    #[test]
    fn many_calls_keep_order() {
        cache::set_many(&[("x", b"1"), ("y", b"2")], ttl(60)).unwrap();
        let got = cache::get_many(&["y", "missing", "x"]).unwrap();
        assert_eq!(got, vec![Some(b"2".to_vec()), None, Some(b"1".to_vec())]);
        assert_eq!(cache::incr_many(&[("c", 1), ("c", 1), ("d", -4), ("c", 5)], None).unwrap(), vec![1, 2, -4, 7]);
    }

    #[test]
    fn keys_must_be_1_to_200_bytes_without_whitespace_or_control_characters() {
        for bad in [String::new(), "a b".into(), "tab\t".into(), "nul\0".into(), "x".repeat(201)] {
            assert!(matches!(cache::get(&bad), Err(CacheError::InvalidKey(_))), "{bad:?}");
            assert!(matches!(cache::set(&bad, b"v", None), Err(CacheError::InvalidKey(_))), "{bad:?}");
            assert!(matches!(cache::incr(&bad, 1, None), Err(CacheError::InvalidKey(_))), "{bad:?}");
        }
        cache::set(&"x".repeat(200), b"v", None).unwrap();
        cache::set("ключ:ü", b"v", None).unwrap();
    }

    #[test]
    fn values_over_a_million_bytes_are_too_large() {
        cache::set("ok", &vec![0; 1_000_000], None).unwrap();
        assert!(matches!(cache::set("big", &vec![0; 1_000_001], None), Err(CacheError::TooLarge(_))));
        assert!(matches!(
            cache::set_many(&[("a", b"1"), ("big", &vec![0; 1_000_001])], None),
            Err(CacheError::TooLarge(_))
        ));
        assert_eq!(cache::get("a").unwrap(), None, "a rejected set_many writes nothing");
    }

    #[test]
    fn ttls_must_be_1_second_to_30_days() {
        assert!(matches!(cache::set("k", b"v", Some(Duration::ZERO)), Err(CacheError::InvalidArgument(_))));
        assert!(matches!(cache::set("k", b"v", ttl(2_592_001)), Err(CacheError::InvalidArgument(_))));
        assert!(matches!(cache::incr("k", 1, ttl(2_592_001)), Err(CacheError::InvalidArgument(_))));
        cache::set("k", b"v", ttl(2_592_000)).unwrap();
        cache::set("k", b"v", Some(Duration::from_millis(1))).unwrap();
    }

    #[test]
    fn batches_over_1000_entries_are_rejected() {
        let keys: Vec<String> = (0..1_001).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(matches!(cache::get_many(&refs), Err(CacheError::InvalidArgument(_))));
        assert_eq!(cache::get_many(&refs[..1_000]).unwrap().len(), 1_000);
        let incrs: Vec<(&str, i64)> = refs.iter().map(|k| (*k, 1)).collect();
        assert!(matches!(cache::incr_many(&incrs, None), Err(CacheError::InvalidArgument(_))));
    }

    #[test]
    fn incr_creates_at_zero_and_stores_decimal_text() {
        assert_eq!(cache::incr("n", -3, None).unwrap(), -3);
        assert_eq!(cache::get("n").unwrap(), Some(b"-3".to_vec()));
        assert_eq!(cache::incr("n", 10, None).unwrap(), 7);
        cache::set("n2", b"41", None).unwrap();
        assert_eq!(cache::incr("n2", 1, None).unwrap(), 42);
    }

    #[test]
    fn incr_reads_counters_only_in_canonical_decimal_form_like_the_host() {
        for text in ["007", "+5", "-0", " 5", "5 "] {
            cache::set("c", text.as_bytes(), None).unwrap();
            assert!(matches!(cache::incr("c", 1, None), Err(CacheError::NotANumber(_))), "{text:?}");
        }
        cache::set("c", b"-3", None).unwrap();
        assert_eq!(cache::incr("c", 1, None).unwrap(), -2);
    }

    #[test]
    fn incr_on_text_or_overflow_is_not_a_number() {
        cache::set("t", b"hello", None).unwrap();
        assert!(matches!(cache::incr("t", 1, None), Err(CacheError::NotANumber(_))));
        cache::set("max", i64::MAX.to_string().as_bytes(), None).unwrap();
        assert!(matches!(cache::incr("max", 1, None), Err(CacheError::NotANumber(_))));
        assert_eq!(
            cache::get("max").unwrap(),
            Some(i64::MAX.to_string().into_bytes()),
            "a failed incr changes nothing"
        );
        let err = cache::incr_many(&[("fresh", 1), ("t", 1)], None).unwrap_err();
        assert!(matches!(err, CacheError::NotANumber(_)));
        assert_eq!(cache::get("fresh").unwrap(), Some(b"1".to_vec()), "earlier entries stay applied");
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        cache::set("short", b"v", Some(Duration::from_millis(10))).unwrap();
        assert_eq!(cache::get("short").unwrap(), Some(b"v".to_vec()), "10 ms rounds up to 1 s");
        with_host(|host| host.cache.get_mut("short").unwrap().expires_at = Some(Instant::now()));
        assert_eq!(cache::get("short").unwrap(), None);
        assert!(cache_entries().is_empty());
        assert!(!cache::delete("short").unwrap(), "an expired key does not exist");
    }

    #[test]
    fn incr_ttl_applies_only_when_it_creates_the_key() {
        assert_eq!(cache::incr("w", 1, ttl(60)).unwrap(), 1);
        let first_expiry = with_host(|host| host.cache["w"].expires_at).unwrap();
        assert_eq!(cache::incr("w", 1, ttl(3_600)).unwrap(), 2);
        assert_eq!(with_host(|host| host.cache["w"].expires_at), Some(first_expiry), "the window is fixed");
        cache::incr("forever", 1, None).unwrap();
        assert_eq!(cache::incr("forever", 1, ttl(60)).unwrap(), 2);
        assert_eq!(with_host(|host| host.cache["forever"].expires_at), None);
        // An expired counter starts over, with the new TTL.
        with_host(|host| host.cache.get_mut("w").unwrap().expires_at = Some(Instant::now()));
        assert_eq!(cache::incr("w", 5, ttl(60)).unwrap(), 5);
    }

    #[test]
    fn json_helpers() {
        cache::set_json("j", &serde_json::json!({"a": 1}), None).unwrap();
        assert_eq!(cache::get("j").unwrap(), Some(br#"{"a":1}"#.to_vec()));
        let v: Option<serde_json::Value> = cache::get_json("j").unwrap();
        assert_eq!(v, Some(serde_json::json!({"a": 1})));
        assert_eq!(cache::get_json::<serde_json::Value>("nothing").unwrap(), None);
        cache::set("bad", b"{", None).unwrap();
        assert!(!cache::get_json::<serde_json::Value>("bad").unwrap_err().is_retryable());
    }

    #[test]
    fn an_unavailable_cache_fails_every_call_retryably() {
        cache_put("k", "v");
        set_cache_unavailable(true);
        assert!(cache::get("k").unwrap_err().is_unavailable());
        assert!(cache::get_many(&["k"]).unwrap_err().is_unavailable());
        assert!(cache::set("k", b"v", None).unwrap_err().is_unavailable());
        assert!(cache::set_many(&[], None).unwrap_err().is_unavailable());
        assert!(cache::incr("k", 1, None).unwrap_err().is_unavailable());
        assert!(cache::incr_many(&[], None).unwrap_err().is_unavailable());
        assert!(cache::delete("k").unwrap_err().is_unavailable());
        assert!(Error::from(cache::get("k").unwrap_err()).is_retryable());
        set_cache_unavailable(false);
        assert_eq!(cache::get("k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn config_and_logs() {
        set_config("b", "2");
        set_config("a", "1");
        assert_eq!(config::get("a").as_deref(), Some("1"));
        assert_eq!(config::get("zzz"), None);
        assert_eq!(config::get_or("zzz", "dflt"), "dflt");
        assert_eq!(config::all(), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        log::info("hello");
        log::warn(String::from("careful"));
        log::debug("é".repeat(3_000));
        let logs = logs();
        assert_eq!(logs[0], (Level::Info, "hello".to_owned()));
        assert_eq!(logs[1], (Level::Warn, "careful".to_owned()));
        assert_eq!(logs[2].1.len(), 4_096, "truncated at a character boundary");
    }

    #[test]
    fn reset_forgets_everything() {
        set_config("a", "1");
        cache_put("k", "v");
        log::error("x");
        set_cache_unavailable(true);
        reset();
        assert_eq!(config::all(), vec![]);
        assert!(cache_entries().is_empty());
        assert!(logs().is_empty());
        assert_eq!(cache::get("k").unwrap(), None);
    }

    #[test]
    fn run_gives_one_result_per_record_and_discards_outputs_of_failures() {
        let function = |record: &Record, out: &mut Outputs| -> Result<()> {
            out.emit(Output::from_record(record));
            if record.value() == Some(b"bad") {
                return Err(Error::fatal(format!("bad record at offset {}", record.offset())));
            }
            out.emit(Output::new().with_value("extra").to("side"));
            Ok(())
        };
        let records =
            vec![Record::new().with_offset(1).with_value("ok"), Record::new().with_offset(2).with_value("bad")];
        let results = run(function, records);
        assert_eq!(results.len(), 2);
        let first = results[0].as_ref().unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].target(), Some("side"));
        assert_eq!(results[1], Err(Error::fatal("bad record at offset 2")));
    }
}
