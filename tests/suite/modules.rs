//! Loading modules: every kind of invalid module is refused with a message naming what is
//! wrong, and compiled modules are reused from the artifact cache.

use sluice::engine::{Engine, EngineConfig, Limits, ModuleError};
use sluice_tests::fixtures::engine;
use sluice_tests::guests;

fn refuse(engine: &Engine, bytes: &[u8]) -> ModuleError {
    match engine.load(bytes) {
        Ok(module) => panic!("module {} was accepted", module.digest()),
        Err(e) => e,
    }
}

#[test]
fn random_bytes_are_refused_as_not_webassembly() {
    let error = refuse(&engine(), b"this is not a component at all");
    assert_eq!(error, ModuleError::NotWasm);
    assert!(error.to_string().contains("not WebAssembly"), "{error}");
}

#[test]
fn core_module_is_refused_with_a_hint_to_build_a_component() {
    let core = wat::parse_str(r#"(module (func (export "process")))"#).unwrap();
    let error = refuse(&engine(), &core);
    assert_eq!(error, ModuleError::CoreModule);
    assert!(error.to_string().contains("wasm32-wasip2"), "{error}");
}

#[test]
fn oversized_module_is_refused_before_compiling() {
    let engine = Engine::new(EngineConfig {
        limits: Limits { max_module_bytes: 1024, ..Limits::default() },
        artifact_dir: None,
    })
    .unwrap();
    let bytes = guests::component_bytes("passthrough");
    let error = refuse(&engine, &bytes);
    assert_eq!(error, ModuleError::TooLarge { size: bytes.len(), limit: 1024 });
    assert!(error.to_string().contains("over the 1024 byte limit"), "{error}");
}

#[test]
fn corrupt_component_is_refused_as_invalid() {
    let mut bytes = guests::component_bytes("passthrough");
    bytes.truncate(bytes.len() / 2);
    let error = refuse(&engine(), &bytes);
    assert!(matches!(error, ModuleError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains("is not a valid component"), "{error}");
}

#[test]
fn component_of_another_world_is_refused_for_its_exports() {
    let other = wat::parse_str(
        r#"(component
            (core module $m (func (export "hello")))
            (core instance $i (instantiate $m))
            (func (export "hello") (canon lift (core func $i "hello"))))"#,
    )
    .unwrap();
    let error = refuse(&engine(), &other);
    assert!(matches!(error, ModuleError::WrongExports { .. }), "{error:?}");
    assert!(error.to_string().contains("must export `process"), "{error}");
}

#[test]
fn component_without_exports_is_refused() {
    let empty = wat::parse_str("(component)").unwrap();
    let error = refuse(&engine(), &empty);
    assert!(matches!(error, ModuleError::WrongExports { .. }), "{error:?}");
}

#[test]
fn component_with_a_wrong_process_signature_is_refused() {
    let wrong = wat::parse_str(
        r#"(component
            (core module $m (func (export "process") (param i32) (result i32) local.get 0))
            (core instance $i (instantiate $m))
            (func (export "process") (param "n" u32) (result u32) (canon lift (core func $i "process"))))"#,
    )
    .unwrap();
    let error = refuse(&engine(), &wrong);
    assert!(matches!(error, ModuleError::WrongExports { .. }), "{error:?}");
}

#[test]
fn component_importing_an_unknown_interface_is_refused() {
    let importer = wat::parse_str(
        r#"(component
            (import "acme:net/sockets" (instance (export "connect" (func))))
        )"#,
    )
    .unwrap();
    let error = refuse(&engine(), &importer);
    assert!(matches!(error, ModuleError::UnsupportedImport { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("imports acme:net/sockets, which Sluice does not provide"), "{message}");
    assert!(message.contains("Provided: sluice:function/cache, log and config"), "{message}");
    assert!(message.contains("wasi:io"), "{message}");
}

#[test]
fn a_javascript_component_importing_wasi_http_is_told_the_build_flag_that_drops_it() {
    // What jco/componentize-js adds by default, beside an import Sluice provides.
    let importer = wat::parse_str(
        r#"(component
            (import "wasi:clocks/monotonic-clock@0.2.3" (instance (export "now" (func (result u64)))))
            (import "wasi:http/outgoing-handler@0.2.3" (instance (export "handle" (func))))
            (import "wasi:http/types@0.2.3" (instance (export "new-fields" (func))))
        )"#,
    )
    .unwrap();
    let message = refuse(&engine(), &importer).to_string();
    assert!(
        message.contains("imports wasi:http/outgoing-handler@0.2.3, wasi:http/types@0.2.3, which"),
        "only the missing imports are named: {message}"
    );
    assert!(message.contains("--disable http fetch-event"), "{message}");
}

#[test]
fn compiled_modules_are_reused_from_the_artifact_cache_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig { limits: Limits::default(), artifact_dir: Some(dir.path().to_path_buf()) };
    let bytes = guests::component_bytes("passthrough");

    let first = Engine::new(config.clone()).unwrap().load(&bytes).unwrap();
    assert!(!first.from_artifact_cache(), "nothing was cached yet");

    // A new engine, as after a restart, finds the artifact by digest.
    let second = Engine::new(config).unwrap().load(&bytes).unwrap();
    assert!(second.from_artifact_cache(), "the artifact should have been reused");
    assert_eq!(first.digest(), second.digest());
}

#[test]
fn a_damaged_artifact_is_ignored_and_the_module_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig { limits: Limits::default(), artifact_dir: Some(dir.path().to_path_buf()) };
    let bytes = guests::component_bytes("passthrough");
    Engine::new(config.clone()).unwrap().load(&bytes).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let module = Engine::new(config).unwrap().load(&bytes).unwrap();
    assert!(!module.from_artifact_cache());
}
