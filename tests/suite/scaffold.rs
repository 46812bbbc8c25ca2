//! `sluice new` and `sluice build`: a new function, in Rust, Python or JavaScript, builds as
//! generated into a component that the engine runs and that counts records per key; a Rust
//! crate's own unit tests pass with `cargo test`; its sample input runs with `sluice run`. Names
//! that cannot be crate names and folders already in use are refused.
//!
//! The Python and JavaScript functions use the build tools `make setup` installs for the
//! examples in their language (linked into the new function's folder), so no test reaches a
//! package registry.
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
use sluice::scaffold::{self, BuildOptions, Language, SdkSource};
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
    scaffold::build_function(dir, &BuildOptions { target_dir: Some(shared_target_dir()), language: None })
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
    counts_records_per_key(&wasm, &dir).await;
}

/// A new Python or JavaScript function named `name` in a fresh folder (removed with the
/// returned guard), with the build tool that `make setup` installed for the example in its
/// language linked in: the test asks no package registry.
fn new_interpreted_function(name: &str, language: Language) -> (tempfile::TempDir, PathBuf) {
    let parent = scratch();
    let dir = scaffold::new_function(name, parent.path(), language, None).unwrap();
    let (example, tools) = match language {
        Language::Python => ("word-count-py", ".venv"),
        Language::JavaScript => ("word-count-js", "node_modules"),
        Language::Rust => unreachable!("Rust functions build with cargo"),
    };
    let installed = workspace_root().join("guest-examples").join(example).join(tools);
    assert!(installed.is_dir(), "{} is missing: run `make setup` first", installed.display());
    std::os::unix::fs::symlink(installed, dir.join(tools)).unwrap();
    (parent, dir)
}

/// What every template does, checked on its component: counts records per key in the cache
/// and emits the running count as JSON; runs its own `sample.jsonl` as `sluice run` does; and
/// fails every record, naming the setting, when `window_seconds` is not a number.
async fn counts_records_per_key(wasm: &Path, dir: &Path) {
    let engine = engine();
    let module = engine.load(&std::fs::read(wasm).unwrap()).unwrap();
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

    let config = [("window_seconds", "an hour")];
    let mut misconfigured = FunctionInstance::new(&engine, &module, context("click-counter", Arc::new(cache), &config));
    let results = misconfigured.process(&batch[..1]).await.unwrap();
    let error = results[0].as_ref().expect_err("a malformed setting fails the record");
    assert!(!error.retryable && error.message.contains("window_seconds"), "{error:?}");

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
    assert!(report.contains("ttl=3600s"), "counters get the default window as their TTL: {report}");
}

/// A new function in `language` named `name`: it has `files`, `sluice build` tells its language
/// by them and builds it where cargo puts a Rust component, and the component counts records
/// per key.
async fn a_new_interpreted_function_counts_records_per_key(name: &str, language: Language, files: [&str; 5]) {
    let (parent, dir) = new_interpreted_function(name, language);
    for file in files {
        assert!(dir.join(file).is_file(), "{file} is generated");
    }
    let target = parent.path().join("target");
    let wasm =
        scaffold::build_function(&dir, &BuildOptions { target_dir: Some(target.clone()), language: None }).unwrap();
    assert_eq!(wasm, target.join("wasm32-wasip2/release").join(format!("{}.wasm", scaffold::crate_name(name))));
    counts_records_per_key(&wasm, &dir).await;
}

#[tokio::test]
async fn a_new_python_function_builds_into_a_component_that_counts_records_per_key() {
    let files = ["app.py", "requirements.txt", "README.md", ".gitignore", "sample.jsonl"];
    a_new_interpreted_function_counts_records_per_key("click-counter-py", Language::Python, files).await;
}

#[tokio::test]
async fn a_new_javascript_function_builds_into_a_component_that_counts_records_per_key() {
    let files = ["app.js", "package.json", "README.md", ".gitignore", "sample.jsonl"];
    a_new_interpreted_function_counts_records_per_key("click-counter-js", Language::JavaScript, files).await;
}

#[test]
fn a_python_function_that_does_not_compile_fails_its_build_naming_the_tool() {
    let (parent, dir) = new_interpreted_function("broken-py", Language::Python);
    std::fs::write(dir.join("app.py"), "def process(:\n").unwrap();
    let options = BuildOptions { target_dir: Some(parent.path().join("target")), language: None };
    let error = scaffold::build_function(&dir, &options).unwrap_err().to_string();
    assert!(error.contains("componentize-py failed") && error.contains("messages are above"), "{error}");
}

#[test]
fn a_javascript_function_without_its_package_json_is_told_what_pins_the_tool() {
    let parent = scratch();
    let dir = parent.path().join("bare-js");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("app.js"), "export function process(batch) { return []; }\n").unwrap();
    let error = scaffold::build_function(&dir, &BuildOptions::default()).unwrap_err().to_string();
    assert!(error.contains("no package.json in") && error.contains("componentize-qjs"), "{error}");
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

/// A new Python function whose `.venv` holds a stand-in `pip` (no registry is asked): it notes
/// its arguments in `pip.log` and, when `installs` is true, makes a stand-in componentize-py
/// that writes a placeholder component where `-o` says.
fn python_function_with_a_stand_in_pip(name: &str, installs: bool) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = scratch();
    let dir = scaffold::new_function(name, parent.path(), Language::Python, None).unwrap();
    let bin = dir.join(".venv/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let componentize = "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && echo placeholder > \"$2\"; shift; done\n";
    let make_tool = if installs {
        format!("cat > .venv/bin/componentize-py <<'END'\n{componentize}END\nchmod +x .venv/bin/componentize-py\n")
    } else {
        String::new()
    };
    std::fs::write(bin.join("pip"), format!("#!/bin/sh\necho \"$@\" >> pip.log\n{make_tool}")).unwrap();
    std::fs::set_permissions(bin.join("pip"), std::fs::Permissions::from_mode(0o755)).unwrap();
    (parent, dir)
}

#[test]
fn a_python_function_s_build_tool_is_installed_on_the_first_build_and_again_when_its_pins_change() {
    let (parent, dir) = python_function_with_a_stand_in_pip("pinned-py", true);
    let options = BuildOptions { target_dir: Some(parent.path().join("target")), language: None };
    let pip_calls = || std::fs::read_to_string(dir.join("pip.log")).unwrap_or_default().lines().count();

    let wasm = scaffold::build_function(&dir, &options).unwrap();
    assert_eq!(std::fs::read_to_string(&wasm).unwrap(), "placeholder\n", "the installed tool built it");
    let log = std::fs::read_to_string(dir.join("pip.log")).unwrap();
    assert_eq!(log, "install --disable-pip-version-check --quiet -r requirements.txt\n");

    scaffold::build_function(&dir, &options).unwrap();
    assert_eq!(pip_calls(), 1, "installed tools are reused while the pins stay");

    let requirements = std::fs::read_to_string(dir.join("requirements.txt")).unwrap();
    std::fs::write(dir.join("requirements.txt"), format!("{requirements}wheel==0.45.1\n")).unwrap();
    scaffold::build_function(&dir, &options).unwrap();
    assert_eq!(pip_calls(), 2, "changed pins are installed again");
}

#[test]
fn requirements_that_do_not_install_componentize_py_are_named() {
    let (parent, dir) = python_function_with_a_stand_in_pip("unpinned-py", false);
    let options = BuildOptions { target_dir: Some(parent.path().join("target")), language: None };
    let error = scaffold::build_function(&dir, &options).unwrap_err().to_string();
    assert!(error.contains("requirements.txt in") && error.contains("does not install componentize-py"), "{error}");
}
