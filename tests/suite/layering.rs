//! The runtime's crates depend only downwards, along the flow of a record: a crate may use the
//! crates before it in [`LAYERS`], never one after it. `docs/architecture.md` draws the same
//! order; this test keeps the two true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The runtime's crates from the bottom up, with their directory under `runtime/`.
const LAYERS: &[(&str, &str)] = &[
    ("fuzzing", "sluice-fuzzing"),
    ("contract", "sluice-contract"),
    ("record", "sluice-record"),
    ("cache", "sluice-cache"),
    ("engine", "sluice-engine"),
    ("kafka", "sluice-kafka"),
    ("pipeline", "sluice-pipeline"),
    ("api", "sluice-api"),
    ("admin", "sluice-admin"),
    ("cli", "sluice"),
];

fn runtime_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime")
}

/// The Sluice crates a manifest names in any dependency table (dev-dependencies included).
fn sluice_dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let manifest: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut tables: Vec<&toml::Table> = Vec::new();
    for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
        tables.extend(manifest.get(key).and_then(toml::Value::as_table));
    }
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
                tables.extend(target.get(key).and_then(toml::Value::as_table));
            }
        }
    }
    let mut names: Vec<String> =
        tables.iter().flat_map(|t| t.keys()).filter(|name| name.starts_with("sluice")).cloned().collect();
    names.sort();
    names.dedup();
    names
}

fn rank(name: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, crate_name)| *crate_name == name)
}

#[test]
fn every_runtime_crate_is_in_the_layer_list_and_every_listed_crate_exists() {
    let mut dirs: Vec<String> = std::fs::read_dir(runtime_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = LAYERS.iter().map(|(dir, _)| dir.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "runtime/ and LAYERS must name the same crates");
}

#[test]
fn runtime_crates_depend_only_on_crates_below_them() {
    let mut violations = BTreeMap::new();
    for (position, (dir, name)) in LAYERS.iter().enumerate() {
        let manifest = runtime_dir().join(dir).join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        for dependency in sluice_dependencies(&manifest) {
            match rank(&dependency) {
                Some(below) if below < position => {}
                Some(_) => {
                    violations.insert(format!("{name} -> {dependency}"), "depends on a crate at or above it");
                }
                None => {
                    violations.insert(format!("{name} -> {dependency}"), "depends on a Sluice crate outside runtime/");
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering broken: {violations:#?}");
}

#[test]
fn the_guest_sdk_uses_no_runtime_crate_but_the_contract() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/Cargo.toml");
    let runtime: Vec<String> = sluice_dependencies(&manifest)
        .into_iter()
        .filter(|name| rank(name).is_some() && name != "sluice-contract")
        .collect();
    assert!(runtime.is_empty(), "the SDK builds into guests; it must not depend on {runtime:?}");
}

#[test]
fn the_layer_check_catches_an_upward_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("Cargo.toml");
    std::fs::write(
        &manifest,
        "[dependencies]\nsluice-pipeline = { path = \"x\" }\n[dev-dependencies]\nsluice-fuzzing = \"1\"\n",
    )
    .unwrap();
    let found = sluice_dependencies(&manifest);
    assert_eq!(found, ["sluice-fuzzing", "sluice-pipeline"]);
    let engine = rank("sluice-engine").unwrap();
    assert!(rank("sluice-pipeline").unwrap() > engine, "an engine depending on the pipeline would be flagged");
}
