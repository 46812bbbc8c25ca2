//! Paths of the guest components built by `make examples` (`cargo build --release --target
//! wasm32-wasip2`), with a clear message when one has not been built.

use std::path::PathBuf;

/// The component built from the workspace crate `crate_name` (a guest example or a test guest).
pub fn component(crate_name: &str) -> PathBuf {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = workspace_root().join("target/wasm32-wasip2/release").join(file);
    assert!(path.exists(), "guest component {} is missing: run `make examples` first", path.display());
    path
}

/// Bytes of the component built from `crate_name`.
pub fn component_bytes(crate_name: &str) -> Vec<u8> {
    std::fs::read(component(crate_name)).expect("read guest component")
}

/// The workspace's top folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}
