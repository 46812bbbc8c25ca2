//! `sluice new` and `sluice build`: a new function crate builds, as generated, into a component
//! that the engine runs; its own unit tests pass with `cargo test`; its sample input runs with
//! `sluice run`. Names that cannot be crate names and folders already in use are refused.
//!
//! The generated crates live in temporary folders inside the workspace's `target/` (which also
//! shows they are workspaces of their own), start from the workspace's `Cargo.lock` and build
//! into the workspace's target folder: their dependencies resolve, without asking crates.io, to
//! the versions the workspace has already downloaded and compiled. Each test that runs cargo
//! then takes a few seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sluice::cache::{CacheBackend, MemoryCache};
use sluice::engine::FunctionInstance;
use sluice::runner::{self, RunOptions, RunSummary};
use sluice::scaffold::{self, BuildOptions, SdkSource};
use sluice_tests::fixtures::{context, engine, key_value, record};
use sluice_tests::guests::workspace_root;

/// The SDK of this source tree, which `sluice new` uses by default.
fn sdk() -> SdkSource {
    scaffold::default_sdk().expect("sdk/ is beside runtime/")
}

/// The workspace's target folder, shared with the generated crates.
fn shared_target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// An empty folder of its own, removed when dropped.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("scaffold-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// A new function crate named `name` in a fresh folder (removed with the returned guard), with
/// the workspace's `Cargo.lock`.
fn new_function(name: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = scratch();
    let dir = scaffold::new_guest(name, parent.path(), &sdk()).unwrap();
    assert_eq!(dir, parent.path().join(name));
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    (parent, dir)
}

/// `sluice build` of the crate in `dir`, into the shared target folder.
fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    scaffold::build_guest(dir, &BuildOptions { target_dir: Some(shared_target_dir()) })
}

#[tokio::test]
async fn a_new_function_builds_into_a_component_that_counts_records_per_key() {
    let (_parent, dir) = new_function("click-counter");
    for file in ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore", "sample.jsonl"] {
        assert!(dir.join(file).is_file(), "{file} is generated");
    }

    let wasm = build(&dir).unwrap();
    assert!(wasm.is_file(), "{}", wasm.display());
    assert!(wasm.ends_with("wasm32-wasip2/release/click_counter.wasm"), "{}", wasm.display());

    let engine = engine();
    let module = engine.load(&std::fs::read(&wasm).unwrap()).unwrap();
    let cache = MemoryCache::new();
    let mut function = FunctionInstance::new(&engine, &module, context("click-counter", Arc::new(cache.clone()), &[]));
    let batch = vec![record(0, "user-1", "login"), record(1, "user-2", "login"), record(2, "user-1", "logout")];
    let results = function.process(&batch).await.unwrap();
    let outputs: Vec<(String, String)> =
        results.iter().flat_map(|result| result.as_ref().expect("record succeeded")).map(key_value).collect();
    let expected = [
        ("user-1", r#"{"count":1,"key":"user-1"}"#),
        ("user-2", r#"{"count":1,"key":"user-2"}"#),
        ("user-1", r#"{"count":2,"key":"user-1"}"#),
    ];
    assert_eq!(outputs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    assert_eq!(cache.get("test:count:user-1").await.unwrap(), Some(b"2".to_vec()));

    // The sample input, as `sluice run --module ... --input sample.jsonl` runs it: four counted
    // records, and a last one without a key that fails.
    let sample = std::fs::File::open(dir.join("sample.jsonl")).unwrap();
    let records = runner::read_records(std::io::BufReader::new(sample), false).unwrap();
    let mut report = Vec::new();
    let summary = runner::run(&engine, &module, &records, &RunOptions::default(), &mut report).await.unwrap();
    assert_eq!(summary, RunSummary { records: 5, outputs: 4, record_errors: 1, batch_errors: 0 });
    let report = String::from_utf8(report).unwrap();
    assert!(report.contains("offset 4: error (fatal): record at offset 4: key is missing"), "{report}");
    assert!(report.contains(r#"count:user-1 = "3""#), "{report}");
}

#[test]
fn a_new_function_passes_its_own_unit_tests() {
    let (_parent, dir) = new_function("unit-tested");
    let output = Command::new("cargo")
        .arg("test")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .output()
        .expect("run cargo test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo test failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("test result: ok. 4 passed"), "{stdout}");
}

#[test]
fn a_name_that_is_not_a_crate_name_is_refused() {
    let parent = scratch();
    for name in ["", "2fast", "my counter", "../escape", "naïve", "fn", &"x".repeat(65)] {
        let error = scaffold::new_guest(name, parent.path(), &sdk()).unwrap_err().to_string();
        assert!(error.contains("invalid function name"), "{name:?}: {error}");
    }
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "nothing was written");
}

#[test]
fn a_folder_that_is_not_empty_is_refused_and_left_alone() {
    let parent = scratch();
    let dir = parent.path().join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let error = scaffold::new_guest("taken", parent.path(), &sdk()).unwrap_err().to_string();
    assert!(error.contains(&dir.display().to_string()) && error.contains("not empty"), "{error}");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // An empty folder is fine.
    std::fs::create_dir(parent.path().join("empty")).unwrap();
    let dir = scaffold::new_guest("empty", parent.path(), &sdk()).unwrap();
    assert!(dir.join("Cargo.toml").is_file());
}

#[test]
fn build_refuses_a_folder_without_a_crate() {
    let parent = scratch();
    let error = build(parent.path()).unwrap_err().to_string();
    assert!(error.contains("no Cargo.toml in") && error.contains("sluice new"), "{error}");
}

#[test]
fn build_explains_a_crate_that_is_not_a_cdylib() {
    let parent = scratch();
    let dir = parent.path();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"plain-lib\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "//! A library, not a component.\n").unwrap();
    let error = build(dir).unwrap_err().to_string();
    assert!(error.contains("built no component") && error.contains("cdylib"), "{error}");
}
