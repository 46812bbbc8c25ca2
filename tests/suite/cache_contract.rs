//! One statement of the cache contract, two implementations: the cases of
//! `sluice_contract::conformance` run against the runtime's [`Cache`] over the in-memory backend
//! and against the SDK's native stand-in (`sluice_sdk::testing`), which function authors test
//! with. Both must give every call the answer the case states, so they also agree with each
//! other. (The three runtime backends agree with each other in `cache_conformance`.)

use std::sync::Arc;

use sluice::cache::{Cache, MemoryCache, Namespace};
use sluice_contract::conformance::{Answer, Call, Case, answer, cases};
use sluice_sdk::cache as sdk;
use sluice_sdk::testing;

/// The answers of the runtime's cache, over a fresh in-memory backend, to `case`'s calls.
async fn runtime_answers(case: &Case) -> Vec<Answer> {
    let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new("contract").expect("namespace"));
    let mut answers = Vec::new();
    for step in &case.steps {
        answers.push(match &step.call {
            Call::Get(key) => answer(cache.get(key).await),
            Call::GetMany(keys) => answer(cache.get_many(keys).await),
            Call::Set(key, value, ttl) => answer(cache.set(key, value, *ttl).await),
            Call::SetMany(entries, ttl) => answer(cache.set_many(entries, *ttl).await),
            Call::Incr(key, delta, ttl) => answer(cache.incr(key, *delta, *ttl).await),
            Call::IncrMany(entries, ttl) => answer(cache.incr_many(entries, *ttl).await),
            Call::Delete(key) => answer(cache.delete(key).await),
        });
    }
    answers
}

/// The SDK's `Option<Duration>` for a TTL in whole seconds (the SDK rounds a duration up to
/// whole seconds, so this is exact).
fn ttl(seconds: Option<u32>) -> Option<std::time::Duration> {
    seconds.map(|s| std::time::Duration::from_secs(s.into()))
}

/// The answers of the SDK's stand-in, emptied first, to `case`'s calls.
fn sdk_answers(case: &Case) -> Vec<Answer> {
    testing::reset();
    let answers = case
        .steps
        .iter()
        .map(|step| match &step.call {
            Call::Get(key) => answer(sdk::get(key)),
            Call::GetMany(keys) => answer(sdk::get_many(&keys.iter().map(String::as_str).collect::<Vec<_>>())),
            Call::Set(key, value, seconds) => answer(sdk::set(key, value, ttl(*seconds))),
            Call::SetMany(entries, seconds) => {
                let entries: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                answer(sdk::set_many(&entries, ttl(*seconds)))
            }
            Call::Incr(key, delta, seconds) => answer(sdk::incr(key, *delta, ttl(*seconds))),
            Call::IncrMany(entries, seconds) => {
                let entries: Vec<(&str, i64)> = entries.iter().map(|(k, d)| (k.as_str(), *d)).collect();
                answer(sdk::incr_many(&entries, ttl(*seconds)))
            }
            Call::Delete(key) => answer(sdk::delete(key)),
        })
        .collect();
    testing::reset();
    answers
}

#[tokio::test]
async fn the_runtime_cache_and_the_sdk_stand_in_give_every_contract_case_its_stated_answers() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(error) = case.verify(&runtime_answers(case).await) {
            failures.push(format!("runtime cache: {error}"));
        }
        if let Err(error) = case.verify(&sdk_answers(case)) {
            failures.push(format!("SDK stand-in: {error}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases broken:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
