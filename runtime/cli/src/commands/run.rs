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
    let engine = Engine::new(EngineConfig::default())?;
    let module = engine.load(&bytes).with_context(|| format!("cannot load {}", args.module.display()))?;
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
