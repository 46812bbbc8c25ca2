//! Reads, at build time, the versions `sluice version` reports that Cargo does not give a
//! crate: the wasmtime version locked in the workspace's `Cargo.lock`, and the WIT package
//! version declared in `wit/sluice.wit`. Either missing fails the build: the command never
//! guesses.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lock = root.join("Cargo.lock");
    let wit = root.join("wit/sluice.wit");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed={}", wit.display());

    let lock_text = std::fs::read_to_string(&lock).expect("the workspace's Cargo.lock");
    let wasmtime = locked_version(&lock_text, "wasmtime").expect("wasmtime in Cargo.lock");
    let wit_text = std::fs::read_to_string(&wit).expect("wit/sluice.wit");
    let package = wit_text
        .lines()
        .find_map(|line| line.trim().strip_prefix("package ")?.strip_suffix(';').map(str::trim))
        .expect("a `package name@version;` line in wit/sluice.wit");
    println!("cargo:rustc-env=SLUICE_WASMTIME_VERSION={wasmtime}");
    println!("cargo:rustc-env=SLUICE_WIT_PACKAGE={package}");
}

/// The version of the package `name` in a Cargo.lock's text (the first one, if several).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_owned());
        }
    }
    None
}
