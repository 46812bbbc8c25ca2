//! The `sluice` command.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use sluice::dev::DevOptions;
use sluice::engine::{Engine, EngineConfig};
use sluice::runner::{self, RunOptions};
use sluice::serve::{Runtime, ServeConfig, shutdown_signal};
use std::time::Duration;
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
    /// Run the pipelines of a config file against a Kafka cluster until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// A demo on embedded defaults: an in-process Kafka mock cluster, the in-memory cache, a
    /// function fed a synthetic stream, and live results in the terminal.
    Dev(DevArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The config file (TOML): [kafka] and one [[pipeline]] table per pipeline.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: PathBuf,
    /// Bootstrap servers, overriding the config file's `kafka.brokers`.
    #[arg(long, env = "SLUICE_BROKERS")]
    brokers: Option<String>,
    /// Print each pipeline's status every this many seconds (0: never).
    #[arg(long, default_value_t = 10)]
    status_every: u64,
}

#[derive(clap::Args)]
struct DevArgs {
    /// The function to run; the word-count example by default.
    #[arg(long, short, default_value = "target/wasm32-wasip2/release/word_count.wasm")]
    module: PathBuf,
    /// Records per second fed to the input topic.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
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
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Dev(args) => runtime.block_on(sluice::dev::run(DevOptions {
            module: args.module,
            rate: args.rate,
            partitions: args.partitions,
            duration: args.seconds.map(Duration::from_secs),
        })),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::load(&args.config)?;
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    let runtime = Runtime::start(&config).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    ticker.tick().await;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick(), if args.status_every > 0 => {
                for pipeline in runtime.pipelines() {
                    let s = pipeline.status();
                    let c = &s.cache.stats;
                    tracing::info!(
                        pipeline = %s.name, records_in = s.records_in, records_out = s.records_out,
                        failed = s.failed, dead_letters = s.dead_letters,
                        cache = s.cache.backend, cache_hits = c.hits, cache_misses = c.misses,
                        cache_hit_ratio = s.cache.hit_ratio().map(|r| format!("{r:.3}")).unwrap_or_default(),
                        cache_unavailable = c.unavailable, cache_timeouts = c.timeouts, cache_errors = c.errors,
                        cache_mean_us = c.latency.mean().map_or(0, |d| d.as_micros()),
                        "status"
                    );
                }
            }
        }
    }
    tracing::info!("stopping");
    runtime.stop().await;
    Ok(())
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
    let options = RunOptions { name, config, batch_size: args.batch_size, json: args.json };
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
