//! `sluice run`: a function over records from a file or stdin, locally, on the in-memory cache.

use std::io::{BufReader, Write};

use anyhow::Context as _;
use sluice::engine::{Engine, EngineConfig};
use sluice::runner::{self, RunOptions};

use super::parse_settings;
use crate::RunArgs;

/// Runs the function on the records and prints its outputs, errors and cache effects.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = parse_settings(&args.config)?;
    let bytes = std::fs::read(&args.module).with_context(|| format!("cannot read {}", args.module.display()))?;
    let artifact_dir = match (&args.artifact_dir, args.no_artifact_cache) {
        (_, true) => None,
        (Some(dir), false) => Some(dir.clone()),
        (None, false) => runner::default_artifact_dir(),
    };
    let engine = Engine::new(EngineConfig { artifact_dir, ..EngineConfig::default() })?;
    let module = engine.load(&bytes).with_context(|| format!("cannot load {}", args.module.display()))?;
    // On stderr, so that stdout stays the function's report (`--json` lines).
    eprintln!(
        "{}: {} ({} KiB) {} in {:.1} ms",
        args.module.display(),
        module.digest().short(),
        module.size().div_ceil(1024),
        if module.from_artifact_cache() { "loaded from the artifact cache" } else { "compiled" },
        module.compile_time().as_secs_f64() * 1000.0
    );
    let records = match &args.input {
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            runner::read_records(BufReader::new(file), args.raw)
        }
        None => runner::read_records(std::io::stdin().lock(), args.raw),
    }?;
    let name = args.module.file_stem().map_or("function".into(), |s| s.to_string_lossy().into_owned());
    let options = RunOptions { name, config, batch_size: args.batch_size, json: args.json };
    let mut out = std::io::stdout().lock();
    runner::run(&engine, &module, &records, &options, &mut out).await?;
    out.flush()?;
    Ok(())
}
