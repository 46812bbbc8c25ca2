//! The `sluice` command: the runtime (`serve`, `dev`), the local runner (`run`), guest
//! development (`new`, `build`) and a client of a runtime's admin API (`deploy`, `ls`,
//! `status`, `logs`, `reload`, `rollback`, `pause`, `resume`, `rm`, `offsets`, `modules`), and
//! `version` and `completions`.
//!
//! This file is the command line's definition and its dispatch; each command is in
//! [`commands`], and speaks to the admin API through the typed client of `sluice-api`.

/// `println!` that returns the write's error instead of panicking on it: a reader that went
/// away (`sluice status x | head -1`) ends the command quietly ([`is_closed_pipe`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod commands;

/// The data path allocates per record on one thread and frees on another (librdkafka's
/// delivery thread); mimalloc does that at a fraction of glibc's cost (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use sluice::client::{AdminClient, DEFAULT_URL};
use sluice::logging::LogFormat;
use sluice::scaffold::{BuildOptions, Language};
use sluice::serve::DEFAULT_ADMIN_LISTEN;

/// Sluice: run WebAssembly stream functions on every record of a Kafka topic.
#[derive(Parser)]
#[command(version, about, after_help = LOGGING_ENVIRONMENT)]
struct Cli {
    /// How the runtime's log lines on stderr are written: text, or one JSON object per line
    /// (timestamp, level, target, message and the event's fields, such as pipeline).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// What `sluice --help` says about the log's settings that only come from the environment.
const LOGGING_ENVIRONMENT: &str = "\
The log on stderr (from the environment):
  RUST_LOG    which lines, as tracing filter directives (default: info), e.g. sluice_pipeline=debug,info
  SLUICE_LOG  the same, kept as an alias; when both are set, SLUICE_LOG wins
  NO_COLOR    set (non-empty) for no colours; colours are only used when stderr is a terminal";

#[derive(Subcommand)]
enum Command {
    /// Run the runtime: restore its pipelines, apply those of the config file, serve the admin
    /// API, until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// A demo on embedded defaults: an in-process Kafka mock cluster, the in-memory cache, a
    /// function fed a synthetic stream, live results, and the admin API.
    Dev(DevArgs),
    /// Run a function locally over records from a file or stdin, on the in-memory cache, and
    /// print its outputs, errors and cache effects.
    Run(RunArgs),
    /// Create a new function (Rust, Python or JavaScript) from a template that builds as it is.
    New(NewArgs),
    /// Build a function into a WebAssembly component (Rust with cargo, Python with
    /// componentize-py, JavaScript with componentize-qjs) and print its path.
    Build(BuildArgs),
    /// Upload a function and create or update a pipeline running it, in one call.
    Deploy(DeployArgs),
    /// List the pipelines.
    Ls(ClientArgs),
    /// Show a pipeline: state, module versions, counters, partitions, offsets and lag.
    Status(NameArgs),
    /// Show a pipeline's function log on the node asked: its function's log lines, stdout and
    /// stderr, and why records failed (dead letters, skips, traps, limits).
    Logs(LogsArgs),
    /// Switch a running pipeline to another module without stopping it.
    Reload(ReloadArgs),
    /// Switch a pipeline back to its previous module version, or to a kept revision.
    Rollback(RollbackArgs),
    /// Pause a pipeline: it stops, commits what it processed, and stays paused across restarts.
    Pause(NameArgs),
    /// Resume a paused pipeline from its committed offsets; on a running one, retry the record
    /// each blocked partition is held at.
    Resume(NameArgs),
    /// Delete a pipeline (its consumer group's offsets stay on the cluster).
    Rm(NameArgs),
    /// Reset a paused pipeline's offsets: earliest, latest, or a time (ms since the epoch).
    Offsets(OffsetsArgs),
    /// List the modules stored on the runtime.
    Modules(ClientArgs),
    /// List the nodes of the runtime's cluster: state, last heartbeat, pipelines, partitions.
    Nodes(ClientArgs),
    /// Print this runtime's version, the WIT package its functions implement, and the wasmtime
    /// version it runs them on.
    Version(VersionArgs),
    /// Print a shell completion script: `source <(sluice completions bash)`, or see the README
    /// for zsh and fish.
    Completions(CompletionsArgs),
}

#[derive(Args)]
struct VersionArgs {
    /// Print JSON ({"sluice", "wit", "wit_package", "wasmtime"}).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// What each client command's `--help` says about where it reads its token.
const CLIENT_ENVIRONMENT: &str = "\
The token (from --token or the environment):
  SLUICE_TOKEN  the bearer token sent to the admin API: the runtime's SLUICE_ADMIN_TOKEN
                for changes, or its SLUICE_READ_TOKEN for reads (ls, status, modules, nodes)
With --json, a failure is printed on stderr as one JSON object:
  {\"error\": {\"code\": .., \"message\": .., \"status\": ..}}, the API's code and message
  (status: the HTTP status, absent when the API was not reached).";

/// How to reach the admin API.
#[derive(Args, Clone)]
#[command(after_help = CLIENT_ENVIRONMENT)]
struct ClientArgs {
    /// The admin API's URL.
    #[arg(long, env = "SLUICE_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// The bearer token (read-only or admin): the runtime's SLUICE_ADMIN_TOKEN or
    /// SLUICE_READ_TOKEN.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table, and a failure as JSON on stderr.
    #[arg(long, global = true)]
    json: bool,
}

impl ClientArgs {
    fn client(&self) -> AdminClient {
        AdminClient::new(&self.url, self.token.clone())
    }
}

#[derive(Args)]
struct NameArgs {
    /// The pipeline.
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// What `sluice serve --help` says about the settings that only come from the environment.
const SERVE_ENVIRONMENT: &str = "\
Tokens of the admin API (from the environment, so they never show in a process listing;
the config file's [admin] admin_token and read_token take precedence):
  SLUICE_ADMIN_TOKEN  the bearer token for every call (uploads, deploys, deletes, reads)
  SLUICE_READ_TOKEN   the bearer token for read-only calls (GET)
Without any token the admin API is open, and may only listen on a loopback address.";

#[derive(Args)]
#[command(after_help = SERVE_ENVIRONMENT)]
struct ServeArgs {
    /// The config file (TOML): [kafka], [admin] and optional [[pipeline]] tables.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Bootstrap servers, overriding the config file's `kafka.brokers` (required without a
    /// config file).
    #[arg(long, env = "SLUICE_BROKERS")]
    brokers: Option<String>,
    /// The data directory, overriding the config file's `data_dir`.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The admin API's address, overriding the config file's `admin.listen`.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Log each pipeline's status every this many seconds (0: never).
    #[arg(long, default_value_t = 10)]
    status_every: u64,
    /// This runtime's node id, overriding the config file's `node_id` (default: made once and
    /// kept in the data directory). Each running runtime needs its own.
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<String>,
    /// Where the registry is kept, overriding the config file's `registry`: `kafka` (the
    /// default), in the cluster's control topics (`_sluice_registry`, `_sluice_modules`,
    /// `_sluice_status`, or the config file's [cluster] table), shared by every runtime started
    /// on them; or `data-dir`, in this runtime's data directory alone.
    #[arg(long, env = "SLUICE_REGISTRY", value_enum)]
    registry: Option<sluice::serve::RegistryPlace>,
}

#[derive(Args)]
struct DevArgs {
    /// The function to run; the word-count example by default.
    #[arg(long, short, default_value = "target/wasm32-wasip2/release/word_count.wasm")]
    module: PathBuf,
    /// Records per second fed to the input topic.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Partitions of the input topic (and of topics created for deployed pipelines).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// The admin API's address.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    /// Keep modules and pipelines here (default: a temporary folder removed at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// The function: a WebAssembly component (.wasm) of the sluice:function/processor world.
    #[arg(long, short)]
    module: PathBuf,
    /// Records, one JSON object per line ({"key": .., "value": .., "headers": {..}}; bytes that
    /// are not UTF-8 as "key_b64" and "value_b64", in base64). Reads stdin when absent.
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
    /// Where compiled modules are kept between runs (the runtime's artifact cache format: by
    /// content digest and engine). Default: $SLUICE_ARTIFACT_DIR, else
    /// $XDG_CACHE_HOME/sluice/artifacts, else ~/.cache/sluice/artifacts.
    #[arg(long, value_name = "DIR", conflicts_with = "no_artifact_cache")]
    artifact_dir: Option<PathBuf>,
    /// Compile the module every time, keeping nothing on disk.
    #[arg(long)]
    no_artifact_cache: bool,
}

#[derive(Args)]
struct NewArgs {
    /// The function's name (letters, digits, '-', '_'); its folder is named so.
    name: String,
    /// The folder to create it in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The language: rust, python or js.
    #[arg(long, default_value = "rust")]
    lang: Language,
    /// For Rust, the sluice-sdk crate to depend on (a path); by default the SDK next to this
    /// build's sources.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Args)]
struct BuildArgs {
    /// The function's folder.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The language; by default told by the folder's Cargo.toml, app.py or app.js.
    #[arg(long)]
    lang: Option<Language>,
    /// The target folder the component is built in (default: the function's target/).
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

#[derive(Args)]
struct DeployArgs {
    /// The component to deploy (.wasm), or a function crate's folder to build first.
    module: PathBuf,
    /// The pipeline's name.
    #[arg(long, short)]
    name: String,
    /// An input topic. Repeatable.
    #[arg(long = "input", short = 'i')]
    inputs: Vec<String>,
    /// The default output topic, or NAME=TOPIC for a named output. Repeatable.
    #[arg(long = "output", short = 'o')]
    outputs: Vec<String>,
    /// The cache: memory://, redis://..., memcache://...
    #[arg(long)]
    cache: Option<String>,
    /// The cache namespace (default: the pipeline's name).
    #[arg(long)]
    namespace: Option<String>,
    /// A setting for the function, KEY=VALUE. Repeatable.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// A spec file (JSON) to start from; flags override its fields.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// What to do with records that fail for good: dead-letter, skip or block.
    #[arg(long)]
    on_failure: Option<String>,
    /// Most records per function call.
    #[arg(long)]
    batch_size: Option<usize>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct ReloadArgs {
    /// The pipeline.
    name: String,
    /// The new component (.wasm), a function crate's folder to build first, or the digest of a
    /// module already stored (sha256:...).
    module: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct RollbackArgs {
    /// The pipeline.
    name: String,
    /// The kept revision to switch to (default: the previous module version).
    #[arg(long)]
    revision: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct LogsArgs {
    /// The pipeline.
    name: String,
    /// Keep printing new entries as they come, until interrupted. With --json, one JSON
    /// entry per line.
    #[arg(long, short)]
    follow: bool,
    /// Only entries since then: a duration back from now (30s, 5m, 2h, 1d) or an RFC 3339
    /// time (2026-11-03T14:05:09Z).
    #[arg(long)]
    since: Option<String>,
    /// Only entries at this level or above: trace, debug, info, warn, error.
    #[arg(long)]
    level: Option<String>,
    /// Only the latest this many of the entries kept.
    #[arg(long, short = 'n')]
    limit: Option<usize>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct OffsetsArgs {
    /// The pipeline (paused).
    name: String,
    /// earliest, latest, or a time in milliseconds since the Unix epoch.
    #[arg(long)]
    reset: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn main() {
    let cli = Cli::parse();
    sluice::logging::init(cli.log_format);
    let json = cli.command.prints_json();
    if let Err(error) = run(cli.command) {
        if is_closed_pipe(&error) {
            // The reader has what it wanted (`| head`): not a failure, as for any Unix tool.
            std::process::exit(0);
        }
        if json {
            eprintln!("{}", commands::error_json(&error));
        } else {
            eprintln!("Error: {error:#}");
        }
        std::process::exit(1);
    }
}

/// Whether `error` is a write to a pipe whose reader is gone.
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`), failures included.
    fn prints_json(&self) -> bool {
        match self {
            Command::Ls(a) | Command::Modules(a) | Command::Nodes(a) => a.json,
            Command::Status(a) | Command::Pause(a) | Command::Resume(a) | Command::Rm(a) => a.client.json,
            Command::Deploy(a) => a.client.json,
            Command::Reload(a) => a.client.json,
            Command::Rollback(a) => a.client.json,
            Command::Offsets(a) => a.client.json,
            Command::Logs(a) => a.client.json,
            Command::Run(a) => a.json,
            Command::Version(a) => a.json,
            Command::Serve(_) | Command::Dev(_) | Command::New(_) | Command::Build(_) | Command::Completions(_) => {
                false
            }
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let runtime = || tokio::runtime::Runtime::new().context("cannot start the async runtime");
    match command {
        Command::Serve(args) => {
            let runtime = runtime()?;
            let result = runtime.block_on(commands::serve::serve(args));
            // Blocking calls still waiting on an unreachable cluster do not hold the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        }
        Command::Dev(args) => runtime()?.block_on(commands::dev::dev(args)),
        Command::Run(args) => runtime()?.block_on(commands::run::run(args)),
        Command::New(args) => commands::new::new(args),
        Command::Build(args) => {
            let options = BuildOptions { target_dir: args.target_dir, language: args.lang };
            let path = commands::new::build(&args.dir, &options)?;
            Ok(outln!("{}", path.display())?)
        }
        Command::Deploy(args) => commands::deploy::deploy(args),
        Command::Ls(args) => commands::ls::ls(&args),
        Command::Status(args) => commands::ls::status(&args),
        Command::Logs(args) => commands::logs::logs(args),
        Command::Reload(args) => commands::reload::reload(args),
        Command::Rollback(args) => commands::reload::rollback(args),
        Command::Pause(args) => commands::lifecycle::pause(&args),
        Command::Resume(args) => commands::lifecycle::resume(&args),
        Command::Rm(args) => commands::lifecycle::rm(&args),
        Command::Offsets(args) => commands::offsets::offsets(args),
        Command::Modules(args) => commands::modules::modules(&args),
        Command::Nodes(args) => commands::nodes::nodes(&args),
        Command::Version(args) => {
            let versions = sluice::version::Versions::of_this_build();
            if args.json {
                return commands::print_json(&versions);
            }
            Ok(outln!("{versions}")?)
        }
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "sluice", &mut script);
            Ok(std::io::stdout().write_all(&script)?)
        }
    }
}
