//! Batch-atomic cache effects at the engine: a function call's cache writes reach the cache
//! only when the call succeeds; a call that traps, breaks a limit or returns a broken batch
//! leaves no trace, and the call reads its own writes meanwhile.

use sluice::cache::{CacheBackend, EffectLimits};
use sluice::engine::{BatchError, Limits};
use sluice_tests::fixtures::{engine, engine_with, instance, key_value, records};

/// The outputs of one successful record, as `(key, value)` text.
fn outputs(result: &sluice::record::RecordResult) -> Vec<(String, String)> {
    result.as_ref().expect("record succeeded").iter().map(key_value).collect()
}

fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

#[tokio::test]
async fn a_call_that_increments_then_traps_leaves_every_counter_untouched() {
    let (mut tally, cache) = instance(&engine(), "tally", &[]);
    let error = tally.process(&records(&["a b", "panic a c"])).await.unwrap_err();
    assert!(matches!(error, BatchError::Trap { .. }), "{error:?}");
    for key in ["test:wc:a", "test:wc:b", "test:wc:c"] {
        assert_eq!(cache.get(key).await, Ok(None), "{key} was written by a failed call");
    }
    // The next call starts from the stored state, not from the failed call's.
    let results = tally.process(&records(&["a"])).await.unwrap();
    assert_eq!(outputs(&results[0]), [pair("a", "1")]);
    assert_eq!(cache.get("test:wc:a").await, Ok(Some(b"1".to_vec())));
}

#[tokio::test]
async fn the_records_of_one_call_read_the_increments_of_the_records_before_them() {
    let (mut tally, cache) = instance(&engine(), "tally", &[]);
    let results = tally.process(&records(&["a", "a b a"])).await.unwrap();
    assert_eq!(outputs(&results[0]), [pair("a", "1")]);
    assert_eq!(outputs(&results[1]), [pair("a", "2"), pair("b", "1"), pair("a", "3")]);
    assert_eq!(cache.get("test:wc:a").await, Ok(Some(b"3".to_vec())));
    assert_eq!(cache.get("test:wc:b").await, Ok(Some(b"1".to_vec())));
}

#[tokio::test]
async fn a_call_over_the_cache_writes_limit_fails_naming_the_function_offsets_and_limit_and_writes_nothing() {
    let limits = Limits { cache_effects: EffectLimits { max_keys: 3, ..EffectLimits::default() }, ..Limits::default() };
    let (mut tally, cache) = instance(&engine_with(limits), "tally", &[]);
    let error = tally.process(&records(&["a b", "c d"])).await.unwrap_err();
    let BatchError::CacheEffectsLimit { ref offsets, what, actual, limit, .. } = error else { panic!("{error:?}") };
    assert_eq!((offsets.as_str(), what, actual, limit), ("0..=1", "keys", 4, 3));
    let message = error.to_string();
    assert!(message.starts_with("tally:") && message.contains("offsets 0..=1"), "{message}");
    assert_eq!(error.kind().as_str(), "cache-effects-limit");
    assert!(!error.is_retryable(), "a smaller batch may fit: the caller splits it");
    for key in ["test:wc:a", "test:wc:b", "test:wc:c"] {
        assert_eq!(cache.get(key).await, Ok(None), "{key}");
    }
    // Each half fits.
    let results = tally.process(&records(&["a b"])).await.unwrap();
    assert_eq!(outputs(&results[0]), [pair("a", "1"), pair("b", "1")]);
}
