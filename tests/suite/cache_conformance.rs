//! Every cache backend gives every call the same meaning: one set of checks, run unchanged on
//! the in-memory cache, a real Redis and a real Memcached (started on loopback for each test).
//!
//! A check is an async function of a backend; [`on_every_backend`] runs it on the three at once
//! and reports every backend it failed on. Checks that wait for a TTL wait once, for all three.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice::cache::{
    self, Cache, CacheBackend, CacheError, EffectLimits, EffectsBreach, Fence, Fenced, Namespace, limits,
};
use sluice_contract::conformance::{Call, Case, answer, cases};
use sluice_tests::servers::{MemcachedServer, RedisServer};

/// Runs `check` on a fresh in-memory backend, a Redis backend and a Memcached backend,
/// concurrently, each on its own fresh server, and fails with the failure of every backend that
/// failed it.
async fn on_every_backend<F, Fut>(check: F)
where
    F: Fn(Arc<dyn CacheBackend>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let redis = RedisServer::start();
    let memcached = MemcachedServer::start();
    let mut runs = Vec::new();
    for url in ["memory://".to_owned(), redis.url(), memcached.url()] {
        let backend = cache::connect(&url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        runs.push((backend.kind(), tokio::spawn(check(backend))));
    }
    let mut failures = Vec::new();
    for (kind, run) in runs {
        if let Err(error) = run.await {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("on {kind}: {message}"));
        }
    }
    assert!(failures.is_empty(), "the backends disagree:\n{}", failures.join("\n"));
}

/// A handle on `backend` in namespace `name`, as a pipeline gets one.
fn handle(backend: &Arc<dyn CacheBackend>, name: &str) -> Cache {
    Cache::new(Arc::clone(backend), Namespace::new(name).expect("namespace"))
}

/// Longer than a 2-second TTL on every backend (Memcached counts TTLs in whole seconds of its
/// own clock, so a TTL of `n` seconds ends between `n - 1` and `n` seconds after the write).
const PAST_A_TWO_SECOND_TTL: Duration = Duration::from_millis(2600);

fn text(value: &str) -> Option<Vec<u8>> {
    Some(value.as_bytes().to_vec())
}

#[tokio::test]
async fn get_of_a_missing_key_is_none_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        assert_eq!(cache.get("never-set").await, Ok(None));
    })
    .await;
}

#[tokio::test]
async fn set_then_get_returns_exactly_the_bytes_stored_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let every_byte: Vec<u8> = (0..=255).collect();
        for (key, value) in [("text", b"hello".to_vec()), ("empty", Vec::new()), ("binary", every_byte)] {
            cache.set(key, &value, None).await.unwrap();
            assert_eq!(cache.get(key).await, Ok(Some(value)), "{key}");
        }
        cache.set("with-ttl", b"v", Some(60)).await.unwrap();
        assert_eq!(cache.get("with-ttl").await, Ok(text("v")));
    })
    .await;
}

#[tokio::test]
async fn values_that_look_like_numbers_come_back_unchanged_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        for value in ["007", "+5", " 5", "5 ", "-0", "5 apples", "\t9", "18446744073709551616", "#7", "-3", "42"] {
            cache.set("v", value.as_bytes(), None).await.unwrap();
            assert_eq!(cache.get("v").await, Ok(text(value)), "{value:?}");
            cache.set_many(&[("w".into(), value.as_bytes().to_vec())], None).await.unwrap();
            assert_eq!(cache.get_many(&["w".into()]).await, Ok(vec![text(value)]), "{value:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn set_with_ttl_expires_and_a_new_set_replaces_value_and_ttl_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        cache.set("short", b"v", Some(1)).await.unwrap();
        cache.set("long", b"v", Some(60)).await.unwrap();
        cache.set("gains-ttl", b"old", None).await.unwrap();
        cache.set("gains-ttl", b"new", Some(2)).await.unwrap();
        cache.set("loses-ttl", b"old", Some(2)).await.unwrap();
        cache.set("loses-ttl", b"new", None).await.unwrap();
        assert_eq!(cache.get("gains-ttl").await, Ok(text("new")));
        assert_eq!(cache.get("loses-ttl").await, Ok(text("new")));

        tokio::time::sleep(PAST_A_TWO_SECOND_TTL).await;
        assert_eq!(cache.get("short").await, Ok(None), "a TTL of 1 s has passed");
        assert_eq!(cache.get("long").await, Ok(text("v")), "a TTL of 60 s has not");
        assert_eq!(cache.get("gains-ttl").await, Ok(None), "the second set gave the key a TTL");
        assert_eq!(cache.get("loses-ttl").await, Ok(text("new")), "the second set removed the TTL");
        assert_eq!(cache.get_many(&["short".into(), "long".into()]).await, Ok(vec![None, text("v")]));
    })
    .await;
}

#[tokio::test]
async fn incr_creates_a_missing_counter_holding_the_delta_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        assert_eq!(cache.incr("up", 5, None).await, Ok(5));
        assert_eq!(cache.get("up").await, Ok(text("5")));
        assert_eq!(cache.incr("zero", 0, None).await, Ok(0));
        assert_eq!(cache.get("zero").await, Ok(text("0")));
        assert_eq!(cache.incr("down", -3, None).await, Ok(-3));
        assert_eq!(cache.get("down").await, Ok(text("-3")));
        assert_eq!(cache.incr("with-ttl", 7, Some(60)).await, Ok(7));
    })
    .await;
}

#[tokio::test]
async fn incr_adds_to_an_existing_counter_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        cache.set("c", b"10", None).await.unwrap();
        assert_eq!(cache.incr("c", 5, None).await, Ok(15));
        assert_eq!(cache.incr("c", 1, Some(60)).await, Ok(16));
        assert_eq!(cache.get("c").await, Ok(text("16")));
        cache.set("grows", b"9", None).await.unwrap();
        assert_eq!(cache.incr("grows", 991, None).await, Ok(1000));
        assert_eq!(cache.get("grows").await, Ok(text("1000")));
    })
    .await;
}

#[tokio::test]
async fn negative_deltas_cross_zero_both_ways_and_store_signed_decimal_text_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        assert_eq!(cache.incr("k", 2, None).await, Ok(2));
        assert_eq!(cache.incr("k", -5, None).await, Ok(-3));
        assert_eq!(cache.get("k").await, Ok(text("-3")));
        assert_eq!(cache.incr("k", 1, None).await, Ok(-2), "a positive delta on a negative counter");
        assert_eq!(cache.incr("k", 10, None).await, Ok(8));
        assert_eq!(cache.get("k").await, Ok(text("8")));
        assert_eq!(cache.incr("k", -8, None).await, Ok(0));
        assert_eq!(cache.get("k").await, Ok(text("0")));

        cache.set("shrinks", b"1000", None).await.unwrap();
        assert_eq!(cache.incr("shrinks", -995, None).await, Ok(5));
        assert_eq!(cache.get("shrinks").await, Ok(text("5")), "no padding left by the longer number");
        cache.set("set-negative", b"-7", None).await.unwrap();
        assert_eq!(cache.incr("set-negative", 7, None).await, Ok(0));
        assert_eq!(cache.get("set-negative").await, Ok(text("0")));
    })
    .await;
}

#[tokio::test]
async fn incr_on_a_value_that_is_not_a_canonical_counter_is_not_a_number_and_leaves_it_unchanged_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let not_counters = [
            "abc",
            "",
            "12abc",
            "1.5",
            "007",
            "+5",
            " 5",
            "5 ",
            "-0",
            "5 apples",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
        ];
        for value in not_counters {
            cache.set("v", value.as_bytes(), None).await.unwrap();
            for delta in [1, -1, 0] {
                let result = cache.incr("v", delta, None).await;
                assert!(matches!(result, Err(CacheError::NotANumber(_))), "incr of {value:?} by {delta}: {result:?}");
                let result = cache.incr_many(&[("v".into(), delta)], None).await;
                assert!(matches!(result, Err(CacheError::NotANumber(_))), "incr-many of {value:?}: {result:?}");
            }
            assert_eq!(cache.get("v").await, Ok(text(value)), "the failed incr changed {value:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn incr_past_the_signed_64_bit_range_is_not_a_number_and_leaves_the_counter_unchanged_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let (max, min) = (i64::MAX.to_string(), i64::MIN.to_string());

        cache.set("max", (i64::MAX - 1).to_string().as_bytes(), None).await.unwrap();
        assert_eq!(cache.incr("max", 1, None).await, Ok(i64::MAX));
        let result = cache.incr("max", 1, None).await;
        assert!(matches!(result, Err(CacheError::NotANumber(_))), "{result:?}");
        assert_eq!(cache.get("max").await, Ok(text(&max)));

        assert_eq!(cache.incr("created-at-max", i64::MAX, None).await, Ok(i64::MAX));
        let result = cache.incr("created-at-max", i64::MAX, None).await;
        assert!(matches!(result, Err(CacheError::NotANumber(_))), "{result:?}");
        assert_eq!(cache.get("created-at-max").await, Ok(text(&max)));

        cache.set("min", (i64::MIN + 1).to_string().as_bytes(), None).await.unwrap();
        assert_eq!(cache.incr("min", -1, None).await, Ok(i64::MIN));
        let result = cache.incr("min", -1, None).await;
        assert!(matches!(result, Err(CacheError::NotANumber(_))), "{result:?}");
        assert_eq!(cache.get("min").await, Ok(text(&min)));

        let result =
            cache.incr_many(&[("many".into(), i64::MAX - 1), ("many".into(), 1), ("many".into(), 1)], None).await;
        assert!(matches!(result, Err(CacheError::NotANumber(_))), "{result:?}");
        assert_eq!(cache.get("many").await, Ok(text(&max)), "the entries before the failing one are applied");
    })
    .await;
}

#[tokio::test]
async fn incr_ttl_applies_only_when_incr_creates_the_counter_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        assert_eq!(cache.incr("created", 1, Some(2)).await, Ok(1));
        assert_eq!(cache.incr("created", 1, Some(60)).await, Ok(2), "a later TTL does not extend it");
        assert_eq!(cache.incr("created-negative", -1, Some(2)).await, Ok(-1));
        assert_eq!(cache.incr("created-negative", -1, Some(60)).await, Ok(-2));
        assert_eq!(
            cache.incr_many(&[("created-many".into(), 1), ("created-many".into(), -3)], Some(2)).await,
            Ok(vec![1, -2])
        );
        assert_eq!(cache.incr("created-many", 1, Some(60)).await, Ok(-1));
        cache.set("no-expiry", b"5", None).await.unwrap();
        assert_eq!(cache.incr("no-expiry", 1, Some(1)).await, Ok(6), "an existing counter without TTL gains none");
        assert_eq!(cache.incr("no-expiry", -1, Some(1)).await, Ok(5));
        cache.set("set-with-ttl", b"5", Some(2)).await.unwrap();
        assert_eq!(cache.incr("set-with-ttl", -2, None).await, Ok(3), "incr keeps the expiry the set gave it");
        assert_eq!(cache.incr("set-with-ttl", 2, None).await, Ok(5));
        assert_eq!(cache.incr("long", 1, Some(60)).await, Ok(1));

        tokio::time::sleep(PAST_A_TWO_SECOND_TTL).await;
        for expired in ["created", "created-negative", "created-many", "set-with-ttl"] {
            assert_eq!(cache.get(expired).await, Ok(None), "{expired} should have expired");
        }
        assert_eq!(cache.get("no-expiry").await, Ok(text("5")));
        assert_eq!(cache.get("long").await, Ok(text("1")));
        assert_eq!(cache.incr("created", 1, None).await, Ok(1), "an expired counter starts again from 0");
    })
    .await;
}

#[tokio::test]
async fn delete_reports_whether_the_key_existed_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        cache.set("k", b"v", None).await.unwrap();
        assert_eq!(cache.delete("k").await, Ok(true));
        assert_eq!(cache.delete("k").await, Ok(false));
        assert_eq!(cache.get("k").await, Ok(None));
        assert_eq!(cache.delete("never-set").await, Ok(false));
    })
    .await;
}

#[tokio::test]
async fn get_many_answers_every_key_in_order_with_none_for_misses_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        cache.set("a", b"1", None).await.unwrap();
        cache.set("c", b"3", None).await.unwrap();
        let keys: Vec<String> = ["a", "b", "c", "a", "d"].map(String::from).into();
        assert_eq!(cache.get_many(&keys).await, Ok(vec![text("1"), None, text("3"), text("1"), None]));
        assert_eq!(cache.get_many(&[]).await, Ok(vec![]));
        let many: Vec<String> = (0..limits::MAX_BATCH_KEYS).map(|i| format!("key-{i}")).collect();
        let values = cache.get_many(&many).await.unwrap();
        assert_eq!(values.len(), limits::MAX_BATCH_KEYS);
        assert!(values.iter().all(Option::is_none));
    })
    .await;
}

#[tokio::test]
async fn set_many_stores_every_entry_with_one_ttl_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let entries: Vec<(String, Vec<u8>)> =
            (0..100).map(|i| (format!("k{i}"), format!("v{i}").into_bytes())).collect();
        cache.set_many(&entries, None).await.unwrap();
        let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
        let expected: Vec<Option<Vec<u8>>> = entries.iter().map(|(_, v)| Some(v.clone())).collect();
        assert_eq!(cache.get_many(&keys).await, Ok(expected));
        cache.set_many(&[("k0".into(), b"replaced".to_vec())], Some(60)).await.unwrap();
        assert_eq!(cache.get("k0").await, Ok(text("replaced")));
        assert_eq!(cache.set_many(&[], None).await, Ok(()));
    })
    .await;
}

#[tokio::test]
async fn incr_many_applies_entries_in_order_and_a_repeated_key_sees_the_earlier_ones_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let entries: Vec<(String, i64)> =
            [("a", 1), ("b", 5), ("a", 2), ("c", -4), ("a", -10), ("b", 0)].map(|(k, d)| (k.to_owned(), d)).into();
        assert_eq!(cache.incr_many(&entries, None).await, Ok(vec![1, 5, 3, -4, -7, 5]));
        assert_eq!(
            cache.get_many(&["a".into(), "b".into(), "c".into()]).await,
            Ok(vec![text("-7"), text("5"), text("-4")])
        );
        let entries: Vec<(String, i64)> = [("a", 10), ("a", 1), ("b", 1)].map(|(k, d)| (k.to_owned(), d)).into();
        assert_eq!(cache.incr_many(&entries, None).await, Ok(vec![3, 4, 6]), "positive deltas on a negative counter");
        assert_eq!(cache.incr_many(&[], None).await, Ok(vec![]));

        cache.set("text", b"abc", None).await.unwrap();
        let result = cache.incr_many(&[("fine".into(), 1), ("text".into(), 1)], None).await;
        assert!(matches!(result, Err(CacheError::NotANumber(_))), "{result:?}");
        assert_eq!(cache.get("text").await, Ok(text("abc")));

        let hot: Vec<(String, i64)> = (0..limits::MAX_BATCH_KEYS).map(|i| (format!("w{}", i % 10), 1)).collect();
        let values = cache.incr_many(&hot, None).await.unwrap();
        assert_eq!(values[limits::MAX_BATCH_KEYS - 1], 100, "the last occurrence of w9 sees the 99 before it");
    })
    .await;
}

#[tokio::test]
async fn concurrent_increments_of_shared_counters_are_never_lost_on_every_backend() {
    on_every_backend(|backend| async move {
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let cache = handle(&backend, "conformance");
                tokio::spawn(async move {
                    for round in 0..25 {
                        let mixed = if (writer + round) % 2 == 0 { 3 } else { -2 };
                        let entries: Vec<(String, i64)> =
                            vec![("up".into(), 1), ("down".into(), -1), ("mixed".into(), mixed), ("up".into(), 1)];
                        cache.incr_many(&entries, None).await.unwrap();
                        cache.incr("single", if writer % 2 == 0 { 1 } else { -1 }, None).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let cache = handle(&backend, "conformance");
        let keys: Vec<String> = ["up", "down", "mixed", "single"].map(String::from).into();
        assert_eq!(cache.get_many(&keys).await, Ok(vec![text("400"), text("-200"), text("100"), text("0")]));
    })
    .await;
}

#[tokio::test]
async fn values_up_to_the_size_limit_are_stored_and_larger_ones_are_too_large_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let largest: Vec<u8> = (0..limits::MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
        assert_eq!(largest.len(), 1_000_000);
        cache.set("largest", &largest, None).await.unwrap();
        assert_eq!(cache.get("largest").await, Ok(Some(largest.clone())));

        let too_large = vec![b'x'; limits::MAX_VALUE_BYTES + 1];
        let result = cache.set("too-large", &too_large, None).await;
        assert!(matches!(result, Err(CacheError::TooLarge(_))), "{result:?}");
        let result = cache.set_many(&[("fine".into(), b"v".to_vec()), ("too-large".into(), too_large)], None).await;
        assert!(matches!(result, Err(CacheError::TooLarge(_))), "{result:?}");
        assert_eq!(cache.get("too-large").await, Ok(None));
    })
    .await;
}

#[tokio::test]
async fn keys_follow_the_same_rules_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        let longest = "k".repeat(limits::MAX_KEY_BYTES);
        let longest_multibyte = "é".repeat(limits::MAX_KEY_BYTES / 2);
        for key in [longest.as_str(), longest_multibyte.as_str(), "clé:日本:ü", "a/b?c=d&e#f", "{json}"] {
            cache.set(key, b"v", None).await.unwrap();
            assert_eq!(cache.get(key).await, Ok(text("v")), "{key}");
            assert_eq!(cache.delete(key).await, Ok(true), "{key}");
            assert_eq!(cache.incr(key, 1, None).await, Ok(1), "{key}");
            assert_eq!(cache.get_many(&[key.into()]).await, Ok(vec![text("1")]), "{key}");
        }
        let too_long = "k".repeat(limits::MAX_KEY_BYTES + 1);
        for key in [too_long.as_str(), "", "a b", "a\nb", "a\tb", "a\rb", "a\u{0}b", "a\u{7f}b", "a\u{a0}b"] {
            let invalid = |result: Result<(), CacheError>| matches!(result, Err(CacheError::InvalidKey(_)));
            assert!(invalid(cache.set(key, b"v", None).await), "set {key:?}");
            assert!(invalid(cache.get(key).await.map(drop)), "get {key:?}");
            assert!(invalid(cache.incr(key, 1, None).await.map(drop)), "incr {key:?}");
            assert!(invalid(cache.delete(key).await.map(drop)), "delete {key:?}");
            assert!(invalid(cache.get_many(&["ok".into(), key.into()]).await.map(drop)), "get-many {key:?}");
            assert!(invalid(cache.incr_many(&[(key.into(), 1)], None).await.map(drop)), "incr-many {key:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn namespaces_keep_pipelines_apart_and_a_shared_namespace_shares_keys_on_every_backend() {
    on_every_backend(|backend| async move {
        let (a, b, a_again) = (handle(&backend, "a"), handle(&backend, "b"), handle(&backend, "a"));
        a.set("k", b"from-a", None).await.unwrap();
        assert_eq!(b.get("k").await, Ok(None), "b sees a's key");
        assert_eq!(a_again.get("k").await, Ok(text("from-a")), "a second handle on namespace a");
        assert_eq!(a.incr("n", 5, None).await, Ok(5));
        assert_eq!(b.incr("n", 1, None).await, Ok(1));
        assert_eq!(a_again.incr("n", 1, None).await, Ok(6));
        assert_eq!(b.delete("k").await, Ok(false));
        assert_eq!(a.get_many(&["k".into(), "n".into()]).await, Ok(vec![text("from-a"), text("6")]));
        assert_eq!(b.get_many(&["k".into(), "n".into()]).await, Ok(vec![None, text("1")]));
    })
    .await;
}

#[tokio::test]
async fn stats_count_hits_misses_writes_errors_and_backend_latency_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "conformance");
        cache.set("k", b"v", None).await.unwrap();
        cache.get("k").await.unwrap();
        cache.get_many(&["k".into(), "missing".into()]).await.unwrap();
        cache.incr("n", 1, None).await.unwrap();
        cache.set("text", b"abc", None).await.unwrap();
        cache.incr("text", 1, None).await.unwrap_err();
        cache.get("bad key").await.unwrap_err();
        let stats = cache.stats().snapshot();
        assert_eq!((stats.hits, stats.misses, stats.writes), (2, 1, 3));
        assert_eq!((stats.errors, stats.unavailable, stats.timeouts, stats.connection_errors), (2, 0, 0, 0));
        assert_eq!(stats.latency.count, 6, "every call that reached the backend, the failed incr included");
        assert_eq!(stats.latency.buckets.iter().sum::<u64>(), 6);
        assert!(stats.latency.mean().is_some());
    })
    .await;
}

// Batch-atomic cache effects: one call's writes wait in an overlay (`CallCache`) that the call
// reads through, and reach the backend only when `apply` runs.

/// Every key a contract case names.
fn keys_of(case: &Case) -> Vec<String> {
    let mut keys: Vec<String> = case
        .steps
        .iter()
        .flat_map(|step| match &step.call {
            Call::Get(key) | Call::Set(key, ..) | Call::Incr(key, ..) | Call::Delete(key) => vec![key.clone()],
            Call::GetMany(keys) => keys.clone(),
            Call::SetMany(entries, _) => entries.iter().map(|(k, _)| k.clone()).collect(),
            Call::IncrMany(entries, _) => entries.iter().map(|(k, _)| k.clone()).collect(),
        })
        .filter(|key| cache::check_key(key).is_ok())
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(limits::MAX_BATCH_KEYS);
    keys
}

#[tokio::test]
async fn every_contract_case_gets_its_stated_answers_inside_one_call_and_the_apply_stores_what_the_call_saw_on_every_backend()
 {
    on_every_backend(|backend| async move {
        let mut failures = Vec::new();
        for (number, case) in cases().into_iter().enumerate() {
            let cache = handle(&backend, &format!("case{number}"));
            let mut call = cache.begin_call(EffectLimits::default());
            let mut answers = Vec::new();
            for step in &case.steps {
                answers.push(match &step.call {
                    Call::Get(key) => answer(call.get(key).await),
                    Call::GetMany(keys) => answer(call.get_many(keys).await),
                    Call::Set(key, value, ttl) => answer(call.set(key, value, *ttl).await),
                    Call::SetMany(entries, ttl) => answer(call.set_many(entries, *ttl).await),
                    Call::Incr(key, delta, ttl) => answer(call.incr(key, *delta, *ttl).await),
                    Call::IncrMany(entries, ttl) => answer(call.incr_many(entries, *ttl).await),
                    Call::Delete(key) => answer(call.delete(key).await),
                });
            }
            if let Err(error) = case.verify(&answers) {
                failures.push(error);
                continue;
            }
            let keys = keys_of(&case);
            let seen = call.get_many(&keys).await.unwrap();
            assert_eq!(cache.get_many(&keys).await.unwrap(), vec![None; keys.len()], "{}: applied early", case.name);
            call.apply().await.unwrap();
            let stored = cache.get_many(&keys).await.unwrap();
            if stored != seen {
                failures.push(format!("{}: the call saw {seen:?} but the apply stored {stored:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
    .await;
}

#[tokio::test]
async fn a_call_reads_its_own_writes_and_the_backend_sees_them_only_after_the_apply_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "overlay");
        cache.set("old", b"before", None).await.unwrap();
        cache.set("counter", b"10", None).await.unwrap();
        cache.set("doomed", b"x", None).await.unwrap();

        let mut call = cache.begin_call(EffectLimits::default());
        call.set("new", b"written", None).await.unwrap();
        call.set_many(&[("old".into(), b"after".to_vec())], None).await.unwrap();
        assert_eq!(call.incr("counter", 5, None).await, Ok(15));
        assert_eq!(call.incr_many(&[("counter".into(), 1), ("fresh".into(), -2)], None).await, Ok(vec![16, -2]));
        assert_eq!(call.delete("doomed").await, Ok(true));
        assert_eq!(call.delete("doomed").await, Ok(false), "a key the call deleted is gone for the call");
        let keys: Vec<String> = ["new", "old", "counter", "fresh", "doomed", "never"].map(String::from).into();
        let in_call = vec![text("written"), text("after"), text("16"), text("-2"), None, None];
        assert_eq!(call.get_many(&keys).await, Ok(in_call.clone()));
        assert_eq!(call.get("counter").await, Ok(text("16")));

        let before = vec![None, text("before"), text("10"), None, text("x"), None];
        assert_eq!(cache.get_many(&keys).await, Ok(before), "nothing reaches the backend during the call");
        call.apply().await.unwrap();
        assert_eq!(cache.get_many(&keys).await, Ok(in_call), "the apply stores what the call saw");
    })
    .await;
}

#[tokio::test]
async fn a_call_dropped_without_apply_leaves_no_trace_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "overlay");
        cache.set("kept", b"1", None).await.unwrap();
        let mut call = cache.begin_call(EffectLimits::default());
        call.incr("kept", 41, None).await.unwrap();
        call.incr_many(&[("counted".into(), 1), ("counted".into(), 1)], Some(60)).await.unwrap();
        call.set("written", b"v", None).await.unwrap();
        call.delete("kept").await.unwrap();
        drop(call);
        let keys: Vec<String> = ["kept", "counted", "written"].map(String::from).into();
        assert_eq!(cache.get_many(&keys).await, Ok(vec![text("1"), None, None]));
    })
    .await;
}

#[tokio::test]
async fn an_applied_call_adds_its_exact_sum_to_a_counter_others_incremented_meanwhile_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "overlay");
        let other_partition = handle(&backend, "overlay");
        let mut call = cache.begin_call(EffectLimits::default());
        assert_eq!(call.incr("shared", 1, None).await, Ok(1), "the call's view: nothing stored yet, plus 1");
        assert_eq!(other_partition.incr("shared", 10, None).await, Ok(10));
        assert_eq!(call.incr("shared", 1, None).await, Ok(2), "the call keeps its own view");
        assert_eq!(call.incr("shared", -5, None).await, Ok(-3), "negative deltas take the same path");
        call.apply().await.unwrap();
        assert_eq!(cache.get("shared").await, Ok(text("7")), "10 from the other partition plus the call's -3");
    })
    .await;
}

#[tokio::test]
async fn set_then_incr_and_delete_then_incr_in_one_call_keep_the_ttls_of_sequential_calls_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "overlay");
        cache.set("deleted", b"100", None).await.unwrap();
        cache.set("counter", b"1", None).await.unwrap();
        let mut call = cache.begin_call(EffectLimits::default());
        // A value set with a TTL and then incremented keeps the TTL of the set.
        call.set("set-with-ttl", b"5", Some(2)).await.unwrap();
        assert_eq!(call.incr("set-with-ttl", 3, None).await, Ok(8));
        // A deleted key counts again from 0, created with the TTL of the incr.
        assert_eq!(call.delete("deleted").await, Ok(true));
        assert_eq!(call.incr("deleted", 4, Some(2)).await, Ok(4));
        // An existing counter keeps its (absent) expiry; a created one takes the first incr's TTL.
        assert_eq!(call.incr("counter", 1, Some(2)).await, Ok(2));
        assert_eq!(call.incr("created", 1, Some(2)).await, Ok(1));
        assert_eq!(call.incr("created", 1, None).await, Ok(2));
        // A value set then deleted is deleted.
        call.set("gone", b"v", None).await.unwrap();
        assert_eq!(call.delete("gone").await, Ok(true));
        call.apply().await.unwrap();
        let keys: Vec<String> = ["set-with-ttl", "deleted", "counter", "created", "gone"].map(String::from).into();
        assert_eq!(cache.get_many(&keys).await, Ok(vec![text("8"), text("4"), text("2"), text("2"), None]));
        tokio::time::sleep(PAST_A_TWO_SECOND_TTL).await;
        assert_eq!(cache.get_many(&keys).await, Ok(vec![None, None, text("2"), None, None]));
    })
    .await;
}

#[tokio::test]
async fn an_incr_refused_inside_a_call_changes_nothing_in_the_overlay_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "overlay");
        cache.set("text", b"abc", None).await.unwrap();
        cache.set("max", i64::MAX.to_string().as_bytes(), None).await.unwrap();
        let mut call = cache.begin_call(EffectLimits::default());
        assert!(matches!(call.incr("text", 1, None).await, Err(CacheError::NotANumber(_))));
        assert!(matches!(call.incr("max", 1, None).await, Err(CacheError::NotANumber(_))));
        call.set("set-text", b"x", None).await.unwrap();
        assert!(matches!(call.incr("set-text", 1, None).await, Err(CacheError::NotANumber(_))));
        assert!(call.len() == 1, "only the set is pending");
        call.apply().await.unwrap();
        let keys: Vec<String> = ["text", "max", "set-text"].map(String::from).into();
        assert_eq!(
            cache.get_many(&keys).await,
            Ok(vec![text("abc"), Some(i64::MAX.to_string().into_bytes()), text("x")])
        );
    })
    .await;
}

#[tokio::test]
async fn a_call_over_its_limit_of_pending_keys_or_bytes_is_refused_and_marked_on_every_backend() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "overlay");
        let mut call = cache.begin_call(EffectLimits { max_keys: 3, max_bytes: 1_000 });
        call.set_many(&[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())], None).await.unwrap();
        call.set("a", b"rewritten", None).await.unwrap();
        call.incr("c", 1, None).await.unwrap();
        let refused = call.incr("d", 1, None).await;
        assert!(
            matches!(&refused, Err(CacheError::TooLarge(m)) if m.contains("4 keys") && m.contains("3")),
            "{refused:?}"
        );
        assert_eq!(call.breach(), Some(EffectsBreach { what: "keys", actual: 4, limit: 3 }));

        let mut call = cache.begin_call(EffectLimits { max_keys: 3, max_bytes: 1_000 });
        let refused = call.set("big", &[b'x'; 998], None).await;
        assert!(matches!(&refused, Err(CacheError::TooLarge(m)) if m.contains("1001 bytes")), "{refused:?}");
        assert_eq!(call.breach(), Some(EffectsBreach { what: "bytes", actual: 1001, limit: 1_000 }));
        assert_eq!(cache.get("big").await, Ok(None));
    })
    .await;
}

#[tokio::test]
async fn a_fenced_apply_writes_once_per_position_on_the_backends_that_can_and_memcached_refuses_it() {
    on_every_backend(|backend| async move {
        let cache = handle(&backend, "fenced");
        let fence_key = cache.fence_key("orders", "in", 0);
        let mut call = cache.begin_call(EffectLimits::default());
        call.incr("count", 2, None).await.unwrap();
        call.set("latest", b"a", None).await.unwrap();
        let batch = |first, last| Fence { key: fence_key.clone(), first, last };
        if backend.kind() == "memcached" {
            assert!(!cache.supports_fences());
            let refused = call.apply_fenced(&batch(0, 9)).await;
            assert!(
                matches!(&refused, Err(CacheError::InvalidArgument(m)) if m.contains("memcached") && m.contains("exactly once")),
                "{refused:?}"
            );
            assert_eq!(cache.get("count").await, Ok(None), "nothing written");
            return;
        }
        assert!(cache.supports_fences());
        assert_eq!(cache.applied_through(&fence_key).await, Ok(None), "no position before the first apply");
        assert_eq!(call.apply_fenced(&batch(0, 9)).await, Ok(Fenced::Applied));
        let position = cache.applied_through(&fence_key).await.unwrap().expect("a position");
        assert_eq!(position.applied_through, 9);
        let before: Vec<_> = {
            let mut before: Vec<_> = position.before.into_iter().collect();
            before.sort();
            before
        };
        assert_eq!(
            before,
            vec![("fenced:count".to_owned(), None), ("fenced:latest".to_owned(), None)],
            "what the batch's keys held before it: nothing"
        );
        // A replay of the same batch, or of a batch inside it, writes nothing.
        assert_eq!(call.apply_fenced(&batch(0, 9)).await, Ok(Fenced::Skipped { applied_through: 9 }));
        assert_eq!(call.apply_fenced(&batch(5, 9)).await, Ok(Fenced::Skipped { applied_through: 9 }));
        assert_eq!(cache.get("count").await, Ok(text("2")), "applied once");
        // The next batch applies.
        let mut next = cache.begin_call(EffectLimits::default());
        assert_eq!(next.incr("count", 1, None).await, Ok(3));
        assert_eq!(next.apply_fenced(&batch(10, 19)).await, Ok(Fenced::Applied));
        assert_eq!(cache.get_many(&["count".into(), "latest".into()]).await, Ok(vec![text("3"), text("a")]));
        let position = cache.applied_through(&fence_key).await.unwrap().expect("a position");
        assert_eq!(position.applied_through, 19);
        assert_eq!(position.before.into_iter().collect::<Vec<_>>(), vec![("fenced:count".to_owned(), text("2"))]);
        // A replay reads those values in place of the stored ones, and sees what the batch saw.
        let mut replay = cache.begin_call(EffectLimits::default()).reading_before(
            [("fenced:count".to_owned(), text("2"))].into_iter().collect(),
        );
        assert_eq!(replay.incr("count", 1, None).await, Ok(3), "as the first time, not 4");
        assert_eq!(replay.get("latest").await, Ok(text("a")), "keys the batch did not write are read as stored");
        assert_eq!(replay.apply_fenced(&batch(10, 19)).await, Ok(Fenced::Skipped { applied_through: 19 }));
        assert_eq!(cache.get("count").await, Ok(text("3")));
        // The position is out of every function's reach: its key has spaces, which keys may not.
        assert!(matches!(cache.get(&fence_key).await, Err(CacheError::InvalidKey(_))));
    })
    .await;
}
