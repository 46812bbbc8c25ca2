//! The `sluice` command.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use sluice::engine::{Engine, EngineConfig};
use sluice::runner::{self, RunOptions};
use tracing_subscriber::EnvFilter;

/// Sluice: run WebAssembly stream functions on every record of a stream.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a function locally over records from a file or stdin, on the in-memory cache, and
    /// print its outputs, errors and cache effects.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The function: a WebAssembly component (.wasm) of the sluice:function/processor world.
    #[arg(long, short)]
    module: PathBuf,
    /// Records, one JSON object per line ({"key": .., "value": .., "headers": {..}}).
    /// Reads stdin when absent.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Take each input line as a record value, as is.
    #[arg(long)]
    raw: bool,
    /// A setting for the function's `config` import, as KEY=VALUE. Repeatable.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Records per call. With 1 (the default), cache effects are shown per record.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
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
    let options = RunOptions { name, config, batch_size: args.batch_size, raw: args.raw, json: args.json };
    let mut out = std::io::stdout().lock();
    runner::run(&engine, &module, &records, &options, &mut out).await?;
    out.flush()?;
    Ok(())
}

fn parse_settings(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--config {pair:?} must be KEY=VALUE");
        };
        settings.insert(key.to_owned(), value.to_owned());
    }
    Ok(settings)
}
