//! Property-based fuzzing on stable Rust, shared by the crate's own tests and the integration
//! suite (which includes this file by path).
//!
//! A target is a property checked on generated inputs with `proptest`: a failure is shrunk to
//! a minimal input and reported with the seed that replays it. Each target runs
//! `default_cases` inputs, which keeps it to a few seconds inside `make test`. `make fuzz`
//! sets `SLUICE_FUZZ_SECONDS`: every target then runs for that many seconds instead. Every run
//! prints its executions, so a fuzzing session reports what it covered:
//!
//! ```text
//! fuzz cache_url_parse: 41250 executions in 30.0 s
//! ```
//!
//! `SLUICE_FUZZ_SEED` (a number) replays a reported run.

#![allow(dead_code)]

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Seconds each target runs for under `make fuzz`.
pub const SECONDS_VARIABLE: &str = "SLUICE_FUZZ_SECONDS";
/// The seed of a run to replay.
pub const SEED_VARIABLE: &str = "SLUICE_FUZZ_SEED";

/// Checks `property` on inputs drawn from `strategy`: `default_cases` of them, or as many as
/// fit in `SLUICE_FUZZ_SECONDS` when it is set. Panics with the minimal failing input.
pub fn check<S>(target: &str, default_cases: u32, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var(SECONDS_VARIABLE).ok().and_then(|s| s.parse::<f64>().ok()).map(Duration::from_secs_f64);
    let mut seed = std::env::var(SEED_VARIABLE).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    let executions = Cell::new(0u64);
    let started = Instant::now();
    loop {
        // Rounds of `default_cases`, each from its own seed, until the budget is spent.
        let config = Config { cases: default_cases, failure_persistence: None, ..Config::default() };
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
        let result = runner.run(&strategy, |input| {
            executions.set(executions.get() + 1);
            property(input)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                panic!("fuzz {target}: {reason}\nminimal failing input: {input:#?}\nreplay with {SEED_VARIABLE}={seed}")
            }
            Err(TestError::Abort(reason)) => panic!("fuzz {target}: aborted: {reason} ({SEED_VARIABLE}={seed})"),
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if budget.is_none_or(|budget| started.elapsed() >= budget) {
            break;
        }
    }
    eprintln!("fuzz {target}: {} executions in {:.1} s", executions.get(), started.elapsed().as_secs_f64());
}

/// Mutations of a valid input, the way a fuzzer mutates a corpus: flipped, replaced, inserted
/// and removed bytes, truncation, and splices of well-chosen tokens.
pub fn mutated(seed: Vec<u8>, tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let edit = prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, bit)| Edit::Flip(at, 1 << (bit % 8))),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(at, n)| Edit::Remove(at, n)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(at, token)| Edit::Token(at, token)),
    ];
    prop::collection::vec(edit, 1..8).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for edit in edits {
            edit.apply(&mut bytes, tokens);
        }
        bytes
    })
}

/// One mutation of [`mutated`].
#[derive(Debug, Clone)]
enum Edit {
    Flip(proptest::sample::Index, u8),
    Set(proptest::sample::Index, u8),
    Insert(proptest::sample::Index, u8),
    Remove(proptest::sample::Index, usize),
    Truncate(proptest::sample::Index),
    Token(proptest::sample::Index, proptest::sample::Index),
}

impl Edit {
    fn apply(self, bytes: &mut Vec<u8>, tokens: &[&[u8]]) {
        let position = |at: proptest::sample::Index, len: usize| if len == 0 { 0 } else { at.index(len) };
        match self {
            Edit::Flip(at, mask) if !bytes.is_empty() => {
                let i = position(at, bytes.len());
                bytes[i] ^= mask;
            }
            Edit::Set(at, byte) if !bytes.is_empty() => {
                let i = position(at, bytes.len());
                bytes[i] = byte;
            }
            Edit::Insert(at, byte) => bytes.insert(position(at, bytes.len() + 1), byte),
            Edit::Remove(at, n) if !bytes.is_empty() => {
                let i = position(at, bytes.len());
                bytes.drain(i..(i + n).min(bytes.len()));
            }
            Edit::Truncate(at) => bytes.truncate(position(at, bytes.len() + 1)),
            Edit::Token(at, token) if !tokens.is_empty() => {
                let i = position(at, bytes.len() + 1);
                let token = tokens[token.index(tokens.len())];
                bytes.splice(i..i, token.iter().copied());
            }
            _ => {}
        }
    }
}
