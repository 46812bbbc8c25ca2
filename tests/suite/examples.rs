//! The guest examples, built to components and run by the engine: each gives its exact
//! documented output.

use sluice::cache::CacheBackend;
use sluice::record::InputRecord;
use sluice_tests::fixtures::{engine, instance, key_value, record, records};

fn texts(results: &[sluice::record::RecordResult]) -> Vec<Vec<(String, String)>> {
    results.iter().map(|r| r.as_ref().expect("record succeeded").iter().map(key_value).collect()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn passthrough_returns_each_record_unchanged() {
    let (mut function, _) = instance(&engine(), "passthrough", &[]);
    let batch = records(&["a", "b", ""]);
    let results = function.process(&batch).await.unwrap();
    assert_eq!(results.len(), 3);
    for (input, result) in batch.iter().zip(&results) {
        let outputs = result.as_ref().unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].key, input.key);
        assert_eq!(outputs[0].value, input.value);
        assert_eq!(outputs[0].headers, input.headers);
        assert_eq!(outputs[0].target, None);
    }
}

#[tokio::test]
async fn word_count_emits_running_counts_per_word() {
    let (mut function, cache) = instance(&engine(), "word-count", &[]);
    let results = function.process(&records(&["the cat", "The dog, the!"])).await.unwrap();
    assert_eq!(
        texts(&results),
        vec![pairs(&[("the", "1"), ("cat", "1")]), pairs(&[("the", "2"), ("dog", "1"), ("the", "3")])]
    );
    assert_eq!(cache.get("test:wc:the").await.unwrap(), Some(b"3".to_vec()));
}

#[tokio::test]
async fn word_count_counts_across_batches_and_instances_through_the_cache() {
    let engine = engine();
    let (mut first, cache) = instance(&engine, "word-count", &[]);
    first.process(&records(&["a a"])).await.unwrap();
    // A second worker of the same pipeline shares the cache.
    let module = first.module().clone();
    let mut second = sluice::engine::FunctionInstance::new(&engine, &module, first.context().clone());
    let results = second.process(&records(&["a"])).await.unwrap();
    assert_eq!(texts(&results), vec![pairs(&[("a", "3")])]);
    assert_eq!(cache.get("test:wc:a").await.unwrap(), Some(b"3".to_vec()));
}

#[tokio::test]
async fn word_count_fails_only_the_record_that_is_not_text() {
    let (mut function, _) = instance(&engine(), "word-count", &[]);
    let mut batch = records(&["hello", "", "world"]);
    batch[1].value = Some(vec![0xff, 0xfe]);
    let results = function.process(&batch).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    let error = results[1].as_ref().unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("offset 1") && error.message.contains("UTF-8"), "{}", error.message);
}

#[tokio::test]
async fn enrich_looks_up_the_cache_then_the_source_and_caches_what_it_found() {
    let config = [("ref.u1", r#"{"name":"Ada"}"#)];
    let (mut function, cache) = instance(&engine(), "enrich", &config);
    let batch: Vec<InputRecord> = vec![
        record(0, "u1", r#"{"user_id":"u1","page":"/"}"#),
        record(1, "u1", r#"{"user_id":"u1","page":"/cart"}"#),
        record(2, "u2", r#"{"user_id":"u2","page":"/"}"#),
    ];
    let results = function.process(&batch).await.unwrap();
    let values: Vec<String> = texts(&results).into_iter().map(|outputs| outputs[0].1.clone()).collect();
    assert_eq!(
        values,
        vec![
            r#"{"page":"/","profile":{"name":"Ada"},"profile_source":"source","user_id":"u1"}"#,
            r#"{"page":"/cart","profile":{"name":"Ada"},"profile_source":"cache","user_id":"u1"}"#,
            r#"{"page":"/","profile":null,"profile_source":"none","user_id":"u2"}"#,
        ]
    );
    assert_eq!(cache.get("test:ref:u1").await.unwrap(), Some(br#"{"name":"Ada"}"#.to_vec()));
    assert_eq!(cache.get("test:ref:u2").await.unwrap(), None);
}

#[tokio::test]
async fn latest_state_keeps_the_latest_event_per_user_and_emits_nothing() {
    let (mut function, cache) = instance(&engine(), "latest-state", &[("ttl_seconds", "60")]);
    let batch = vec![
        record(0, "7", r#"{"user_id":7,"event":"login"}"#),
        record(1, "8", r#"{"user_id":"8","event":"login"}"#),
        record(2, "7", r#"{"user_id":7,"event":"logout"}"#),
    ];
    let results = function.process(&batch).await.unwrap();
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|outputs| outputs.is_empty())));
    assert_eq!(cache.get("test:user:7:latest").await.unwrap(), Some(br#"{"user_id":7,"event":"logout"}"#.to_vec()));
    assert_eq!(cache.get("test:user:8:latest").await.unwrap(), Some(br#"{"user_id":"8","event":"login"}"#.to_vec()));
}

#[tokio::test]
async fn latest_state_rejects_an_event_without_its_id_field() {
    let (mut function, _) = instance(&engine(), "latest-state", &[]);
    let results = function.process(&[record(4, "x", r#"{"event":"login"}"#)]).await.unwrap();
    let error = results[0].as_ref().unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("user_id"), "{}", error.message);
}

#[tokio::test]
async fn dedup_drops_records_whose_id_was_seen_within_the_ttl() {
    let (mut function, _) = instance(&engine(), "dedup", &[]);
    let batch = records(&[r#"{"id":"a"}"#, r#"{"id":"b"}"#, r#"{"id":"a"}"#, r#"{"id":1}"#]);
    let results = function.process(&batch).await.unwrap();
    let kept: Vec<usize> = results.iter().map(|r| r.as_ref().unwrap().len()).collect();
    assert_eq!(kept, vec![1, 1, 0, 1]);
    // A replay of the same records (as after a restart) is dropped entirely.
    let replay = function.process(&batch).await.unwrap();
    assert!(replay.iter().all(|r| r.as_ref().unwrap().is_empty()));
}
