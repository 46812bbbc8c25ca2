//! `sluice new` and `sluice build`: guest development.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice::scaffold::{self, BuildOptions};

use crate::NewArgs;

/// Creates a function crate from the template.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let sdk = match args.sdk {
        Some(path) => scaffold::SdkSource::Path(
            path.canonicalize().with_context(|| format!("the SDK folder {} does not exist", path.display()))?,
        ),
        None => scaffold::default_sdk()
            .context("cannot find the sluice-sdk sources next to this build of sluice; give their folder with --sdk")?,
    };
    let dir = scaffold::new_guest(&args.name, &args.dir, &sdk)?;
    outln!("created {}", dir.display())?;
    outln!(
        "next: cd {} && cargo test && sluice build && sluice run --module <the .wasm> --input sample.jsonl",
        dir.display()
    )?;
    Ok(())
}

/// Builds the function crate in `dir` into a component, answering its path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let wasm = scaffold::build_guest(dir, &BuildOptions::default())?;
    eprintln!("built {}", wasm.display());
    Ok(wasm)
}
