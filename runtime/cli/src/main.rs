//! The `sluice` command: the runtime (`serve`, `dev`), the local runner (`run`), guest
//! development (`new`, `build`) and a client of a runtime's admin API (`deploy`, `ls`,
//! `status`, `reload`, `rollback`, `pause`, `resume`, `rm`, `offsets`, `modules`).

use std::collections::BTreeMap;
use std::io::{BufReader, IsTerminal as _, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use sluice::client::{AdminClient, DEFAULT_URL};
use sluice::dev::DevOptions;
use sluice::engine::{Engine, EngineConfig};
use sluice::runner::{self, RunOptions};
use sluice::scaffold::{self, BuildOptions};
use sluice::serve::{self, DEFAULT_ADMIN_LISTEN, ServeConfig, shutdown_signal};
use tracing_subscriber::EnvFilter;

/// Sluice: run WebAssembly stream functions on every record of a Kafka topic.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
    /// Create a new function crate from a template that builds and tests as it is.
    New(NewArgs),
    /// Build a function crate into a WebAssembly component (cargo, target wasm32-wasip2).
    Build(BuildArgs),
    /// Upload a function and create or update a pipeline running it, in one call.
    Deploy(DeployArgs),
    /// List the pipelines.
    Ls(ClientArgs),
    /// Show a pipeline: state, module versions, counters, partitions, offsets and lag.
    Status(NameArgs),
    /// Switch a running pipeline to another module without stopping it.
    Reload(ReloadArgs),
    /// Switch a pipeline back to its previous module version, or to a kept revision.
    Rollback(RollbackArgs),
    /// Pause a pipeline: it stops, commits what it processed, and stays paused across restarts.
    Pause(NameArgs),
    /// Resume a paused pipeline from its committed offsets.
    Resume(NameArgs),
    /// Delete a pipeline (its consumer group's offsets stay on the cluster).
    Rm(NameArgs),
    /// Reset a paused pipeline's offsets: earliest, latest, or a time (ms since the epoch).
    Offsets(OffsetsArgs),
    /// List the modules stored on the runtime.
    Modules(ClientArgs),
}

/// How to reach the admin API.
#[derive(Args, Clone)]
struct ClientArgs {
    /// The admin API's URL.
    #[arg(long, env = "SLUICE_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// The bearer token (read-only or admin).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
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

#[derive(Args)]
struct NewArgs {
    /// The crate's name (letters, digits, '-', '_').
    name: String,
    /// The folder to create it in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The sluice-sdk crate to depend on (a path); by default the SDK next to this build's sources.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Args)]
struct BuildArgs {
    /// The function crate's folder.
    #[arg(default_value = ".")]
    dir: PathBuf,
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
struct OffsetsArgs {
    /// The pipeline (paused).
    name: String,
    /// earliest, latest, or a time in milliseconds since the Unix epoch.
    #[arg(long)]
    reset: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = || tokio::runtime::Runtime::new().context("cannot start the async runtime");
    match cli.command {
        Command::Serve(args) => {
            let runtime = runtime()?;
            let result = runtime.block_on(serve(args));
            // Blocking calls still waiting on an unreachable cluster do not hold the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        }
        Command::Dev(args) => runtime()?.block_on(sluice::dev::run(DevOptions {
            module: args.module,
            rate: args.rate,
            partitions: args.partitions,
            duration: args.seconds.map(Duration::from_secs),
            admin_listen: args.admin_listen,
            data_dir: args.data_dir,
        })),
        Command::Run(args) => runtime()?.block_on(run(args)),
        Command::New(args) => new(args),
        Command::Build(args) => build(&args.dir).map(|path| println!("{}", path.display())),
        Command::Deploy(args) => deploy(args),
        Command::Ls(args) => ls(&args),
        Command::Status(args) => status(&args),
        Command::Reload(args) => reload(args),
        Command::Rollback(args) => {
            let body = json!({ "revision": args.revision });
            let body = if args.revision.is_some() { body } else { json!({}) };
            let answer = args.client.client().post_json(&format!("/v1/pipelines/{}/rollback", args.name), &body)?;
            print_change(&args.client, "rolled back", &answer)
        }
        Command::Pause(args) => {
            let answer = args.client.client().post_json(&format!("/v1/pipelines/{}/pause", args.name), &json!({}))?;
            print_summary(&args.client, "paused", &answer)
        }
        Command::Resume(args) => {
            let answer = args.client.client().post_json(&format!("/v1/pipelines/{}/resume", args.name), &json!({}))?;
            print_summary(&args.client, "resumed", &answer)
        }
        Command::Rm(args) => {
            args.client.client().delete(&format!("/v1/pipelines/{}", args.name))?;
            if args.client.json {
                println!("{}", json!({ "deleted": args.name }));
            } else {
                println!("pipeline {} deleted", args.name);
            }
            Ok(())
        }
        Command::Offsets(args) => offsets(args),
        Command::Modules(args) => modules(&args),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut config = match (&args.config, &args.brokers) {
        (Some(path), _) => ServeConfig::load(path)?,
        (None, Some(brokers)) => ServeConfig::new(brokers),
        (None, None) => bail!("give a config file (--config) or the cluster's bootstrap servers (--brokers)"),
    };
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = Some(node_id);
    }
    // Refuse an open API off loopback before anything starts.
    sluice::admin::check_listen_address(config.admin.listen, &config.admin.config()).map_err(anyhow::Error::msg)?;
    let manager = tokio::select! {
        manager = serve::open(&config) => manager?,
        _ = &mut shutdown => {
            serve::exit_after_shutdown_timeout();
            tracing::info!("stopping during start-up");
            return Ok(());
        }
    };
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut admin = tokio::spawn(serve::serve_admin(manager.clone(), config.admin.clone(), async move {
        let _ = admin_stopped.await;
    }));
    let mut ticker = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    ticker.tick().await;
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => {
                serve::exit_after_shutdown_timeout();
                break Ok(());
            }
            ended = &mut admin => break match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("the admin API task failed: {e}")),
            },
            _ = ticker.tick(), if args.status_every > 0 => {
                for (summary, s) in manager.statuses().await {
                    let c = &s.cache.stats;
                    tracing::info!(
                        pipeline = %s.name, state = ?summary.state, revision = summary.revision,
                        records_in = s.records_in, records_out = s.records_out,
                        failed = s.failed, dead_letters = s.dead_letters, lag = summary.lag,
                        cache = s.cache.backend, cache_hits = c.hits, cache_misses = c.misses,
                        cache_hit_ratio = s.cache.hit_ratio().map(|r| format!("{r:.3}")).unwrap_or_default(),
                        cache_unavailable = c.unavailable, cache_timeouts = c.timeouts, cache_errors = c.errors,
                        "status"
                    );
                }
            }
        }
    };
    tracing::info!("stopping");
    let _ = stop_admin.send(());
    manager.shutdown().await;
    result
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

fn new(args: NewArgs) -> anyhow::Result<()> {
    let sdk = match args.sdk {
        Some(path) => scaffold::SdkSource::Path(
            path.canonicalize().with_context(|| format!("the SDK folder {} does not exist", path.display()))?,
        ),
        None => scaffold::default_sdk()
            .context("cannot find the sluice-sdk sources next to this build of sluice; give their folder with --sdk")?,
    };
    let dir = scaffold::new_guest(&args.name, &args.dir, &sdk)?;
    println!("created {}", dir.display());
    println!(
        "next: cd {} && cargo test && sluice build && sluice run --module <the .wasm> --input sample.jsonl",
        dir.display()
    );
    Ok(())
}

fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let wasm = scaffold::build_guest(dir, &BuildOptions::default())?;
    eprintln!("built {}", wasm.display());
    Ok(wasm)
}

/// A component path: the file given, or the component built from the crate folder given.
fn component(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_dir() { build(path) } else { Ok(path.to_path_buf()) }
}

fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let mut spec: Value = match &args.spec {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("cannot read spec {}", path.display()))?,
        )
        .with_context(|| format!("spec {} is not JSON", path.display()))?,
        None => json!({}),
    };
    let object = spec.as_object_mut().context("the spec must be a JSON object")?;
    object.insert("name".into(), args.name.clone().into());
    if !args.inputs.is_empty() {
        object.insert("inputs".into(), json!(args.inputs));
    }
    if !args.outputs.is_empty() {
        let mut outputs = serde_json::Map::new();
        for output in &args.outputs {
            let (name, topic) = output.split_once('=').unwrap_or(("default", output.as_str()));
            outputs.insert(name.to_string(), topic.into());
        }
        object.insert("outputs".into(), Value::Object(outputs));
    }
    for (field, value) in [("cache", &args.cache), ("namespace", &args.namespace)] {
        if let Some(value) = value {
            object.insert(field.into(), value.clone().into());
        }
    }
    if !args.config.is_empty() {
        object.insert("config".into(), json!(parse_settings(&args.config)?));
    }
    if args.on_failure.is_some() || args.batch_size.is_some() {
        let processing = object.entry("processing").or_insert_with(|| json!({}));
        if let Some(policy) = &args.on_failure {
            processing["on_failure"] = policy.clone().into();
        }
        if let Some(size) = args.batch_size {
            processing["batch_size"] = size.into();
        }
    }
    object.remove("module");
    let module = component(&args.module)?;
    let answer = with_progress(&module, |progress| args.client.client().deploy(&spec, &module, progress))?;
    if args.client.json {
        return print_json(&answer);
    }
    let result = answer["result"].as_str().unwrap_or("deployed");
    println!(
        "pipeline {}: {result}, module {} (revision {})",
        args.name,
        short(answer["pipeline"]["module"].as_str().unwrap_or("")),
        answer["pipeline"]["revision"]
    );
    Ok(())
}

fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let client = args.client.client();
    let path = format!("/v1/pipelines/{}/reload", args.name);
    let answer = if args.module.starts_with("sha256:") {
        client.post_json(&path, &json!({ "module": args.module }))?
    } else {
        let module = component(Path::new(&args.module))?;
        with_progress(&module, |progress| client.post_module(&path, &module, progress))?
    };
    print_change(&args.client, "reloaded", &answer)
}

fn offsets(args: OffsetsArgs) -> anyhow::Result<()> {
    let reset = match args.reset.as_str() {
        "earliest" | "latest" => json!(args.reset),
        time => json!({ "timestamp": time.parse::<i64>().with_context(|| {
            format!("--reset {time:?}: expected earliest, latest or milliseconds since the Unix epoch")
        })? }),
    };
    let answer =
        args.client.client().post_json(&format!("/v1/pipelines/{}/offsets", args.name), &json!({ "reset": reset }))?;
    if args.client.json {
        return print_json(&answer);
    }
    let rows: Vec<Vec<String>> =
        items(&answer["offsets"]).map(|o| vec![text(&o["topic"]), text(&o["partition"]), text(&o["offset"])]).collect();
    print_table(&["TOPIC", "PARTITION", "COMMITTED"], &rows);
    Ok(())
}

fn ls(args: &ClientArgs) -> anyhow::Result<()> {
    let answer = args.client().get("/v1/pipelines")?;
    if args.json {
        return print_json(&answer);
    }
    let rows: Vec<Vec<String>> = items(&answer["pipelines"])
        .map(|p| {
            vec![
                text(&p["name"]),
                text(&p["state"]),
                text(&p["revision"]),
                short(p["module"].as_str().unwrap_or("")).to_string(),
                p["inputs"].as_array().map(|i| i.iter().map(text).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                text(&p["records_in"]),
                text(&p["records_out"]),
                text(&p["failed"]),
                text(&p["partitions"]),
                text(&p["lag"]),
            ]
        })
        .collect();
    print_table(&["NAME", "STATE", "REV", "MODULE", "INPUTS", "IN", "OUT", "FAILED", "OWNED", "LAG"], &rows);
    Ok(())
}

fn status(args: &NameArgs) -> anyhow::Result<()> {
    let p = args.client.client().get(&format!("/v1/pipelines/{}", args.name))?;
    if args.client.json {
        return print_json(&p);
    }
    let s = &p["status"];
    println!("pipeline   {}", text(&p["name"]));
    println!("state      {}{}", text(&p["state"]), p["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default());
    println!("module     {} (revision {})", text(&p["spec"]["module"]), text(&p["revision"]));
    println!(
        "inputs     {}",
        p["spec"]["inputs"].as_array().map(|i| i.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    );
    println!(
        "outputs    {}",
        p["spec"]["outputs"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    println!(
        "records    in {}  out {}  failed {}  dead letters {}  skipped {}",
        text(&s["records_in"]),
        text(&s["records_out"]),
        text(&s["failed"]),
        text(&s["dead_letters"]),
        text(&s["skipped"])
    );
    if let Some(error) = s["last_error"].as_str() {
        println!("last error {error}");
    }
    if let Some(stalled) = s["stalled"].as_str() {
        println!("stalled    it {stalled}");
    }
    if let Some(ms) = s["broker_unreachable_ms"].as_u64() {
        println!("broker     unreachable for {:.1} s", ms as f64 / 1000.0);
    }
    println!(
        "cache      {} namespace {}  hits {}  misses {}  unavailable {}",
        text(&s["cache"]["backend"]),
        text(&s["cache"]["namespace"]),
        text(&s["cache"]["stats"]["hits"]),
        text(&s["cache"]["stats"]["misses"]),
        text(&s["cache"]["stats"]["unavailable"])
    );
    println!("\nversions");
    let versions: Vec<Vec<String>> = items(&p["revisions"])
        .map(|r| {
            vec![
                text(&r["revision"]),
                short(r["module"].as_str().unwrap_or("")).to_string(),
                if r["superseded"] == true {
                    format!("{} (superseded: never processed a record)", text(&r["cause"]))
                } else {
                    text(&r["cause"])
                },
                text(&r["deployed_at"]),
            ]
        })
        .collect();
    print_table(&["REV", "MODULE", "CAUSE", "DEPLOYED (UNIX S)"], &versions);
    println!("\npartitions");
    // The broker's view of every input partition, beside what this runtime knows of its
    // workers; when the broker does not answer, the runtime's own rows still show.
    let worker_state = |w: &Value| if w["owned"] == false { "history".to_string() } else { text(&w["state"]) };
    let worker_module = |w: &Value| {
        let module = w["module"].as_str().map_or("-".to_string(), |m| short(m).to_string());
        w["revision"].as_u64().map_or(module.clone(), |r| format!("{module} (rev {r})"))
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for o in items(&p["offsets"]) {
        let worker = items(&s["partitions"]).find(|w| w["topic"] == o["topic"] && w["partition"] == o["partition"]);
        rows.push(vec![
            text(&o["topic"]),
            text(&o["partition"]),
            text(&o["committed"]),
            text(&o["high_watermark"]),
            text(&o["lag"]),
            worker.map_or("-".into(), worker_state),
            worker.map_or("-".into(), worker_module),
        ]);
    }
    if p["offsets"].as_array().is_none_or(Vec::is_empty) {
        for w in items(&s["partitions"]) {
            rows.push(vec![
                text(&w["topic"]),
                text(&w["partition"]),
                format!("{} (stored here)", text(&w["next_offset"])),
                "-".into(),
                text(&w["lag"]),
                worker_state(w),
                worker_module(w),
            ]);
        }
    }
    print_table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "WORKER", "MODULE"], &rows);
    if let Some(error) = p["offsets_error"].as_str() {
        println!("(offsets unavailable: {error})");
    }
    Ok(())
}

fn modules(args: &ClientArgs) -> anyhow::Result<()> {
    let answer = args.client().get("/v1/modules")?;
    if args.json {
        return print_json(&answer);
    }
    let rows: Vec<Vec<String>> = items(&answer["modules"])
        .map(|m| vec![text(&m["digest"]), text(&m["size"]), text(&m["uploaded_at"])])
        .collect();
    print_table(&["DIGEST", "BYTES", "UPLOADED (UNIX S)"], &rows);
    Ok(())
}

fn print_summary(args: &ClientArgs, what: &str, answer: &Value) -> anyhow::Result<()> {
    if args.json {
        print_json(answer)?;
    } else {
        println!(
            "pipeline {} {what}: {}, module {} (revision {})",
            text(&answer["name"]),
            text(&answer["state"]),
            short(answer["module"].as_str().unwrap_or("")),
            text(&answer["revision"])
        );
    }
    Ok(())
}

/// Prints the answer of a reload or rollback: `unchanged` when the module named was already
/// running, and the revision it superseded, if any.
fn print_change(args: &ClientArgs, what: &str, answer: &Value) -> anyhow::Result<()> {
    let what = if answer["applied"] == "unchanged" { "unchanged" } else { what };
    print_summary(args, what, answer)?;
    if let (false, Some(superseded)) = (args.json, answer["superseded"].as_u64()) {
        println!(
            "revision {superseded} never processed a record: this change replaced it before any partition took it up"
        );
    }
    Ok(())
}

/// Runs an upload of `module`, showing its progress on a terminal, then a spinner while the
/// runtime compiles it.
fn with_progress<T>(module: &Path, upload: impl FnOnce(&mut dyn FnMut(u64, u64)) -> T) -> T {
    let terminal = std::io::stderr().is_terminal();
    let name = module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut last_percent = u64::MAX;
    let mut report = |sent: u64, total: u64| {
        if !terminal {
            return;
        }
        let percent = (sent * 100).checked_div(total).unwrap_or(100);
        if percent != last_percent {
            last_percent = percent;
            let step = if percent == 100 { "uploaded; compiling..." } else { "uploading" };
            eprint!("\r{name}: {step} {percent:>3}% of {:.1} MiB   ", total as f64 / (1024.0 * 1024.0));
            let _ = std::io::stderr().flush();
        }
    };
    let result = upload(&mut report);
    if terminal {
        eprintln!();
    }
    result
}

fn print_json(answer: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(answer)?);
    Ok(())
}

/// The elements of a JSON array, none when `value` is not one.
fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A JSON value as a table cell.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Object(o) if o.contains_key("state") => text(&o["state"]),
        other => other.to_string(),
    }
}

/// `sha256:` and the first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
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
