//! `sluice new` and `sluice build`: guest development.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sluice::scaffold::{self, BuildOptions, Language};

use crate::NewArgs;

/// Creates a function from its language's template.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let sdk = match (args.lang, args.sdk) {
        (Language::Rust, Some(path)) => Some(scaffold::SdkSource::Path(
            path.canonicalize().with_context(|| format!("the SDK folder {} does not exist", path.display()))?,
        )),
        (Language::Rust, None) => Some(scaffold::default_sdk().context(
            "cannot find the sluice-sdk sources next to this build of sluice; give their folder with --sdk",
        )?),
        (_, Some(_)) => bail!("--sdk is for Rust functions: the sluice-sdk crate is Rust's"),
        (_, None) => None,
    };
    let dir = scaffold::new_function(&args.name, &args.dir, args.lang, sdk.as_ref())?;
    outln!("created {}", dir.display())?;
    let test = if args.lang == Language::Rust { "cargo test && " } else { "" };
    let crate_name = scaffold::crate_name(&args.name);
    outln!(
        "next: cd {} && {test}sluice build && sluice run --module target/wasm32-wasip2/release/{crate_name}.wasm --input sample.jsonl",
        dir.display()
    )?;
    Ok(())
}

/// Builds the function in `dir` into a component, answering its path.
pub fn build(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let wasm = scaffold::build_function(dir, options)?;
    eprintln!("built {}", wasm.display());
    Ok(wasm)
}
