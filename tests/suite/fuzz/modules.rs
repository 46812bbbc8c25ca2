//! Module uploads: the registry stores what the admin API receives, after the engine checks
//! and compiles it.
//!
//! Properties: no bytes make the engine or the registry panic; bytes the engine refuses are
//! refused with a message and never stored; a module that loads despite a mutation runs (or
//! fails its batch) without taking the host down. Compiling is slow, so the mutated-component
//! targets run few cases; `make fuzz` runs them for longer.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sluice::engine::{Engine, ModuleError};
use sluice::registry::{ModuleRegistry, RegistryError};
use sluice_tests::fixtures;
use sluice_tests::fuzzing::{check, mutated};
use sluice_tests::guests;

/// Bytes that mean something in a component binary: section ids, LEB128 lengths, the
/// header.
const TOKENS: &[&[u8]] = &[
    b"\0asm",
    b"\x0d\0\x01\0",
    b"\x01\0\0\0",
    b"\0",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x80\x80\x80\x10",
    b"\x0b",
    b"\x60",
    b"\x00\x61\x73\x6d",
];

/// What a refusal must say.
fn refused(error: &ModuleError) -> Result<(), TestCaseError> {
    let message = error.to_string();
    prop_assert!(!message.is_empty());
    if let ModuleError::Invalid { digest, reason }
    | ModuleError::UnsupportedImport { digest, reason, .. }
    | ModuleError::WrongExports { digest, reason } = error
    {
        prop_assert!(message.contains(&digest.to_string()), "{} does not name the module", message);
        prop_assert!(!reason.is_empty(), "{} does not say what is wrong", message);
    }
    Ok(())
}

/// Loads `bytes`; a module that loads is run on one record, which must not panic the host.
fn load_and_run(engine: &Engine, runtime: &tokio::runtime::Runtime, bytes: &[u8]) -> Result<(), TestCaseError> {
    match engine.load(bytes) {
        Err(error) => refused(&error),
        Ok(module) => {
            let context = fixtures::context("mutant", std::sync::Arc::new(sluice::cache::MemoryCache::new()), &[]);
            let mut instance = sluice::engine::FunctionInstance::new(engine, &module, context);
            // A result or a batch error are both fine; a panic is not.
            let _ = runtime.block_on(instance.process(&fixtures::records(&["a", "b"])));
            Ok(())
        }
    }
}

#[test]
fn any_bytes_behind_a_component_header_are_refused_with_a_reason() {
    let engine = fixtures::engine();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|body| [b"\0asm\x0d\0\x01\0".as_slice(), &body].concat()),
        prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|tokens| {
            let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
            tokens.iter().for_each(|token| bytes.extend_from_slice(token));
            bytes
        }),
    ];
    check("module_any_bytes", 512, bytes, |bytes| load_and_run(&engine, &runtime, &bytes));
}

#[test]
fn mutated_components_are_loaded_or_refused_with_a_reason() {
    let engine = fixtures::engine();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let component = guests::component_bytes("passthrough");
    check("module_mutated", 6, mutated(component, TOKENS), |bytes| load_and_run(&engine, &runtime, &bytes));
}

#[test]
fn the_registry_stores_a_mutated_component_only_when_the_engine_accepts_it() {
    let data = tempfile::tempdir().expect("temporary folder");
    let registry = ModuleRegistry::open(data.path(), fixtures::engine()).expect("registry");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let component = guests::component_bytes("passthrough");
    check("registry_put_mutated", 4, mutated(component, TOKENS), |bytes| {
        let before = runtime.block_on(registry.list()).expect("list");
        match runtime.block_on(registry.put(Bytes::from(bytes.clone()))) {
            Ok(stored) => {
                let (info, kept) = runtime
                    .block_on(registry.get(&stored.info.digest))
                    .expect("get")
                    .ok_or_else(|| TestCaseError::fail("a stored module is not in the registry"))?;
                prop_assert_eq!(kept, bytes);
                prop_assert_eq!(info, stored.info);
            }
            Err(RegistryError::Refused { digest, source }) => {
                refused(&source)?;
                prop_assert_eq!(digest, sluice::engine::ModuleDigest::of(&bytes).to_string());
                prop_assert_eq!(runtime.block_on(registry.list()).expect("list"), before);
            }
            Err(other) => return Err(TestCaseError::fail(format!("refused as {other:?}, not by the engine"))),
        }
        Ok(())
    });
}
