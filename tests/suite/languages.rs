//! Functions in Python and JavaScript: the word counts of `guest-examples/word-count-py` and
//! `guest-examples/word-count-js`, built by `make examples` with `sluice build`
//! (componentize-py, componentize-qjs), run by the engine exactly as a Rust component is.
//!
//! Each gives the Rust word count's outputs, errors (cache errors included) and cache contents
//! for the same records, and runs 20,000 calls without a failed call, a rebuilt instance or a
//! retired one, its linear memory growing by less than 1 MiB over them (a leak of 50 bytes per
//! call fails it).

use std::sync::{Arc, OnceLock};

use sluice::cache::{CacheBackend as _, MemoryCache};
use sluice::engine::{Engine, FunctionInstance, Module};
use sluice::record::{InputRecord, RecordResult};
use sluice_tests::fixtures::{capture_log, captured_log, context, engine, load, record};

/// The calls of the long run, one record each.
const LONG_RUN_CALLS: usize = 20_000;

/// How much an instance's linear memory may grow over the long run (after its first 100 calls).
const LONG_RUN_GROWTH: usize = 1024 * 1024;

/// One engine for the whole module, and each guest compiled once on it: an interpreter's
/// component takes seconds to compile (18 MB for Python).
fn compiled(guest: &'static str) -> (Engine, Module) {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static MODULES: OnceLock<std::sync::Mutex<Vec<(&'static str, Module)>>> = OnceLock::new();
    let engine = ENGINE.get_or_init(engine).clone();
    let mut modules = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, module)) = modules.iter().find(|(name, _)| *name == guest) {
        return (engine, module.clone());
    }
    let module = load(&engine, guest);
    modules.push((guest, module.clone()));
    (engine, module)
}

/// An instance of `guest` named `name` on a fresh in-memory cache, returned with the cache.
fn instance(guest: &'static str, name: &str) -> (FunctionInstance, MemoryCache) {
    let (engine, module) = compiled(guest);
    let cache = MemoryCache::new();
    let function = FunctionInstance::new(&engine, &module, context(name, Arc::new(cache.clone()), &[]));
    (function, cache)
}

/// A counter that holds text, not a number: incrementing it fails with `not-a-number`.
const NOT_A_NUMBER: &str = "test:wc:corrupt";

/// Records that cover what a word count meets: punctuation and case, Unicode white space and
/// letters (a final sigma), characters that look like white space and are not (U+001C to
/// U+001F, U+FEFF), a null value, an empty one, bytes that are not UTF-8, a record of more words
/// than one `incr_many` call takes, and the cache errors of a word too long for a key and of a
/// counter that is not a number ([`NOT_A_NUMBER`]).
fn awkward_records() -> Vec<InputRecord> {
    let many_words: String = (0..1_500).map(|n| format!("w{} ", n % 700)).collect();
    let values: Vec<Option<Vec<u8>>> = vec![
        Some("a\u{1c}b c\u{1f}d \u{feff}e\u{85}f g\u{a0}h".into()),
        Some(format!("short {}", "x".repeat(240)).into_bytes()),
        Some(b"fine then corrupt".to_vec()),
        Some(b"the cat".to_vec()),
        Some(b"The dog, the!".to_vec()),
        Some("  \u{a1}Hola, se\u{f1}or!\u{3000}\u{2003}ODYSSEUS \u{39f}\u{394}\u{3a5}\u{3a3}\u{3a3}\u{395}\u{3a5}\u{3a3} ".into()),
        None,
        Some(Vec::new()),
        Some(vec![b'o', b'k', b' ', 0xff, 0xfe]),
        Some(b"tabs\tand\nnew-lines... \"quoted\" (words)".to_vec()),
        Some(many_words.into_bytes()),
        Some("\u{1f600} emoji \u{1f600}".into()),
    ];
    values
        .into_iter()
        .enumerate()
        .map(|(offset, value)| InputRecord { value, ..record(offset as i64, "k", "") })
        .collect()
}

/// A result as comparable text: each output's key, value, headers and target, or the error's
/// message and retryability.
fn described(results: &[RecordResult]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok(outputs) => outputs
                .iter()
                .map(|o| format!("{:?}={:?} {:?} {:?}", o.key, o.value, o.headers, o.target))
                .collect::<Vec<_>>()
                .join(", "),
            Err(error) => format!("error {:?} retryable={}", error.message, error.retryable),
        })
        .collect()
}

async fn gives_the_rust_word_count_s_results(guest: &'static str) {
    let records = awkward_records();
    let (mut rust, rust_cache) = instance("word-count", "wc-rust");
    let (mut other, other_cache) = instance(guest, guest);
    for cache in [&rust_cache, &other_cache] {
        cache.set(NOT_A_NUMBER, b"many", None).await.unwrap();
    }
    let expected = rust.process(&records).await.expect("the Rust word count runs");
    let results = other.process(&records).await.unwrap_or_else(|e| panic!("{guest} runs: {e}"));
    assert_eq!(results.len(), records.len(), "one result per record");
    for (offset, (got, want)) in described(&results).iter().zip(described(&expected)).enumerate() {
        assert_eq!(got, &want, "{guest}: the record at offset {offset}");
    }
    assert!(results[8].is_err(), "bytes that are not UTF-8 fail their record alone");
    let invalid_key = results[1].as_ref().unwrap_err();
    assert!(invalid_key.message.starts_with("invalid cache key") && !invalid_key.retryable, "{invalid_key:?}");
    let not_a_number = results[2].as_ref().unwrap_err();
    assert!(not_a_number.message.starts_with("cache value is not a number"), "{not_a_number:?}");
    assert_eq!(other_cache.snapshot(), rust_cache.snapshot(), "{guest}: the cache holds the same counts");
}

async fn runs_20_000_calls_without_a_failed_call_a_rebuild_or_a_retirement(guest: &'static str) {
    capture_log();
    let name = format!("{guest}-long-run");
    let (mut function, cache) = instance(guest, &name);
    let sentences = ["alpha beta gamma", "alpha, delta!", "Alpha epsilon zeta eta"];
    let mut memory_at_start = None;
    for call in 0..LONG_RUN_CALLS {
        let input = [record(call as i64, "k", sentences[call % sentences.len()])];
        let results = function.process(&input).await.unwrap_or_else(|e| panic!("{guest}: call {call} failed: {e}"));
        assert!(results[0].is_ok(), "{guest}: call {call}: {:?}", results[0]);
        if call == 99 {
            memory_at_start = function.memory_bytes();
        }
    }
    let memory_at_end = function.memory_bytes().expect("the instance is live");
    let memory_at_start = memory_at_start.expect("the instance was live after 100 calls");
    println!(
        "{guest}: linear memory {:.1} MiB after 100 calls, {:.1} MiB after {LONG_RUN_CALLS}",
        memory_at_start as f64 / 1048576.0,
        memory_at_end as f64 / 1048576.0
    );
    assert!(
        memory_at_end <= memory_at_start + LONG_RUN_GROWTH,
        "{guest}: linear memory grew from {memory_at_start} to {memory_at_end} bytes over {LONG_RUN_CALLS} calls (a leak)"
    );
    assert_eq!(function.rebuilds(), 0, "{guest}: no call failed and discarded its instance");
    assert_eq!(
        function.retired(),
        0,
        "{guest}: memory grew past the retirement threshold within {LONG_RUN_CALLS} calls (a leak)"
    );

    // "alpha" is in every sentence: its count is the number of calls, logged at 1,000 and 10,000.
    assert_eq!(cache.snapshot().iter().find(|(key, _)| key == "test:wc:alpha").unwrap().1, b"20000");
    let log = captured_log();
    for milestone in ["1000", "10000"] {
        let line = format!("the word \"alpha\" has been counted {milestone} times");
        assert!(
            log.lines().any(|l| l.contains(&line) && l.contains(&format!("function=\"{name}\""))),
            "{guest}: {line} is logged"
        );
    }
}

#[tokio::test]
async fn the_python_word_count_gives_the_rust_word_count_s_outputs_errors_and_counts() {
    gives_the_rust_word_count_s_results("word-count-py").await;
}

#[tokio::test]
async fn the_javascript_word_count_gives_the_rust_word_count_s_outputs_errors_and_counts() {
    gives_the_rust_word_count_s_results("word-count-js").await;
}

#[tokio::test]
async fn the_python_word_count_runs_20_000_calls_without_a_failed_call_or_a_leak() {
    runs_20_000_calls_without_a_failed_call_a_rebuild_or_a_retirement("word-count-py").await;
}

#[tokio::test]
async fn the_javascript_word_count_runs_20_000_calls_without_a_failed_call_or_a_leak() {
    runs_20_000_calls_without_a_failed_call_a_rebuild_or_a_retirement("word-count-js").await;
}
